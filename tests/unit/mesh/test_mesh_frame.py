"""IEEE 802.15.4 MAC frames: the Annex C frames decode and re-encode byte for byte, round trips
of every addressing combination, typed errors with offsets, fuzzing, the FCS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import load_vector

from amistack.addr import Eui64, PanId, ShortAddr
from amistack.crypto.ccm_star import CcmStar, SecurityLevel, ccm_star_nonce
from amistack.mesh.errors import MeshDecodeError, MeshFrameDecodeError
from amistack.mesh.frame import AuxSecurityHeader, Frame, FrameType, KeyIdMode, fcs

VECTORS = load_vector("ccm_star_802154.json")["vectors"]
A1 = Eui64.parse("acde480000000001")
A2 = Eui64.parse("acde480000000002")


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"][:5] for v in VECTORS])
def test_annex_c_frames_decode_and_decrypt(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["secured_frame"])
    frame = Frame.decode(raw)
    assert frame.encode() == raw
    assert frame.seq == 0x84 and frame.src == A1
    assert frame.source_pan == PanId(0xFFFF if frame.frame_type == FrameType.COMMAND else 0x4321)
    aux = frame.security
    assert aux is not None and aux.counter == 5 and aux.key_id_mode == KeyIdMode.IMPLICIT
    level = aux.level
    # the nonce and the authenticated data come out of the decoded header
    nonce = ccm_star_nonce(A1.value, aux.counter, level)
    assert nonce.hex() == v["nonce"]
    ccm = CcmStar(bytes.fromhex(v["key"]), level)
    aad = bytes.fromhex(v["aad"])
    assert aad.startswith(frame.header())
    open_part = aad[len(frame.header()) :]  # the command id; for MIC-only levels, all of it
    sealed = frame.payload[len(open_part) :]
    assert ccm.open(nonce, aad, sealed).hex() == v["plaintext"]
    if frame.frame_type == FrameType.DATA:  # C.2.2: addresses as printed in the annex
        assert frame.dst == A2 and frame.pan_id_compression and level == SecurityLevel.ENC
    if frame.frame_type == FrameType.COMMAND:  # C.2.3: no compression, broadcast source PAN
        assert frame.src_pan == PanId(0xFFFF) and frame.dst == A2 and frame.ack_request


addrs = st.one_of(
    st.none(),
    st.integers(0, 0xFFFF).map(ShortAddr),
    st.binary(min_size=8, max_size=8).map(Eui64),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    dst, src = draw(addrs), draw(addrs)
    compress = dst is not None and src is not None and draw(st.booleans())
    security = draw(
        st.one_of(
            st.none(),
            st.builds(
                AuxSecurityHeader,
                st.sampled_from(list(SecurityLevel)[1:]),
                st.integers(0, 0xFFFFFFFF),
                st.just(KeyIdMode.INDEX),
                st.integers(0, 255),
            ),
        )
    )
    return Frame(
        draw(st.sampled_from(list(FrameType))),
        draw(st.integers(0, 255)),
        None if dst is None else PanId(draw(st.integers(0, 0xFFFF))),
        dst,
        None if src is None or compress else PanId(draw(st.integers(0, 0xFFFF))),
        src,
        draw(st.binary(max_size=40)),
        security,
        compress,
        draw(st.booleans()),
        draw(st.booleans()),
    )


@given(frames())
def test_round_trip(frame: Frame) -> None:
    assert Frame.decode(frame.encode()) == frame


@given(st.binary(max_size=130))
def test_fuzz_decode_raises_only_the_typed_error(data: bytes) -> None:
    try:
        frame = Frame.decode(data)
    except MeshFrameDecodeError as exc:
        assert 0 <= exc.offset <= 130 and exc.reason
        return
    assert frame.encode() == data


@pytest.mark.parametrize(
    ("hexdata", "offset", "reason"),
    [
        ("41", 1, "shorter"),
        ("0780" + "00", 0, "reserved frame type"),
        ("8100" + "00", 0, "reserved frame control"),
        ("0104" + "00", 1, "reserved addressing mode"),
        ("0120" + "00", 1, "frame version 2"),
        ("41c8" + "00" + "3412", 5, "short address truncated"),
        ("41cc" + "00" + "3412" + "0100", 5, "extended address truncated"),
        ("4108" + "00" + "3412" + "0100", 0, "PAN ID compression without"),
        ("0990" + "00" + "3412" + "0100" + "0d", 7, "auxiliary security header truncated"),
        ("0990" + "00" + "3412" + "0100" + "2d00000000", 7, "reserved security control"),
        ("0990" + "00" + "3412" + "0100" + "0800000000", 7, "security level 0"),
        ("0990" + "00" + "3412" + "0100" + "0e00000000", 12, "key identifier truncated"),
        ("0990" + "00" + "3412" + "0100" + "0e", 7, "auxiliary security header truncated"),
        ("0900" + "00" + "0e0000000001", 3, "2003 frame"),
    ],
)
def test_malformed_frames_say_where_and_why(hexdata: str, offset: int, reason: str) -> None:
    with pytest.raises(MeshDecodeError) as err:
        Frame.decode(bytes.fromhex(hexdata))
    assert isinstance(err.value, MeshFrameDecodeError)
    assert err.value.offset == offset and reason in err.value.reason
    assert err.value.kind == "frame-malformed"


def test_oversized_frames_and_bad_fields() -> None:
    with pytest.raises(MeshFrameDecodeError):
        Frame.decode(b"\x41\x88" + bytes(130))
    with pytest.raises(ValueError):
        Frame(FrameType.DATA, 256)
    with pytest.raises(ValueError):
        Frame(FrameType.DATA, 1, dst=ShortAddr(1))  # no PAN id
    with pytest.raises(ValueError):
        Frame(FrameType.DATA, 1, PanId(1), ShortAddr(1), None, None, pan_id_compression=True)
    with pytest.raises(ValueError):
        AuxSecurityHeader(SecurityLevel.ENC_MIC_64, 1, KeyIdMode.SOURCE4, 1, b"")


def test_key_sources_round_trip_least_significant_octet_first() -> None:
    aux = AuxSecurityHeader(SecurityLevel.MIC_32, 7, KeyIdMode.SOURCE4, 3, b"\x01\x02\x03\x04")
    raw = aux.encode()
    assert raw == bytes.fromhex("11" + "07000000" + "04030201" + "03")
    assert AuxSecurityHeader.decode(raw, 0) == (aux, len(raw))


def test_fcs_is_the_itu_t_crc16() -> None:
    assert fcs(b"123456789") == (0x2189).to_bytes(2, "little")  # CRC-16/KERMIT check value
    assert fcs(b"") == b"\x00\x00"
