"""The npm `echonet-lite` package (Node.js) against our ECHONET Lite stack.

The package binds 0.0.0.0:3610, joins 224.0.23.0 and multicasts its startup INF, so it never runs
in the host's namespace: each test builds the netns pair of tests/netns.py
(two fresh namespaces joined by a veth pair, 192.0.2.0/24 and fe80::/64 on the link, deleted
afterwards) and runs the package there with `ip netns exec`; our side runs in the other
namespace. The scripts are in tests/interop/node/ (`make setup` runs `npm ci` there).

- the package as a CONTROLLER of our smart-meter node (controller.js): its multicast search and
  automatic crawl (D6, property maps, a Get of every EPC of the get map), Get of E7/E0/E1/D3,
  SetC of E5 and Get of E2, SetC of an out-of-range E5; every value it got is compared with what
  our object says at the same (frozen) model time;
- the package as a DEVICE node (device.js: a smart meter 0x028801 whose 16-EPC get map goes out as
  a bitmap, and a temperature sensor 0x001101) under our controller (`EchonetController` on
  `ControllerDriver`): multicast discovery, both objects' property maps, Get E7/E0/E1/D3, SetC
  E5 then Get E5, a Get the device can only partly answer (Get_SNA), the sensor's E0.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import IN_CI, REPO, require_tool
from tests.netns import (
    A4,
    B4,
    MeterInNetns,
    NetnsPair,
    in_netns,
    make_netns_pair,
)

from amistack.crypto.rand import seeded_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.frame import Eoj, Esv, Property
from amistack.echonet.node import MULTICAST_V4, EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet_controller import ControllerDriver
from amistack.runtime.loop import new_event_loop

pytestmark = pytest.mark.interop

NODE_DIR = REPO / "tests" / "interop" / "node"
MODEL_T = 1_704_034_800.0 + 10 * 86400 + 14 * 3600 + 1200  # ten days after installation
METER = Eoj(0x02, 0x88, 0x01)
SENSOR = Eoj(0x00, 0x11, 0x01)
# what device.js hosts (keep in step with it)
NPM_METER_GET_MAP = frozenset(
    (0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7, 0xE0, 0xE1, 0xE5, 0xE7, 0xE8)
)


def _node_script(name: str) -> tuple[str, Path]:
    node = require_tool("node")
    if not (NODE_DIR / "node_modules" / "echonet-lite" / "index.js").exists():
        msg = f"npm echonet-lite is not installed in {NODE_DIR} (make setup runs npm ci there)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return node, NODE_DIR / name


def _run_in_netns(ns: str, argv: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run `argv` inside netns `ns`; its stdout, one JSON document a line."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=NODE_DIR,
        env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")},
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-5:])
        pytest.fail(f"{argv[1]} exited {proc.returncode}: {proc.stderr.strip()}\n{tail}")
    return lines


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    yield from make_netns_pair()


def test_npm_echonet_lite_controls_our_meter(netns_pair: NetnsPair) -> None:
    node_bin, script = _node_script("controller.js")
    pair = netns_pair
    meter = SmartMeterObject(
        MeterModel(41), TimeScale(origin_now=time.monotonic(), origin_model=MODEL_T, factor=1e-9)
    )
    node = EchonetNode(
        NodeProfile([]),
        [meter],
        seeded_random(41),
        NodeConfig(multicast_groups=(MULTICAST_V4,), multicast_reply_delay=0.3),
    )
    with MeterInNetns(pair.ns_a, pair.if_a, node, ipv6=None):
        out = _run_in_netns(pair.ns_b, [node_bin, str(script), A4, B4, "12000"], 30)
        now = time.monotonic()
    events = {e["event"]: e for e in out if e["event"] != "rx"}
    assert "done" in events, out[-3:]
    rx = [e for e in out if e["event"] == "rx"]
    # every frame the package got came from our node's port 3610, whatever its requests' port
    assert rx and {(e["from"], e["port"]) for e in rx} == {(A4, 3610)}

    def ours(epc: int) -> str:
        return (meter.get(epc, now) or b"").hex()

    # 1. the search and the package's own crawl
    facilities = events["done"]["facilities"][A4]
    assert facilities["0ef001"]["d6"] == "01028801"
    dev = facilities["028801"]
    for epc in (0x9D, 0x9E, 0x9F):
        edt = bytes.fromhex(dev[f"{epc:02x}"])  # the package turns bitmaps into lists
        assert set(edt[1:]) == set(decode_propmap(meter.get(epc, now) or b"")), hex(epc)
        assert edt[0] == len(edt) - 1
    get_map = decode_propmap(meter.get(0x9F, now) or b"")
    assert len(get_map) >= 16  # so the get map went out as a bitmap (the second encoding)
    # E2/E4 follow E5, which step 3 changes after the crawl (E2 is checked there)
    history = {0xE2, 0xE4} & get_map
    for epc in sorted(get_map - {0x9D, 0x9E, 0x9F, 0xE5} - history):
        assert dev[f"{epc:02x}"] == ours(epc), f"EPC 0x{epc:02X}"
    for epc in history:
        assert len(dev[f"{epc:02x}"]) == 2 * 194, f"EPC 0x{epc:02X}"

    # 2. Get E7 E0 E1 D3 from a controller object
    answer = events["get"]["answer"]
    assert (answer["ESV"], answer["SEOJ"], answer["DEOJ"]) == ("72", "028801", "05ff01")
    assert answer["DETAILs"] == {"e7": ours(0xE7), "e0": ours(0xE0), "e1": "01", "d3": ours(0xD3)}

    # 3. SetC E5 = 1, then E2 is yesterday's history, and starts with day 1
    assert events["set_e5"]["answer"]["ESV"] == "71"
    assert events["set_e5"]["answer"]["DETAILs"] == {"e5": ""}
    assert meter.history_day == 1
    e2 = events["get_e2"]["answer"]["DETAILs"]["e2"]
    assert e2 == ours(0xE2) and e2.startswith("0001") and len(e2) == 2 * 194

    # 4. out of range (guideline §2.2): SetC_SNA echoing the EDT; E5 unchanged
    answer = events["set_e5_out_of_range"]["answer"]
    assert answer["ESV"] == "51" and answer["DETAILs"] == {"e5": "64"}
    assert meter.history_day == 1
    assert node.counters["malformed"] == 0
    assert node.counters["rx_inf"] >= 1  # the package's startup INF reached us


def _lines_until(proc: subprocess.Popen[str], event: str, timeout: float) -> list[dict[str, Any]]:
    """JSON lines of `proc` up to and including the first with `event` (fails after `timeout`)."""
    assert proc.stdout is not None
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            got.append(json.loads(line))
            if got[-1]["event"] in (event, "failed"):
                break
    if not got or got[-1]["event"] != event:
        proc.kill()
        pytest.fail(f"no {event!r} from {proc.args}: {got[-3:]}")
    return got


def test_our_controller_drives_npm_echonet_lite_as_a_device(netns_pair: NetnsPair) -> None:
    node_bin, script = _node_script("device.js")
    pair = netns_pair
    device = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns_b, node_bin, str(script), B4, "20000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=NODE_DIR,
    )
    try:
        _lines_until(device, "ready", 10.0)

        async def hems() -> dict[str, Any]:
            ctl = EchonetController(
                ControllerConfig(
                    discovery_window=1.0, request_timeout=1.0, rediscover_interval=None
                ),
                seeded_random(42),
            )
            async with ControllerDriver(ctl) as drv:
                await drv.open(ipv4=A4, interface=pair.if_a)
                drv.start()
                found = await drv.wait_for_node(0x0288, timeout=5.0)
                sensor = await drv.wait_for_node(0x0011, timeout=5.0)
                assert found is not None and sensor is found
                dest = found.addr
                return {
                    "node": found,
                    "get": await drv.get(dest, METER, [0xE7, 0xE0, 0xE1, 0xD3], timeout=5),
                    "set": await drv.set(dest, METER, [(0xE5, b"\x01")], timeout=5),
                    "get_e5": await drv.get(dest, METER, [0xE5], timeout=5),
                    "partial": await drv.get(dest, METER, [0xE7, 0xC0], timeout=5),
                    "sensor": await drv.get(dest, SENSOR, [0xE0], timeout=5),
                }

        def run_hems() -> dict[str, Any]:
            loop = new_event_loop()
            try:
                return loop.run_until_complete(hems())
            finally:
                loop.close()

        res = in_netns(pair.ns_a, run_hems)
    finally:
        try:  # closing its stdin (communicate does) ends device.js
            out, _ = device.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            device.kill()
            out, _ = device.communicate()
    seen = [json.loads(x) for x in out.splitlines() if x.startswith("{")]

    found = res["node"]
    assert found.addr == (B4, 3610)
    assert found.instances == (METER, SENSOR)
    assert found.maps[METER].get == NPM_METER_GET_MAP  # decoded from the bitmap
    assert found.maps[METER].set == {0x81, 0xE5}
    assert found.maps[SENSOR].get == {0x80, 0x81, 0x82, 0x83, 0x88, 0x8A, 0x9D, 0x9E, 0x9F, 0xE0}

    get = res["get"]
    assert get.esv == Esv.GET_RES
    assert get.props == (
        Property(0xE7, (1500).to_bytes(4, "big")),
        Property(0xE0, (123456).to_bytes(4, "big")),
        Property(0xE1, b"\x01"),
        Property(0xD3, b"\x00\x00\x00\x01"),
    )
    assert res["set"].esv == Esv.SET_RES and res["set"].props == (Property(0xE5),)
    assert res["get_e5"].props == (Property(0xE5, b"\x01"),)
    partial = res["partial"]  # the device has no C0: Get_SNA, E7 still given
    assert partial.esv == Esv.GET_SNA
    assert partial.props == (Property(0xE7, (1500).to_bytes(4, "big")), Property(0xC0))
    assert res["sensor"].props == (Property(0xE0, b"\x00\xdc"),)

    # what the package saw: our requests, from our node's address
    ours = [e for e in seen if e["event"] == "rx" and e["from"] == A4]
    esvs = {e["els"]["ESV"] for e in ours}
    assert {"62", "61"} <= esvs
    assert any(e["els"]["DEOJ"] == "0ef001" and "d6" in e["els"]["DETAILs"] for e in ours)


def test_node_scripts_are_pinned() -> None:
    """package.json pins exact versions and package-lock.json matches it (npm ci refuses
    otherwise); node_modules is never committed."""
    pkg = json.loads((NODE_DIR / "package.json").read_text())
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for name, version in pkg["dependencies"].items():
        assert version[0].isdigit(), f"{name} is not pinned: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "tests/interop/node/node_modules/" in ignored
    assert (
        shutil.which("git") is None
        or not subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "tests/interop/node/node_modules"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
