"""The mesh's radio made of links between network namespaces (`--radio-if`), in a line:

    A: key server, concentrator --veth-- B: meter 1 --veth-- C: meter 2

Meter 2 hears only meter 1 (its only link), which hears the concentrator. Neither meter can
reach the key server (their 127.0.0.1 is their own namespace's): meter 1 joins through the
concentrator, meter 2 through meter 1 as its relay, over the links' multicast group."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.netns import NetnsPair, ip, make_netns_pair, wait_running
from tests.scenario.test_mesh_processes import Procs, free_ports

from amistack.cli.common import open_store
from amistack.runtime.mesh import eui_for

pytestmark = pytest.mark.slow  # three processes in two namespaces: about 10 s

PSK = "000102030405060708090a0b0c0d0e0f"


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    yield from make_netns_pair("amimesh", group_routes=False)


def test_meters_in_other_namespaces_join_through_a_relay_over_links(
    netns_pair: NetnsPair, tmp_path: Path
) -> None:
    ns = netns_pair
    ks = tmp_path / "ks"
    with open_store(ks, create=True) as store:
        for dev in ("conc-1", "mesh-m1", "mesh-m2"):
            store.enroll(dev, bytes.fromhex(PSK), time.time())
    ns_c, if_bc, if_cb = f"{ns.ns_b}-c", f"{ns.if_b}c", f"{ns.if_a}c"
    ip("netns", "add", ns_c)
    (pana,) = free_ports(1)  # (inside namespace A: its own port space)
    ks_addr = f"127.0.0.1:{pana}"
    p = Procs(tmp_path)

    try:
        ip("-n", ns_c, "link", "set", "lo", "up")
        ip("link", "add", if_bc, "netns", ns.ns_b, "type", "veth", "peer", "name", if_cb,
           "netns", ns_c)  # fmt: skip
        for netns, ifname, ll in ((ns.ns_b, if_bc, "fe80::bc"), (ns_c, if_cb, "fe80::cb")):
            ip("-n", netns, "link", "set", ifname, "addrgenmode", "none")
            ip("-n", netns, "-6", "addr", "add", f"{ll}/64", "dev", ifname, "nodad")
            ip("-n", netns, "link", "set", ifname, "up")
        wait_running(ns.ns_b, if_bc)
        wait_running(ns_c, if_cb)
        p.start_in(ns.ns_a, "ks", "keyserver", "--data-dir", str(ks), "--listen", ks_addr,
                   "--mesh-pan", "0xface", "--relay", "127.0.0.1")  # fmt: skip
        p.start_in(ns.ns_a, "conc", "concentrator", "--id", "conc-1", "--psk", PSK,
                   "--keyserver", ks_addr, "--radio-if", ns.if_a,
                   "--data-dir", str(tmp_path / "conc"))  # fmt: skip
        p.start_in(ns.ns_b, "m1", "meter", "--mesh", "--id", "mesh-m1", "--psk", PSK,
                   "--keyserver", ks_addr, "--radio-if", ns.if_b, "--radio-if", if_bc,
                   "--data-dir", str(tmp_path / "m1"))  # fmt: skip
        p.start_in(ns_c, "m2", "meter", "--mesh", "--id", "mesh-m2", "--psk", PSK,
                   "--keyserver", ks_addr, "--radio-if", if_cb,
                   "--data-dir", str(tmp_path / "m2"))  # fmt: skip
        p.wait_for("conc", "DODAG root", 45.0)
        p.wait_for("m1", "relaying", 45.0)
        p.wait_for("m2", "relaying", 45.0)
        m1_eui = str(eui_for("mesh-m1"))
        assert f"mesh-m2: parent {m1_eui}" in p.log("m2").read_text()  # its only link
    finally:
        p.stop()
        subprocess.run(["ip", "netns", "del", ns_c], capture_output=True, timeout=10)
