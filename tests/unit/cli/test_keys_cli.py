"""`amistack keys ...` run in-process: exit codes, one-line errors, what is printed, file modes."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.cli import run_keys as keys

from amistack.cli.common import KEK_FILE, KEYSERVER_DB, open_store

PSK = "00112233445566778899aabbccddeeff"


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_enroll_with_a_psk_creates_owner_only_files(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    code, out, err = keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    assert (code, err) == (0, "")
    assert out.startswith("enrolled meter-1") and PSK not in out
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / KEK_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((d / KEYSERVER_DB).stat().st_mode) == 0o600
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") == bytes.fromhex(PSK)
    assert PSK.encode() not in (d / KEYSERVER_DB).read_bytes()  # wrapped under the KEK


def test_generated_psk_is_printed_once_and_is_the_stored_one(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    code, out, _ = keys(capsys, d, "enroll", "meter-1")
    assert code == 0
    found = re.findall(r"\b[0-9a-f]{32}\b", out)
    assert len(found) == 1 and "shown once" in out
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") == bytes.fromhex(found[0])
    # it is never shown again
    for argv in (("list",), ("list", "--json"), ("audit",), ("audit", "--json")):
        code, again, _ = keys(capsys, d, *argv)
        assert code == 0 and found[0] not in again


@pytest.mark.parametrize(
    ("psk", "why"),
    [
        ("0011", "16 bytes"),
        ("zz112233445566778899aabbccddeeff", "hex digits"),
        (PSK + "00", "16 bytes"),
    ],
)
def test_bad_psk_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], d: Path, psk: str, why: str
) -> None:
    code, out, err = keys(capsys, d, "enroll", "meter-1", "--psk", psk)
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and why in errors[0]
    assert not (d / KEYSERVER_DB).exists()  # nothing was created


def test_all_zero_psk_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    code, _, err = keys(capsys, d, "enroll", "meter-1", "--psk", "00" * 16)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("amistack keys: error: ") and "zero" in err


def test_duplicate_enrolment_is_refused_unless_replace(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    assert keys(capsys, d, "enroll", "meter-1", "--psk", PSK)[0] == 0
    code, out, err = keys(capsys, d, "enroll", "meter-1", "--psk", "11" * 16)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "exists: " in err and "already enrolled" in err and "'meter-1'" in err
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") == bytes.fromhex(PSK)  # unchanged
    assert keys(capsys, d, "enroll", "meter-1", "--psk", "11" * 16, "--replace")[0] == 0
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") == bytes.fromhex("11" * 16)
        assert store.device("meter-1").psk_generation == 2


@pytest.mark.parametrize("action", [("revoke", "ghost"), ("rotate-psk", "ghost", "--psk", PSK)])
def test_unknown_device_is_one_line_error(
    capsys: pytest.CaptureFixture[str], d: Path, action: tuple[str, ...]
) -> None:
    assert keys(capsys, d, "enroll", "meter-1", "--psk", PSK)[0] == 0
    code, out, err = keys(capsys, d, *action)
    assert (code, out) == (2, "")
    assert err == "amistack keys: error: not-found: unknown device 'ghost'\n"


def test_commands_on_a_missing_store_fail_without_creating_it(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    for argv in (("list",), ("audit",), ("revoke", "x"), ("rotate-psk", "x")):
        code, _, err = keys(capsys, d, *argv)
        assert code == 2 and "no key server data" in err and err.count("\n") == 1
    assert not (d / KEYSERVER_DB).exists() and not (d / KEK_FILE).exists()


def test_list_shows_status_and_json(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    keys(capsys, d, "enroll", "meter-2", "--psk", PSK, "--lifetime", "120")
    assert keys(capsys, d, "revoke", "meter-2", "--reason", "stolen")[1] == "revoked meter-2\n"
    code, out, _ = keys(capsys, d, "list")
    assert code == 0 and "2 device(s)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert lines["meter-1"].endswith("active") and "revoked" in lines["meter-2"]
    code, out, _ = keys(capsys, d, "list", "--json")
    rows = {r["device_id"]: r for r in json.loads(out)}
    assert rows["meter-1"]["revoked_at"] is None and rows["meter-1"]["session_lifetime"] is None
    assert rows["meter-2"]["revoke_reason"] == "stolen"
    assert rows["meter-2"]["session_lifetime"] == 120.0


def test_revoke_twice_and_rotate_a_revoked_device(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    assert keys(capsys, d, "revoke", "meter-1") == (0, "revoked meter-1\n", "")
    assert keys(capsys, d, "revoke", "meter-1") == (0, "meter-1 was already revoked\n", "")
    code, _, err = keys(capsys, d, "rotate-psk", "meter-1")
    assert code == 2 and err == "amistack keys: error: revoked: device 'meter-1' is revoked\n"
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") is None  # destroyed
        [rev] = store.revocations_after(0)
        assert rev.keys_until is not None and rev.keys_until == pytest.approx(rev.at, abs=1.0)


def test_revoke_grace_is_journalled(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    assert keys(capsys, d, "revoke", "meter-1", "--keys-valid-for", "300")[0] == 0
    with open_store(d, create=False) as store:
        [rev] = store.revocations_after(0)
        assert rev.keys_until == pytest.approx(rev.at + 300, abs=1e-6)


def test_rotate_psk_prints_a_generated_psk_once(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    code, out, _ = keys(capsys, d, "rotate-psk", "meter-1")
    assert code == 0 and out.startswith("meter-1: PSK generation 2\n")
    [new] = re.findall(r"\b[0-9a-f]{32}\b", out)
    assert new != PSK
    code, out, _ = keys(capsys, d, "rotate-psk", "meter-1", "--psk", "22" * 16)
    assert (code, out) == (0, "meter-1: PSK generation 3\n")
    with open_store(d, create=False) as store:
        assert store.psk("meter-1") == bytes.fromhex("22" * 16)


def test_audit_is_newest_first_and_filters_by_device(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    keys(capsys, d, "enroll", "meter-1", "--psk", PSK)
    keys(capsys, d, "enroll", "meter-2", "--psk", PSK)
    keys(capsys, d, "rotate-psk", "meter-1", "--psk", "33" * 16)
    keys(capsys, d, "revoke", "meter-2")
    code, out, _ = keys(capsys, d, "audit", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["kind"] for r in rows] == ["revoke", "rotate-psk", "enroll", "enroll"]
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
    code, out, _ = keys(capsys, d, "audit", "--json", "--device", "meter-1", "--limit", "1")
    [only] = json.loads(out)
    assert (only["kind"], only["device_id"]) == ("rotate-psk", "meter-1")
    code, out, _ = keys(capsys, d, "audit", "--device", "meter-2")
    assert code == 0 and out.splitlines()[0].split()[2:4] == ["revoke", "meter-2"]


def test_keys_needs_an_action(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    code, out, err = run(capsys, "keys")
    assert code == 2 and out == "" and "ACTION" in err
    code, _, err = keys(capsys, d, "enroll")  # no device id
    assert code == 2 and "ID" in err


def test_keyserver_refuses_two_ports_and_bad_addresses(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    code, _, err = run(
        capsys, "keyserver", "--data-dir", str(d), "--listen", "127.0.0.1:1", "--listen", "::1:2"
    )
    assert code == 2 and "one port" in err and err.count("\n") == 1
    code, _, err = run(capsys, "keyserver", "--data-dir", str(d), "--listen", "meter.example:7")
    assert code == 2 and "not an IPv4 or IPv6 address" in err
    assert not d.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("list", "--db", "postgresql://ks:hunter2@db.invalid/keys"),
        ("list", "--db", "host=db.invalid password=hunter2"),
        ("list", "--db-password-file", "/nonexistent"),  # without --db
        ("list", "--db", "postgresql://ks@db.invalid/keys", "--db-password-file", "/nonexistent"),
    ],
)
def test_a_database_password_is_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str], d: Path, argv: tuple[str, ...]
) -> None:
    code, out, err = keys(capsys, d, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "hunter2" not in err  # the error names the problem, never the secret
    assert "--db" in err
