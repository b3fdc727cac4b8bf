"""The key server's EAP-TLS method: its TLS certificate and the device CA from the lab PKI
(`amistack pki`), the enrolment and revocation questions answered by the credential store and
the CRL. `KeyServer(..., extra_methods=[eap_tls_method(...)])` runs it beside EAP-PSK."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amistack.eap.method import ServerMethodFactory
from amistack.eap.tls import DEFAULT_FRAGMENT_SIZE, EapTlsServer, TlsServerConfig
from amistack.keymgmt import pki
from amistack.keymgmt.store import METHOD_TLS, CredentialStore

DEFAULT_SERVER_CERT = "keyserver"


def tls_server_config(
    data_dir: Path | str,
    store: CredentialStore,
    *,
    server_cert: str = DEFAULT_SERVER_CERT,
    max_version: str = "1.3",
    fragment_size: int = DEFAULT_FRAGMENT_SIZE,
) -> TlsServerConfig:
    """The EAP-TLS server of the PKI in `data_dir`: certificate ``servers/<server_cert>``, the
    CA as the only trust anchor, `store.is_enrolled_for(id, "tls")` (device revocation) and the
    CRL (certificate revocation). Raises PkiError (or ValueError) with a message for the user."""
    layout = pki.PkiLayout.of(data_dir)
    ca = pki.load_certificate(layout.ca_cert)
    cert = pki.load_certificate(layout.cert(pki.CertKind.SERVER, server_cert))
    key = pki.load_private_key(layout.key(pki.CertKind.SERVER, server_cert))
    crl = pki.RevocationList(layout.crl, ca)
    return TlsServerConfig.build(
        cert,
        key,
        [ca],
        lambda device: store.is_enrolled_for(device, METHOD_TLS),
        crl.is_revoked,
        max_version=max_version,
        fragment_size=fragment_size,
    )


def eap_tls_method(config: TlsServerConfig, clock: Callable[[], float]) -> ServerMethodFactory:
    """A factory of EAP-TLS server runs; `clock()` is Unix time, for certificate validity."""
    return lambda: EapTlsServer(config, clock)
