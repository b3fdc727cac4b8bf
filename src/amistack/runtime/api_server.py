"""Serving a REST API (the head-end's) under uvicorn: the address policy, the listening socket and
HTTPS with optional client certificates. I/O only; who may do what is `amistack.access`.

- `check_api_address`: an API on a non-loopback address must use TLS (`ApiRefused` otherwise):
  bearer tokens and passwords never cross a network in clear.
- `bind_api`: the socket is bound here, before uvicorn starts, so an address in use is one line
  naming it (`BindError`) rather than uvicorn's log-and-exit inside a task.
- `ApiTls`: the server certificate and key from the project's PKI (`DIR/pki/servers/NAME.*`); the
  CA verifies client certificates when a client presents one (CERT_OPTIONAL: tokens still work),
  and the certificate reaches the app as the ASGI TLS extension (`scope["extensions"]["tls"]
  ["client_cert_chain"]`), which uvicorn does not fill in itself: `_TlsH11Protocol` does.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from amistack.keymgmt.pki import CertKind, PkiLayout


class ApiRefused(Exception):
    """The API may not be served as asked; the message says why, in one line."""


class BindError(Exception):
    """The API's address cannot be bound (in use, not local, no permission)."""


@dataclass(frozen=True)
class ApiTls:
    cert: Path
    key: Path
    ca: Path  # verifies client certificates
    crl: Path | None

    @classmethod
    def from_pki(cls, data_dir: Path | str, name: str) -> ApiTls:
        layout = PkiLayout.of(data_dir)
        return cls(
            layout.cert(CertKind.SERVER, name),
            layout.key(CertKind.SERVER, name),
            layout.ca_cert,
            layout.crl if layout.crl.exists() else None,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_address(host: str, tls: ApiTls | None) -> None:
    if tls is None and not is_loopback(host):
        raise ApiRefused(
            f"refusing to serve the REST API on {host} without TLS: use --api-tls "
            "(see docs/access-control.md) or a loopback address"
        )


def bind_api(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT, not a listener
        sock.bind((host.strip("[]"), port))
        # listening from here on: a client that reads the "serving on" line and connects before
        # uvicorn has started waits in the backlog instead of being refused (uvicorn listens
        # on the socket again, which changes nothing)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = (exc.strerror or str(exc)).lower()
        raise BindError(f"cannot listen on {host} port {port} (REST API): {why}") from None
    sock.set_inheritable(True)
    return sock


Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


class _TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI TLS extension with the client's certificate."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        pem = ssl.DER_cert_to_PEM_cert(der)
        app: Asgi = self.app

        async def with_tls(scope: Scope, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": [pem]}
            await app(scope, receive, send)

        self.app = with_tls


def api_server(app: Any, tls: ApiTls | None) -> uvicorn.Server:
    """A uvicorn server for `app` (serve it with `server.serve(sockets=[bind_api(...)])`)."""
    if tls is None:
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
    else:
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            http=_TlsH11Protocol,
            ssl_certfile=str(tls.cert),
            ssl_keyfile=str(tls.key),
            ssl_ca_certs=str(tls.ca),
            ssl_cert_reqs=ssl.CERT_OPTIONAL,
        )
    return uvicorn.Server(config)
