"""Attacks on the meter's own log store, as an attacker with the meter's file system would try
them: restore an old copy, cut it at a frame boundary, delete it, flip a bit in a frame length
or a payload, swap two intact frames. The secure module keeps the last signed head (software:
a 0600 file beside the key; PKCS#11: a private data object in the token), so a rollback is
detected at open; damage before the end is set aside byte for byte and the log continues with
a signed record of what happened. Only a torn *final* frame is cut."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass
from tests.unit.eventlog.conftest import METER, T0, config, fill
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token

from amistack.eventlog import (
    CheckpointPolicy,
    EventLog,
    EventRecord,
    EventType,
    LogConfig,
    LogStoreError,
    Reason,
    verify_lines,
)
from amistack.eventlog.log import _frame_at, _scan
from amistack.eventlog.record import Mode
from amistack.eventlog.verify import TrustedHead
from amistack.securemodule import (
    Pkcs11Module,
    SecureModule,
    SecureModuleError,
    SoftwareModule,
)
from amistack.securemodule.software import SLOT_SIZE

__all__ = ["softhsm_token"]


@pytest.fixture(params=["software", "pkcs11"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecureModule]:
    """The meter's secure module: a software key file, or a key in a SoftHSM2 token."""
    if request.param == "software":
        yield SoftwareModule.create(tmp_path / "module.pem", f"{METER}/eventlog")
        return
    token: SoftHsmToken = request.getfixturevalue("softhsm_token")
    module = Pkcs11Module.create(token.library, token.label, token.pin, f"{METER}/eventlog")
    yield module
    module.close()


def frame_offsets(path: Path) -> list[int]:
    """Where each frame of a store starts (and, last, where the file ends)."""
    data = path.read_bytes()
    pos = _scan(data, path).body
    offsets = [pos]
    while pos < len(data):
        frame = _frame_at(data, pos)
        assert not isinstance(frame, str)
        pos = frame[1]
        offsets.append(pos)
    return offsets


def entries(lg: EventLog) -> list[EventRecord]:
    return [i for i in lg.items() if isinstance(i, EventRecord)]


def types(lg: EventLog) -> list[int]:
    return [e.type for e in entries(lg)]


def test_restoring_an_old_copy_is_detected_and_signed(
    tmp_path: Path, backend: SecureModule
) -> None:
    path = tmp_path / "events.log"
    with EventLog.open(path, METER, backend, T0, config(every=5)) as lg:
        fill(lg, 5)
        old_size = lg.size
        shutil.copy(path, tmp_path / "backup")  # the attacker's copy, with a genuine head
        fill(lg, 6, start=5)
        newest = lg.heads[-1]
    os.replace(tmp_path / "backup", path)
    with EventLog.open(path, METER, backend, T0 + 100, config(every=5)) as lg:
        ev = entries(lg)[-1]
        assert ev.type == EventType.LOG_ROLLED_BACK and ev.seq == old_size
        size, digest, found = struct.unpack(">Q32sQ", ev.data)
        assert size == newest.size == 10 and digest == newest.digest(METER) and found == old_size
        assert lg.heads[-1].size == lg.size  # signed at once
        export = list(lg.export_lines())
    verdict = verify_lines(export, backend.public_key_pem())
    assert verdict.ok  # the log itself is genuine: the rollback is *in* it, signed
    # and the next open is quiet: the module now holds the head that records the rollback
    with EventLog.open(path, METER, backend, T0 + 200, config(every=5)) as lg:
        assert types(lg).count(EventType.LOG_ROLLED_BACK) == 1


@pytest.mark.parametrize("boundary", [3, -3])
def test_cutting_at_a_frame_boundary_is_detected(tmp_path: Path, boundary: int) -> None:
    module = SoftwareModule.create(tmp_path / "module.pem", "m")
    path = tmp_path / "events.log"
    with EventLog.open(path, METER, module, T0, config(every=2)) as lg:
        fill(lg, 11)
    offsets = frame_offsets(path)
    os.truncate(path, offsets[boundary])  # a clean cut: every frame left is intact
    with EventLog.open(path, METER, module, T0 + 100, config(every=2)) as lg:
        assert lg.torn_bytes == 0
        assert types(lg)[-1] == EventType.LOG_ROLLED_BACK


def test_the_records_are_signed_whatever_the_signing_policy(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "module.pem", "m")
    path = tmp_path / "events.log"
    quiet = LogConfig(
        checkpoint=CheckpointPolicy(sign_on=frozenset(), every_entries=None, every_seconds=None)
    )
    with EventLog.open(path, METER, module, T0, quiet) as lg:
        fill(lg, 3)
        lg.checkpoint(T0 + 3)
    path.unlink()
    for t in (100, 200):
        with EventLog.open(path, METER, module, T0 + t, quiet) as lg:
            assert types(lg) == [EventType.LOG_ROLLED_BACK]  # once, signed: the next open is quiet
            assert lg.heads[-1].size == 1


def test_deleting_the_store_is_detected(tmp_path: Path, backend: SecureModule) -> None:
    path = tmp_path / "events.log"
    with EventLog.open(path, METER, backend, T0, config(every=2)) as lg:
        fill(lg, 4)
    path.unlink()
    with EventLog.open(path, METER, backend, T0 + 100, config(every=2)) as lg:
        assert types(lg) == [EventType.LOG_ROLLED_BACK]


def test_an_honest_reopen_records_nothing_and_a_lagging_anchor_catches_up(
    tmp_path: Path, backend: SecureModule
) -> None:
    path = tmp_path / "events.log"
    with EventLog.open(path, METER, backend, T0, config(every=2)) as lg:
        fill(lg, 4)
        anchor_at_4 = backend.read_anchor()
        fill(lg, 3, start=4)  # a head at 6 and one unsigned entry
    # a crash after the head at 6 reached the store but before the module stored it
    assert anchor_at_4 is not None
    backend.write_anchor(anchor_at_4)
    for t in (1, 2):
        with EventLog.open(path, METER, backend, T0 + t, config(every=2)) as lg:
            assert lg.size == 7
            assert backend.read_anchor() != anchor_at_4  # brought up to the head at 6
            assert EventType.LOG_ROLLED_BACK not in types(lg)


def test_the_software_anchor_is_an_owner_only_file_that_outlives_the_process(
    tmp_path: Path,
) -> None:
    key = tmp_path / "module.pem"
    with EventLog.open(tmp_path / "s", METER, SoftwareModule.create(key, "m"), T0, config()) as lg:
        fill(lg, 5)
        head = lg.heads[-1]
    anchor = tmp_path / "module.pem.anchor"
    assert anchor.stat().st_mode & 0o777 == 0o600
    reopened = SoftwareModule.open(key, "m")
    assert reopened.read_anchor() == struct.pack(">Q", head.size) + head.digest(METER)


def test_a_torn_anchor_write_leaves_the_previous_anchor(tmp_path: Path) -> None:
    key = tmp_path / "module.pem"
    module = SoftwareModule.create(key, "m")
    module.write_anchor(b"first")
    module.write_anchor(b"second")  # generation 2: slot 0
    path = tmp_path / "module.pem.anchor"
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0xFF  # the power cut hit the newer slot
    path.write_bytes(bytes(raw))
    assert SoftwareModule.open(key, "m").read_anchor() == b"first"
    raw[SLOT_SIZE + 20] ^= 0xFF  # both slots spoilt: a damaged anchor, said so
    path.write_bytes(bytes(raw))
    with pytest.raises(SecureModuleError, match="damaged anchor"):
        SoftwareModule.open(key, "m").read_anchor()


def test_the_token_anchor_is_a_private_object_in_the_token(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, "m/eventlog") as module:
        assert module.read_anchor() is None
        for value in (b"one", b"two", b"three"):
            module.write_anchor(value)
    with Pkcs11Module.open(t.library, t.label, t.pin, "m/eventlog") as module:
        assert module.read_anchor() == b"three"
        template = {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.APPLICATION: module.anchor_application,
        }
        with module._session.use() as session:
            objects = list(session.get_objects(template))
            assert len(objects) == 1  # updated in place
            assert objects[0][Attribute.PRIVATE] is True  # visible only after login
            assert objects[0][Attribute.TOKEN] is True


def _eleven(tmp_path: Path, module: SecureModule) -> tuple[Path, list[int]]:
    path = tmp_path / "events.log"
    with EventLog.open(path, METER, module, T0, config(every=None)) as lg:
        fill(lg, 10)
        lg.append(EventType.COVER_OPEN, b"", T0 + 10)  # 11 entries, one head at the end
    return path, frame_offsets(path)


@pytest.mark.parametrize(
    ("where", "bit"),
    [
        pytest.param(0, 0x80, id="length-high-byte"),  # length > MAX_FRAME
        pytest.param(1, 0x01, id="length-runs-past-the-end"),
        pytest.param(3, 0x01, id="length-off-by-one"),
        pytest.param(9, 0x04, id="payload"),
        pytest.param(4, 0x02, id="kind"),
    ],
)
def test_a_flipped_bit_mid_file_is_set_aside_never_truncated(
    tmp_path: Path, backend: SecureModule, where: int, bit: int
) -> None:
    path, offsets = _eleven(tmp_path, backend)
    data = bytearray(path.read_bytes())
    data[offsets[3] + where] ^= bit  # the fourth entry's frame
    damaged = bytes(data)
    path.write_bytes(damaged)
    # without the module nothing changes and nothing is cut
    with pytest.raises(LogStoreError, match="not a torn tail"):
        EventLog.open(path, METER, None, T0 + 20, config(every=None))
    assert path.read_bytes() == damaged
    with EventLog.open(path, METER, backend, T0 + 20, config(every=None)) as lg:
        assert lg.torn_bytes == 0
        got = entries(lg)
        assert [e.seq for e in got] == list(range(5))  # 3 good entries + 2 records
        assert got[3].type == EventType.LOG_STORE_DAMAGED
        offset, aside_len = struct.unpack_from(">QQ", got[3].data)
        assert offset == offsets[3] and aside_len == len(damaged) - offsets[3]
        assert b"set aside as events.log.damaged-" in got[3].data
        assert got[4].type == EventType.LOG_ROLLED_BACK  # the head at 11 is gone with it
        assert lg.heads[-1].size == 5
        export = list(lg.export_lines())
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("events.log.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # the original bytes, kept
    assert verify_lines(export, backend.public_key_pem()).ok
    # the MDMS, which had accepted the head at 11, sees the log is not what it had
    with EventLog.open(tmp_path / "ref", METER, backend, T0, config(every=None)) as ref:
        fill(ref, 10)
        ref.append(EventType.COVER_OPEN, b"", T0 + 10)
        trusted = TrustedHead(METER, Mode.MERKLE, ref.heads[-1])
    verdict = verify_lines(export, backend.public_key_pem(), trusted=trusted)
    assert not verdict.ok and verdict.reason in (Reason.NOT_EXTENSION, Reason.ROLLBACK)


def test_swapped_intact_frames_are_damage_not_a_tail(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "module.pem", "m")
    path, offsets = _eleven(tmp_path, module)
    data = path.read_bytes()
    a, b, c = offsets[5], offsets[6], offsets[7]
    path.write_bytes(data[:a] + data[b:c] + data[a:b] + data[c:])  # CRCs all still hold
    with EventLog.open(path, METER, module, T0 + 20, config(every=None)) as lg:
        assert types(lg)[5] == EventType.LOG_STORE_DAMAGED
        assert b"entry 6 at offset" in entries(lg)[5].data


def test_a_torn_final_frame_is_still_cut(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "module.pem", "m")
    path, _ = _eleven(tmp_path, module)
    with EventLog.open(path, METER, module, T0 + 11, config(every=None)) as lg:
        lg.append(EventType.POWER_FAIL, b"\x01", T0 + 11)  # unsigned: the power cut is coming
    os.truncate(path, frame_offsets(path)[-1] - 7)  # ... and tears its frame
    with EventLog.open(path, METER, module, T0 + 20, config(every=None)) as lg:
        assert lg.torn_bytes > 0
        assert types(lg)[11:] == [EventType.LOG_TAIL_REPAIRED]  # no rollback: heads intact
    assert not [p for p in tmp_path.iterdir() if ".damaged-" in p.name]


def test_a_torn_tail_is_not_cut_without_the_module(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "module.pem", "m")
    path, offsets = _eleven(tmp_path, module)
    os.truncate(path, offsets[-1] - 7)
    before = path.read_bytes()
    with EventLog.open(path, METER, None, T0 + 20, config(every=None)) as lg:
        assert lg.size == 11 and lg.torn_bytes > 0
        with pytest.raises(LogStoreError, match="torn tail"):
            lg.append(EventType.POWER_FAIL, b"", T0 + 21)
    assert path.read_bytes() == before
