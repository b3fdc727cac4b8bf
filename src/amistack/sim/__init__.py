"""Deterministic simulation: a virtual clock and a virtual network that drive sans-IO engines.

Nothing here sleeps or opens sockets; a whole fleet runs on one thread in simulated time.
"""

from amistack.sim.clock import SimulationStalled, TimerHandle, VirtualClock
from amistack.sim.network import LinkConfig, SimEngine, VirtualNetwork

__all__ = [
    "LinkConfig",
    "SimEngine",
    "SimulationStalled",
    "TimerHandle",
    "VirtualClock",
    "VirtualNetwork",
]
