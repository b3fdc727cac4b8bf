"""The demo's mesh chapter: fifty meters join through relays under a concentrator, on the virtual
clock, with the real engines (`amistack sim mesh`).

The story, each step checked: every meter authenticates with PANA + EAP-PSK through its DODAG
parent (RFC 6345 relays) and joins the DODAG; one meter, at least three radio hops out, holds a
wrong PSK and is refused by the key server through two or more relays; a secured frame recorded
off the air and sent again is dropped as a replay; a relaying meter dies and every meter of its
subtree that still has a radio path re-parents (and PANA follows to the new parent); a revoked
meter never gets the rotated group key. With `--pcap` the radio frames go to DIR/mesh.pcap
(802.15.4 with FCS) and the tshark options with the group keys are printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.cli.sim import PCAP_EPOCH
from amistack.mesh.frame import Frame
from amistack.mesh.node import MeshNode, radio_addr
from amistack.pana.events import AuthenticationFailed
from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_WITHFCS, PcapWriter
from amistack.sim.mesh import KEYSERVER_HOST, MeshConfig, MeshSim, build_mesh, meter_id, radio_hops

__all__ = ["MeshReport", "chapter_mesh"]

METERS, SEED = 50, 1
PCAP_LIMIT = 100_000  # frames at most in the capture


@dataclass
class MeshReport:
    joined: str = ""
    formed: bool = False
    wrong_psk: str = ""
    replay: str = ""
    reparented: str = ""
    revoked: str = ""
    pcap: str | None = None
    wireshark_keys: list[str] = field(default_factory=list)
    wireshark_contexts: list[str] = field(default_factory=list)  # IPHC context 0

    def ok(self) -> bool:
        return (
            self.formed
            and self.wrong_psk.startswith("refused")
            and self.replay.startswith("dropped")
            and self.reparented.startswith("all")
            and self.revoked.startswith("shut out")
        )

    def lines(self) -> list[str]:
        out = [
            f"  {METERS} meters under a concentrator, PANA through relays: {self.joined}",
            f"  a meter with a wrong PSK: {self.wrong_psk}",
            f"  a secured frame sent again: {self.replay}",
            f"  a relaying meter dies: {self.reparented}",
            f"  a revoked meter: {self.revoked}",
        ]
        if self.pcap is not None:
            keys = " ".join(f"-o '{k}'" for k in self.wireshark_keys + self.wireshark_contexts)
            out.append(f"  radio capture: tshark -r {self.pcap} {keys}")
        return out


def _deep_meter() -> int:
    """A meter at least three radio hops from the concentrator: its PANA crosses two relays."""
    probe = build_mesh(MeshConfig(nodes=METERS, seed=SEED))
    return max(probe.radio_distance, key=lambda i: (probe.radio_distance[i], -i))


def _replay(sim: MeshSim, recorded: list[tuple[Addr, Addr, bytes]]) -> str:
    """Send the last recorded secured unicast frame again, as an attacker with a radio would."""
    if not recorded:
        return "no secured frame recorded"
    src, dst, frame = recorded[-1]
    receiver = sim.net.engine(dst)
    aux = Frame.decode(frame).security
    if not isinstance(receiver, MeshNode) or aux is None:
        return "no secured frame recorded"
    counters = receiver.link.counters  # the replay window's two refusals: seen, or too old
    before = counters["replayed"] + counters["stale"]
    sim.net.inject(src, dst, frame)
    sim.net.run_until(sim.net.now + 1.0)
    after = counters["replayed"] + counters["stale"]
    verdict = "dropped" if after > before else "ACCEPTED"
    return f"{verdict} by the receiver (frame counter {aux.counter} already seen)"


def _kill_a_parent(sim: MeshSim) -> str:
    dodag = sim.dodag()
    parent_of = {d["eui64"]: d["parent"] for d in dodag}
    by_eui = {str(m.eui): m for m in sim.meters}

    def subtree(root: str) -> set[str]:
        below = {e for e, p in parent_of.items() if p == root}
        for child in list(below):
            below |= subtree(child)
        return below

    victim = max(by_eui, key=lambda e: (len(subtree(e)), e))
    orphans = subtree(victim)
    dead = by_eui[victim]
    sim.net.remove_node(radio_addr(dead.eui))
    for eui in orphans:  # the children's next frames to it (a PANA ping) go unacknowledged
        node = by_eui[eui]
        if parent_of[eui] == victim and node.pac is not None:
            sim.net.call_at(sim.net.now, radio_addr(node.eui), node.pac.ping)
    sim.net.run_until(sim.net.now + 180.0)
    alive = {radio_addr(m.eui): i for i, m in enumerate(sim.meters, 1) if m is not dead}
    hops = radio_hops(sim.net.medium.radio, radio_addr(sim.concentrator.eui), alive)
    reachable = {str(sim.meters[i - 1].eui) for i in hops}
    after = {d["eui64"]: d for d in sim.dodag()}
    back = [e for e in orphans & reachable
            if after[e]["hops"] is not None and after[e]["parent"] != victim]  # fmt: skip
    moved = sum(by_eui[e].counters["pana-moved"] for e in orphans)
    verdict = "all" if len(back) == len(orphans & reachable) else "only"
    return (f"{verdict} {len(back)} of the {len(orphans & reachable)} meters of its subtree "
            f"in radio range re-parented; PANA moved to new parents {moved} times")  # fmt: skip


def _revoke(sim: MeshSim, wrong: int) -> str:
    revoked_i = next(i for i in range(METERS, 0, -1) if i != wrong and i in sim.ready_at)
    revoked = sim.meters[revoked_i - 1]

    def revoke(now: float) -> None:
        sim.keyserver.revoke(meter_id(revoked_i), now)

    sim.net.call_at(sim.net.now, KEYSERVER_HOST, revoke)
    sim.net.run_until(sim.net.now + 400.0)  # rotation delay, the pushes, the activation
    send = sim.concentrator.link.config.key_index
    others = [m for m in sim.meters
              if m is not revoked and m.authenticated and radio_addr(m.eui) in sim.net]  # fmt: skip
    pushed = sum(1 for m in others if m.link.config.key_index == send)
    shut = send not in revoked.link.security.key_indexes()
    return (f"{'shut out' if shut else 'STILL IN'}: the group key rotated to index {send}, "
            f"{pushed} of {len(others)} other meters got it through their relays")  # fmt: skip


def chapter_mesh(pcap_dir: Path | None) -> MeshReport:
    report = MeshReport()
    wrong = _deep_meter()
    sim = build_mesh(MeshConfig(nodes=METERS, seed=SEED, wrong_psk=frozenset({wrong})))
    writer = None
    if pcap_dir is not None:
        writer = PcapWriter(pcap_dir / "mesh.pcap", linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
        report.pcap = str(pcap_dir / "mesh.pcap")
        sim.on_radio_frame(lambda t, f: writer.write_frame(f, PCAP_EPOCH + t), PCAP_LIMIT)
    recorded: list[tuple[Addr, Addr, bytes]] = []
    meters = {radio_addr(m.eui) for m in sim.meters}

    def record(now: float, src: Addr, dst: Addr, data: bytes) -> None:
        if src in meters and dst in meters and len(data) > 30 and data[0] & 0x08:
            recorded[-1:] = [(src, dst, data)]  # a secured unicast frame between meters

    sim.net.capture_hooks.append(record)
    try:
        report.formed = sim.run(900.0)
        sim.net.run_until(sim.net.now + 60.0)  # the wrong-PSK meter's runs and refusals
        report.wireshark_keys = sim.wireshark_keys()  # the keys before the rotation
        report.wireshark_contexts = sim.wireshark_contexts()
        rep: dict[str, Any] = sim.report(include_dodag=False)
        report.joined = (
            f"{rep['relay_ready']}/{rep['expected_to_join']} relay-ready, 100 % at "
            f"{rep['relay_ready_s']['p100']} s (virtual), up to {rep['hops']['max']} hops"
        )
        refused = [e for e in sim.net.events_of(KEYSERVER_HOST, AuthenticationFailed)
                   if e.peer_id == meter_id(wrong).encode()]  # fmt: skip
        meter = sim.meters[wrong - 1]
        report.wrong_psk = (
            f"refused by the key server {len(refused)} times through its relays "
            f"({sim.radio_distance[wrong]} radio hops out), never keyed"
            if refused and not meter.authenticated and not meter.link.security.key_indexes()
            else "NOT refused"
        )
        report.replay = _replay(sim, recorded)
        report.reparented = _kill_a_parent(sim)
        report.revoked = _revoke(sim, wrong)
        report.wireshark_keys += [k for k in sim.wireshark_keys() if k not in report.wireshark_keys]
    finally:
        if writer is not None:
            writer.close()
    return report
