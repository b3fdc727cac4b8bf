"""EAP-TLS test helpers: a lab PKI (the project's own CA, the key server's certificate, device
certificates, ECDSA P-256, issued by `amistack.keymgmt.pki` into a temporary directory) and an
in-memory conversation between an EAP peer and an authenticator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from amistack.crypto import seeded_random
from amistack.eap import EapAuthenticator, EapOutcome, EapPeer, EapStep, EapType
from amistack.eap.method import ServerMethodFactory
from amistack.eap.tls import EapTlsPeer, EapTlsServer, TlsPeerConfig, TlsServerConfig
from amistack.keymgmt import pki

SERVER_NAME = "keyserver"
SERVER_HOST = "127.0.0.1"
# The peers check validity at NOW, fixed when this module is imported; certificates are issued
# relative to it too (issued at the real time, they would not yet be valid at NOW once a long run
# is more than pki's 5-minute backdating past the import).
NOW = time.time()


@dataclass
class LabPki:
    data_dir: Path
    ca: x509.Certificate

    @classmethod
    def create(cls, data_dir: Path, *, now: float | None = None, ca_days: int = 3650) -> LabPki:
        now = NOW if now is None else now
        pki.init_ca(data_dir, valid_days=ca_days, now=now)
        pki.issue_server(data_dir, SERVER_NAME, [SERVER_HOST, "keyserver.test"], now=now)
        return cls(data_dir, pki.load_certificate(pki.PkiLayout.of(data_dir).ca_cert))

    @property
    def layout(self) -> pki.PkiLayout:
        return pki.PkiLayout.of(self.data_dir)

    def device(
        self, device_id: str, **kw: object
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        layout = self.layout
        if not layout.cert(pki.CertKind.DEVICE, device_id).exists() or kw:
            kw.setdefault("now", NOW)
            pki.issue_device(self.data_dir, device_id, force=True, **kw)  # type: ignore[arg-type]
        return self.credentials(pki.CertKind.DEVICE, device_id)

    def credentials(
        self, kind: pki.CertKind, name: str
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        layout = self.layout
        return (
            pki.load_certificate(layout.cert(kind, name)),
            pki.load_private_key(layout.key(kind, name)),
        )

    def server_config(self, enrolled: set[bytes], **kw: object) -> TlsServerConfig:
        cert, key = self.credentials(pki.CertKind.SERVER, SERVER_NAME)
        crl = pki.RevocationList(self.layout.crl, self.ca)
        return TlsServerConfig.build(
            cert,
            key,
            [self.ca],
            enrolled.__contains__,
            crl.is_revoked,
            **kw,  # type: ignore[arg-type]
        )

    def peer_config(self, device_id: str, **kw: object) -> TlsPeerConfig:
        cert, key = self.device(device_id)
        return TlsPeerConfig.build(cert, key, [self.ca], **kw)  # type: ignore[arg-type]


@dataclass
class Run:
    peer: EapPeer
    auth: EapAuthenticator
    last: EapStep | None = None
    wire: list[bytes] = field(default_factory=list)


def tls_peer(identity: bytes, config: TlsPeerConfig, now: float = NOW) -> EapPeer:
    return EapPeer(identity, {EapType.TLS: lambda: EapTlsPeer(config, lambda: now)})


def tls_auth(
    config: TlsServerConfig, now: float = NOW, extra: tuple[ServerMethodFactory, ...] = ()
) -> EapAuthenticator:
    rng = seeded_random(5)
    return EapAuthenticator([lambda: EapTlsServer(config, lambda: now), *extra], rng, 0)


def converse(
    peer: EapPeer,
    auth: EapAuthenticator,
    tamper: Callable[[int, bytes], bytes | None] | None = None,
    max_steps: int = 200,
) -> Run:
    """Run until the authenticator decides (or the peer goes silent). `tamper(n, response)`
    may replace the n-th response of the peer before the authenticator sees it."""
    run = Run(peer, auth)
    request = auth.start()
    for n in range(max_steps):
        run.wire.append(request)
        response = peer.receive(request)
        if response is None:
            return run
        if tamper is not None:
            response = tamper(n, response)
            if response is None:
                return run
        run.wire.append(response)
        step = auth.receive(response)
        run.last = step
        if step.send is None:
            return run
        if step.outcome is not EapOutcome.CONTINUE:
            run.wire.append(step.send)
            peer.receive(step.send)
            return run
        request = step.send
    raise AssertionError("conversation did not end")
