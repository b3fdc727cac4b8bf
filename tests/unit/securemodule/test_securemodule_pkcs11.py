"""The PKCS#11 secure module against a real SoftHSM2 token in a per-test directory."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from pkcs11 import Attribute, KeyType
from pkcs11 import exceptions as p11e
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token
from tests.unit.securemodule.test_securemodule import cryptography_verifies

from amistack.crypto import pkcs11_token
from amistack.crypto.pkcs11_token import TokenSession
from amistack.securemodule import (
    Pkcs11Module,
    SecureModule,
    SecureModuleError,
    SoftwareModule,
    open_module,
    verify_digest,
)

__all__ = ["softhsm_token"]

DIGEST = hashlib.sha256(b"meter-0001 event log, entries 0..41").digest()
KEY = "meter-0001/eventlog"


def test_sign_verify_round_trip(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as module:
        assert module.label == KEY
        signature = module.sign_digest(DIGEST)
        assert len(signature) == 64
        pem = module.public_key_pem()
        assert verify_digest(pem, DIGEST, signature)
        assert cryptography_verifies(pem, DIGEST, signature)
        tampered = bytes([DIGEST[0] ^ 1]) + DIGEST[1:]
        assert not verify_digest(pem, tampered, signature)
        assert not cryptography_verifies(pem, tampered, signature)


def test_private_key_cannot_be_exported(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as module:
        assert module.private_key_attribute(Attribute.SENSITIVE) is True
        assert module.private_key_attribute(Attribute.EXTRACTABLE) is False
        assert module.private_key_attribute(Attribute.NEVER_EXTRACTABLE) is True
        assert module.private_key_attribute(Attribute.ALWAYS_SENSITIVE) is True
        assert module.private_key_attribute(Attribute.LOCAL) is True  # generated in the token
        assert module.private_key_attribute(Attribute.TOKEN) is True
        assert module.private_key_attribute(Attribute.SIGN) is True
        with pytest.raises(SecureModuleError, match="AttributeSensitive"):
            module.private_key_attribute(Attribute.VALUE)
        # nor can it be wrapped out under some other key
        assert module.private_key_attribute(Attribute.WRAP_WITH_TRUSTED) in (False, None)
    with TokenSession.open(t.library, t.label, t.pin) as session:
        (private,) = session.find(pkcs11_token.ObjectClass.PRIVATE_KEY, KEY)
        with session.use(), pytest.raises(p11e.AttributeSensitive):
            private[Attribute.VALUE]
        with session.use() as raw:
            wrapping = raw.generate_key(
                KeyType.AES, 256, label="wrapping", store=False, template={Attribute.WRAP: True}
            )
            # C_WrapKey on a non-extractable key: CKR_KEY_UNEXTRACTABLE (PKCS#11 v2.40 §5.14)
            with pytest.raises(p11e.KeyUnextractable):
                wrapping.wrap_key(private)


def test_key_survives_reopen_and_signatures_verify_across_opens(
    softhsm_token: SoftHsmToken,
) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as first:
        pem = first.public_key_pem()
    assert pkcs11_token.open_logins() == 0  # the last close logged out
    with Pkcs11Module.open(t.library, t.label, t.pin, KEY) as again:
        assert again.public_key_pem() == pem
        assert verify_digest(pem, DIGEST, again.sign_digest(DIGEST))


def test_wrong_pin_is_refused_first_and_while_logged_in(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY):
        pass
    with pytest.raises(SecureModuleError, match="PIN is incorrect"):
        Pkcs11Module.open(t.library, t.label, "000000", KEY)
    with Pkcs11Module.open(t.library, t.label, t.pin, KEY) as module:
        # the token is logged in now; a second open with a wrong PIN must still fail
        with pytest.raises(SecureModuleError, match="PIN is incorrect"):
            Pkcs11Module.open(t.library, t.label, "000000", KEY)
        assert verify_digest(module.public_key_pem(), DIGEST, module.sign_digest(DIGEST))


def test_missing_token_and_key_are_clear_errors(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with pytest.raises(SecureModuleError, match=r"no PKCS#11 token labelled 'nope'.*amistack-test"):
        Pkcs11Module.open(t.library, "nope", t.pin, KEY)
    with pytest.raises(SecureModuleError, match=r"no key pair labelled .*\(create it first\)"):
        Pkcs11Module.open(t.library, t.label, t.pin, KEY)
    with (
        Pkcs11Module.create(t.library, t.label, t.pin, KEY),
        pytest.raises(SecureModuleError, match="already holds a key"),
    ):
        Pkcs11Module.create(t.library, t.label, t.pin, KEY)
    assert pkcs11_token.open_logins() == 0


def test_signature_from_another_key_fails(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with (
        Pkcs11Module.create(t.library, t.label, t.pin, "meter-a") as a,
        Pkcs11Module.create(t.library, t.label, t.pin, "meter-b") as b,
    ):
        assert a.public_key_pem() != b.public_key_pem()
        assert not verify_digest(a.public_key_pem(), DIGEST, b.sign_digest(DIGEST))
        assert verify_digest(b.public_key_pem(), DIGEST, b.sign_digest(DIGEST))


def test_software_and_token_keys_do_not_cross_verify(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    t = softhsm_token
    software = SoftwareModule.create(tmp_path / "sw.pem")
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as token:
        modules: list[SecureModule] = [software, token]
        for signer in modules:
            for verifier in modules:
                ok = verify_digest(verifier.public_key_pem(), DIGEST, signer.sign_digest(DIGEST))
                assert ok == (signer is verifier)


def test_refuses_to_use_an_extractable_key(softhsm_token: SoftHsmToken) -> None:
    """A key someone made extractable is not a secure-module key."""
    t = softhsm_token
    with TokenSession.open(t.library, t.label, t.pin) as session, session.use() as raw:
        params = raw.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: pkcs11_token.P256_EC_PARAMS}, local=True
        )
        params.generate_keypair(
            store=True,
            label="weak",
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    with pytest.raises(SecureModuleError, match="extractable or not sensitive"):
        Pkcs11Module.open(t.library, t.label, t.pin, "weak")
    assert pkcs11_token.open_logins() == 0


def test_open_module_pkcs11_spec_with_pin_in_spec_or_env(
    softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = softhsm_token
    created = open_module(t.spec(KEY), create=True)
    try:
        assert isinstance(created, Pkcs11Module)
        monkeypatch.setenv("AMISTACK_PKCS11_PIN", t.pin)
        from_env = open_module(t.spec(KEY, with_pin=False))
        try:
            assert from_env.public_key_pem() == created.public_key_pem()
            assert verify_digest(created.public_key_pem(), DIGEST, from_env.sign_digest(DIGEST))
        finally:
            from_env.close()
        monkeypatch.setenv("AMISTACK_PKCS11_PIN", "999999")
        with pytest.raises(SecureModuleError, match="PIN is incorrect"):
            open_module(t.spec(KEY, with_pin=False))
    finally:
        created.close()


def test_one_module_shared_by_threads(softhsm_token: SoftHsmToken) -> None:
    """Operations on one session are serialised; every signature from every thread verifies."""
    t = softhsm_token
    results: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as module:

        def work(n: int) -> None:
            try:
                for i in range(25):
                    digest = hashlib.sha256(f"{n}/{i}".encode()).digest()
                    results.append((digest, module.sign_digest(digest)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pem = module.public_key_pem()
    assert not errors
    assert len(results) == 100
    assert all(verify_digest(pem, d, s) for d, s in results)


def test_closed_module_refuses_to_sign(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    module = Pkcs11Module.create(t.library, t.label, t.pin, KEY)
    module.close()
    module.close()  # idempotent
    with pytest.raises(SecureModuleError, match="closed"):
        module.sign_digest(DIGEST)
    with pytest.raises(SecureModuleError, match="32-octet"):
        module.sign_digest(DIGEST[:20])


def test_separate_modules_in_separate_threads(softhsm_token: SoftHsmToken) -> None:
    """Regression: python-pkcs11 initialises SoftHSM2 without OS locking, and two threads signing
    on two sessions at once failed with CKR_GENERAL_ERROR until every call took PKCS11_LOCK."""
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as first:
        pem = first.public_key_pem()
    modules = [Pkcs11Module.open(t.library, t.label, t.pin, KEY) for _ in range(4)]
    results: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []

    def work(module: Pkcs11Module, n: int) -> None:
        try:
            for i in range(50):
                digest = hashlib.sha256(f"{n}/{i}".encode()).digest()
                results.append((digest, module.sign_digest(digest)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m, n)) for n, m in enumerate(modules)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for module in modules:
        module.close()
    assert not errors, errors
    assert len(results) == 200
    assert all(verify_digest(pem, d, s) for d, s in results)
