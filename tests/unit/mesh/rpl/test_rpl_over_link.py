"""RPL over the real link layer: `Packet.to_ipv6()/from_ipv6()` round trips, and RPL nodes whose
packets go through `mesh.link.MeshLink` (6LoWPAN, secured 802.15.4 frames, ACKs and retries
feeding ETX) on the simulated radio, driven by `sim.Network`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.mesh.rpl.rpl_strategies import hop_options, source_routes

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import seeded_random
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.link import MeshLink, Transmitted
from amistack.mesh.rpl.config import RplConfig
from amistack.mesh.rpl.errors import RplDecodeError
from amistack.mesh.rpl.events import DataReceived, RplEvent
from amistack.mesh.rpl.messages import PrefixInformation
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX, Packet
from amistack.mesh.rpl.srh import RplHopOption, SourceRoutingHeader
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.sim import Network
from amistack.sim.radio import BROADCAST, RadioMedium, UnitDisk

PAN = PanId(0xFACE)
GROUP_KEY = bytes(range(16))
PREFIX = bytes.fromhex("20010db8000000000000000000000000")


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=40),
    st.sampled_from([17, 58, 59]),
    st.none() | hop_options.filter(lambda o: len(o.sub_tlvs) == 0),
    st.none() | source_routes(),
)
def test_packets_round_trip_through_ipv6(
    src: bytes,
    payload: bytes,
    next_header: int,
    option: RplHopOption | None,
    route: tuple[bytes, SourceRoutingHeader] | None,
) -> None:
    dst, srh = route if route is not None else (bytes(15) + b"\x01", None)
    if srh is not None:
        srh = SourceRoutingHeader(srh.addresses, srh.segments_left, next_header)
    packet = Packet(src, dst, payload, next_header, 17, option, srh)
    wire = packet.to_ipv6().encode()
    assert Packet.from_ipv6(Ipv6Packet.decode(wire)) == packet


def test_a_broken_extension_header_is_a_typed_error_with_its_offset() -> None:
    packet = Packet(PREFIX, PREFIX, b"", 59, 64, RplHopOption(0, 256)).to_ipv6()
    broken = Ipv6Packet(
        packet.src, packet.dst, 0, packet.payload[:1] + b"\x07" + packet.payload[2:]
    )
    try:
        Packet.from_ipv6(broken)
    except RplDecodeError as exc:
        assert exc.offset == 40 + 1 and "runs past" in exc.reason
    else:
        raise AssertionError("a Hop-by-Hop header longer than the packet was accepted")


def eui(i: int) -> Eui64:
    return Eui64(bytes([2, 0, 0, 0, 0, 0, 0, i + 1]))


def ll_of(e: Eui64) -> bytes:
    return LINK_LOCAL_PREFIX + e.interface_id()


class RplMeshNode:
    """A test engine of the sim's shape: RPL above, MeshLink below, the radio beneath."""

    def __init__(self, i: int, config: RplConfig) -> None:
        self.eui = eui(i)
        security = LinkSecurity(self.eui, MemoryCounterStore())
        security.install_key(1, GROUP_KEY)
        self.link = MeshLink(security, PAN, seeded_random(100 + i))
        root = PrefixInformation(PREFIX, 64) if i == 0 else None
        self.rpl = RplNode(ll_of(self.eui), config, seeded_random(i), root_prefix=root)
        self.rpl.start(0.0)
        self.dropped = 0

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        got = self.link.receive(data, now)
        if got is None or not isinstance(got.src, Eui64):
            return
        try:
            packet = Packet.from_ipv6(got.packet)
        except RplDecodeError:
            self.dropped += 1
            return
        self.rpl.receive_packet(packet, ll_of(got.src), now)

    def _pump(self, now: float) -> None:
        for tx in self.rpl.transmissions():
            hop = None if tx.next_hop is None else Eui64.from_interface_id(tx.next_hop[8:])
            self.link.send(tx.packet.to_ipv6(), hop)
        while (event := self.link.next_event()) is not None:
            assert isinstance(event, Transmitted)
            neighbor = ll_of(event.next_hop)
            self.rpl.record_transmission(neighbor, event.attempts, event.acked, now)
            if not event.acked:
                self.rpl.neighbor_unreachable(neighbor, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._pump(now)
        return [(frame, BROADCAST) for frame, _ in self.link.frames_to_send(now)]

    def get_timer(self) -> float | None:
        times = [t for t in (self.rpl.get_timer(), self.link.get_timer()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        when = self.link.get_timer()
        if when is not None and when <= now:
            self.link.handle_timer(now)
        when = self.rpl.get_timer()
        if when is not None and when <= now:
            self.rpl.handle_timer(now)

    def next_event(self) -> RplEvent | None:
        return self.rpl.next_event()


def test_a_line_forms_over_secured_frames_and_the_root_reaches_the_end() -> None:
    medium = RadioMedium(UnitDisk(100.0, loss=0.05), seed=4)
    net = Network(medium)
    nodes = []
    for i in range(6):
        node = RplMeshNode(i, RplConfig(dao_ack_timeout=2.0))
        addr: Addr = (str(node.eui.link_local()), 0)
        medium.place(addr, 80.0 * i, 0.0)
        net.add_node(addr, node)
        nodes.append((addr, node))
    net.run_until(120.0)
    root = nodes[0][1].rpl
    assert all(node.rpl.joined for _, node in nodes)
    ranks = [node.rpl.rank for _, node in nodes]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)  # a line: one hop each
    far = nodes[-1][1].rpl
    assert far.global_address is not None
    assert root.source_route(far.global_address) is not None
    net.call_at(
        net.now, nodes[0][0], lambda now: root.send(far.global_address or b"", b"read", now)
    )
    net.run_until(net.now + 10.0)
    received = [e for e in net.events_of(nodes[-1][0], DataReceived) if e.payload == b"read"]
    assert received and received[0].src == root.global_address
    # MeshLink refuses unsecured frames unless told otherwise: all of this ran under CCM*
    assert nodes[-1][1].link.counters["packets-received"] > 0 and nodes[-1][1].dropped == 0
