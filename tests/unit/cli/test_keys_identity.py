"""`amistack keys` as an attacker on the same host would try it: with no identity, a bad or
someone else's token, a role without the right, a token file others can read; and where the
PSKs end up (never in the audit trail, the log, or a file group/others can read)."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import pytest
from tests.cli import run_cli as run
from tests.cli import run_keys
from tests.conftest import key_operator

from amistack.access import AuditTrail, Role
from amistack.cli.common import KEYSERVER_DB


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "ks"


def trail(d: Path) -> list[tuple[str, str, str, str]]:
    t = AuditTrail.open(d, 0.0)
    try:
        return [(e.who, e.action, e.target, e.outcome) for e in t.entries(limit=1000)]
    finally:
        t.close()


def test_no_identity_no_action(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    for argv in (("enroll", "m-1"), ("revoke", "m-1"), ("list",), ("audit",)):
        code, out, err = run(capsys, "keys", *argv, "--data-dir", str(d))
        assert (code, out) == (2, "") and "needs an operator identity" in err, argv
        assert err.count("\n") == 1
    assert not d.exists()


def test_a_forged_or_revoked_token_is_refused_and_audited(
    capsys: pytest.CaptureFixture[str], d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_operator(d)
    monkeypatch.setenv("AMISTACK_TOKEN", "A" * 43)
    code, _, err = run(capsys, "keys", "enroll", "m-1", "--data-dir", str(d))
    assert code == 2 and "invalid, expired or revoked" in err
    assert not (d / KEYSERVER_DB).exists()
    assert [(a, o) for _, a, _, o in trail(d)] == [("keys.auth", "failed")]


def test_the_rights_table_decides(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    assert run_keys(capsys, d, "enroll", "m-1")[0] == 0  # the SECADM + SECAUD operator
    viewer = str(key_operator(d, Role.VIEWER, Role.OPERATOR, name="vic"))
    for argv in (("enroll", "m-2"), ("revoke", "m-1"), ("rotate-psk", "m-1"), ("list",)):
        code, out, err = run(capsys, "keys", *argv, "--data-dir", str(d), "--token-file", viewer)
        assert (code, out) == (2, "") and "forbidden" in err, argv
    auditor = str(key_operator(d, Role.SECAUD, name="sue"))
    code, out, _ = run(capsys, "keys", "list", "--data-dir", str(d), "--token-file", auditor)
    assert code == 0 and "m-1" in out
    code, _, err = run(
        capsys, "keys", "revoke", "m-1", "--data-dir", str(d), "--token-file", auditor
    )
    assert code == 2 and "'keys' is needed" in err
    refused = [(w, a) for w, a, _, o in trail(d) if o == "refused: forbidden"]
    assert refused == [
        ("vic", "keys.enroll"),
        ("vic", "keys.revoke"),
        ("vic", "keys.rotate_psk"),
        ("vic", "keys.list"),
        ("sue", "keys.revoke"),
    ]


def test_a_token_file_others_can_read_is_refused(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    token = key_operator(d)
    token.chmod(0o644)
    code, _, err = run(capsys, "keys", "list", "--data-dir", str(d), "--token-file", str(token))
    assert code == 2 and "must not be accessible to group or others" in err


def test_psks_stay_out_of_the_trail_the_log_and_readable_files(
    capsys: pytest.CaptureFixture[str], d: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, out, _ = run_keys(capsys, d, "enroll", "m-1")
    [generated] = re.findall(r"\b[0-9a-f]{32}\b", out)  # shown once, to the operator
    code, out, _ = run_keys(capsys, d, "rotate-psk", "m-1")
    [rotated] = re.findall(r"\b[0-9a-f]{32}\b", out)
    given = "5a" * 16
    assert run_keys(capsys, d, "enroll", "m-2", "--psk", given)[0] == 0
    for argv in (("list", "--json"), ("audit", "--json")):
        code, out, _ = run_keys(capsys, d, *argv)
        assert code == 0 and generated not in out and rotated not in out and given not in out
    files = [p for p in d.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"keyserver.db", "kek.key", "access.db", "audit.log"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        raw = path.read_bytes()
        for secret in (generated, rotated, given):
            assert secret.encode() not in raw and bytes.fromhex(secret) not in raw, path
    for secret in (generated, rotated, given):
        assert secret not in caplog.text
    actions = [(a, o) for _, a, t, o in trail(d) if t == "m-1"]
    assert actions == [
        ("keys.enroll", "requested"),
        ("keys.enroll", "ok"),
        ("keys.rotate_psk", "requested"),
        ("keys.rotate_psk", "ok"),
    ]


def test_the_trail_export_verifies_with_log_verify(
    capsys: pytest.CaptureFixture[str], d: Path, tmp_path: Path
) -> None:
    assert run_keys(capsys, d, "enroll", "m-1")[0] == 0
    out = tmp_path / "trail.txt"
    code, printed, _ = run_keys(capsys, d, "trail", "--out", str(out))
    assert code == 0 and "amistack log verify" in printed
    code, _, _ = run(capsys, "log", "verify", str(out), "--pubkey", f"{out}.pem")
    assert code == 0
    out.write_text(out.read_text().replace(b"keys.enroll".hex(), b"keys.enrol1".hex(), 1))
    code, _, _ = run(capsys, "log", "verify", str(out), "--pubkey", f"{out}.pem")
    assert code == 1  # an edited entry is caught
