"""The concentrator's border limits (`mesh.gateway.UdpGateway` enforces them; here alone so
that the command line can name their defaults without loading the protocol stacks)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BorderPolicy"]


@dataclass(frozen=True)
class BorderPolicy:
    """The border's limits beyond its peer list (module docstring)."""

    relay_pci_rate: float = 1.0  # relayed PCIs per second per relaying meter (ours)
    relay_pci_burst: float = 8.0  # a relay's newcomers joining at once
    max_relays: int = 1024  # relaying meters with a bucket at one time (LRU)
    flows_per_source: int = 8  # WAN flows per mesh address
    max_titles: int = 4096  # C12.22 ApTitles bound to a meter (LRU)
    # The C12.22 relay's reassembly of a head-end's segmented request (docs/mesh.md): per
    # WAN source at most this many APDUs in reassembly (the oldest dropped), each at most
    # `max_segmented_apdu` octets and `segment_timeout` seconds; relayed down the DODAG in
    # segments of at most `relay_segment` octets, so that with the root's source-routing
    # header (RFC 6554) the packet still fits the 1280-octet MTU.
    segments_per_source: int = 8
    max_segmented_apdu: int = 1 << 16
    segment_timeout: float = 30.0
    relay_segment: int = 1024

    def __post_init__(self) -> None:
        if not (self.relay_pci_rate > 0 and self.relay_pci_burst >= 1):
            raise ValueError("relay_pci_rate must be > 0 and relay_pci_burst >= 1")
        if min(self.max_relays, self.flows_per_source, self.max_titles) < 1:
            raise ValueError("max_relays, flows_per_source and max_titles must be >= 1")
        if self.segments_per_source < 1 or self.segment_timeout <= 0:
            raise ValueError("segments_per_source must be >= 1 and segment_timeout > 0")
        if not 64 <= self.relay_segment <= self.max_segmented_apdu:
            raise ValueError("relay_segment must be 64 octets or more, within the APDU limit")
