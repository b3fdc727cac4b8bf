"""Group keys between real processes over UDP: `amistack keyserver --mesh-pan` gives each
`amistack meter` the PAN's group keys with its PANA success; `amistack keys revoke` (another
process) makes the key server rotate them and push the new ring to the meter still enrolled,
not to the revoked one; `amistack keys group-keys` shows the new serial."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from tests.cli import keys_argv
from tests.scenario.test_keyserver_process import ENV, PSK_A, PY, cli, free_port

from amistack.cli.common import open_store

pytestmark = pytest.mark.slow  # the rotation waits out its batching delay (10 s)

PSK_B = "ffeeddccbbaa99887766554433221100"


def wait_for(log: Path, text: bytes, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_revocation_rotates_the_group_keys_of_a_live_fleet(tmp_path: Path) -> None:
    d = tmp_path / "ks"
    for dev, psk in (("meter-a", PSK_A), ("meter-b", PSK_B)):
        assert cli(*keys_argv(d, "enroll", dev, "--psk", psk)).returncode == 0
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("ks", "meter-a", "meter-b")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs["ks"], "wb") as out:
            ks = subprocess.Popen(
                [PY, "-m", "amistack.cli.main", "keyserver", "--data-dir", str(d),
                 "--listen", f"127.0.0.1:{port}", "--mesh-pan", "0xface"],
                stdout=out, stderr=subprocess.STDOUT, env=ENV,
            )  # fmt: skip
        procs.append(ks)
        wait_for(logs["ks"], b"PANA on 127.0.0.1", ks, 15.0)
        meters = {}
        for dev, psk in (("meter-a", PSK_A), ("meter-b", PSK_B)):
            with open(logs[dev], "wb") as out:
                meters[dev] = subprocess.Popen(
                    [PY, "-m", "amistack.cli.main", "-v", "meter", "--id", dev, "--psk", psk,
                     "--keyserver", f"127.0.0.1:{port}"],
                    stdout=out, stderr=subprocess.STDOUT, env=ENV,
                )  # fmt: skip
            procs.append(meters[dev])
        for dev, proc in meters.items():
            wait_for(logs[dev], b"group keys of PAN 0xface #1: index 1", proc, 15.0)
        revoked = cli(*keys_argv(d, "revoke", "meter-a"))
        assert revoked.returncode == 0
        wait_for(logs["meter-b"], b"group keys of PAN 0xface #2", meters["meter-b"], 20.0)
        assert b"#2" not in logs["meter-a"].read_bytes()
        shown = cli(*keys_argv(d, "group-keys", "--pan", "0xface"))
        assert shown.returncode == 0 and "serial 2" in shown.stdout
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    with open_store(d, create=False) as store:
        ring = store.load_group_keys(0xFACE)
    assert ring is not None and ring[0] == 2
    for log in logs.values():  # no group key in any log, in hex or as bytes
        text = log.read_text()
        assert not any(k.key.hex() in text or repr(k.key) in text for k in ring[2])
