"""The MDMS verifier: every kind of tampering is caught with its own reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.eventlog.conftest import METER, T0, config, fill, make_export
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token  # noqa: F401

from amistack.eventlog import (
    EventLog,
    EventRecord,
    EventType,
    HeadStore,
    Mode,
    Reason,
    SignedHead,
    TrustedHead,
    prove_inclusion,
    verify_event,
    verify_file,
    verify_head_update,
    verify_lines,
)
from amistack.eventlog.merkle import MerkleTree
from amistack.eventlog.record import parse_line
from amistack.eventlog.verify import InclusionProof, build_tree
from amistack.securemodule import Pkcs11Module, SoftwareModule


def idx(lines: list[str], prefix: str) -> int:
    return next(i for i, ln in enumerate(lines) if ln.startswith(prefix))


def check(lines: list[str], module: SoftwareModule, **kw: object) -> Reason:
    return verify_lines(lines, module.public_key_pem(), **kw).reason  # type: ignore[arg-type]


def trusted_at(lines: list[str], size: int) -> TrustedHead:
    head = parse_line(lines[idx(lines, f"H {size} ")].rstrip("\n"), 0)
    assert isinstance(head, SignedHead)
    return TrustedHead(METER, Mode.MERKLE, head)


def test_an_intact_log_holds(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    v = verify_lines(lines, module.public_key_pem(), meter_id=METER)
    assert v.ok, str(v)
    assert (v.entries, v.heads, v.unsigned_tail) == (20, 4, 0)
    assert v.last_head is not None and v.last_head.size == 20


def test_edited_entry(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    i = idx(lines, "E 7 ")
    lines[i] = lines[i].replace(" 0007", " 0107")
    v = verify_lines(lines, module.public_key_pem())
    assert v.reason is Reason.EDITED_ENTRY
    assert v.line == idx(lines, "H 10 ") + 1  # caught at the first head covering it


def test_edited_entry_with_recomputed_root_fails_the_signature(
    tmp_path: Path, module: SoftwareModule
) -> None:
    lines = make_export(tmp_path, module)
    i = idx(lines, "E 7 ")
    lines[i] = lines[i].replace(" 0007", " 0107")
    tree = MerkleTree()
    for ln in lines[1:]:
        item = parse_line(ln.rstrip("\n"), 0)
        if isinstance(item, EventRecord):
            tree.append(item.encode())
    for size in (10, 15, 20):
        j = idx(lines, f"H {size} ")
        parts = lines[j].split(" ")
        parts[2] = tree.root(size).hex()
        lines[j] = " ".join(parts)
    assert check(lines, module) is Reason.BAD_SIGNATURE


def test_edit_just_before_the_trusted_size_is_still_an_edit(
    tmp_path: Path, module: SoftwareModule
) -> None:
    lines = make_export(tmp_path, module)
    i = idx(lines, "E 17 ")
    lines[i] = lines[i].replace(" 0011", " 0111")
    assert check(lines, module, trusted=trusted_at(lines, 20)) is Reason.EDITED_ENTRY


def test_clock_set_back_between_heads_is_not_tampering(
    tmp_path: Path, module: SoftwareModule
) -> None:
    with EventLog.open(tmp_path / "c", METER, module, T0, config()) as lg:
        fill(lg, 6)
        lg.append(EventType.CLOCK_ADJUSTED, b"", T0 - 3600)  # signed, an hour earlier
        lines = list(lg.export_lines())
    assert check(lines, module) is Reason.OK


def test_deleted_entry(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    del lines[idx(lines, "E 7 ")]
    assert check(lines, module) is Reason.DELETED_ENTRY


def test_reordered_entries(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    i = idx(lines, "E 7 ")
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    assert check(lines, module) is Reason.REORDERED_ENTRIES


def test_moved_head_is_reordering(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    head = lines.pop(idx(lines, "H 10 "))
    lines.insert(idx(lines, "E 3 "), head)
    assert check(lines, module) is Reason.REORDERED_ENTRIES


def test_truncated_log(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    del lines[idx(lines, "E 19 ")]  # the last entries cut off, the head that covers them kept
    del lines[idx(lines, "E 18 ")]
    assert check(lines, module) is Reason.TRUNCATED


def test_truncated_below_the_trusted_head(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    trusted = trusted_at(lines, 20)
    cut = lines[: idx(lines, "E 18 ")]  # ends with unsigned entries 15..17
    assert check(cut, module, trusted=trusted) is Reason.TRUNCATED


def test_rollback_to_an_earlier_signed_state(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    trusted = trusted_at(lines, 20)
    earlier = lines[: idx(lines, "H 10 ") + 1]  # a genuine, validly signed older export
    assert check(earlier, module) is Reason.OK  # on its own it holds ...
    assert check(earlier, module, trusted=trusted) is Reason.ROLLBACK  # ... but not any more


def test_extension_of_the_trusted_head_holds(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    assert check(lines, module, trusted=trusted_at(lines, 10)) is Reason.OK
    assert check(lines, module, trusted=trusted_at(lines, 20)) is Reason.OK


def test_fork_is_not_an_extension(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    trusted = trusted_at(lines, 10)
    with EventLog.open(tmp_path / "fork", METER, module, T0, config()) as lg:
        fill(lg, 3)
        lg.append(EventType.POWER_FAIL, b"rewritten history", T0 + 3)
        fill(lg, 16, start=4)
        fork = list(lg.export_lines())
    assert check(fork, module) is Reason.OK  # validly signed by the meter's own key
    assert check(fork, module, trusted=trusted) is Reason.NOT_EXTENSION


def test_signature_by_another_key(
    tmp_path: Path, module: SoftwareModule, other_module: SoftwareModule
) -> None:
    forged = make_export(tmp_path, other_module)
    assert check(forged, module) is Reason.WRONG_KEY


def test_altered_signature(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    j = idx(lines, "H 15 ")
    lines[j] = lines[j][:-3] + ("0" if lines[j][-3] != "0" else "1") + lines[j][-2:]
    assert check(lines, module) is Reason.BAD_SIGNATURE


def test_malformed_files(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    assert check(["garbage\n", *lines[1:]], module) is Reason.MALFORMED
    assert check([lines[0], "E 0 yesterday POWER_FAIL -\n", *lines[2:]], module) is Reason.MALFORMED
    assert check([], module) is Reason.MALFORMED
    bad = tmp_path / "bin.log"
    bad.write_bytes(lines[0].encode() + b"\xff\xfe\n")
    assert verify_file(bad, module.public_key_pem()).reason is Reason.MALFORMED


def test_unsigned_log_and_wrong_meter(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    unsigned = [ln for ln in lines if not ln.startswith("H ")]
    assert check(unsigned, module) is Reason.NO_SIGNED_HEAD
    assert check(lines, module, meter_id="meter-0002") is Reason.WRONG_METER
    renamed = [lines[0].replace(METER, "meter-0002"), *lines[1:]]
    assert check(renamed, module) is Reason.BAD_SIGNATURE  # heads bind the meter id


def test_patent_mode_log(tmp_path: Path, module: SoftwareModule) -> None:
    with EventLog.open(tmp_path / "p", METER, module, T0, config(Mode.PATENT)) as lg:
        fill(lg, 4)
        lg.append(EventType.COVER_OPEN, b"", T0 + 4)
        fill(lg, 4, start=5)
        lg.append(EventType.SWITCH_OPENED, b"", T0 + 9)
        lines = list(lg.export_lines())
    v = verify_lines(lines, module.public_key_pem())
    assert v.ok and v.heads == 2 and v.entries == 10
    i = idx(lines, "E 2 ")
    lines[i] = lines[i].replace(" 0002", " 0102")
    assert check(lines, module) is Reason.EDITED_ENTRY


def test_single_event_inclusion_against_a_signed_head(
    tmp_path: Path, module: SoftwareModule, other_module: SoftwareModule
) -> None:
    lines = make_export(tmp_path, module, n=37)
    records = [it for ln in lines[1:] if isinstance(it := parse_line(ln.rstrip(), 0), EventRecord)]
    head = verify_lines(lines, module.public_key_pem()).last_head
    assert head is not None and head.size == 37
    tree = build_tree(records)
    pem = module.public_key_pem()
    proof = InclusionProof.decode(prove_inclusion(tree, 21, 37).encode())
    assert len(proof.encode()) <= 16 + 6 * 32
    assert verify_event(records[21], proof, head, METER, pem) is Reason.OK
    forged = EventRecord(21, records[21].time_ms, records[21].type, b"forged")
    assert verify_event(forged, proof, head, METER, pem) is Reason.EDITED_ENTRY
    assert verify_event(records[20], proof, head, METER, pem) is Reason.EDITED_ENTRY
    assert verify_event(records[21], proof, head, METER, other_module.public_key_pem()) is (
        Reason.WRONG_KEY
    )


def test_head_update_needs_a_consistency_proof(tmp_path: Path, module: SoftwareModule) -> None:
    lines = make_export(tmp_path, module)
    old, new = trusted_at(lines, 10), trusted_at(lines, 20).head
    records = [it for ln in lines[1:] if isinstance(it := parse_line(ln.rstrip(), 0), EventRecord)]
    tree = build_tree(records)
    pem = module.public_key_pem()
    assert verify_head_update(old, new, tree.consistency_proof(10, 20), pem) is Reason.OK
    assert verify_head_update(old, new, tree.consistency_proof(9, 20), pem) is Reason.NOT_EXTENSION
    newer = trusted_at(lines, 20)
    assert verify_head_update(newer, old.head, [], pem) is Reason.ROLLBACK


def test_head_store_refuses_a_rollback_after_accepting(
    tmp_path: Path, module: SoftwareModule
) -> None:
    lines = make_export(tmp_path, module)
    full, old = tmp_path / "full.log", tmp_path / "old.log"
    full.write_text("".join(lines))
    old.write_text("".join(lines[: idx(lines, "H 10 ") + 1]))
    store = HeadStore(tmp_path / "heads")
    pem = module.public_key_pem()
    assert store.verify_and_accept(old, METER, pem).ok
    assert store.verify_and_accept(full, METER, pem).ok
    kept = store.get(METER)
    assert kept is not None and kept.head.size == 20
    assert store.verify_and_accept(old, METER, pem).reason is Reason.ROLLBACK
    assert store.get(METER) == kept


def test_a_softhsm_signed_log_verifies(
    tmp_path: Path,
    softhsm_token: SoftHsmToken,  # noqa: F811
) -> None:
    module = Pkcs11Module.create(
        softhsm_token.library, softhsm_token.label, softhsm_token.pin, f"{METER}/eventlog"
    )
    try:
        lines = make_export(tmp_path, module, n=12)  # type: ignore[arg-type]
        pem = module.public_key_pem()
    finally:
        module.close()
    v = verify_lines(lines, pem)
    assert v.ok and v.heads == 3


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65])
def test_sizes_around_tree_boundaries(tmp_path: Path, module: SoftwareModule, n: int) -> None:
    lines = make_export(tmp_path, module, n=n)
    assert check(lines, module) is Reason.OK
