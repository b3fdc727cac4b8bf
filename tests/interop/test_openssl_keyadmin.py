"""An independent TLS stack and X.509 parser against the key server's admin endpoint: OpenSSL
reads the areas of responsibility we write (one UserRoleInfo per area), and `openssl s_client`
with a SECADM role certificate is served over TLS 1.3 while one without a client certificate
is not."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.access import AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.access.keyadmin import KeyAdminService
from amistack.crypto import seeded_random
from amistack.keymgmt import pki
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore
from amistack.runtime.keydist import TlsFiles, start_keyadmin

pytestmark = pytest.mark.interop
HOST = "127.0.0.1"


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    pki.init_ca(tmp_path)
    pki.issue_server(tmp_path, "keyserver", [HOST])
    ext = [user_roles_extension({Role.SECADM}, ["grpA-*", "grpB-7"])]
    pki.issue_client(tmp_path, "sam", [], extensions=ext)
    store = CredentialStore(tmp_path / "ks.db", FileKek.create(tmp_path / "kek", seeded_random(5)))
    trail = AuditTrail.open(tmp_path, time.time())
    loop = asyncio.new_event_loop()
    service = KeyAdminService(store, trail)
    server = loop.run_until_complete(
        start_keyadmin(service, TlsFiles.server(tmp_path), [HOST], 0, clock=time.time)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, server.addresses[0][1]
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        trail.close()
        store.close()


def s_client(openssl: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [openssl, "s_client", "-connect", f"{HOST}:{port}", "-tls1_3", "-quiet", "-ign_eof",
         *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_openssl_s_client_with_a_role_certificate_is_served(endpoint: tuple[Path, int]) -> None:
    openssl = require_tool("openssl")
    d, port = endpoint
    lay = pki.PkiLayout.of(d)
    proc = s_client(
        openssl, port, "-CAfile", str(lay.ca_cert),
        "-cert", str(lay.cert(pki.CertKind.CLIENT, "sam")),
        "-key", str(lay.key(pki.CertKind.CLIENT, "sam")),
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write('{"op":"whoami","id":7}\n')
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.communicate()
    assert answer["operator"] == "sam" and answer["roles"] == ["SECADM"]
    assert answer["aor"] == ["grpA-*", "grpB-7"] and answer["id"] == 7


def test_openssl_s_client_without_a_certificate_gets_nothing(endpoint: tuple[Path, int]) -> None:
    openssl = require_tool("openssl")
    d, port = endpoint
    proc = s_client(openssl, port, "-CAfile", str(pki.PkiLayout.of(d).ca_cert))
    out, _ = proc.communicate('{"op":"whoami"}\n', timeout=20)
    assert "operator" not in out
