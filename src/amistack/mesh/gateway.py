"""The concentrator's UDP gateway between the mesh and a real WAN (sans-IO).

In the simulation the WAN is virtual and speaks IPv6 (`mesh.wan.Ipv6Host`). A concentrator
process (runtime/concentrator.py) has a real UDP network behind it instead: `UdpGateway` lets the
mesh's IPv6 packets for an allowed WAN peer leave as plain UDP payloads, one flow per meter
(address, port) so each answer finds its meter (a NAPT: RFC 4787's endpoint-independent
mapping), and turns the answers back into IPv6 packets from the peer's mesh-side address. An
IPv4 peer has the mesh-side address of RFC 6052's well-known prefix 64:ff9b::/96 (NAT64): the
meters address the key server at 127.0.0.1 as 64:ff9b::7f00:1.

`JoinWatch` is the report part: every PANA-Relay exchange between the mesh and the key server
passes this gateway, so the border router learns which device each joined node is (the EAP-PSK
identity a PaC gave, kept once the PAA answered that PaC with PANA success) for the topology
report it sends the head-end (runtime/concentrator.py `dodag_report`).

Beyond its peer list the border enforces (`BorderPolicy`; docs/mesh.md, "The border"):

- **Source addresses.** With `known_source`, a packet leaves only from an address the root
  knows (its own, or a DAO target of its DODAG): an insider cannot mint identities.
- **Flows per source.** At most `flows_per_source` WAN flows per mesh address, so one meter
  cannot take the NAPT's table (evicting the others' flows) by changing its UDP port.
- **PANA to the PAA, per relaying meter.** What the mesh sends to the key server (`paa`) must
  be a PRY (meters reach the PAA through their parent's relay, never directly), and relayed
  PCIs are rate-limited per PRY source: the meter that wrapped them (RFC 6345 relays never
  wrap a PRY again, so its IPv6 source is the innermost relay). One relay flooding PCIs for
  fake PaCs is throttled while the others go on; the key server, which sees the whole mesh as
  one relay (this host), gets at most `relay_pci_rate` PCIs per second from each meter.
- **C12.22 relay by ApTitle** (`relay_in`), so the head-end can start a read: a C12.22
  message from a peer to the concentrator's relay port goes to the meter whose ApTitle it
  calls (C12.22 relays route by ApTitle). The binding title -> meter (address, port) is
  learned from the meter's own traffic and confirmed by the head-end: a C12.22 message
  leaving the mesh on flow F claims its calling-AP-title for F, and the claim is bound once
  a peer's message back on F calls that title. The head-end answers only what it
  authenticated under that meter's key, so a meter claiming another's title gets no binding.
  A meshed meter registers by sending the head-end one C12.22 Identify when it joins
  (meter/registration.py).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from amistack.addr import Addr, Eui64
from amistack.c1222.acse import APDU_TAG, AcseMessage, ApTitle
from amistack.c1222.errors import C1222DecodeError
from amistack.eap.packet import EapCode, EapDecodeError, EapPacket, EapType
from amistack.eap.psk import PskSecond
from amistack.mesh.border import BorderPolicy
from amistack.mesh.errors import MeshDecodeError
from amistack.mesh.ipv6 import NEXT_HEADER_UDP, Ipv6Packet, UdpDatagram
from amistack.pana.constants import AvpCode, MessageType, ResultCode
from amistack.pana.errors import PanaDecodeError
from amistack.pana.message import PanaMessage
from amistack.pana.relay import unwrap_relay
from amistack.ratelimit import KeyedBuckets

__all__ = [
    "NAT64_PREFIX",
    "BorderPolicy",
    "Flow",
    "JoinWatch",
    "UdpGateway",
    "WanDatagram",
    "mesh_side",
    "wan_side",
]

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1, the well-known prefix
DEFAULT_MAX_FLOWS = 1024  # meter (address, port) pairs with a WAN flow at one time


def mesh_side(host: str) -> str:
    """The address the mesh reaches a WAN host at: an IPv6 literal as it is, an IPv4 one
    embedded in 64:ff9b::/96 (RFC 6052 §2.2)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv6Address(int(NAT64_PREFIX.network_address) | int(ip)))
    return str(ip)


def wan_side(ip: ipaddress.IPv6Address) -> str:
    """The inverse of `mesh_side`."""
    if ip in NAT64_PREFIX:
        return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return str(ip)


Flow = tuple[str, int]  # a meter's (IPv6 literal, UDP port) inside the mesh


@dataclass(frozen=True)
class WanDatagram:
    """What the driver sends: `payload` to `dst` on the WAN from the socket of `flow`."""

    flow: Flow
    payload: bytes
    dst: Addr


class UdpGateway:
    """The concentrator's UDP translation between the mesh and a real WAN (module docstring).
    `peers`: the WAN (host, port)s the mesh may reach (the key server, the head-end); anything
    else is counted and dropped, so the border router is no open relay. `paa`: which peer is
    the key server (PANA policy); `policy`: the border's limits; `known_source(ip)`: whether
    the root knows a mesh address (None: every address may send)."""

    def __init__(
        self,
        peers: Iterable[Addr],
        max_flows: int = DEFAULT_MAX_FLOWS,
        *,
        paa: Addr | None = None,
        policy: BorderPolicy | None = None,
        known_source: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.peers = frozenset(_wan(h, p) for h, p in peers)
        self.paa = None if paa is None else _wan(*paa)
        self.policy = policy or BorderPolicy()
        self.known_source = known_source
        self.max_flows = max_flows
        self.flows: OrderedDict[Flow, None] = OrderedDict()  # least recently used first
        self.evicted: list[Flow] = []  # flows the driver should close
        self.counters: Counter[str] = Counter()
        self._flows_of: Counter[str] = Counter()  # WAN flows per mesh address
        self._relay_pcis = KeyedBuckets(
            self.policy.relay_pci_rate, self.policy.relay_pci_burst, self.policy.max_relays
        )
        self._claims: dict[Flow, bytes] = {}  # flow -> the ApTitle its C12.22 claimed
        self.titles: OrderedDict[bytes, Flow] = OrderedDict()  # bound ApTitle -> meter

    def outbound(self, data: bytes, now: float) -> WanDatagram | None:
        """An IPv6 packet the mesh sent to the WAN."""
        try:
            packet = Ipv6Packet.decode(data)
            if packet.next_header != NEXT_HEADER_UDP:
                self.counters["wan-not-udp"] += 1
                return None
            udp = UdpDatagram.decode(packet)
        except MeshDecodeError:
            self.counters["wan-decode-error"] += 1
            return None
        if self.known_source is not None and not self.known_source(packet.src.packed):
            self.counters["wan-unknown-source"] += 1
            return None
        dst = (wan_side(packet.dst), udp.dst_port)
        if dst not in self.peers:
            self.counters["wan-not-allowed"] += 1
            return None
        if dst == self.paa and not self._pana_allowed(str(packet.src), udp.payload, now):
            return None
        flow = (str(packet.src), udp.src_port)
        if flow in self.flows:
            self.flows.move_to_end(flow)
        elif not self._new_flow(flow):
            return None
        if dst != self.paa:
            self._claim(flow, udp.payload)
        self.counters["wan-out"] += 1
        return WanDatagram(flow, udp.payload, dst)

    def _new_flow(self, flow: Flow) -> bool:
        if self._flows_of[flow[0]] >= self.policy.flows_per_source:
            self.counters["wan-flow-source-limit"] += 1
            return False
        self.flows[flow] = None
        self._flows_of[flow[0]] += 1
        if len(self.flows) > self.max_flows:
            old = self.flows.popitem(last=False)[0]
            self._flows_of[old[0]] -= 1
            if self._flows_of[old[0]] <= 0:
                del self._flows_of[old[0]]
            self._claims.pop(old, None)
            self.evicted.append(old)
            self.counters["wan-flow-evicted"] += 1
        return True

    def _pana_allowed(self, relay: str, payload: bytes, now: float) -> bool:
        """PANA from the mesh to the PAA: a PRY, and a relayed PCI only within its relay's
        bucket (module docstring)."""
        try:
            msg = PanaMessage.decode(payload)
            if msg.msg_type != MessageType.RELAY:
                self.counters["wan-pana-not-relayed"] += 1
                return False
            inner = PanaMessage.decode(unwrap_relay(msg)[1])
        except PanaDecodeError:
            self.counters["wan-pana-decode-error"] += 1
            return False
        if inner.msg_type == MessageType.PCI:
            if not self._relay_pcis.allow(relay, now):
                self.counters["relay-pci-limited"] += 1
                return False
            self.counters["relay-pci-out"] += 1
        return True

    def _claim(self, flow: Flow, payload: bytes) -> None:
        """A C12.22 message leaving on `flow` claims its calling-AP-title for it."""
        title = _title(payload, calling=True)
        if title is not None:
            self._claims[flow] = title.device_id

    def inbound(self, flow: Flow, payload: bytes, src: Addr) -> bytes | None:
        """A UDP datagram that came from `src` on the WAN socket of `flow`: the IPv6 packet
        to give the concentrator, or None (not from an allowed peer, or no such flow)."""
        if (src[0], src[1]) not in self.peers:
            self.counters["wan-in-not-allowed"] += 1
            return None
        if flow not in self.flows:
            self.counters["wan-in-no-flow"] += 1
            return None
        if (src[0], src[1]) != self.paa:
            self._confirm(flow, payload)
        self.counters["wan-in"] += 1
        return _udp_packet(src, flow, payload)

    def _confirm(self, flow: Flow, payload: bytes) -> None:
        """A peer's C12.22 message back on `flow` that calls the title the flow claimed binds
        that title to the flow (module docstring)."""
        claimed = self._claims.get(flow)
        if claimed is None:
            return
        title = _title(payload, calling=False)
        if title is None or title.device_id != claimed:
            return
        if self.titles.get(claimed) != flow:
            self.counters["c1222-title-bound"] += 1
        self.titles[claimed] = flow
        self.titles.move_to_end(claimed)
        if len(self.titles) > self.policy.max_titles:
            self.titles.popitem(last=False)

    def relay_in(self, payload: bytes, src: Addr) -> bytes | None:
        """A datagram from `src` to the concentrator's C12.22 relay port: the IPv6 packet to
        the meter whose bound ApTitle it calls, or None (counted)."""
        if (src[0], src[1]) not in self.peers or (src[0], src[1]) == self.paa:
            self.counters["c1222-relay-not-allowed"] += 1
            return None
        if payload[:1] != bytes([APDU_TAG]):  # a segment names no title: not relayed
            self.counters["c1222-relay-not-acse"] += 1
            return None
        title = _title(payload, calling=False)
        if title is None:
            self.counters["c1222-relay-decode-error"] += 1
            return None
        flow = self.titles.get(title.device_id)
        if flow is None:
            self.counters["c1222-unknown-title"] += 1
            return None
        self.counters["c1222-relayed-in"] += 1
        return _udp_packet(src, flow, payload)


MAX_DEVICE_ID = 255  # octets, as the key server's (keymgmt.store.MAX_DEVICE_ID)
DEFAULT_MAX_JOINS = 10_000  # nodes whose identity is remembered (a DODAG report holds 5,000)


class JoinWatch:
    """Which device each node that joined through this border router is (module docstring):
    `claimed` from the EAP-PSK second message (RFC 4764 §3.1: ID_P travels in the clear)
    inside a PANA-Relay (RFC 6345) to the PAA, `joined` once the PAA relays a PANA-Auth-Request
    with Result-Code PANA_SUCCESS (RFC 5191 §8.7) to that PaC. The PaC is named by the EUI-64
    of its link-local address in the PRY's PaC-Information. Watching changes nothing: the
    datagrams pass as they were; what does not parse is counted and ignored. Bounded: the
    least recently joined are forgotten past `max_nodes`."""

    def __init__(self, paa: Addr, max_nodes: int = DEFAULT_MAX_JOINS) -> None:
        self.paa = (wan_side(ipaddress.IPv6Address(mesh_side(paa[0]))), paa[1])
        self.max_nodes = max_nodes
        self._claimed: OrderedDict[Eui64, str] = OrderedDict()
        self.joined: OrderedDict[Eui64, str] = OrderedDict()
        self.counters: Counter[str] = Counter()

    def outbound(self, datagram: WanDatagram) -> None:
        """A datagram the gateway sends to the WAN."""
        if datagram.dst != self.paa:
            return
        relayed = self._relayed(datagram.payload)
        if relayed is None:
            return
        pac, msg = relayed
        eap = msg.octets(AvpCode.EAP_PAYLOAD)
        if eap is None:
            return
        try:
            packet = EapPacket.decode(eap)
            if packet.code != EapCode.RESPONSE or packet.type != EapType.PSK:
                return
            if not packet.type_data or packet.type_data[0] >> 6 != 1:  # T=1: message 2
                return
            id_p = PskSecond.decode(packet.type_data).id_p.decode("utf-8")
        except (EapDecodeError, UnicodeDecodeError):
            self.counters["join-watch-undecodable"] += 1
            return
        if not (1 <= len(id_p.encode()) <= MAX_DEVICE_ID and id_p.isprintable()):
            self.counters["join-watch-bad-identity"] += 1
            return
        self._remember(self._claimed, pac, id_p)

    def inbound(self, payload: bytes, src: Addr) -> None:
        """A datagram that came from the WAN (before the gateway turns it into IPv6)."""
        if (src[0], src[1]) != self.paa:
            return
        relayed = self._relayed(payload)
        if relayed is None:
            return
        pac, msg = relayed
        if msg.msg_type != MessageType.AUTH or not msg.is_request:
            return
        result = msg.u32(AvpCode.RESULT_CODE)
        claimed = self._claimed.get(pac)
        if result is None or claimed is None:
            return
        if result == ResultCode.PANA_SUCCESS:
            self._remember(self.joined, pac, claimed)
            self.counters["join-watch-joined"] += 1
        else:
            self.joined.pop(pac, None)  # refused now: not who it was
        del self._claimed[pac]

    def _relayed(self, payload: bytes) -> tuple[Eui64, PanaMessage] | None:
        try:
            outer = PanaMessage.decode(payload)
            if outer.msg_type != MessageType.RELAY:
                return None
            (host, _port), inner = unwrap_relay(outer)
            msg = PanaMessage.decode(inner)
            iid = ipaddress.IPv6Address(host.split("%", 1)[0]).packed[8:]
        except (PanaDecodeError, ValueError):
            self.counters["join-watch-undecodable"] += 1
            return None
        return Eui64.from_interface_id(iid), msg

    def _remember(self, table: OrderedDict[Eui64, str], pac: Eui64, device: str) -> None:
        table[pac] = device
        table.move_to_end(pac)
        while len(table) > self.max_nodes:
            table.popitem(last=False)


def _wan(host: str, port: int) -> Addr:
    """A peer as the WAN sockets name it (an IPv4 one as IPv4, an IPv6 one normalised)."""
    return (wan_side(ipaddress.IPv6Address(mesh_side(host))), port)


def _udp_packet(src: Addr, flow: Flow, payload: bytes) -> bytes:
    """`payload` from WAN `src` to the meter of `flow`, as an IPv6 packet for the DODAG."""
    src_ip = ipaddress.IPv6Address(mesh_side(src[0]))
    dst_ip = ipaddress.IPv6Address(flow[0])
    udp = UdpDatagram(src[1], flow[1], payload).encode(src_ip, dst_ip)
    return Ipv6Packet(src_ip, dst_ip, NEXT_HEADER_UDP, udp).encode()


def _title(payload: bytes, *, calling: bool) -> ApTitle | None:
    """The calling (or called) AP title of an unsegmented C12.22 message, None if there is
    none or the message does not decode."""
    if payload[:1] != bytes([APDU_TAG]):
        return None
    try:
        msg = AcseMessage.decode(payload)
    except C1222DecodeError:
        return None
    return msg.calling_ap_title if calling else msg.called_ap_title
