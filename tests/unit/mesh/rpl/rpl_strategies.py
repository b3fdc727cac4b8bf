"""Hypothesis strategies for every RPL wire format (shared by the round-trip and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from amistack.mesh.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    DodagConfiguration,
    Pad1,
    PadN,
    PrefixInformation,
    RplMessage,
    RplOption,
    RplTarget,
    SolicitedInformation,
    TargetDescriptor,
    TransitInformation,
    UnknownOption,
)
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
addr = st.binary(min_size=16, max_size=16)


@st.composite
def targets(draw: st.DrawFn) -> RplTarget:
    plen = draw(st.integers(0, 128))
    used = (plen + 7) // 8
    prefix = draw(st.binary(min_size=used, max_size=used)) + bytes(16 - used)
    return RplTarget(prefix, plen)


options: st.SearchStrategy[RplOption] = st.one_of(
    st.just(Pad1()),
    st.builds(PadN, st.integers(0, 5)),
    st.builds(
        DodagConfiguration, st.booleans(), st.integers(0, 7), u8, u8, u8, u16, u16, u16, u8, u16
    ),
    targets(),
    st.builds(TransitInformation, u8, u8, u8, st.booleans(), st.none() | addr),
    st.builds(SolicitedInformation, u8, addr, u8, st.booleans(), st.booleans(), st.booleans()),
    st.builds(
        PrefixInformation,
        addr,
        st.integers(0, 128),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        u32,
        u32,
    ),
    st.builds(TargetDescriptor, u32),
    st.builds(UnknownOption, st.sampled_from([2, 3, 10, 0x7F, 0xFF]), st.binary(max_size=20)),
)
option_lists = st.lists(options, max_size=6).map(tuple)

messages: st.SearchStrategy[RplMessage] = st.one_of(
    st.builds(Dis, option_lists),
    st.builds(
        Dio,
        u8,
        u8,
        u16,
        addr,
        st.integers(0, 7),
        st.booleans(),
        st.integers(0, 7),
        u8,
        option_lists,
    ),
    st.builds(Dao, u8, u8, st.booleans(), st.none() | addr, option_lists),
    st.builds(DaoAck, u8, u8, u8, st.none() | addr, option_lists),
)

hop_options = st.builds(
    RplHopOption, u8, u16, st.booleans(), st.booleans(), st.booleans(), st.binary(max_size=8),
    st.sampled_from([0x63, 0x23]),
)  # fmt: skip


@st.composite
def source_routes(draw: st.DrawFn) -> tuple[bytes, SourceRoutingHeader]:
    """(IPv6 destination, SRH) whose addresses share a random-length prefix with it."""
    prefix = draw(st.binary(max_size=16))

    def one() -> bytes:
        return prefix + draw(st.binary(min_size=16 - len(prefix), max_size=16 - len(prefix)))

    dst = one()
    hops = tuple(
        one() if draw(st.booleans()) else draw(addr) for _ in range(draw(st.integers(1, 12)))
    )
    return dst, SourceRoutingHeader(hops, draw(st.integers(0, len(hops))), draw(u8))
