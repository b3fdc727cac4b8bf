"""A relay that wraps PANA for thousands of fake PaCs, as processes: the real key server (its
whole-mesh relay budget `--relay-rate 5`, the concentrator being its one relay), `amistack
concentrator`, a compromised meter (tests/scenario/mesh_rogue.py: it joins with its own PSK,
then sends PANA-Relay messages carrying PCIs of 3,000 fake PaCs up the DODAG, 400 a second),
and honest meters: meter 1 beside the rogue under the concentrator, meter 2 under meter 1,
started once the flood runs.

The concentrator attributes each relayed PCI to the meter that wrapped it (the PRY's source in
the mesh) and lets one relaying meter send the key server at most `--relay-pci-rate` of them:
the rogue's are dropped and counted there (`relay-pci-limited`), its memory stays flat, and
the key server sees a trickle of them, so its whole-mesh budget is not spent by one meter and
meter 2 joins through meter 1 within a bound while the flood runs. Without the border, the
rogue's flood would empty the key server's one bucket for the whole mesh and every
newcomer's PCI would be dropped with it."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest
from tests.scenario.test_mesh_processes import PSK, PY, Procs, free_ports

from amistack.cli.common import open_store

pytestmark = pytest.mark.slow  # five processes, a flood of eight seconds: about 25 s

ROGUE = Path(__file__).with_name("mesh_rogue.py")
FAKE_PACS = 3000
FLOOD_RATE = 400  # relayed PCIs a second the rogue tries
JOIN_BOUND_S = 40.0  # meter 2, two relays out, joins within this while the flood runs


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def counters(log: str, marker: str) -> dict[str, int]:
    """The counters dict a process logged at exit after `marker`."""
    line = next(x for x in reversed(log.splitlines()) if marker in x)
    out: dict[str, int] = ast.literal_eval(line[line.index("{", line.index(marker)) :])
    return out


def test_a_relay_flooding_pci_for_fake_pacs_is_throttled_and_the_mesh_keeps_joining(
    tmp_path: Path,
) -> None:
    ks = tmp_path / "ks"
    with open_store(ks, create=True) as store:
        for dev in ("conc-1", "rogue", "flood-m1", "flood-m2"):
            store.enroll(dev, bytes.fromhex(PSK), time.time())
    pana, r0, r1, r2, rr = free_ports(5)
    radio = {i: f"127.0.0.1:{port}" for i, port in enumerate((r0, r1, r2))}
    ks_addr = f"127.0.0.1:{pana}"
    p = Procs(tmp_path)

    def meter(dev: str, at: str, *hear: str) -> None:
        heard = [a for h in hear for a in ("--hear", h)]
        p.start(dev, "-v", "meter", "--mesh", "--id", dev, "--psk", PSK, "--keyserver", ks_addr,
                "--radio", at, *heard, "--data-dir", str(tmp_path / dev))  # fmt: skip

    try:
        p.start("ks", "-v", "keyserver", "--data-dir", str(ks), "--listen", ks_addr,
                "--mesh-pan", "0xface", "--relay", "127.0.0.1", "--relay-rate", "5")  # fmt: skip
        p.wait_for("ks", "PANA on 127.0.0.1", 30.0)
        p.start("conc", "-v", "concentrator", "--id", "conc-1", "--psk", PSK,
                "--keyserver", ks_addr, "--radio", radio[0], "--hear", radio[1],
                "--hear", f"127.0.0.1:{rr}", "--relay-pci-rate", "1", "--relay-pci-burst", "8",
                "--data-dir", str(tmp_path / "conc"))  # fmt: skip
        p.wait_for("conc", "DODAG root", 30.0)
        rogue_dir = str(tmp_path / "rogue")
        p.start_argv("rogue", [PY, str(ROGUE), "rogue", PSK, ks_addr, str(rr), str(r0),
                               rogue_dir, str(FAKE_PACS), str(FLOOD_RATE)])  # fmt: skip
        meter("flood-m1", radio[1], radio[0], radio[2])
        p.wait_for("rogue", "rogue: relaying", 30.0)
        p.wait_for("flood-m1", "relaying", 30.0)
        conc_rss, ks_rss = rss_kib(p.procs["conc"].pid), rss_kib(p.procs["ks"].pid)

        # the flood runs; a newcomer two relays out joins meanwhile
        started = time.monotonic()
        meter("flood-m2", radio[2], radio[1])
        p.wait_for("flood-m2", "relaying", JOIN_BOUND_S)
        joined_in = time.monotonic() - started
        p.wait_for("rogue", "rogue: sent", 30.0)
        assert rss_kib(p.procs["conc"].pid) - conc_rss < 20_000  # KiB: no per-PaC state
        assert rss_kib(p.procs["ks"].pid) - ks_rss < 20_000
    finally:
        p.stop()
    assert joined_in < JOIN_BOUND_S
    rogue = counters(p.log("rogue").read_text(), "rogue: sent")
    assert not rogue.get("queue-full"), rogue  # every fake PaC's PRY went on the air
    conc = counters(p.log("conc").read_text(), "counters {")
    # the border dropped the flood: the rogue's burst and about one a second passed, beside the
    # honest newcomers' PCIs: the key server saw a trickle, its whole-mesh budget (5 a second)
    # never spent by one meter
    assert conc["relay-pci-limited"] > 0.9 * FAKE_PACS, conc
    assert conc["relay-pci-out"] < 40, conc
    print(f"meter 2 joined in {joined_in:.1f} s during the flood", file=sys.stderr)
