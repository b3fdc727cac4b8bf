"""Deterministic simulation: a virtual clock, the one drive loop, and media (virtual UDP, radio)
that carry the datagrams of sans-IO engines.

Nothing here sleeps or opens sockets; a whole fleet runs on one thread in simulated time.
"""

from amistack.sim.clock import SimulationStalled, TimerHandle, VirtualClock
from amistack.sim.drive import Host
from amistack.sim.medium import Delivery, LinkStats, Medium
from amistack.sim.network import LinkConfig, Network, UdpMedium, VirtualNetwork

__all__ = [
    "Delivery",
    "Host",
    "LinkConfig",
    "LinkStats",
    "Medium",
    "Network",
    "SimulationStalled",
    "TimerHandle",
    "UdpMedium",
    "VirtualClock",
    "VirtualNetwork",
]
