"""Pkcs11Kek: the key server's KEK inside a SoftHSM2 token, under an unchanged CredentialStore."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token

from amistack.crypto import pkcs11_token
from amistack.crypto.pkcs11_token import TokenSession
from amistack.keymgmt.kek import BLOB_VERSION, NONCE_LENGTH, TAG_LENGTH, KekError, record_aad
from amistack.keymgmt.kek_pkcs11 import Pkcs11Kek
from amistack.keymgmt.store import CredentialStore, StoreError

__all__ = ["softhsm_token"]

KEK = "keyserver/kek"
PSK = bytes(range(16))


def open_kek(t: SoftHsmToken, *, create: bool = True, label: str = KEK) -> Pkcs11Kek:
    return Pkcs11Kek.open(t.library, t.label, t.pin, label, os.urandom, create=create)


def test_wrap_unwrap_round_trip_and_blob_layout(softhsm_token: SoftHsmToken) -> None:
    with open_kek(softhsm_token) as kek:
        aad = record_aad("psk", b"meter-1", 1)
        blob = kek.wrap(PSK, aad)
        assert blob[0] == BLOB_VERSION
        assert len(blob) == 1 + NONCE_LENGTH + len(PSK) + TAG_LENGTH
        assert PSK not in blob
        assert kek.unwrap(blob, aad) == PSK
        assert kek.wrap(PSK, aad) != blob  # a fresh nonce every time
        assert kek.label.startswith(f"pkcs11:{softhsm_token.label}/{KEK}#")


def test_aad_mismatch_and_tampering_are_refused(softhsm_token: SoftHsmToken) -> None:
    with open_kek(softhsm_token) as kek:
        blob = kek.wrap(PSK, record_aad("psk", b"meter-1", 1))
        for wrong in (record_aad("psk", b"meter-2", 1), record_aad("psk", b"meter-1", 2), b""):
            with pytest.raises(KekError, match="does not authenticate"):
                kek.unwrap(blob, wrong)
        aad = record_aad("psk", b"meter-1", 1)
        for i in (1, 13, len(blob) - 1):  # nonce, ciphertext, tag
            flipped = blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :]
            with pytest.raises(KekError, match="does not authenticate"):
                kek.unwrap(flipped, aad)
        with pytest.raises(KekError, match="truncated or of an unknown version"):
            kek.unwrap(blob[:20], aad)
        with pytest.raises(KekError, match="truncated or of an unknown version"):
            kek.unwrap(b"\x02" + blob[1:], aad)
        assert kek.unwrap(blob, aad) == PSK


def test_kek_is_sensitive_non_extractable_and_in_the_token(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    open_kek(t).close()
    with TokenSession.open(t.library, t.label, t.pin) as session:
        (key,) = session.find(ObjectClass.SECRET_KEY, KEK)
        with session.use():
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.TOKEN] is True
            assert key[Attribute.VALUE_LEN] == 32
            assert key[Attribute.WRAP] is False
            with pytest.raises(p11e.AttributeSensitive):
                key[Attribute.VALUE]


def test_another_kek_cannot_unwrap(softhsm_token: SoftHsmToken) -> None:
    with open_kek(softhsm_token) as a, open_kek(softhsm_token, label="other") as b:
        assert a.label != b.label
        blob = a.wrap(PSK, b"aad")
        with pytest.raises(KekError, match="does not authenticate"):
            b.unwrap(blob, b"aad")


def test_open_errors(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with pytest.raises(KekError, match="no secret key labelled"):
        open_kek(t, create=False)
    with pytest.raises(KekError, match="PIN is incorrect"):
        Pkcs11Kek.open(t.library, t.label, "000000", KEK, os.urandom, create=True)
    kek = open_kek(t)
    kek.close()
    with pytest.raises(KekError, match="closed"):
        kek.unwrap(b"\x01" + bytes(40), b"")
    assert pkcs11_token.open_logins() == 0


def test_credential_store_on_pkcs11_kek_survives_reopen(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    db = tmp_path / "ks.db"
    psks = {f"meter-{i}".encode(): os.urandom(16) for i in range(5)}
    with open_kek(softhsm_token) as kek:
        store = CredentialStore(db, kek)
        for device, psk in psks.items():
            store.enroll(device, psk, now=100.0)
        assert store.get_psk(b"meter-3") == psks[b"meter-3"]
        store.close()
    raw = sqlite3.connect(db)
    blobs = [bytes(b) for (b,) in raw.execute("SELECT psk_blob FROM devices")]
    labels = {str(label) for (label,) in raw.execute("SELECT kek_label FROM devices")}
    raw.close()
    assert len(blobs) == 5 and not any(psk in blob for psk in psks.values() for blob in blobs)
    assert len(labels) == 1 and labels.pop().startswith("pkcs11:")
    assert pkcs11_token.open_logins() == 0  # everything logged out; the key stays in the token

    with open_kek(softhsm_token, create=False) as kek:
        store = CredentialStore(db, kek)
        for device, psk in psks.items():
            assert store.get_psk(device) == psk
        assert store.get_psk(b"meter-unknown") is None
        store.close()

    # a different token key (same label, regenerated) cannot read those records: fail closed
    with TokenSession.open(softhsm_token.library, softhsm_token.label, softhsm_token.pin) as s:
        (old,) = s.find(ObjectClass.SECRET_KEY, KEK)
        with s.use():
            old.destroy()
    with open_kek(softhsm_token) as kek:
        store = CredentialStore(db, kek)
        assert store.get_psk(b"meter-1") is None
        with pytest.raises(StoreError):
            store.psk(b"meter-1")
        store.close()
