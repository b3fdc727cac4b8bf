"""`amistack meter` on a data directory whose event log was damaged while it was off: it starts,
records the damage in its log (signed), sets the damaged file aside, and keeps metering --
authenticates to a real key server and logs the key rotation after the damage record."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.scenario.test_keyserver_process import ENV, PY, KeyServerProcess, cli, free_port
from tests.unit.eventlog.test_store_attacks import frame_offsets

from amistack.eventlog import EventLog, EventRecord, EventType, layout
from amistack.meter.securemodule import SoftwareModule

PSK = "00112233445566778899aabbccddeeff"
METER = "meter-d"


def test_a_flipped_payload_bit_is_recorded_and_the_meter_keeps_metering(tmp_path: Path) -> None:
    ks_dir, data = tmp_path / "ks", tmp_path / "meter"
    assert cli("keys", "enroll", METER, "--psk", PSK, "--data-dir", str(ks_dir)).returncode == 0
    layout.meter_dir(data, METER).mkdir(parents=True)
    store = layout.log_path(data, METER)
    module = SoftwareModule.create(layout.module_path(data, METER), f"{METER}/eventlog")
    with EventLog.open(store, METER, module, time.time()) as lg:
        for i in range(11):
            lg.append(EventType.POWER_FAIL, bytes([i]), time.time())
        lg.checkpoint(time.time())
    module.close()
    raw = bytearray(store.read_bytes())
    raw[frame_offsets(store)[3] + 9] ^= 0x04  # a payload bit of the fourth entry
    store.write_bytes(bytes(raw))

    keyserver = KeyServerProcess(ks_dir, free_port(), tmp_path / "keyserver.log")
    try:
        meter = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "meter", "--id", METER, "--psk", PSK,
             "--keyserver", f"127.0.0.1:{keyserver.port}", "--headend",
             f"127.0.0.1:{free_port()}", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True,
        )  # fmt: skip
        try:
            assert meter.stdout is not None
            deadline = time.monotonic() + 40.0  # a loaded 2-core machine starts Python slowly
            out = ""
            while f"{METER}: authenticated" not in out:
                assert meter.poll() is None, out + meter.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, out
                if select.select([meter.stdout], [], [], 0.2)[0]:
                    out += os.read(meter.stdout.fileno(), 4096).decode()
            time.sleep(0.3)  # the rotation is appended as the keys are installed
        finally:
            meter.send_signal(signal.SIGTERM)
            _, err = meter.communicate(timeout=10)
        assert meter.returncode == 0, err
        assert "Traceback" not in err
        assert "LOG_STORE_DAMAGED" in err and "set aside as events.log.damaged-" in err
    finally:
        keyserver.stop()

    aside = list(store.parent.glob("events.log.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(raw)
    module = SoftwareModule.open(layout.module_path(data, METER))
    with EventLog.open(store, METER, module, time.time()) as lg:
        kinds = [i.type for i in lg.items() if isinstance(i, EventRecord)]
        heads = lg.heads
    module.close()
    assert kinds[:3] == [EventType.POWER_FAIL] * 3
    assert kinds[3:5] == [EventType.LOG_STORE_DAMAGED, EventType.LOG_ROLLED_BACK]
    assert EventType.KEY_ROTATED in kinds[5:]  # still metering after the fault
    assert heads[-1].size == len(kinds)  # the rotation is signed too
