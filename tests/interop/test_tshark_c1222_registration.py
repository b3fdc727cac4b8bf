"""tshark reads our C12.22 Registration exchange (docs/mesh.md): the meter's <register>
(service 0x27, cleartext with authentication, so the relay on the way can read it) and the
head-end's answer verify under the meter's UKMF key (`c1222.crypto_good`), the request's
command is 0x27 and nothing is malformed; with a wrong key both are `crypto_bad`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.interop.test_tshark_c1222 import _c1222_key, _tshark, _write_pcap
from tests.unit.c1222.c1222_harness import HEADEND_ADDR, HEADEND_TITLE, METER_TITLE, T0, make_pair

from amistack.c1222.epsem import SecurityMode
from amistack.c1222.registration import Registration, native_address

pytestmark = pytest.mark.interop


def _registration_pcap(path: Path) -> tuple[int, bytes]:
    pair = make_pair()
    reg = Registration(METER_TITLE, native_address("fd00::11", 1153), 1800)
    pair.server.request(
        HEADEND_ADDR, HEADEND_TITLE, [reg], T0, security_mode=SecurityMode.CLEARTEXT_AUTH
    )
    pair.pump(T0)
    assert _write_pcap(pair, path) == 2
    return _c1222_key(pair)


def test_tshark_reads_and_verifies_a_registration(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    key = _registration_pcap(tmp_path / "registration.pcap")
    rows = _tshark(tshark, tmp_path / "registration.pcap", [key])
    assert len(rows) == 2
    for good, bad, malformed, expert, *_ in rows:
        assert (good, bad, malformed, expert) == ("1", "0", "", "")
    cmd = [tshark, "-n", "-r", str(tmp_path / "registration.pcap"), "-T", "fields"]
    cmd += ["-e", "c1222.cmd", "-e", "c1222.err", "-e", "c1222.epsem.flags.security"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    request, answer = (line.split("\t") for line in out.stdout.splitlines())
    assert request[0] == "0x27" and answer[1] == "0x00"  # <register>, then <ok>
    assert request[2] == answer[2] == "0x01"  # cleartext with authentication


def test_tshark_sees_a_forged_registration_as_bad(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    key_id, _ = _registration_pcap(tmp_path / "registration.pcap")
    rows = _tshark(tshark, tmp_path / "registration.pcap", [(key_id, bytes(16))])
    assert len(rows) == 2 and all(r[:2] == ["0", "1"] for r in rows)
