"""A test engine around MeshLink and a line of them on the simulated radio (for the unit tests
and the tshark interop test)."""

from __future__ import annotations

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import seeded_random
from amistack.mesh.frame import Frame, FrameType
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.link import MeshLink, Received
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.sim import Network
from amistack.sim.radio import BROADCAST, RadioMedium, UnitDisk

PAN = PanId(0xFACE)
GROUP_KEY = bytes(range(16))


class LinkNode:
    """A test engine: a MeshLink that sends what it is told and keeps what it receives."""

    def __init__(self, eui: Eui64, key: bytes = GROUP_KEY, seed: int = 1) -> None:
        sec = LinkSecurity(eui, MemoryCounterStore())
        sec.install_key(1, key)
        self.link = MeshLink(sec, PAN, seeded_random(seed))
        self.eui = eui
        self.got: list[Received] = []
        self.out: list[tuple[bytes, Addr]] = []
        self.allow_unsecured = False

    def send(self, packet: Ipv6Packet, next_hop: Eui64 | None, secure: bool = True) -> None:
        self.link.send(packet, next_hop, secure)

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None:
        got = self.link.receive(data, now, self.allow_unsecured)
        if got is not None:
            self.got.append(got)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.out = self.out, []
        frames = self.link.frames_to_send(now)
        return out + [(f, BROADCAST) for f, _ in frames]  # the radio: every neighbour hears it

    def get_timer(self) -> float | None:
        return self.link.get_timer()

    def handle_timer(self, now: float) -> None:
        self.link.handle_timer(now)

    def next_event(self) -> object | None:
        return self.link.next_event()


def all_frames(
    link: MeshLink, packet: Ipv6Packet, hop: Eui64 | None, secure: bool = True
) -> list[bytes]:
    """Every frame `link` sends for `packet`, each unicast one acknowledged at once."""
    link.send(packet, hop, secure)
    out: list[bytes] = []
    while batch := link.frames_to_send(0.0):
        for frame, dst in batch:
            out.append(frame)
            if dst is not None:
                link.receive(Frame(FrameType.ACK, Frame.decode(frame).seq).encode(), 0.0)
    return out


def radio_addr(eui: Eui64) -> Addr:
    return (str(eui.link_local()), 0)


def mesh(
    xs: list[float], loss: float = 0.0, collisions: bool = False
) -> tuple[Network[RadioMedium], list[LinkNode]]:
    """Nodes 02:..:01, 02:..:02, ... at the positions `xs` on a line (100 m radio range)."""
    medium = RadioMedium(UnitDisk(100.0, loss=loss), seed=3, collisions=collisions)
    net = Network(medium, capture=1000)
    nodes = []
    for i, x in enumerate(xs):
        eui = Eui64(bytes([2, 0, 0, 0, 0, 0, 0, i + 1]))
        node = LinkNode(eui, seed=i)
        medium.place(radio_addr(eui), x, 0.0)
        net.add_node(radio_addr(eui), node)
        nodes.append(node)
    return net, nodes
