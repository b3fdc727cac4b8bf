"""PANA codec: the OpenPANA transcript decodes, re-encodes byte-identically and authenticates."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.crypto import PrfHash
from amistack.pana.auth import compute_auth, sign, verify
from amistack.pana.avp import Avp
from amistack.pana.constants import (
    AvpCode,
    Flag,
    IntegrityAlgorithm,
    MessageType,
    ResultCode,
)
from amistack.pana.errors import PanaDecodeError
from amistack.pana.keys import PanaSecurityContext, pana_auth_key
from amistack.pana.message import PanaMessage

VECTOR = "pana_openpana_transcript.json"


def _frames() -> dict[int, bytes]:
    vec = load_vector(VECTOR)
    return {f["n"]: bytes.fromhex(f["hex"]) for f in vec["frames"]}


def test_transcript_round_trip() -> None:
    frames = _frames()
    assert len(frames) == 15
    for n, raw in frames.items():
        msg = PanaMessage.decode(raw)
        assert msg.encode() == raw, n


def test_transcript_fields() -> None:
    f = _frames()
    pci = PanaMessage.decode(f[1])
    assert (pci.msg_type, pci.flags, pci.session_id, pci.seq, pci.avps) == (1, 0, 0, 0, ())
    par = PanaMessage.decode(f[2])
    assert par.msg_type == MessageType.AUTH and par.flags == Flag.R | Flag.S
    assert par.u32(AvpCode.PRF_ALGORITHM) == 2 and par.u32(AvpCode.INTEGRITY_ALGORITHM) == 7
    last = PanaMessage.decode(f[16])
    assert last.has(Flag.C) and last.is_request
    assert last.u32(AvpCode.RESULT_CODE) == ResultCode.PANA_SUCCESS
    assert last.u32(AvpCode.SESSION_LIFETIME) == 30
    assert last.octets(AvpCode.EAP_PAYLOAD) == bytes.fromhex("03240004")  # EAP-Success
    ping = PanaMessage.decode(f[18])
    assert ping.msg_type == MessageType.NOTIFICATION and ping.has(Flag.P) and ping.name == "PNR"


def _context() -> tuple[PanaSecurityContext, bytes]:
    vec = load_vector(VECTOR)
    f = _frames()
    nonce_paa = PanaMessage.decode(f[4]).octets(AvpCode.NONCE)
    nonce_pac = PanaMessage.decode(f[5]).octets(AvpCode.NONCE)
    key_id = PanaMessage.decode(f[16]).u32(AvpCode.KEY_ID)
    assert nonce_paa is not None and nonce_pac is not None and key_id is not None
    ctx = PanaSecurityContext(
        session_id=PanaMessage.decode(f[2]).session_id,
        key_id=key_id,
        prf=PrfHash.SHA1,
        msk=bytes.fromhex(vec["msk"]),
        pac_nonce=nonce_pac,
        paa_nonce=nonce_paa,
        i_par=f[2],
        i_pan=f[3],
    )
    return ctx, bytes.fromhex(vec["pana_auth_key"])


def test_known_answer_pana_auth_key_and_auth() -> None:
    ctx, expected_key = _context()
    key = pana_auth_key(ctx)
    assert key == expected_key
    f = _frames()
    for n in (16, 17, 18, 19, 20, 21):
        assert verify(f[n], IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key), n
        # sign() reproduces the frame from its decoded form
        assert sign(PanaMessage.decode(f[n]), IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key) == f[n]
        # one flipped bit anywhere breaks it
        bad = bytearray(f[n])
        bad[9] ^= 0x01
        assert not verify(bytes(bad), IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key)
    assert not verify(f[16], IntegrityAlgorithm.AUTH_HMAC_SHA1_160, bytes(20))
    assert not verify(f[5], IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key)  # no AUTH AVP


def test_sha256_128_suite() -> None:
    key = bytes(range(32))
    msg = PanaMessage(MessageType.NOTIFICATION, Flag.R | Flag.P, 7, 9)
    raw = sign(msg, IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128, key)
    decoded = PanaMessage.decode(raw)
    auth = decoded.octets(AvpCode.AUTH)
    assert auth is not None and len(auth) == 16
    assert verify(raw, IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128, key)
    assert not verify(raw, IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key)
    zeroed = raw[:-16] + bytes(16)
    assert compute_auth(IntegrityAlgorithm.AUTH_HMAC_SHA2_256_128, key, zeroed) == auth


_AVPS = st.lists(
    st.builds(
        Avp,
        st.sampled_from([AvpCode.AUTH, AvpCode.EAP_PAYLOAD, AvpCode.NONCE, 999]),
        st.binary(max_size=40),
        st.sampled_from([None, 0x12345678]),
    ),
    max_size=5,
).map(tuple)


@given(
    _AVPS,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFF),
    st.sampled_from(list(IntegrityAlgorithm)),
    st.binary(min_size=1, max_size=40),
)
def test_sign_is_the_definition(
    avps: tuple[Avp, ...],
    flags: int,
    seq: int,
    reserved: int,
    alg: IntegrityAlgorithm,
    key: bytes,
) -> None:
    # RFC 5191 §5.4: the message with any AUTH AVP dropped and one appended last, whose value
    # is the HMAC of that whole message with the value zeroed; other fields kept as they are
    msg = PanaMessage(MessageType.AUTH, flags, 0x1234, seq, avps, reserved)
    n = 20 if alg is IntegrityAlgorithm.AUTH_HMAC_SHA1_160 else 16
    kept = tuple(a for a in avps if not (a.code == AvpCode.AUTH and a.vendor_id is None))
    zeroed = PanaMessage(
        MessageType.AUTH, flags, 0x1234, seq, (*kept, Avp(AvpCode.AUTH, bytes(n))), reserved
    ).encode()
    name = "sha1" if alg is IntegrityAlgorithm.AUTH_HMAC_SHA1_160 else "sha256"
    want = zeroed[:-n] + hmac.digest(key, zeroed, name)[:n]
    assert sign(msg, alg, key) == want
    assert verify(want, alg, key)


def test_vendor_and_unknown_avps_kept() -> None:
    avps = (
        Avp(AvpCode.EAP_PAYLOAD, b"\x01\x02\x03"),
        Avp(999, b"unknown"),
        Avp(5, b"abcde", vendor_id=0x12345678),
        Avp.u32(AvpCode.RESULT_CODE, 0),
    )
    msg = PanaMessage(MessageType.AUTH, Flag.R, 1, 2, avps)
    raw = msg.encode()
    assert len(raw) % 4 == 0
    back = PanaMessage.decode(raw)
    assert back == msg
    assert back.find(5) is None  # a vendor AVP is not the standard Nonce
    assert back.find(999) is not None and back.u32(AvpCode.RESULT_CODE) == 0


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"", 0),
        (bytes(15), 0),
        (bytes.fromhex("0000000f000000010000000000000000"), 2),  # length < header
        (bytes.fromhex("00000014000000010000000000000000"), 2),  # length > datagram
        (bytes.fromhex("0000001000000001000000000000000000"), 16),  # trailing octet
        # AVP header truncated
        (bytes.fromhex("00000014000000020000000100000001") + bytes(4), 16),
        # AVP length runs past the end
        (bytes.fromhex("00000018000000020000000100000001") + bytes.fromhex("0002000000080000"), 20),
        # AVP value fits but its padding does not
        (
            bytes.fromhex("0000001d000000020000000100000001")
            + bytes.fromhex("0002000000050000")
            + b"x" * 5,
            29,
        ),
        # V bit set but Vendor-Id missing
        (bytes.fromhex("00000018000000020000000100000001") + bytes.fromhex("0002800000000000"), 24),
    ],
)
def test_malformed_raises_typed_error(raw: bytes, offset: int) -> None:
    with pytest.raises(PanaDecodeError) as err:
        PanaMessage.decode(raw)
    assert err.value.offset == offset and err.value.reason


def test_wrong_length_u32_is_decode_error() -> None:
    with pytest.raises(PanaDecodeError):
        Avp(AvpCode.RESULT_CODE, b"\x00\x00").as_u32()


def test_reserved_fields_ignored_but_preserved() -> None:
    raw = bytearray(_frames()[2])
    raw[0:2] = b"\xab\xcd"  # header Reserved
    raw[16 + 6 : 16 + 8] = b"\x12\x34"  # first AVP's Reserved
    msg = PanaMessage.decode(bytes(raw))
    assert msg.reserved == 0xABCD and msg.avps[0].reserved == 0x1234
    assert msg.encode() == bytes(raw)
