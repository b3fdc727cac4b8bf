"""RADIUS packet codec, signatures and MS-MPPE key encryption."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrad.packet import Packet

from amistack.radius.mppe import mppe_decrypt, mppe_encrypt, mppe_to_msk, msk_to_mppe
from amistack.radius.packet import (
    VENDOR_MICROSOFT,
    MsAttr,
    RadiusAttr,
    RadiusCode,
    RadiusDecodeError,
    RadiusPacket,
    build_reply,
    build_request,
    eap_message_attributes,
    message_authenticator,
    radius_dictionary,
    response_authenticator,
    verify_reply,
    verify_request,
)

SECRET = b"testing123"
AUTH = bytes(range(16))


def test_decode_known_bytes() -> None:
    # Access-Request id 7, User-Name "bob", a Microsoft VSA with two sub-attributes.
    vsa = b"\x00\x00\x01\x37" + b"\x10\x04ab" + b"\x11\x03c"
    body = b"\x01\x05bob" + bytes([26, 2 + len(vsa)]) + vsa
    raw = bytes([1, 7]) + (20 + len(body)).to_bytes(2, "big") + AUTH + body + b"pad"
    p = RadiusPacket.decode(raw)
    assert (p.code, p.identifier, p.authenticator) == (1, 7, AUTH)
    assert p.first(RadiusAttr.USER_NAME) == b"bob"
    assert p.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_SEND_KEY)) == b"ab"
    assert p.first((VENDOR_MICROSOFT, MsAttr.MS_MPPE_RECV_KEY)) == b"c"


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"\x01\x02\x00", 0),  # short header
        (b"\x01\x02\x00\x13" + AUTH, 2),  # Length < 20
        (b"\x01\x02\x00\x30" + AUTH, 2),  # Length > datagram
        (b"\x01\x02\x10\x01" + AUTH + bytes(4077), 2),  # Length > 4096
        (b"\x01\x02\x00\x15" + AUTH + b"\x01", 20),  # truncated attribute header
        (b"\x01\x02\x00\x16" + AUTH + b"\x01\x01", 21),  # attribute length < 2
        (b"\x01\x02\x00\x17" + AUTH + b"\x01\x05x", 21),  # attribute runs past Length
    ],
)
def test_decode_errors_carry_offsets(raw: bytes, offset: int) -> None:
    with pytest.raises(RadiusDecodeError) as info:
        RadiusPacket.decode(raw)
    assert info.value.offset == offset


def test_malformed_vsa_kept_raw() -> None:
    vsa = b"\x00\x00\x01\x37\x10\x09ab"  # sub-attribute length runs past the VSA
    raw = RadiusPacket(1, 1, AUTH, ((26, vsa),)).encode()
    assert RadiusPacket.decode(raw).attributes == ((26, vsa),)


attr_values = st.binary(max_size=253)
attrs = st.lists(st.tuples(st.integers(1, 255).filter(lambda t: t != 26), attr_values), max_size=12)


@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=16, max_size=16), attrs)
def test_roundtrip(code: int, ident: int, auth: bytes, attributes: list[tuple[int, bytes]]) -> None:
    p = RadiusPacket(code, ident, auth, tuple(attributes))
    raw = p.encode()
    assert RadiusPacket.decode(raw) == p
    assert RadiusPacket.decode(raw).encode() == raw


@given(st.binary(max_size=3000))
def test_eap_fragmentation(eap: bytes) -> None:
    parts = eap_message_attributes(eap)
    assert all(len(v) <= 253 for _, v in parts)
    assert all(len(v) == 253 for _, v in parts[:-1])
    p = RadiusPacket(1, 1, AUTH, tuple(parts))
    assert RadiusPacket.decode(p.encode()).eap_message() == eap


def test_eap_start_is_one_empty_attribute() -> None:
    assert eap_message_attributes(b"") == [(RadiusAttr.EAP_MESSAGE, b"")]


def test_request_signature_verifies_and_detects_tampering() -> None:
    eap = b"\x02\x01\x00\x0a\x01user" + b"0x41"  # a value pyrad's octets encoder would rewrite
    raw = build_request(
        9, AUTH, [(RadiusAttr.USER_NAME, b"user"), *eap_message_attributes(eap)], SECRET
    )
    p = RadiusPacket.decode(raw)
    assert p.eap_message() == eap
    assert p.first(RadiusAttr.MESSAGE_AUTHENTICATOR) == message_authenticator(raw, AUTH, SECRET)
    assert verify_request(raw, p, SECRET)
    assert not verify_request(raw, p, b"other")
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    assert not verify_request(tampered, RadiusPacket.decode(tampered), SECRET)
    unsigned = RadiusPacket(1, 9, AUTH, ((RadiusAttr.USER_NAME, b"user"),)).encode()
    assert not verify_request(unsigned, RadiusPacket.decode(unsigned), SECRET)


def test_reply_signatures() -> None:
    req_raw = build_request(
        3,
        AUTH,
        [(RadiusAttr.PROXY_STATE, b"ps1"), *eap_message_attributes(b"\x02\x03\x00\x04")],
        SECRET,
    )
    req = RadiusPacket.decode(req_raw)
    reply_raw = build_reply(
        RadiusCode.ACCESS_CHALLENGE, req, [(RadiusAttr.STATE, b"s" * 16)], SECRET
    )
    reply = RadiusPacket.decode(reply_raw)
    assert reply.identifier == 3
    assert reply.get(RadiusAttr.PROXY_STATE) == [b"ps1"]  # RFC 2865 §5.33
    assert reply.authenticator == response_authenticator(reply_raw, AUTH, SECRET)
    assert reply.first(RadiusAttr.MESSAGE_AUTHENTICATOR) == message_authenticator(
        reply_raw, AUTH, SECRET
    )
    assert verify_reply(reply_raw, reply, req_raw, SECRET)
    assert not verify_reply(reply_raw, reply, req_raw, b"wrong")
    flipped = reply_raw[:-1] + bytes([reply_raw[-1] ^ 0x80])
    assert not verify_reply(flipped, RadiusPacket.decode(flipped), req_raw, SECRET)


def test_reply_without_message_authenticator_is_refused() -> None:
    req_raw = build_request(3, AUTH, eap_message_attributes(b"\x02\x03\x00\x04"), SECRET)
    body = b"\x18\x05abc"
    header = bytes([11, 3]) + (20 + len(body)).to_bytes(2, "big")
    resp_auth = hashlib.md5(header + AUTH + body + SECRET).digest()
    raw = header + resp_auth + body
    assert not verify_reply(raw, RadiusPacket.decode(raw), req_raw, SECRET)


def test_mppe_roundtrip_and_pyrad_agrees() -> None:
    key = bytes(range(32))
    value = mppe_encrypt(key, SECRET, AUTH, b"\x01\x02")
    assert value[0] & 0x80 and len(value) == 2 + 48
    assert mppe_decrypt(value, SECRET, AUTH) == key
    # An independent implementation of the same salt encryption (pyrad, RFC 2868 §3.5 form).
    reply = Packet(secret=SECRET, dict=radius_dictionary())
    reply.request_authenticator = AUTH
    assert reply.SaltDecrypt(value) == key


def test_mppe_first_block_by_hand() -> None:
    key = b"k" * 32
    value = mppe_encrypt(key, SECRET, AUTH, b"\x85\x00")
    b1 = hashlib.md5(SECRET + AUTH + b"\x85\x00").digest()
    assert bytes(x ^ y for x, y in zip(value[2:18], b1, strict=True)) == b"\x20" + key[:15]
    assert hmac.compare_digest(mppe_decrypt(value, SECRET, AUTH), key)


@pytest.mark.parametrize(
    "value", [b"", b"\x80\x00" + bytes(15), b"\x00\x00" + bytes(16), b"\x80\x00" + bytes(17)]
)
def test_mppe_bad_values(value: bytes) -> None:
    with pytest.raises(RadiusDecodeError):
        mppe_decrypt(value, SECRET, AUTH)


def test_mppe_length_octet_beyond_value() -> None:
    value = mppe_encrypt(b"x" * 14, SECRET, AUTH, b"\x80\x01")
    # Re-encrypt a block whose length octet claims more than fits.
    forged = mppe_encrypt(b"", SECRET, AUTH, b"\x80\x01")
    pad = hashlib.md5(SECRET + AUTH + b"\x80\x01").digest()
    forged = forged[:2] + bytes([pad[0] ^ 200]) + forged[3:]
    assert mppe_decrypt(value, SECRET, AUTH) == b"x" * 14
    with pytest.raises(RadiusDecodeError):
        mppe_decrypt(forged, SECRET, AUTH)


def test_msk_split() -> None:
    msk = bytes(range(64))
    recv, send = msk_to_mppe(msk)
    assert recv == msk[:32] and send == msk[32:]
    assert mppe_to_msk(recv, send) == msk
