"""`amistack users`, `amistack pki issue-client --role/--meters` and the head-end's start-up
refusals (API on a public address without TLS, ports in use), run in-process: exit codes,
one-line errors, file modes, what is audited."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
from tests.cli import run_cli as run

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.certroles import roles_of_certificate
from amistack.keymgmt import pki

PASSWORD = "correct horse battery"


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "data"


def users(capsys: pytest.CaptureFixture[str], d: Path, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "users", *argv, "--data-dir", str(d))


def test_first_user_token_list_disable(
    capsys: pytest.CaptureFixture[str], d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMISTACK_PASSWORD", PASSWORD)
    code, out, err = users(capsys, d, "add", "alice", "--role", "operator,viewer")
    assert (code, out, err) == (0, "user alice: VIEWER, OPERATOR\n", "")
    assert stat.S_IMODE((d / "access.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    code, token, err = users(capsys, d, "token", "alice", "--days", "1", "--label", "script")
    assert code == 0 and len(token.strip()) == 43 and "revoke" in err
    store = AccessStore(d)
    who = store.authenticate_token(token.strip(), time.time())
    assert who is not None and who.roles == {Role.OPERATOR, Role.VIEWER}
    code, out, _ = users(capsys, d, "list")
    assert out.startswith("alice\tVIEWER,OPERATOR\tactive\n  token ") and "'script'" in out
    code, out, _ = users(capsys, d, "disable", "alice")
    assert code == 0 and "1 token(s) revoked" in out
    assert store.authenticate_token(token.strip(), time.time()) is None
    store.close()
    code, _, err = users(capsys, d, "add", "alice", "--role", "VIEWER")
    assert code == 2 and err == "amistack users: error: user 'alice' exists\n"
    code, _, err = users(capsys, d, "add", "bob", "--role", "KING")
    assert code == 2 and "unknown role 'KING'" in err and err.count("\n") == 1
    monkeypatch.setenv("AMISTACK_PASSWORD", "short")
    code, _, err = users(capsys, d, "add", "bob", "--role", "VIEWER")
    assert code == 2 and "password" in err
    trail = AuditTrail.open(d, time.time())
    actions = [(e.action, e.target, e.outcome) for e in trail.entries()]
    trail.close()
    assert actions == [  # audit-before-action: each change's request, then its outcome
        ("user.add", "alice", "requested"),
        ("user.add", "alice", "ok"),
        ("token.create", "alice", "ok"),
        ("user.disable", "alice", "requested"),
        ("user.disable", "alice", "ok"),
        ("user.add", "alice", "requested"),
        ("user.add", "alice", "refused: exists"),
        ("user.add", "bob", "requested"),
        ("user.add", "bob", "refused: invalid"),
    ]


def test_issue_client_with_roles_and_meters(capsys: pytest.CaptureFixture[str], d: Path) -> None:
    assert run(capsys, "pki", "init", "--data-dir", str(d))[0] == 0
    code, out, err = run(
        capsys, "pki", "issue-client", "alice", "--role", "OPERATOR", "--role", "SECAUD",
        "--data-dir", str(d),
    )  # fmt: skip
    assert code == 0, err
    assert "roles (IEC 62351-8): OPERATOR, SECAUD" in out
    cert = pki.load_certificate(d / "pki/clients/alice.crt")
    assert roles_of_certificate(cert).roles == {Role.OPERATOR, Role.SECAUD}
    code, out, err = run(
        capsys, "pki", "issue-client", "headend", "--purpose", "c1222", "--meters", "meter-*",
        "--data-dir", str(d),
    )  # fmt: skip
    assert code == 0 and "for meters: meter-*" in out
    assert pki.client_identity(pki.load_certificate(d / "pki/clients/headend.crt")).meters == {
        "meter-*"
    }
    code, _, err = run(
        capsys, "pki", "issue-client", "he2", "--purpose", "c1222", "--data-dir", str(d)
    )
    assert code == 2 and "must name the meters" in err
    code, _, err = run(capsys, "pki", "issue-client", "x", "--data-dir", str(d))
    assert code == 2 and "--purpose" in err and "--role" in err


def _headend(capsys: pytest.CaptureFixture[str], d: Path, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "headend", "--keyserver", "127.0.0.1:1", "--data-dir", str(d), *argv)


def test_headend_refuses_a_public_api_without_tls(
    capsys: pytest.CaptureFixture[str], d: Path
) -> None:
    code, out, err = _headend(capsys, d, "--api", "0.0.0.0:8080")
    assert code == 2 and out == ""
    assert err == (
        "amistack headend: error: refusing to serve the REST API on 0.0.0.0 without TLS: use "
        "--api-tls (see docs/access-control.md) or a loopback address\n"
    )
    code, _, err = _headend(capsys, d, "--api", "0.0.0.0:8080", "--api-tls")
    assert code == 2 and "headend-api.crt: missing" in err and err.count("\n") == 1


@pytest.fixture
def lab(d: Path) -> Path:
    pki.init_ca(d)
    pki.issue_client(d, "headend", ["c1222"], meters=["*"])
    return d


def test_headend_ports_in_use_are_one_line_naming_the_address(
    capsys: pytest.CaptureFixture[str], lab: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _headend(
            capsys, lab, "--listen", "127.0.0.1:0", "--api", f"127.0.0.1:{port}"
        )
    assert code == 2
    assert err == (
        f"amistack headend: error: cannot listen on 127.0.0.1 port {port} (REST API): "
        "address already in use\n"
    )
    assert stat.S_IMODE((lab / "headend.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(lab.stat().st_mode) == 0o700  # made by `pki init`, tightened
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        code, _, err = _headend(
            capsys, lab, "--listen", f"127.0.0.1:{port}", "--api", "127.0.0.1:0"
        )
    assert code == 2
    assert err == (
        f"amistack headend: error: cannot listen on 127.0.0.1 port {port} (C12.22): "
        "address already in use\n"
    )


def test_no_user_change_when_the_audit_trail_cannot_be_written(
    capsys: pytest.CaptureFixture[str], d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMISTACK_PASSWORD", "correct horse battery")
    assert users(capsys, d, "add", "alice", "--role", "VIEWER")[0] == 0

    def full(*args: object, **kwargs: object) -> int:
        raise OSError("No space left on device")

    monkeypatch.setattr(AuditTrail, "record", full)
    for argv in (("add", "carol", "--role", "VIEWER"), ("disable", "alice"), ("token", "alice")):
        code, _, err = users(capsys, d, *argv)
        assert code == 2 and "audit trail is unavailable" in err, argv
    store = AccessStore(d)
    try:
        assert store.get_user("carol") is None
        alice = store.get_user("alice")
        assert alice is not None and not alice.disabled
        assert [t for t in store.list_tokens("alice") if not t.revoked] == []
    finally:
        store.close()


def test_a_handhelds_token_is_issued_as_such(
    capsys: pytest.CaptureFixture[str], d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`users token NAME --handheld`: the token may act for a handheld's technician (the kind
    the head-end checks, access/http.py); without the flag it is an ordinary API token."""
    monkeypatch.setenv("AMISTACK_PASSWORD", PASSWORD)
    assert users(capsys, d, "add", "handheld-7", "--role", "OPERATOR")[0] == 0
    code, token, _ = users(capsys, d, "token", "handheld-7", "--handheld")
    assert code == 0
    _, plain, _ = users(capsys, d, "token", "handheld-7")
    store = AccessStore(d)
    handheld = store.authenticate_token(token.strip(), time.time())
    ordinary = store.authenticate_token(plain.strip(), time.time())
    store.close()
    assert handheld is not None and handheld.via == "handheld"
    assert ordinary is not None and ordinary.via == "api"
    assert "(handheld)" in users(capsys, d, "list")[1]
