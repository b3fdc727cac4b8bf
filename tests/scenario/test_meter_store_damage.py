"""`amistack meter` on a data directory whose event log was damaged while it was off: it starts,
records the damage in its log (signed), sets the damaged file aside, and keeps metering --
authenticates to a real key server and logs the key rotation after the damage record. With its
default software module, and with `--module pkcs11:...` (a SoftHSM2 token keeping the key and
the last signed head)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.cli import keys_argv, run_cli
from tests.scenario.test_keyserver_process import ENV, PY, KeyServerProcess, cli, free_port
from tests.unit.eventlog.test_store_attacks import frame_offsets
from tests.unit.meter.conftest import init_token

from amistack.eventlog import EventLog, EventRecord, EventType, layout
from amistack.securemodule import PIN_ENV, SecureModule, SoftwareModule, open_module

PSK = "00112233445566778899aabbccddeeff"
METER = "meter-d"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["software", "pkcs11"])
def test_a_flipped_payload_bit_is_recorded_and_the_meter_keeps_metering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    ks_dir, data = tmp_path / "ks", tmp_path / "meter"
    assert cli(*keys_argv(ks_dir, "enroll", METER, "--psk", PSK)).returncode == 0
    layout.meter_dir(data, METER).mkdir(parents=True)
    store = layout.log_path(data, METER)
    env, argv = {**ENV, "AMISTACK_PSK": PSK}, []
    if backend == "pkcs11":
        token = init_token(tmp_path, monkeypatch)
        spec = token.spec(f"{METER}/eventlog", with_pin=False)
        env.update({"SOFTHSM2_CONF": str(token.conf), PIN_ENV: token.pin})
        argv = ["--module", spec]
        monkeypatch.setenv(PIN_ENV, token.pin)

    def module() -> SecureModule:
        if backend == "pkcs11":
            return open_module(spec, create=True, label=f"{METER}/eventlog")
        return SoftwareModule.open_or_create(layout.module_path(data, METER), f"{METER}/eventlog")

    sm = module()
    with EventLog.open(store, METER, sm, time.time()) as lg:
        for i in range(11):
            lg.append(EventType.POWER_FAIL, bytes([i]), time.time())
        lg.checkpoint(time.time())
    sm.close()
    raw = bytearray(store.read_bytes())
    raw[frame_offsets(store)[3] + 9] ^= 0x04  # a payload bit of the fourth entry
    store.write_bytes(bytes(raw))

    keyserver = KeyServerProcess(ks_dir, free_port(), tmp_path / "keyserver.log")
    try:
        meter = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "meter", "--id", METER,
             "--keyserver", f"127.0.0.1:{keyserver.port}", "--headend",
             f"127.0.0.1:{free_port()}", "--listen", "127.0.0.1:0", "--data-dir", str(data),
             *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
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
    sm = module()
    with EventLog.open(store, METER, sm, time.time()) as lg:
        kinds = [i.type for i in lg.items() if isinstance(i, EventRecord)]
        heads = lg.heads
    sm.close()
    assert kinds[:3] == [EventType.POWER_FAIL] * 3
    assert kinds[3:5] == [EventType.LOG_STORE_DAMAGED, EventType.LOG_ROLLED_BACK]
    assert EventType.KEY_ROTATED in kinds[5:]  # still metering after the fault
    assert heads[-1].size == len(kinds)  # the rotation is signed too


def test_module_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMISTACK_PSK", PSK)
    base = ["meter", "--id", METER, "--keyserver", "127.0.0.1:9"]
    code, _, err = run_cli(capsys, *base, "--module", "software:/nonexistent/k.pem")
    assert code == 2 and "--module goes with --headend and --data-dir" in err
    code, _, err = run_cli(capsys, *base, "--headend", "127.0.0.1:9", "--data-dir",
                           str(tmp_path), "--module", "tpm:0")  # fmt: skip
    assert code == 2 and "--module: " in err and "unknown backend 'tpm'" in err
    assert len(err.strip().splitlines()) == 1
