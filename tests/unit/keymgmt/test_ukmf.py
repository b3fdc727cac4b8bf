"""UKMF: purposes, key ids, and derivation against the OpenPANA transcript."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.crypto import PrfHash, prf_plus
from amistack.keymgmt.ukmf import (
    C1222,
    LINK,
    PANA_AUTH,
    KeyId,
    KeyIdError,
    Purpose,
    PurposeError,
    PurposeRegistry,
    derive,
    derive_all,
)
from amistack.pana.keys import PanaSecurityContext, pana_auth_key

CtxFactory = Callable[..., PanaSecurityContext]


def test_pana_auth_via_ukmf_matches_openpana(
    openpana: tuple[PanaSecurityContext, dict[str, Any]],
) -> None:
    ctx, vec = openpana
    assert ctx.key_id == 0xFC268032
    assert derive(ctx, PANA_AUTH).hex() == vec["pana_auth_key"]
    assert derive(ctx, PANA_AUTH) == pana_auth_key(ctx)


@pytest.mark.parametrize("prf", list(PrfHash))
def test_pana_auth_purpose_is_pana_auth_key(make_ctx: CtxFactory, prf: PrfHash) -> None:
    ctx = make_ctx(prf=prf)
    key = derive(ctx, PANA_AUTH)
    assert key == pana_auth_key(ctx)
    assert len(key) == prf.digest_size


def test_derive_is_prf_plus_with_label(make_ctx: CtxFactory) -> None:
    ctx = make_ctx()
    expected = prf_plus(ctx.prf, ctx.msk, C1222.label + ctx.kdf_context(), 16)
    assert derive(ctx, C1222) == expected


@pytest.mark.parametrize("prf", list(PrfHash))
def test_derive_all_is_derive_per_purpose(make_ctx: CtxFactory, prf: PrfHash) -> None:
    # the key ring's path (context built once) gives exactly what `derive` gives, also for a
    # purpose longer than one PRF block
    ctx = make_ctx(prf=prf)
    registry = PurposeRegistry()
    long = registry.add("long", b"amistack long test key", 3 * prf.digest_size + 5)
    keys = derive_all(ctx, registry)
    assert keys == {p: derive(ctx, p) for p in registry}
    assert len(keys[long]) == 3 * prf.digest_size + 5


def test_distinct_labels_give_independent_keys(make_ctx: CtxFactory) -> None:
    ctx = make_ctx()
    keys = derive_all(ctx, PurposeRegistry())
    assert set(keys) == {PANA_AUTH, C1222, LINK}
    assert len(keys[C1222]) == len(keys[LINK]) == 16
    # No key is a prefix of another: the labels really separate the outputs.
    values = list(keys.values())
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            n = min(len(a), len(b))
            assert a[:n] != b[:n]


def test_both_ends_derive_the_same_keys(make_ctx: CtxFactory) -> None:
    pac_side, paa_side = make_ctx(key_id=3), make_ctx(key_id=3)
    assert derive_all(pac_side, PurposeRegistry()) == derive_all(paa_side, PurposeRegistry())


def test_new_generation_or_session_changes_every_key(make_ctx: CtxFactory) -> None:
    base = make_ctx(session_id=5, key_id=1)
    # same MSK, nonces and messages: only Key_ID differs, still every key changes
    next_gen = PanaSecurityContext(
        session_id=5,
        key_id=2,
        prf=base.prf,
        msk=base.msk,
        pac_nonce=base.pac_nonce,
        paa_nonce=base.paa_nonce,
        i_par=base.i_par,
        i_pan=base.i_pan,
    )
    for purpose in PurposeRegistry():
        assert derive(base, purpose) != derive(next_gen, purpose)


def test_registry_is_open_and_refuses_collisions() -> None:
    reg = PurposeRegistry()
    dlms = reg.add("dlms", b"amistack DLMS key", 32)
    assert reg.get("dlms") is dlms and dlms in reg and len(reg) == 4
    assert reg.register(dlms) is dlms  # idempotent for the identical purpose
    with pytest.raises(PurposeError, match="already registered"):
        reg.add("dlms", b"another label", 16)
    with pytest.raises(PurposeError, match="prefix-free"):
        reg.add("pana2", b"IETF PANA 2", 16)  # would extend the PANA_AUTH label
    with pytest.raises(PurposeError, match="prefix-free"):
        reg.add("short", b"amistack", 16)
    with pytest.raises(PurposeError, match="unknown"):
        reg.get("nope")


@pytest.mark.parametrize(
    ("name", "label", "length"),
    [("", b"x", 16), ("Bad Name", b"x", 16), ("ok", b"", 16), ("ok", b"x", 0), ("ok", b"x", 5101)],
)
def test_purpose_validation(name: str, label: bytes, length: int) -> None:
    with pytest.raises(PurposeError):
        Purpose(name, label, length)


def test_key_id_forms() -> None:
    kid = KeyId(0x4097DCD8, 0xFC268032)
    assert str(kid) == "4097dcd8.fc268032"
    assert KeyId.parse("4097DCD8:fc268032") == kid
    assert kid.encode() == bytes.fromhex("4097dcd8fc268032")
    assert KeyId.decode(kid.encode()) == kid
    assert KeyId(1, 2) < KeyId(1, 3) < KeyId(2, 0)


@pytest.mark.parametrize("text", ["", "4097dcd8", "4097dcd8.fc26803", "zz97dcd8.fc268032"])
def test_key_id_bad_text(text: str) -> None:
    with pytest.raises(KeyIdError):
        KeyId.parse(text)


@given(st.binary(max_size=12))
def test_key_id_decode_only_raises_key_id_error(data: bytes) -> None:
    try:
        kid = KeyId.decode(data)
    except KeyIdError as exc:
        assert len(data) != 8 and exc.offset <= 8
    else:
        assert kid.encode() == data and KeyId.parse(str(kid)) == kid


def test_key_id_range() -> None:
    with pytest.raises(KeyIdError):
        KeyId(1 << 32, 0)
    with pytest.raises(KeyIdError):
        KeyId(0, -1)
