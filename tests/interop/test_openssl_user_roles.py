"""OpenSSL, an independent X.509/DER parser, reads the IEC 62351-8 roles we put in a client
certificate: the IECUserRoles extension (1.2.840.10070.8.1) as SEQUENCE OF UserRoleInfo
{ SEQUENCE OF RoleId, aor, revision, roleDefinition }; the certificate verifies against our CA."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.access import Role
from amistack.access.certroles import user_roles_extension
from amistack.keymgmt import pki

pytestmark = pytest.mark.interop


def test_openssl_parses_the_roles_extension(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    pki.init_ca(tmp_path)
    issued = pki.issue_client(
        tmp_path, "alice", [], extensions=[user_roles_extension({Role.OPERATOR, Role.SECAUD})]
    )
    cert = str(issued.cert_path)
    dump = subprocess.run(
        [openssl, "asn1parse", "-in", cert], capture_output=True, text=True, check=True
    ).stdout
    lines = dump.splitlines()
    at = next(i for i, ln in enumerate(lines) if ":1.2.840.10070.8.1" in ln)
    offset = int(lines[at + 1].split(":")[0])  # the OCTET STRING holding the extension value
    inner = subprocess.run(
        [openssl, "asn1parse", "-in", cert, "-strparse", str(offset)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = [
        re.sub(r"\s+", " ", ln.split("prim:")[1]).strip()
        for ln in inner.splitlines()
        if "prim:" in ln
    ]
    assert fields == [
        "INTEGER :01",  # RoleId OPERATOR
        "INTEGER :05",  # RoleId SECAUD
        "UTF8STRING :*",  # aor
        "INTEGER :01",  # revision
        "UTF8STRING :IEC62351-8",  # roleDefinition
    ]
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "pki/ca.crt"), cert],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stderr
