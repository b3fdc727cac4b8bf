"""`amistack keyserver --admin-listen` as a real process: a SECADM enrolls and revokes with
`amistack keys --server ... --cert`, a wrong role is refused, and at SIGTERM the operator audit
trail gets its signed head (verified with `amistack log verify` on a `keys trail` export)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import secret_file
from tests.scenario.test_keyserver_process import ENV, PY, cli, free_port

from amistack.access import AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.keymgmt import pki

PSK = "00112233445566778899aabbccddeeff"


@pytest.mark.slow  # seven processes start (~2 s each on a shared 2-core machine)
def test_key_administration_over_the_admin_endpoint_of_a_running_key_server(
    tmp_path: Path,
) -> None:
    d = tmp_path / "ks"
    pki.init_ca(d)
    pki.issue_server(d, "keyserver", ["127.0.0.1"])
    for name, role in (("sam", Role.SECADM), ("sue", Role.SECAUD), ("olga", Role.OPERATOR)):
        pki.issue_client(d, name, [], extensions=[user_roles_extension({role})])
    port = free_port()
    log = tmp_path / "ks.log"
    with open(log, "wb") as out:
        ks = subprocess.Popen(
            [PY, "-m", "amistack.cli.main", "keyserver", "--data-dir", str(d), "--init",
             "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while b"key administration (mTLS, audited) on 127.0.0.1" not in log.read_bytes():
            assert ks.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        server = ["--server", f"127.0.0.1:{port}", "--data-dir", str(d)]
        psk = str(secret_file(tmp_path, PSK))
        made = cli("keys", "enroll", "meter-1", "--psk-file", psk, *server, "--cert", "sam")
        assert made.returncode == 0 and "enrolled meter-1" in made.stdout, made.stderr
        refused = cli("keys", "revoke", "meter-1", *server, "--cert", "olga")
        assert refused.returncode == 2 and "forbidden" in refused.stderr
        revoked = cli("keys", "revoke", "meter-1", *server, "--cert", "sam")
        assert revoked.returncode == 0 and "revoked meter-1" in revoked.stdout
        trail = tmp_path / "trail.txt"
        exported = cli("keys", "trail", "--out", str(trail), *server, "--cert", "sue")
        assert exported.returncode == 0, exported.stderr
        verified = cli("log", "verify", str(trail), "--pubkey", f"{trail}.pem")
        assert verified.returncode == 0, verified.stdout
    finally:
        ks.terminate()
        ks.wait(10)
    assert ks.returncode == 0, log.read_text()
    kept = AuditTrail.open(d, time.time())
    try:
        actions = [(e.who, e.action, e.outcome) for e in kept.entries(limit=100)]
        assert kept.heads()[-1].size == kept.size  # sealed at shutdown
    finally:
        kept.close()
    assert ("olga", "keys.revoke", "refused: forbidden") in actions
    assert [a for a in actions if a[0] == "sam"] == [
        ("sam", "keys.enroll", "requested"),
        ("sam", "keys.enroll", "ok"),
        ("sam", "keys.revoke", "requested"),
        ("sam", "keys.revoke", "ok"),
    ]
