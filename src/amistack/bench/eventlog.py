"""`amistack bench eventlog`: the Merkle log against the naive whole-log signature, same data.

Measures (JSON keys):
- appends_per_s: EventLog.append with 1% of events being signing events (COVER_OPEN), software
  module; appends_per_s_softhsm: the same through a SoftHSM2 token (None when not installed);
  appends_per_s_at_1m: appends onto the 1M-entry log (fsync=never there, like the naive one);
- verify_1m_s: verify_file over an exported 1,000,000-entry Merkle log (every head's signature
  and root); proof_bytes_1m: an encoded inclusion proof for one event at 1M entries;
- naive_*: the patent scheme on the same data: the module signs SHA-256 over the whole log on
  every signing event (naive_appends_per_s), verification of the 1M-entry patent-mode export
  (naive_verify_1m_s), and what proving one event costs there: the whole log
  (naive_proof_bytes_1m), as does showing that a new log extends an old one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from amistack.eventlog.log import CheckpointPolicy, EventLog, FsyncPolicy, LogConfig
from amistack.eventlog.merkle import MerkleTree
from amistack.eventlog.record import EventRecord, EventType, Mode, range_hasher
from amistack.eventlog.verify import (
    Reason,
    prove_inclusion,
    verify_event,
    verify_file,
)
from amistack.securemodule import SecureModule, SecureModuleError, SoftwareModule

log = logging.getLogger(__name__)

SOFTHSM_LIBRARIES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
)
SIGN_EVERY = 100  # 1% of events are signing events
METER = "bench-meter"
_POLICY = CheckpointPolicy(
    sign_on=frozenset({EventType.COVER_OPEN}), every_entries=None, every_seconds=None
)


def _event(i: int) -> tuple[EventType, bytes]:
    if i % SIGN_EVERY == SIGN_EVERY - 1:
        return EventType.COVER_OPEN, b""
    return (EventType.POWER_FAIL if i & 1 else EventType.POWER_RESTORE), struct.pack(">I", i)


def _fill(lg: EventLog, n: int, t0: float) -> float:
    """Append n events (1% signing); returns elapsed seconds."""
    start = time.perf_counter()
    for i in range(n):
        typ, data = _event(i)
        lg.append(typ, data, t0 + i * 0.001)
    return time.perf_counter() - start


def _fill_from(lg: EventLog, first: int, n: int, t0: float) -> float:
    start = time.perf_counter()
    for i in range(first, first + n):
        typ, data = _event(i)
        lg.append(typ, data, t0 + i * 0.001)
    return time.perf_counter() - start


def _appends(module: SecureModule, n: int, workdir: Path, fsync: FsyncPolicy) -> float:
    path = workdir / f"appends-{os.getpid()}-{time.monotonic_ns()}.log"
    lg = EventLog.open(path, METER, module, 1.7e9, LogConfig(checkpoint=_POLICY, fsync=fsync))
    try:
        elapsed = _fill(lg, n, 1.7e9)
    finally:
        lg.close()
        path.unlink()
    return n / elapsed


def _naive_appends(module: SecureModule, n: int, already: int = 0) -> float:
    """The patent scheme taken literally: on a signing event, hash the whole log (kept as one
    contiguous buffer, the cheapest way) and have the module sign the hash. `already`: entries
    in the log before the timed appends."""
    flat = bytearray()
    for i in range(already):
        enc = EventRecord(i, 1_700_000_000_000 + i, *_event(i)).encode()
        flat += struct.pack(">I", len(enc))
        flat += enc
    start = time.perf_counter()
    for i in range(already, already + n):
        typ, data = _event(i)
        enc = EventRecord(i, 1_700_000_000_000 + i, typ, data).encode()
        flat += struct.pack(">I", len(enc))
        flat += enc
        if typ in _POLICY.sign_on:
            h = range_hasher()
            h.update(flat)
            module.sign_digest(hashlib.sha256(h.digest()).digest())
    return n / (time.perf_counter() - start)


def _softhsm(workdir: Path) -> tuple[SecureModule, str] | None:
    """A throwaway SoftHSM2 token with one key, or None when SoftHSM2 is not installed."""
    lib = next((p for p in SOFTHSM_LIBRARIES if os.path.exists(p)), None)
    util = shutil.which("softhsm2-util")
    if lib is None or util is None:
        return None
    from amistack.securemodule import Pkcs11Module

    tokens = workdir / "tokens"
    tokens.mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin", "5678"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        return Pkcs11Module.create(lib, "bench", "1234", "bench/eventlog"), lib
    except SecureModuleError as exc:
        log.warning("SoftHSM2 benchmark skipped: %s", exc)
        return None


def bench_eventlog(
    entries: int = 200_000,
    big: int = 1_000_000,
    fsync: str = "checkpoint",
    softhsm: bool = True,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; `entries` for the append rates, `big` for the verification/proof
    measurements (1,000,000 for the targets). `fsync`: always | checkpoint | never."""
    policy = FsyncPolicy(fsync)
    own = workdir is None
    work = (
        Path(tempfile.mkdtemp(prefix="amistack-bench-eventlog-"))
        if workdir is None
        else Path(workdir)
    )
    result: dict[str, Any] = {
        "entries": entries,
        "big_entries": big,
        "sign_fraction": 1 / SIGN_EVERY,
        "fsync": policy.value,
    }
    try:
        module = SoftwareModule.create(work / "module.pem", "bench/eventlog")
        result["appends_per_s"] = round(_appends(module, entries, work, policy))
        hsm = _softhsm(work) if softhsm else None
        if hsm is not None:
            hsm_module, lib = hsm
            try:
                result["appends_per_s_softhsm"] = round(_appends(hsm_module, entries, work, policy))
                result["naive_appends_per_s_softhsm"] = round(_naive_appends(hsm_module, entries))
            finally:
                hsm_module.close()
            result["softhsm_library"] = lib
        else:
            result["appends_per_s_softhsm"] = None
        result["naive_appends_per_s"] = round(_naive_appends(module, entries))
        tail = max(1, min(entries, 20_000))
        result["naive_appends_per_s_at_1m"] = round(_naive_appends(module, tail, big))

        # 1M-entry logs, exported in both modes, then verified.
        fast = LogConfig(checkpoint=_POLICY, fsync=FsyncPolicy.NEVER)
        for mode, key in ((Mode.MERKLE, "verify_1m_s"), (Mode.PATENT, "naive_verify_1m_s")):
            store = work / f"big-{mode.value}.log"
            out = work / f"big-{mode.value}.txt"
            cfg = LogConfig(mode=mode, checkpoint=fast.checkpoint, fsync=fast.fsync)
            # one module per log: a module keeps the last signed head of *its* log (the anchor)
            big_module = SoftwareModule.create(work / f"big-{mode.value}.pem", "bench/eventlog")
            pem = big_module.public_key_pem()
            with EventLog.open(store, METER, big_module, 1.7e9, cfg) as lg:
                _fill(lg, big, 1.7e9)
                if lg.unsigned_entries:
                    lg.checkpoint(1.7e9 + big)
                lg.export(out)
                if mode is Mode.MERKLE:  # the append rate once the log is big
                    rate = tail / _fill_from(lg, big, tail, 1.7e9)
                    result["appends_per_s_at_1m"] = round(rate)
            result[f"{'naive_' if mode is Mode.PATENT else ''}export_bytes_1m"] = out.stat().st_size
            start = time.perf_counter()
            verdict = verify_file(out, pem, meter_id=METER)
            result[key] = round(time.perf_counter() - start, 3)
            if verdict.reason is not Reason.OK:
                raise RuntimeError(f"benchmark log did not verify: {verdict}")
            result[f"{key[:-2]}_heads"] = verdict.heads
            if mode is Mode.MERKLE:
                # One event's inclusion proof against the last signed head.
                tree = MerkleTree()
                records: list[EventRecord] = []
                for i in range(big):
                    typ, data = _event(i)
                    rec = EventRecord(i, round((1.7e9 + i * 0.001) * 1000), typ, data)
                    tree.append(rec.encode())
                    if i == big // 2:
                        records.append(rec)
                assert verdict.last_head is not None
                proof = prove_inclusion(tree, big // 2, verdict.last_head.size)
                ok = verify_event(records[0], proof, verdict.last_head, METER, pem)
                if ok is not Reason.OK:
                    raise RuntimeError(f"inclusion proof did not verify: {ok}")
                result["proof_bytes_1m"] = len(proof.encode())
            else:
                # Showing one event (or that the log extends an earlier one) under a whole-log
                # signature takes every entry up to the signed event: the whole log.
                result["naive_proof_bytes_1m"] = sum(
                    4 + len(EventRecord(i, 0, *_event(i)).encode()) for i in range(big)
                )
            store.unlink()
            out.unlink()
            big_module.close()
        module.close()
        result["targets"] = {
            "appends_per_s": ">= 20000",
            "verify_1m_s": "< 5",
            "proof_bytes_1m": "<= 1024",
        }
        result["targets_met"] = bool(
            result["appends_per_s"] >= 20_000
            and (
                result["appends_per_s_softhsm"] is None or result["appends_per_s_softhsm"] >= 20_000
            )
            and result["verify_1m_s"] < 5
            and result["proof_bytes_1m"] <= 1024
        )
        return result
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
