"""ACSE (BER), EPSEM and service codecs: the vectors' headers, round trips, strict decoding."""

from __future__ import annotations

from dataclasses import replace
from operator import attrgetter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.c1222 import acse, ber
from amistack.c1222.acse import AcseMessage, ApTitle, AuthValue, _decode_common, decode_fields
from amistack.c1222.epsem import Epsem, ResponseControl, SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.security import protect, seal, unprotect
from amistack.c1222.services import (
    Identify,
    IdentifyResult,
    Logoff,
    Logon,
    LogonResult,
    Read,
    ReadResult,
    Request,
    Response,
    ResponseCode,
    Security,
    Terminate,
    Wait,
    Write,
    checksum,
    decode_request,
    decode_response,
)

VECTORS: list[dict[str, Any]] = load_vector("eax_prime.json")["vectors"]


def _vector_message(i: int) -> AcseMessage:
    """Rebuild the ACSE message each published vector was cut from (fields read off its
    cleartext); its canonical cleartext must then be the vector's cleartext byte for byte."""
    vec = VECTORS[i]
    epsem = bytes.fromhex(vec["ciphertext"] + vec["tag"])
    flags = {0: 0x9A, 1: 0x9A, 2: 0x88, 3: 0x88}[i]
    common: dict[str, Any] = {"user_information": bytes([flags]) + epsem}
    if i in (0, 1):
        inv = 0x17 if i == 0 else 0x7B
        iv = "48e99388" if i == 0 else "48f3d2f8"
        return AcseMessage(
            called_ap_title=ApTitle.parse(f".0.{inv}.2"),
            calling_ap_title=ApTitle.parse(f".0.{inv}.273"),
            calling_ae_qualifier=4,
            calling_ap_invocation_id=2,
            auth=AuthValue(2, bytes.fromhex(iv)),
            **common,
        )
    if i == 2:
        return AcseMessage(
            called_ap_title=ApTitle.parse("2.16.840.1.114223.156.5454.1"),
            calling_ap_title=ApTitle.parse("1.3.6.1.4.1.33507"),
            calling_ap_invocation_id=0x39A00EBB,
            auth=AuthValue(0, bytes.fromhex("4bcee2c3")),
            **common,
        )
    return AcseMessage(
        called_ap_title=ApTitle.parse("1.3.6.1.4.1.33507.1919.12345678.1"),
        calling_ap_title=ApTitle.parse("1.3.6.1.4.33507"),
        calling_ap_invocation_id=0x2BC81AA1,
        auth=AuthValue(0, bytes.fromhex("4b97d2cc")),
        **common,
    )


@pytest.mark.parametrize("i", range(4))
def test_canonical_cleartext_matches_vectors(i: int) -> None:
    msg = _vector_message(i)
    assert msg.canonical_cleartext().hex() == VECTORS[i]["cleartext"]
    assert AcseMessage.decode(msg.encode()) == msg


def test_vector1_plaintext_is_an_epsem() -> None:
    # flags 0x9A: ED class present, ciphertext+auth, never respond; a full write of ST7
    ep = Epsem.decode_body(
        Epsem((b"\x20",), ed_class=b"TEMP").control, bytes.fromhex(VECTORS[0]["plaintext"])
    )
    assert ep.ed_class == b"TEMP"
    req = decode_request(ep.services[0])
    assert isinstance(req, Write) and req.table == 7 and req.data == bytes.fromhex("1a00000200")


def test_relative_and_absolute_titles_name_the_same_node() -> None:
    rel, ab = ApTitle.parse(".0.7"), ApTitle.parse("2.16.124.113620.1.22.0.7")
    assert rel != ab and rel.same_node(ab) and rel.device_id == ab.device_id
    assert rel.encode_choice()[0] == 0x80 and ab.encode_choice()[0] == 0x06
    assert rel.encode_canonical() == ab.encode_choice()
    assert str(rel) == ".0.7" and ApTitle.parse(str(ab)) == ab


titles = st.one_of(
    st.builds(
        lambda a, b, rest: ApTitle((a, b, *rest)),
        st.integers(0, 1),
        st.integers(0, 39),
        st.lists(st.integers(0, 2**32), max_size=8),
    ),
    st.builds(
        lambda rest: ApTitle(tuple(rest), True),
        st.lists(st.integers(0, 2**40), min_size=1, max_size=6),
    ),
)
u32 = st.integers(0, 2**32 - 1)
wide = st.integers(2**60, 2**70)  # up to 9 INTEGER octets: the C reader declines those


@given(st.lists(st.integers(0, 2**70), min_size=1, max_size=8))
def test_a_relative_titles_absolute_form_is_built_like_a_new_absolute_title(
    arcs: list[int],
) -> None:
    rel = ApTitle(tuple(arcs), relative=True)
    ab = ApTitle((2, 16, 124, 113620, 1, 22, *arcs))
    assert rel.absolute() == ab and rel.encode_canonical() == ab.encode_choice()
    assert rel.device_id == ab.device_id


messages = st.builds(
    AcseMessage,
    user_information=st.binary(min_size=1, max_size=400),
    called_ap_title=st.none() | titles,
    calling_ap_title=st.none() | titles,
    calling_ap_invocation_id=st.none() | u32,
    called_ap_invocation_id=st.none() | u32,
    calling_ae_qualifier=st.none() | u32,
    aso_context=st.none() | st.just((2, 16, 124, 113620, 1, 22)),
    mechanism_name=st.none() | st.just((2, 16, 124, 113620, 1, 22, 2, 1)),
    auth=st.none() | st.builds(AuthValue, st.integers(0, 255), st.binary(min_size=4, max_size=4)),
)


@given(messages)
def test_acse_round_trip(msg: AcseMessage) -> None:
    data = msg.encode()
    assert AcseMessage.decode(data) == msg
    assert AcseMessage.decode(data).encode() == data


@given(messages)
def test_decoded_cleartext_cut_from_the_wire_equals_the_rebuilt_one(msg: AcseMessage) -> None:
    # decode() cuts the EAX' cleartext from the wire bytes; a copy without that memo rebuilds it
    decoded = AcseMessage.decode(msg.encode())
    assert "_cleartext" in decoded.__dict__
    assert decoded.canonical_cleartext() == replace(decoded).canonical_cleartext()
    assert decoded.canonical_cleartext() == msg.canonical_cleartext()


@given(messages, st.binary(min_size=1, max_size=40))
def test_with_user_information_changes_only_it_and_auth(msg: AcseMessage, ui: bytes) -> None:
    # what protect() uses instead of dataclasses.replace: every other field carried over
    auth = AuthValue(7, b"\x01\x02\x03\x04")
    assert msg.with_user_information(ui, auth) == replace(msg, user_information=ui, auth=auth)
    assert msg.with_user_information(ui, None) == replace(msg, user_information=ui, auth=None)


def test_auth_value_encoding_is_the_nested_elements() -> None:
    # the fixed frame AuthValue.encode writes is [2] { [0] { [1] { [0] key id, [1] iv } } }
    value = AuthValue(0xA5, b"\xde\xad\xbe\xef")
    inner = ber.tlv(0x80, b"\xa5") + ber.tlv(0x81, value.iv)
    assert value.encode() == ber.tlv(0xA2, ber.tlv(0xA0, ber.tlv(0xA1, inner)))


def test_auth_value_with_trailing_bytes_is_refused() -> None:
    # bytes after the [1] element inside [0] would otherwise be carried but not authenticated
    good = AuthValue(1, b"\x00\x01\x02\x03").encode()  # a2 0d a0 0b a1 09 ...
    bad = bytes([good[0], good[1] + 2, good[2], good[3] + 2]) + good[4:] + b"\x05\x00"
    with pytest.raises(C1222DecodeError, match="trailing bytes in the authentication value"):
        AuthValue.decode(bad, 0, len(bad))
    bad2 = bytes([good[0], good[1] + 2]) + good[2:] + b"\x05\x00"
    with pytest.raises(C1222DecodeError, match="trailing bytes in the authentication value"):
        AuthValue.decode(bad2, 0, len(bad2))
    assert AuthValue.decode(good, 0, len(good)) == AuthValue(1, b"\x00\x01\x02\x03")


@given(st.integers(0, 2**70))
def test_ber_length_round_trip(n: int) -> None:
    enc = ber.encode_length(n)
    if len(enc) <= 4:
        assert ber.read_length(enc, 0) == (n, len(enc))
    else:
        with pytest.raises(C1222DecodeError):
            ber.read_length(enc, 0)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "element missing"),
        (b"\x61\x00", "not a C12.22"),
        (bytes.fromhex("6081 05") + bytes(5), "non-minimal length"),
        (bytes.fromhex("6003a80100"), "user-information"),
        (bytes.fromhex("6000"), "user-information"),
        (bytes.fromhex("6007be05280381010000"), "trailing"),
        (bytes.fromhex("600ba803020101a2020600be00"), "out of order"),
    ],
)
def test_acse_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(C1222DecodeError, match=reason):
        AcseMessage.decode(data)


requests: st.SearchStrategy[Request] = st.one_of(
    st.just(Identify()),
    st.just(Terminate()),
    st.just(Logoff()),
    st.builds(
        Logon, st.integers(0, 0xFFFF), st.binary(min_size=10, max_size=10), st.integers(0, 0xFFFF)
    ),
    st.builds(Security, st.binary(min_size=20, max_size=20), st.none() | st.integers(0, 0xFFFF)),
    st.builds(Read, st.integers(0, 0xFFFF)),
    st.builds(Read, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFF)),
    st.builds(Write, st.integers(0, 0xFFFF), st.binary(max_size=300)),
    st.builds(Write, st.integers(0, 0xFFFF), st.binary(max_size=300), st.integers(0, 0xFFFFFF)),
    st.builds(Wait, st.integers(0, 255)),
)


@given(requests)
def test_request_round_trip(req: Request) -> None:
    assert decode_request(req.encode()) == req


@given(
    st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5),
    st.sampled_from(SecurityMode),
    st.sampled_from(ResponseControl),
    st.none() | st.binary(min_size=4, max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_epsem_round_trip(
    services: list[bytes],
    mode: SecurityMode,
    rc: ResponseControl,
    ed: bytes | None,
    rec: bool,
    px: bool,
) -> None:
    ep = Epsem(tuple(services), mode, rc, ed, rec, px)
    data = ep.encode()
    assert data[0] & 0x80
    from amistack.c1222.epsem import EpsemControl

    assert Epsem.decode_body(EpsemControl.decode(data[0]), data[1:]) == ep


@given(st.binary(max_size=500))
def test_read_result_round_trip(data: bytes) -> None:
    enc = ReadResult(data).encode()
    assert ReadResult.decode(enc) == ReadResult(data)
    assert (sum(data) + enc[-1]) % 256 == 0


def test_results_round_trip() -> None:
    assert IdentifyResult.decode(IdentifyResult(3, 1, 0, b"\x06").encode()) == IdentifyResult(
        3, 1, 0, b"\x06"
    )
    assert LogonResult.decode(LogonResult(120).encode()) == LogonResult(120)
    r = decode_response(Response(ResponseCode.OK, b"\x00\x01").encode())
    assert r.ok and r.data == b"\x00\x01"
    assert decode_response(b"\x03").code == ResponseCode.ISC


def test_write_checksum_checked() -> None:
    enc = bytearray(Write(23, b"abc").encode())
    assert enc[-1] == checksum(b"abc")
    enc[-1] ^= 1
    with pytest.raises(C1222DecodeError, match="checksum"):
        decode_request(bytes(enc))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30\x00", b"\x3f\x00\x01", b"\x99", b"\x50" + bytes(5), b"\x40\x00\x01\x00\x05ab\x00"],
)
def test_request_rejects(data: bytes) -> None:
    with pytest.raises(C1222DecodeError):
        decode_request(data)


def test_response_rejects_unknown_code() -> None:
    with pytest.raises(C1222DecodeError):
        decode_response(b"\x1f")
    with pytest.raises(C1222DecodeError):
        decode_response(b"\x03extra")


@given(
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=20), st.data()
)
def test_identify_and_logon_results_round_trip(
    std: int, ver: int, rev: int, features: bytes, data: st.DataObject
) -> None:
    features = features.replace(b"\x00", b"\x01")  # 0x00 ends the feature list
    ident = IdentifyResult(std, ver, rev, features)
    assert IdentifyResult.decode(ident.encode()) == ident
    timeout = data.draw(st.integers(0, 0xFFFF))
    assert LogonResult.decode(LogonResult(timeout).encode()) == LogonResult(timeout)


@given(st.sampled_from(ResponseCode), st.binary(max_size=40))
def test_response_round_trip(code: ResponseCode, data: bytes) -> None:
    body = data if code in (ResponseCode.OK, ResponseCode.RNO, ResponseCode.BSY) else b""
    assert decode_response(Response(code, body).encode()) == Response(code, body)


@given(
    st.integers(0, 0xFFFF),
    st.integers(1, 0xFFFFFF).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n - 1)).flatmap(
            lambda t: st.tuples(
                st.just(t[0]), st.just(t[1]), st.binary(min_size=1, max_size=min(64, t[0] - t[1]))
            )
        )
    ),
)
def test_segment_round_trip(seq: int, parts: tuple[int, int, bytes]) -> None:
    from amistack.c1222.segmentation import Segment

    seg = Segment(seq, *parts)
    assert Segment.decode(seg.encode()) == seg


@given(
    st.binary(max_size=24)
    | st.lists(st.integers(0, 2**70), min_size=1, max_size=5).map(
        lambda arcs: ber.encode_relative_oid(tuple(arcs))
    )
)
def test_relative_oid_fast_path_agrees_with_the_checking_decoder(value: bytes) -> None:
    # decode_relative_oid's lean loop must accept exactly what the checking decoder accepts
    try:
        expected: tuple[int, ...] | str = ber._decode_relative_oid_checked(value, 3)
    except C1222DecodeError as exc:
        expected = f"{exc.offset}:{exc.reason}"
    try:
        got: tuple[int, ...] | str = ber.decode_relative_oid(value, 3)
    except C1222DecodeError as exc:
        got = f"{exc.offset}:{exc.reason}"
    assert got == expected


@given(
    called=titles,
    calling=titles,
    inv=u32 | wide,
    called_inv=st.none() | u32 | wide | st.just(2**64),
    qualifier=st.none() | u32 | wide,
    services=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3),
    mode=st.sampled_from(SecurityMode),
    rc=st.sampled_from(ResponseControl),
    ed_class=st.none() | st.binary(min_size=4, max_size=4),
    key_id=st.integers(0, 255),
    iv=st.binary(min_size=4, max_size=4),
)
def test_one_pass_seal_is_protect_then_encode_byte_for_byte(
    called: ApTitle,
    calling: ApTitle,
    inv: int,
    called_inv: int | None,
    qualifier: int | None,
    services: list[bytes],
    mode: SecurityMode,
    rc: ResponseControl,
    ed_class: bytes | None,
    key_id: int,
    iv: bytes,
) -> None:
    """What the endpoints send (`seal`, one pass; in C when the extension is built, which
    declines ids past 64 bits) is what the reference builds (`protect` on a header, then
    `encode`), every header shape, id size and EPSEM size (short and long BER lengths)."""
    key = bytes(range(16))
    header = AcseMessage(
        b"",
        called_ap_title=called,
        calling_ap_title=calling,
        calling_ap_invocation_id=inv,
        called_ap_invocation_id=called_inv,
        calling_ae_qualifier=qualifier,
    )
    epsem = Epsem(tuple(services), mode, rc, ed_class)
    expected = protect(header, epsem, key, key_id, iv).encode()
    sealed = seal(
        called,
        calling,
        inv,
        services,
        mode,
        rc,
        key,
        key_id,
        iv,
        called_invocation_id=called_inv,
        calling_ae_qualifier=qualifier,
        ed_class=ed_class,
    )
    assert sealed == expected


def test_one_pass_seal_refuses_what_protect_refuses() -> None:
    title = ApTitle((0, 1), relative=True)
    args = (title, title, 1)
    mode, rc = SecurityMode.CIPHERTEXT_AUTH, ResponseControl.ALWAYS
    with pytest.raises(ValueError, match="non-empty"):
        seal(*args, [b""], mode, rc, bytes(16), 1, bytes(4))
    with pytest.raises(ValueError, match="ED class"):
        seal(*args, [b"\x30"], mode, rc, bytes(16), 1, bytes(4), ed_class=b"abc")
    with pytest.raises(ValueError, match="needs a key"):
        seal(*args, [b"\x30"], mode, rc, None)
    with pytest.raises(ValueError, match="IV"):
        seal(*args, [b"\x30"], mode, rc, bytes(16), 1, bytes(3))


_HEADER_FIELDS = (
    "called_ap_title",
    "calling_ap_title",
    "calling_ap_invocation_id",
    "called_ap_invocation_id",
    "calling_ae_qualifier",
)


def _assert_one_pass_decode_agrees(data: bytes) -> None:
    """Whatever the one-pass reader accepts, the general decoder decodes to the same message
    and EAX' cleartext (the reader declines anything else: the general decoder decides)."""
    try:
        general = AcseMessage._decode(data)  # also puts the AP titles in the title cache
    except C1222DecodeError:
        general = None
    fast = _decode_common(data)
    reference = acse._decode_common_py(data)  # the Python reader, which the C one mirrors
    if fast is None:  # the C reader leaves INTEGERs of 9 octets (from 2**63) to the general one
        assert (
            reference is None
            or max(
                reference.calling_ap_invocation_id or 0,
                reference.called_ap_invocation_id or 0,
                reference.calling_ae_qualifier or 0,
            )
            >= 2**63
        )
    else:
        assert reference == fast
        assert reference.canonical_cleartext() == fast.canonical_cleartext()
    if fast is not None:
        assert general is not None
        assert fast == general
        assert fast.canonical_cleartext() == general.canonical_cleartext()
    if general is None:
        with pytest.raises(C1222DecodeError):
            AcseMessage.decode(data)
        with pytest.raises(C1222DecodeError):
            decode_fields(data)  # what the engines read: the same refusal
    else:
        assert AcseMessage.decode(data) == general
        header = attrgetter(*_HEADER_FIELDS)(general)
        auth = (None, None) if general.auth is None else (general.auth.key_id, general.auth.iv)
        ui = general.user_information
        # what the engines read: the same fields
        assert decode_fields(data) == (*header, *auth, ui, general.canonical_cleartext())


@given(
    called=titles,
    calling=titles,
    inv=u32 | wide,
    called_inv=st.none() | u32 | wide,
    qualifier=st.none() | u32 | wide,
    service=st.binary(min_size=1, max_size=140),
    mode=st.sampled_from(SecurityMode),
    flip=st.none() | st.tuples(st.integers(0, 400), st.integers(1, 255)),
    cut=st.integers(0, 3),
)
def test_one_pass_decode_agrees_with_the_general_decoder(
    called: ApTitle,
    calling: ApTitle,
    inv: int,
    called_inv: int | None,
    qualifier: int | None,
    service: bytes,
    mode: SecurityMode,
    flip: tuple[int, int] | None,
    cut: int,
) -> None:
    data = bytearray(
        seal(
            called,
            calling,
            inv,
            [service],
            mode,
            ResponseControl.ALWAYS,
            bytes(16),
            3,
            b"\x01\x02\x03\x04",
            called_invocation_id=called_inv,
            calling_ae_qualifier=qualifier,
        )
    )
    _assert_one_pass_decode_agrees(bytes(data))
    narrow = max(inv, called_inv or 0, qualifier or 0) < 2**63  # 8 INTEGER octets at most
    if mode != SecurityMode.CLEARTEXT and len(data) < 2 + 0x80 and narrow:  # short forms
        assert _decode_common(bytes(data)) is not None  # what the endpoints send is read so
    if flip is not None:  # a damaged copy: the same verdict from both
        data[flip[0] % len(data)] ^= flip[1]
    _assert_one_pass_decode_agrees(bytes(data[: len(data) - cut]))


@given(messages)
def test_one_pass_decode_agrees_on_any_header(msg: AcseMessage) -> None:
    _assert_one_pass_decode_agrees(msg.encode())


@pytest.mark.parametrize("mode", [SecurityMode.CIPHERTEXT_AUTH, SecurityMode.CLEARTEXT_AUTH])
def test_every_epsem_size_authenticates_between_our_own_ends(mode: SecurityMode) -> None:
    """The cleartext ends at the EPSEM control byte whatever sizes the user-information
    header's three lengths take: it took `3 + 2 * (outer length size)` octets (Wireshark's
    rule), which for a service of 118 - 121 or 243 - 248 bytes reached into the encrypted body -
    zeros when sealing, the carried bytes when opening - and every such message failed."""
    title = ApTitle((0, 1), relative=True)
    key = bytes(range(16))
    for size in range(1, 400):
        service = b"\x00" + bytes(range(256))[: size - 1] * 2
        service = service[:size]
        wire = seal(title, title, 7, [service], mode, ResponseControl.ALWAYS, key, 1, b"\x00" * 4)
        opened = unprotect(AcseMessage.decode(wire), [key])
        assert opened.epsem.services == (service,), size


def test_the_one_pass_reader_never_takes_a_length_octet_of_0x80_or_more_as_short() -> None:
    """An APDU whose length octet is 0x80 (BER's indefinite form) or a long-form prefix is not
    the common layout, even where the octet's value equals the remaining size: the general
    decoder refuses it."""
    title = ApTitle((0, 1), relative=True)
    for size in range(100, 140):
        wire = seal(
            title,
            title,
            1,
            [bytes([0x40]) + bytes(size)],
            SecurityMode.CIPHERTEXT_AUTH,
            ResponseControl.ALWAYS,
            bytes(16),
            1,
            bytes(4),
        )
        AcseMessage.decode(wire)  # the title cache holds the title now
        if wire[1] == 0x81:  # 60 81 LL: rewritten as 60 LL with LL >= 0x80
            short = bytes([0x60, wire[2]]) + wire[3:]
            assert _decode_common(short) is None
            with pytest.raises(C1222DecodeError):
                AcseMessage.decode(short)
