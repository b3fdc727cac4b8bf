"""tshark's C12.22 dissector, given our UKMF C12.22 keys in its decryption table, verifies the
EAX' of our traffic (`c1222.crypto_good`) and finds nothing malformed; with a wrong key it
reports `c1222.crypto_bad` (so the check can fail)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.unit.c1222.c1222_harness import (
    HEADEND_ADDR,
    HEADEND_TITLE,
    METER_ADDR,
    METER_TITLE,
    T0,
    Pair,
    make_ctx,
    make_pair,
)

from amistack.c1222.epsem import SecurityMode
from amistack.c1222.security import key_id_byte
from amistack.c1222.services import Identify, Logoff, Logon, Read, Security, Terminate, Wait
from amistack.c1222.tables import LoadProfile, Table, demand_reset, remote_switch, set_date_time
from amistack.keymgmt.ukmf import C1222
from amistack.runtime.pcap import PcapWriter

pytestmark = pytest.mark.interop


def _traffic(pair: Pair) -> None:
    c = pair.client
    logon = Logon(7, b"headend   ", 30)
    c.request(
        METER_ADDR,
        METER_TITLE,
        [Identify(), logon, Security(b"p" * 20, 7), Wait(20), Logoff(), Terminate()],
        T0,
    )
    c.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0)
    c.read(METER_ADDR, METER_TITLE, Table.CURRENT_REGISTER_DATA, T0)
    c.read(METER_ADDR, METER_TITLE, Table.LOAD_PROFILE_1, T0, offset=9, count=40)
    c.procedure(METER_ADDR, METER_TITLE, remote_switch(1, False), T0)
    c.procedure(METER_ADDR, METER_TITLE, demand_reset(2), T0)
    c.procedure(METER_ADDR, METER_TITLE, set_date_time(3, T0), T0)
    c.request(
        METER_ADDR, METER_TITLE, [Read(Table.CLOCK)], T0, security_mode=SecurityMode.CLEARTEXT_AUTH
    )
    pair.pump(T0)
    pushed = LoadProfile(15, T0, ()).encode()
    pair.server.push(HEADEND_ADDR, HEADEND_TITLE, Table.LOAD_PROFILE_1, pushed, T0, offset=0)
    pair.pump(T0)


def _write_pcap(pair: Pair, path: Path) -> int:
    with PcapWriter(path) as w:
        for i, (way, data) in enumerate(pair.wire):
            src, dst = (HEADEND_ADDR, METER_ADDR) if way == "c2s" else (METER_ADDR, HEADEND_ADDR)
            assert dst[1] == 1153 and src[1] == 1153
            w.write(src, dst, data, T0 + i * 0.01)
    return len(pair.wire)


def _tshark(tshark: str, pcap: Path, keys: list[tuple[int, bytes]]) -> list[list[str]]:
    cmd = [tshark, "-n", "-r", str(pcap), "-o", "c1222.decrypt:TRUE"]
    # relative ApTitles are made absolute under the C12.22 root for the EAX' cleartext
    cmd += ["-o", "c1222.baseoid:2.16.124.113620.1.22"]
    for key_id, key in keys:
        cmd += ["-o", f'uat:c1222_decryption_table:"{key_id:02x}",{key.hex()}']
    cmd += ["-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in ("c1222.crypto_good", "c1222.crypto_bad", "_ws.malformed", "_ws.expert", "c1222"):
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in out.stdout.splitlines()]


def _c1222_key(pair: Pair) -> tuple[int, bytes]:
    key = pair.meter_ring.current(C1222, T0 + 20)
    assert key is not None
    return key_id_byte(key.key_id), key.key


def test_tshark_verifies_our_eax_prime(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pair = make_pair()
    _traffic(pair)
    n = _write_pcap(pair, tmp_path / "c1222.pcap")
    assert n == 18  # 9 exchanges, none segmented
    rows = _tshark(tshark, tmp_path / "c1222.pcap", [_c1222_key(pair)])
    assert len(rows) == n
    for row in rows:
        good, bad, malformed, expert = row[:4]
        assert (good, bad) == ("1", "0"), row
        assert malformed == "" and expert == "", row


def test_tshark_sees_a_wrong_key_as_bad(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pair = make_pair()
    _traffic(pair)
    _write_pcap(pair, tmp_path / "c1222.pcap")
    key_id, _ = _c1222_key(pair)
    rows = _tshark(tshark, tmp_path / "c1222.pcap", [(key_id, bytes(16))])
    assert rows and all(r[:2] == ["0", "1"] for r in rows)


def test_tshark_decrypts_across_a_key_rotation(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pair = make_pair()
    _traffic(pair)
    first = _c1222_key(pair)
    for ring in (pair.meter_ring, pair.headend_ring):
        ring.install(make_ctx(key_id=2), 3600.0, T0 + 10)
    second = _c1222_key(pair)
    assert second[0] == 2 and second[1] != first[1]
    before = len(pair.wire)
    pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0 + 20)
    pair.pump(T0 + 20)
    assert len(pair.wire) == before + 2
    _write_pcap(pair, tmp_path / "rotated.pcap")
    rows = _tshark(tshark, tmp_path / "rotated.pcap", [first, second])
    assert len(rows) == before + 2 and all(r[:2] == ["1", "0"] and r[2] == "" for r in rows)
