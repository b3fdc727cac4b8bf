"""A compromised meter as a process, for tests/scenario/test_mesh_flood_processes.py: it joins
the mesh as any meter does (it holds its own PSK, so it gets the group key and becomes a
relay), then wraps PANA-Client-Initiations for thousands of fake PaCs in PANA-Relay messages
from its own address to the key server, RATE a second. The frames are secured under the group
key, as any member can, but come from a made-up EUI-64 of a second link with a counter of its
own, broadcast (no acknowledgements, no retries): its real link's pacing does not slow it.
It prints `rogue: relaying` when it starts and `rogue: sent N` when done, then waits for
SIGTERM.

    python tests/scenario/mesh_rogue.py ID PSK_HEX KS_HOST:PORT RADIO_PORT NEIGHBOUR_PORT DIR
        COUNT RATE
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
from pathlib import Path

from amistack.addr import Addr, Eui64, PanId
from amistack.crypto import system_random
from amistack.eap.psk import PskKeys
from amistack.mesh.gateway import mesh_side
from amistack.mesh.groupkeys import apply_group_keys
from amistack.mesh.ipv6 import UdpDatagram
from amistack.mesh.link import MeshLink
from amistack.mesh.node import MeshNode, RelayReady
from amistack.mesh.rpl.node import RplNode
from amistack.mesh.rpl.packet import LINK_LOCAL_PREFIX
from amistack.mesh.security import LinkSecurity, MemoryCounterStore
from amistack.pana.constants import PANA_PORT, MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.pac import PacConfig
from amistack.pana.relay import wrap_relay
from amistack.runtime.mesh import RadioEngine, counter_store, eui_for, mesh_rpl_config
from amistack.runtime.meter import build_pac
from amistack.runtime.udp import EngineDriver
from amistack.sim.mesh import MESH_PCI_RETRANSMIT, MESH_REQ_RETRANSMIT

PAN = 0xFACE
BATCH = 8  # PRYs per burst: two frames each, within the link's queue of 64
SYBIL = Eui64(bytes.fromhex("02bad0000000beef"))


class WithExtraFrames(RadioEngine):
    """The meter's radio engine, plus frames the attacker makes up (`extra`), sent to every
    neighbour at the next flush."""

    extra: list[bytes]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = super().datagrams_to_send(now)
        out += [(frame, n) for frame in self.extra for n in self.neighbours or ()]
        self.extra = []
        return out


async def main(argv: list[str]) -> None:
    device, psk_hex, ks_text, radio, neighbour, data_dir, count, rate = argv
    ks_host, _, ks_port = ks_text.rpartition(":")
    keyserver = (mesh_side(ks_host), int(ks_port))
    eui = eui_for(device)
    link = MeshLink(LinkSecurity(eui, counter_store(Path(data_dir))), PanId(PAN), system_random)
    rpl = RplNode(LINK_LOCAL_PREFIX + eui.interface_id(), mesh_rpl_config(), system_random)
    pac_config = PacConfig(pci_retransmit=MESH_PCI_RETRANSMIT, req_retransmit=MESH_REQ_RETRANSMIT)
    keys = PskKeys(bytes.fromhex(psk_hex))
    node = MeshNode(
        link,
        rpl,
        keyserver,
        system_random,
        new_pac=lambda parent: build_pac(device, keys, parent, system_random, pac_config),
    )
    parent: Addr = ("127.0.0.1", int(neighbour))
    rogue = WithExtraFrames(node, [parent])
    rogue.extra = []
    sybil = MeshLink(LinkSecurity(SYBIL, MemoryCounterStore()), PanId(PAN), system_random)
    joined = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def event(ev: object) -> None:
        if isinstance(ev, RelayReady):
            joined.set()

    async with EngineDriver(rogue, on_event=event) as driver:
        await driver.bind("127.0.0.1", int(radio))
        node.start(driver.now())
        driver.kick()
        await joined.wait()
        print("rogue: relaying", flush=True)
        apply_group_keys(sybil, node.group_keys.held(), driver.now())
        pci = PanaMessage(MessageType.PCI, 0, 0, 0, ()).encode()
        base = int(ipaddress.IPv6Address("fe80::"))
        ks_ip = ipaddress.IPv6Address(keyserver[0])
        assert node.global_address is not None
        own = ipaddress.IPv6Address(node.global_address)
        sent = 0
        while sent < int(count) and not stop.is_set():
            for _ in range(BATCH):
                sent += 1
                fake = (str(ipaddress.IPv6Address(base + sent)), PANA_PORT)
                pry = UdpDatagram(PANA_PORT, keyserver[1], wrap_relay(fake, pci))
                sybil.send(pry.packet(own, ks_ip), None)
            rogue.extra += [frame for frame, _ in sybil.frames_to_send(driver.now())]
            driver.kick()
            await asyncio.sleep(BATCH / float(rate))
        print(f"rogue: sent {sent} counters {dict(sybil.counters)}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
