"""amistack.runtime: asyncio adapters that drive the sans-IO engines over real UDP sockets.

The only package (besides `sim/`) that touches sockets, clocks and the event loop. See
ARCHITECTURE.md. Heavier entry points (`meter.run_meter`, `keyserver.run_keyserver`) live in
their modules and import the protocol engines lazily; the benchmarks that drive them are in
`amistack.bench`.
"""

from amistack.runtime.loop import install_uvloop, is_uvloop, new_event_loop, uvloop_available
from amistack.runtime.pcap import PcapWriter, read_udp_pcap, udp_packet
from amistack.runtime.udp import Capture, EngineDriver, normalize_addr

__all__ = [
    "Capture",
    "EngineDriver",
    "PcapWriter",
    "install_uvloop",
    "is_uvloop",
    "new_event_loop",
    "normalize_addr",
    "read_udp_pcap",
    "udp_packet",
    "uvloop_available",
]
