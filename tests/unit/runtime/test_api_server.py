"""The API over real HTTPS (uvicorn on loopback): a client certificate from the project's PKI
carrying IEC 62351-8 roles authenticates (IECUserRoles read from the ASGI TLS extension); a
revoked one, one without roles, or none at all is refused; tokens still work over TLS."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.unit.headend.conftest import CHEAP_HASHER, auth

from amistack.access import AccessStore, AuditTrail, Role
from amistack.access.certroles import user_roles_extension
from amistack.access.http import AccessControl
from amistack.headend.api import create_app
from amistack.headend.schema import CommandKind
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt import pki
from amistack.runtime.api_server import ApiRefused, ApiTls, api_server, bind_api, check_api_address


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lab")
    pki.init_ca(d)
    pki.issue_server(d, "headend-api", ["127.0.0.1"])
    pki.issue_client(d, "olga", [], extensions=[user_roles_extension({Role.OPERATOR})])
    pki.issue_client(d, "mallory", [], extensions=[user_roles_extension({Role.SECADM})])
    pki.issue_client(d, "headend", ["c1222"], meters=["*"])  # a machine: no role
    ext = [user_roles_extension({Role.OPERATOR}, ["grpA-*"])]
    pki.issue_client(d, "ola", [], meters=["grpA-*"], extensions=ext)  # group A's operator
    return d


@pytest.fixture
def served(lab: Path, tmp_path: Path) -> Iterator[tuple[str, AccessControl]]:
    tls = ApiTls.from_pki(lab, "headend-api")
    repo = SqliteRepository(tmp_path)
    access = AccessControl(
        AccessStore(tmp_path, hasher=CHEAP_HASHER),
        AuditTrail.open(tmp_path, time.time()),
        time.time,
        ca_cert=pki.load_certificate(tls.ca),
        crl_path=tls.crl,
    )
    sock = bind_api("127.0.0.1", 0)
    server = api_server(create_app(repo, access), tls)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"https://127.0.0.1:{sock.getsockname()[1]}", access
    server.should_exit = True
    thread.join(timeout=10)
    repo.close()


def client(lab: Path, name: str | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(lab / "pki/ca.crt"))
    if name is not None:
        ctx.load_cert_chain(lab / f"pki/clients/{name}.crt", lab / f"pki/clients/{name}.key")
    return httpx.Client(verify=ctx, timeout=5)


def test_role_certificate_authenticates_over_https(
    lab: Path, served: tuple[str, AccessControl]
) -> None:
    url, access = served
    with client(lab, "olga") as c:
        me = c.get(f"{url}/auth/whoami")
        assert me.status_code == 200, me.text
        assert me.json() == {
            "user": "olga",
            "roles": ["OPERATOR"],
            "rights": ["control", "read", "upload_log"],
            "via": "certificate",
        }
        assert c.get(f"{url}/audit").status_code == 403  # OPERATOR is no auditor
    with client(lab, None) as c:
        assert c.get(f"{url}/meters").status_code == 401
        assert c.get(f"{url}/meters", headers=auth(access, "vera", Role.VIEWER)).status_code == 200
    with client(lab, "headend") as c:
        r = c.get(f"{url}/meters")
        assert r.status_code == 401 and "no IEC 62351-8 role" in r.json()["detail"]
    pki.revoke(lab, "mallory")
    with client(lab, "mallory") as c:
        r = c.get(f"{url}/meters")
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_public_address_needs_tls(lab: Path) -> None:
    with pytest.raises(ApiRefused, match="without TLS"):
        check_api_address("0.0.0.0", None)
    with pytest.raises(ApiRefused):
        check_api_address("2001:db8::1", None)
    check_api_address("::1", None)
    check_api_address("localhost", None)
    check_api_address("0.0.0.0", ApiTls.from_pki(lab, "headend-api"))


def test_a_role_certificate_acts_only_within_its_area_of_responsibility(
    lab: Path, served: tuple[str, AccessControl], tmp_path: Path
) -> None:
    """An OPERATOR whose certificate names group A (IECUserRoles aor 'grpA-*') may disconnect
    group A's meters and is refused (403, audited) on group B's: nothing is queued for it."""
    url, access = served
    repo = SqliteRepository(tmp_path)  # the served head-end's database
    try:
        for i, meter in enumerate(("grpA-1", "grpB-1")):
            repo.register_meter(meter, f"2.16.124.113620.1.22.0.{i + 1}", "c", "x", 1.0)
            repo.create_command(meter, CommandKind.TIME_SYNC, {}, 2.0)
    finally:
        repo.close()
    with client(lab, "ola") as c:
        ok = c.post(f"{url}/commands", json={"meter_id": "grpA-1", "kind": "disconnect"})
        assert ok.status_code == 201, ok.text
        no = c.post(f"{url}/commands", json={"meter_id": "grpB-1", "kind": "disconnect"})
        assert no.status_code == 403 and "area of responsibility" in no.json()["detail"]
        assert c.get(f"{url}/meters/grpB-1").status_code == 403
        assert c.get(f"{url}/meters/grpA-1").status_code == 200
        listed = c.get(f"{url}/commands").json()["items"]
        assert {cmd["meter_id"] for cmd in listed} == {"grpA-1"}  # B's are not shown
        assert [m["meter_id"] for m in c.get(f"{url}/meters").json()["items"]] == ["grpA-1"]
    denied = [e for e in access.audit.entries(limit=100) if e.action == "access.denied"]
    assert [(e.who, e.detail["meter"]) for e in denied] == [("ola", "grpB-1"), ("ola", "grpB-1")]


def test_the_dashboard_keeps_a_role_certificate_to_its_area_of_responsibility(
    lab: Path, served: tuple[str, AccessControl], tmp_path: Path
) -> None:
    """The same operator in the dashboard (/ui): its pages list group A's meters only, group
    B's meter page and commands are refused (403), group A's command is queued."""
    url, _ = served
    repo = SqliteRepository(tmp_path)
    try:
        for i, meter in enumerate(("grpA-1", "grpB-1")):
            repo.register_meter(meter, f"2.16.124.113620.1.22.0.{i + 1}", "c", "x", 1.0)
        repo.raise_alarm("grpB-1", "tamper", "lid opened", 2.0)
    finally:
        repo.close()
    origin = {"Origin": url}
    with client(lab, "ola") as c:
        fleet = c.get(f"{url}/ui/fleet").text
        assert "grpA-1" in fleet and "grpB-1" not in fleet
        assert "grpB-1" not in c.get(f"{url}/ui/events").text
        assert "grpB-1" not in c.get(f"{url}/ui/keys").text
        nodes = {n["id"] for n in c.get(f"{url}/ui/mesh/graph").json()["nodes"]}
        assert "grpA-1" in nodes and "grpB-1" not in nodes
        assert c.get(f"{url}/ui/meters/grpB-1").status_code == 403
        assert c.get(f"{url}/ui/meters/grpA-1").status_code == 200
        no = c.post(f"{url}/ui/meters/grpB-1/commands", data={"kind": "disconnect"}, headers=origin)
        assert no.status_code == 403 and "area of responsibility" in no.text
        ok = c.post(f"{url}/ui/meters/grpA-1/commands", data={"kind": "disconnect"}, headers=origin)
        assert ok.status_code == 200 and "queued" in ok.text
