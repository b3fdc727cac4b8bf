"""The ingest benchmark's C12.22 path: what it times must be real decryption and verification
(a tampered or unknown-sender message is refused), and a tiny run must account for every row.
Rates are not asserted (benchmarks are commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amistack.bench import ingest as b


def _setup(
    n: int,
) -> tuple[list[bytes], dict[str, tuple[str, bytes]], list[list[b.IntervalReading]]]:
    rs = b.make_readings(n, n // 4)
    msgs = [rs[i : i + 4] for i in range(0, n, 4)]
    senders = {
        b._meter_title(int(r.meter_id.split("-")[1])): (r.meter_id, b._meter_key(r.meter_id))
        for r in rs
    }
    return b.build_messages(msgs), senders, msgs


def test_messages_open_to_the_readings_that_were_sealed() -> None:
    wire, senders, msgs = _setup(40)
    rows, refused = b.open_messages(wire, senders)
    assert refused == 0
    assert [b.IntervalReading(*r) for r in rows] == [r for m in msgs for r in m]


def test_tampered_and_unknown_messages_are_refused() -> None:
    wire, senders, _ = _setup(8)
    flipped = bytearray(wire[0])
    flipped[-6] ^= 0x01  # inside the ciphertext
    first_title = next(iter(senders))
    strangers = {k: v for k, v in senders.items() if k != first_title}
    rows, refused = b.open_messages([bytes(flipped), wire[1], b"\x60\x00"], senders)
    assert (refused, len(rows)) == (2, 4)
    rows, refused = b.open_messages(wire[:1], strangers)
    assert (rows, refused) == ([], 1)


def test_tiny_runs_report_both_rates(tmp_path: Path) -> None:
    for path in ("e2e", "store"):
        out = b.bench_ingest("sqlite", 400, data_dir=tmp_path, batch=100, workers=0, path=path)
        assert out["readings"] == 400 and out["path"] == path
        assert out["reads_per_s"] > 0 and out["baseline_rows_per_s"] > 0
        if path == "e2e":  # CPU per message: the rate on idle cores, whatever the machine's load
            assert out["cpu_us_per_message"] > 0
            assert out["cpu_us_per_message"] == pytest.approx(
                out["main_cpu_us_per_message"] + out["worker_cpu_us_per_message"], abs=0.2
            )
            # the same-run baselines of the decode path: whole decode, EAX' by each
            # implementation (the C extension's figure only where it is built)
            assert out["decode_cpu_us_per_message"] > 0
            assert out["eax_reference_cpu_us_per_message"] > 0
            assert ("eax_native_cpu_us_per_message" in out) == out["eax_native"]
        else:
            assert "cpu_us_per_message" not in out


def test_engine_path_runs_real_engines_on_both_ends() -> None:
    """Every push is accepted, stored and acknowledged by the real engines (the run raises if
    not); both sides' CPU per message and the decode-only baseline come out of the same run."""
    out = b.bench_engine(30, meters=10, intervals_per_message=2)
    assert (out["messages"], out["meters"], out["slots"]) == (30, 10, 3)
    # 30 timed pushes after a warm-up slot of one push per meter
    assert out["headend_counters"]["messages-accepted"] == 40
    assert out["headend_counters"]["messages-sent"] == 40  # one ack per push, nothing else
    for key in ("headend", "meter", "meter_push", "meter_ack", "decode"):
        assert out[f"{key}_cpu_us_per_message"] > 0
    # the C12.22 engines alone, each of the 30 pushes acknowledged between them (else it raises)
    assert set(out["c1222_engines_cpu_us_per_message"]) == {"meter_push", "headend", "meter_ack"}
    assert all(v > 0 for v in out["c1222_engines_cpu_us_per_message"].values())


def test_the_engine_path_is_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from amistack.cli.main import main

    assert main(["bench", "ingest", "--path", "engine", "--readings", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["path"] == "engine" and doc["messages"] == 20
    assert doc["headend_cpu_us_per_message"] > 0 and doc["decode_cpu_us_per_message"] > 0
    # the engine path stores into SQLite only: a clear one-line refusal, exit 2
    assert main(["bench", "ingest", "--path", "engine", "--backend", "postgresql"]) == 2
    assert "SQLite" in capsys.readouterr().err
