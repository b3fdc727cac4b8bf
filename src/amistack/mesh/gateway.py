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
  calls (C12.22 relays route by ApTitle). The binding title -> meter (address, port) comes
  from C12.22's Registration service (c1222/registration.py): a meter's <register> leaving
  on flow F (EAX'-authenticated, readable: "cleartext with authentication") must name the
  meter's own calling title and F as its native address, else it is dropped; it is a *claim*
  that is *bound* once the head-end (the master relay) answers that very request on F with
  <ok>, for the <reg-period> the head-end granted. The head-end grants only what it
  authenticated under that meter's UKMF key, so a meter claiming another's title gets no
  binding. A head-end request larger than a datagram comes in segments: they are reassembled
  per source (bounded, timed out) to read the title, and relayed in segments again.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from amistack.addr import Addr, Eui64
from amistack.c1222.acse import APDU_TAG, AcseMessage, ApTitle
from amistack.c1222.epsem import MAC_LEN, Epsem, EpsemControl, SecurityMode
from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.registration import (
    REGISTRATION,
    Registration,
    RegistrationResult,
    parse_native_address,
)
from amistack.c1222.segmentation import SEGMENT_TAG, Reassembler, Segment, segment
from amistack.c1222.services import ResponseCode, decode_response
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
    "Binding",
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
# registrations awaiting the head-end's answer per flow (the oldest forgotten): more than one,
# so that a forger of the flow's source address cannot displace the genuine one with one
CLAIMS_PER_FLOW = 4


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
class Binding:
    """A registered meter's ApTitle bound to its flow until `expires` (the granted period)."""

    flow: Flow
    expires: float


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
        # flow -> the registrations it sent awaiting an answer: invocation id -> title
        self._claims: dict[Flow, OrderedDict[int, bytes]] = {}
        self.titles: OrderedDict[bytes, Binding] = OrderedDict()  # bound ApTitle -> meter
        # a head-end's segmented requests in reassembly, per WAN source (only peers get here)
        self._segments: dict[Addr, Reassembler] = {}

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
        if dst != self.paa and not self._claim(flow, udp.payload):
            return None
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

    def _claim(self, flow: Flow, payload: bytes) -> bool:
        """A C12.22 <register> leaving on `flow` claims its title for the flow; one that names
        another title than its sender's, or another address than the flow's, is dropped
        (False). Anything else passes and claims nothing."""
        found = _readable(payload, calling=True)
        if found is None or found[1][:1] != bytes([REGISTRATION]):
            return True
        msg, service = found
        try:
            request = Registration.decode(service)
        except C1222DecodeError:
            self.counters["c1222-registration-undecodable"] += 1
            return False
        sender = msg.calling_ap_title
        if sender is None or msg.calling_ap_invocation_id is None:
            self.counters["c1222-registration-undecodable"] += 1
            return False
        if not request.ap_title.same_node(sender):
            self.counters["c1222-registration-forged"] += 1  # registers a title not its own
            return False
        if parse_native_address(request.native_address) != flow:
            self.counters["c1222-registration-wrong-address"] += 1
            return False
        claims = self._claims.setdefault(flow, OrderedDict())
        claims[msg.calling_ap_invocation_id] = sender.device_id
        if len(claims) > CLAIMS_PER_FLOW:
            claims.popitem(last=False)
        self.counters["c1222-registration-out"] += 1
        return True

    def inbound(self, flow: Flow, payload: bytes, src: Addr, now: float) -> bytes | None:
        """A UDP datagram that came from `src` on the WAN socket of `flow`: the IPv6 packet
        to give the concentrator, or None (not from an allowed peer, or no such flow)."""
        if (src[0], src[1]) not in self.peers:
            self.counters["wan-in-not-allowed"] += 1
            return None
        if flow not in self.flows:
            self.counters["wan-in-no-flow"] += 1
            return None
        if (src[0], src[1]) != self.paa and flow in self._claims:
            self._confirm(flow, payload, src, now)
        self.counters["wan-in"] += 1
        return _udp_packet(src, flow, payload)

    def _confirm(self, flow: Flow, payload: bytes, src: Addr, now: float) -> None:
        """The head-end's answer on `flow` to a registration the flow claimed: <ok> binds the
        title to the flow for the granted period; anything else ends that claim. A
        segmented answer is read once whole (the segments pass on to the meter meanwhile)."""
        claims = self._claims[flow]
        if payload[:1] == bytes([SEGMENT_TAG]):
            whole = self._reassemble(payload, src, flow, now)
            if whole is None:
                return
            payload = whole
        found = _readable(payload, calling=False)
        if found is None:
            return
        msg, service = found
        called, invocation = msg.called_ap_title, msg.called_ap_invocation_id
        if called is None or invocation is None or claims.get(invocation) != called.device_id:
            return
        title = called.device_id
        del claims[invocation]
        if not claims:
            del self._claims[flow]
        try:
            response = decode_response(service)
            if response.code != ResponseCode.OK:
                self.counters["c1222-registration-refused"] += 1
                return
            result = RegistrationResult.decode(response.data)
        except C1222DecodeError:
            self.counters["c1222-registration-undecodable"] += 1
            return
        old = self.titles.pop(title, None)
        if old is None or old.flow != flow:
            self.counters["c1222-title-bound"] += 1
        self.titles[title] = Binding(flow, now + result.reg_period)
        if len(self.titles) > self.policy.max_titles:
            self.titles.popitem(last=False)

    def relay_in(self, payload: bytes, src: Addr, now: float) -> list[bytes]:
        """A datagram from `src` to the concentrator's C12.22 relay port: the IPv6 packets
        to the meter whose bound ApTitle it calls (a segment: once its APDU is whole, in
        segments again), or none (counted)."""
        if (src[0], src[1]) not in self.peers or (src[0], src[1]) == self.paa:
            self.counters["c1222-relay-not-allowed"] += 1
            return []
        if payload[:1] == bytes([SEGMENT_TAG]):
            return self._segment_in(payload, src, now)
        if payload[:1] != bytes([APDU_TAG]):
            self.counters["c1222-relay-not-acse"] += 1
            return []
        flow = self._bound(payload, now)
        if flow is None:
            return []
        self.counters["c1222-relayed-in"] += 1
        return [_udp_packet(src, flow, payload)]

    def _bound(self, apdu: bytes, now: float) -> Flow | None:
        """The flow of the meter whose live binding `apdu` calls (None: counted)."""
        title = _title(apdu, calling=False)
        if title is None:
            self.counters["c1222-relay-decode-error"] += 1
            return None
        binding = self.titles.get(title.device_id)
        if binding is not None and binding.expires <= now:
            del self.titles[title.device_id]
            self.counters["c1222-registration-expired"] += 1
            binding = None
        if binding is None:
            self.counters["c1222-unknown-title"] += 1
            return None
        return binding.flow

    def _segment_in(self, payload: bytes, src: Addr, now: float) -> list[bytes]:
        """A segment of a head-end's request (c1222/segmentation.py): held until its APDU is
        whole (`_reassemble`), then relayed to the bound meter in segments of at most
        `relay_segment` octets."""
        apdu = self._reassemble(payload, src, src, now)
        if apdu is None:
            return []
        if apdu[:1] != bytes([APDU_TAG]):
            self.counters["c1222-relay-not-acse"] += 1
            return []
        flow = self._bound(apdu, now)
        if flow is None:
            return []
        self.counters["c1222-relayed-in-segmented"] += 1
        parts = segment(apdu, Segment.decode(payload).apdu_seq, self.policy.relay_segment)
        return [_udp_packet(src, flow, part) for part in parts]

    def _reassemble(self, payload: bytes, src: Addr, key: Addr, now: float) -> bytes | None:
        """Segment `payload` from WAN `src` (of the APDUs `key` names: the relay port's, or a
        flow's) added to its reassembly: the APDU once whole, else None. Per source at most
        `segments_per_source` APDUs (the oldest dropped), each for `segment_timeout` s."""
        policy = self.policy
        reassembly = self._segments.get(src)
        if reassembly is None:
            reassembly = Reassembler(
                policy.segment_timeout, policy.max_segmented_apdu, policy.segments_per_source
            )
            self._segments[src] = reassembly
        timed_out = reassembly.expire(now)
        self.counters["c1222-segment-timeout"] += timed_out
        dropped = reassembly.dropped
        try:
            apdu = reassembly.receive(Segment.decode(payload), key, now)
        except C1222DecodeError:
            self.counters["c1222-segment-error"] += 1
            return None
        finally:
            self.counters["c1222-segment-evicted"] += reassembly.dropped - dropped - timed_out
        if apdu is None:
            self.counters["c1222-segment-held"] += 1
        return apdu


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


def _readable(payload: bytes, *, calling: bool) -> tuple[AcseMessage, bytes] | None:
    """An unsegmented C12.22 message whose EPSEM a relay can read (cleartext, or cleartext
    with authentication: the MAC only checked by the ends) and carries one service: the
    message and that service. None for anything else (a ciphertext one, a segment, noise)."""
    if payload[:1] != bytes([APDU_TAG]):
        return None
    try:
        msg = AcseMessage.decode(payload)
        ui = msg.user_information
        control = EpsemControl.decode(ui[0])
        if control.security_mode == SecurityMode.CIPHERTEXT_AUTH:
            return None
        body = ui[1:] if control.security_mode == SecurityMode.CLEARTEXT else ui[1:-MAC_LEN]
        epsem = Epsem.decode_body(control, body)
    except C1222DecodeError:
        return None
    title = msg.calling_ap_title if calling else msg.called_ap_title
    if title is None or len(epsem.services) != 1:
        return None
    return msg, epsem.services[0]


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
