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

    def __post_init__(self) -> None:
        if not (self.relay_pci_rate > 0 and self.relay_pci_burst >= 1):
            raise ValueError("relay_pci_rate must be > 0 and relay_pci_burst >= 1")
        if min(self.max_relays, self.flows_per_source, self.max_titles) < 1:
            raise ValueError("max_relays, flows_per_source and max_titles must be >= 1")
