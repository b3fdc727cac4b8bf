"""node-echonet-lite's B-route client (Node.js, futomi) against the SKSTACK-IP module emulator.

node-echonet-lite 0.6.0 drives a Wi-SUN dongle (here the BP35A1 dialect) over a serial port:
SKSREG SFE 0, SKSETPWD, SKSETRBID, SKSCAN, SKSREG S2/S3, SKLL64, SKJOIN, then ECHONET Lite by
SKSENDTO and ERXUDP (binary). The emulator is a pty, so the `serialport` package it requires is
tests/interop/node/serialport-pty (serialport 4's API over the tty); node-echonet-lite's own code
runs unchanged (`make setup` runs `npm ci` in tests/interop/node). Its reading rule is the one
issue 10 is about: everything read up to a CR LF is one response and an ERXUDP is parsed from the
start of it (tests/unit/broute/test_skstack.py holds the emulator to that on the virtual clock).
Loopback only: the emulator's built-in meter and radio on 127.0.30.7.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import IN_CI, REPO, require_tool

from amistack.broute.skstack import Dialect
from amistack.runtime.loop import run
from amistack.runtime.skstack_pty import EmulatorConfig, EmulatorInfo, run_emulator

pytestmark = pytest.mark.interop

NODE_DIR = REPO / "tests" / "interop" / "node"


def _script() -> tuple[str, Path]:
    node = require_tool("node")
    if not (NODE_DIR / "node_modules" / "node-echonet-lite" / "package.json").exists():
        msg = f"node-echonet-lite is not installed in {NODE_DIR} (make setup runs npm ci there)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return node, NODE_DIR / "wisunb.js"


async def _session(node: str, script: Path) -> tuple[list[dict[str, Any]], EmulatorInfo]:
    stop = asyncio.Event()
    infos: list[EmulatorInfo] = []
    config = EmulatorConfig(dialect=Dialect.BP35A1, seed=11, host="127.0.30.7", time_scale=0.05)
    task = asyncio.create_task(run_emulator(config, stop=stop, on_ready=infos.append))
    try:
        for _ in range(200):
            if infos:
                break
            await asyncio.sleep(0.01)
        info = infos[0]
        proc = await asyncio.create_subprocess_exec(
            node, str(script), info.path, info.rbid, info.password, "20000",
            cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30.0)
        lines = [json.loads(ln) for ln in out.decode().splitlines() if ln.startswith("{")]
        assert proc.returncode == 0, (lines, err.decode()[-2000:])
        return lines, info
    finally:
        stop.set()
        await task


def test_node_echonet_lite_finds_the_meter_and_reads_e7_through_the_emulator() -> None:
    node, script = _script()
    lines, info = run(lambda: _session(node, script))
    events = {ln["event"]: ln for ln in lines}
    assert events["found"]["address"] == info.meter_ipv6 and events["found"]["eoj"] == [2, 136, 1]
    e7 = events["e7"]
    assert e7["esv"] == "Get_Res" and isinstance(e7["data"]["energy"], int)
    assert -20_000 < e7["data"]["energy"] < 20_000  # a household's load, not a no-data code
    assert "done" in events
