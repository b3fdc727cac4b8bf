"""A small lab PKI for the key-distribution interface (mutual TLS between key server and clients).

One CA (EC P-256, self-signed) issues two kinds of end-entity certificates:

- **server** certificates (extendedKeyUsage serverAuth, subjectAltName DNS names / IP addresses)
  for the key server's TLS listener;
- **client** certificates for application servers (head-end, concentrator, handheld): subject
  CN = the application server's name, extendedKeyUsage clientAuth, and the **purposes** the client
  may fetch as subjectAltName URIs ``urn:amistack:purpose:<name>`` (one per purpose). The
  authorisation rides in the certificate the CA signed, so the key server needs no access list of
  its own and a stolen list cannot widen it. See docs/key-distribution.md for why SAN URIs and
  not the subject OU. The **meters** whose keys it may fetch ride the same way, as SAN URIs
  ``urn:amistack:meters:<selector>`` (a device id, a prefix ending in ``*``, or ``*`` for all):
  a head-end's certificate is scoped to the meters it serves, and one naming no meters gets no
  meter's key. Further extensions (e.g. IEC 62351-8 roles for people, `access.certroles`) are
  passed in by the caller;
- **device** certificates for meters authenticating with EAP-TLS (RFC 5216/9190): subject
  CN = the device id, extendedKeyUsage clientAuth, and the device named once more as the
  subjectAltName URI ``urn:amistack:device:<id>``, which is where the key server takes the
  authenticated peer id from (`amistack.eap.tls.device_id_of`). A client certificate of an
  application server carries no such URI, so it can never pass for a meter.

Re-issuing a certificate (``force=True``) revokes the one it replaces in ``crl.pem``, so taking a
purpose away from a client takes effect even though the old certificate has not expired;
``revoke`` revokes one outright. The key server re-reads the CRL on every request.

Layout under ``<data-dir>/pki/`` (directory 0700; private keys 0600, certificates 0644)::

    ca.crt  ca.key  crl.pem
    servers/<name>.crt  servers/<name>.key
    clients/<name>.crt  clients/<name>.key
    devices/<id>.crt    devices/<id>.key

One function per CLI verb: ``init_ca`` (``amistack pki init``), ``issue_server``
(``pki issue-server``), ``issue_client`` (``pki issue-client``), ``issue_device``
(``pki issue-device``), ``revoke`` (``pki revoke``); ``RevocationList`` is the CRL check the
key server's EAP-TLS method asks on every authentication.
Every error is a ``PkiError`` whose message is fit for a CLI user. Private keys are stored
unencrypted (lab PKI; the file mode is the protection) and refused when group/others can read them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from amistack.eap.tls import DEVICE_URI_PREFIX

PKI_DIR = "pki"
PURPOSE_URI_PREFIX = "urn:amistack:purpose:"
METERS_URI_PREFIX = "urn:amistack:meters:"
NEVER_EXPORTED = frozenset({"pana-auth"})  # PANA_AUTH_KEY never leaves the PAA (key-hierarchy.md)

DEFAULT_CA_DAYS = 3650
DEFAULT_SERVER_DAYS = 825
DEFAULT_CLIENT_DAYS = 365
DEFAULT_DEVICE_DAYS = 3650  # a meter's certificate lives about as long as the meter
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between hosts

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")  # as ukmf.Purpose.name
_METERS = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.:@-]{0,200}\*?")  # device id, prefix*, or *
_DNS = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class PkiError(Exception):
    """The PKI cannot do what was asked; the message is fit for a CLI user."""


class PkiExists(PkiError):
    """A file would be overwritten and `force` was not given."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: already exists (use force to replace it)")
        self.path = path


class PkiNotInitialised(PkiError):
    """There is no CA in the data directory yet (`init_ca` first)."""


class CertKind(StrEnum):
    SERVER = "server"
    CLIENT = "client"
    DEVICE = "device"


@dataclass(frozen=True)
class PkiLayout:
    """Where the PKI's files live under a data directory."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path | str) -> PkiLayout:
        return cls(Path(data_dir) / PKI_DIR)

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def cert(self, kind: CertKind, name: str) -> Path:
        return self.root / f"{kind.value}s" / f"{_check_name(name)}.crt"

    def key(self, kind: CertKind, name: str) -> Path:
        return self.root / f"{kind.value}s" / f"{_check_name(name)}.key"


@dataclass(frozen=True)
class Issued:
    """What a PKI verb wrote (paths and the facts a CLI prints; never key material)."""

    cert_path: Path
    key_path: Path
    subject: str
    serial: int
    not_after: float  # Unix time
    purposes: frozenset[str] = frozenset()
    revoked_serial: int | None = None  # the certificate this one replaced, now in the CRL
    meters: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate names and what it may fetch."""

    name: str
    purposes: frozenset[str]
    serial: int
    not_after: float  # Unix time
    meters: frozenset[str] = frozenset()  # selectors: device id, prefix*, or *

    def may_fetch(self, purpose: str) -> bool:
        return purpose in self.purposes and purpose not in NEVER_EXPORTED

    def may_serve(self, device: bytes) -> bool:
        """Whether the certificate's meter selectors cover `device` (none: no meter)."""
        return meters_cover(self.meters, device)


def meters_cover(selectors: Iterable[str], device: bytes | str) -> bool:
    """Whether meter `selectors` (a device id, a prefix ending in ``*``, or ``*``) cover
    `device`; no selector covers nothing, and a device id that is not UTF-8 only ``*``."""
    selectors = frozenset(selectors)
    if "*" in selectors:
        return True
    try:
        text = device.decode("utf-8") if isinstance(device, bytes) else device
    except UnicodeDecodeError:
        return False
    return any(text.startswith(sel[:-1]) if sel.endswith("*") else text == sel for sel in selectors)


# -- the verbs ----------------------------------------------------------------------------------


def init_ca(
    data_dir: Path | str,
    *,
    common_name: str = "amistack lab CA",
    valid_days: int = DEFAULT_CA_DAYS,
    force: bool = False,
    now: float | None = None,
) -> Issued:
    """`amistack pki init`: a new CA key and self-signed certificate, and an empty CRL.

    Refuses to replace an existing CA unless `force` (which invalidates every certificate the
    old CA issued)."""
    layout = PkiLayout.of(data_dir)
    if not common_name or len(common_name) > 64:
        raise PkiError("CA common name must be 1..64 characters")
    _check_days(valid_days)
    if not force:
        for path in (layout.ca_key, layout.ca_cert):
            if path.exists():
                raise PkiExists(path)
    _make_dirs(layout.root)
    start = _when(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "amistack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_file(layout.ca_key, _key_pem(key), private=True, force=force)
    _write_file(layout.ca_cert, cert.public_bytes(serialization.Encoding.PEM), force=force)
    _write_crl(layout, cert, key, [], start)
    return _issued(layout.ca_cert, layout.ca_key, cert)


def issue_server(
    data_dir: Path | str,
    name: str,
    hosts: Sequence[str],
    *,
    valid_days: int = DEFAULT_SERVER_DAYS,
    force: bool = False,
    now: float | None = None,
) -> Issued:
    """`amistack pki issue-server NAME --host H...`: a TLS server certificate for `hosts`
    (DNS names and/or IPv4/IPv6 addresses, all in subjectAltName)."""
    if not hosts:
        raise PkiError("a server certificate needs at least one host (DNS name or IP address)")
    sans = [_host_san(h) for h in hosts]
    return _issue(
        data_dir,
        CertKind.SERVER,
        name,
        sans,
        ExtendedKeyUsageOID.SERVER_AUTH,
        frozenset(),
        valid_days=valid_days,
        force=force,
        now=now,
    )


def issue_client(
    data_dir: Path | str,
    name: str,
    purposes: Iterable[str],
    *,
    meters: Iterable[str] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    valid_days: int = DEFAULT_CLIENT_DAYS,
    force: bool = False,
    now: float | None = None,
) -> Issued:
    """`amistack pki issue-client NAME --purpose P... --meters SEL...`: a client certificate for
    the application server `name` allowed to fetch keys of `purposes` (e.g. ``["c1222"]``) for
    the meters `meters` selects (``["meter-*"]``; ``["*"]`` for all; none: no meter's key, the
    CLI insists on at least one). `extensions` are added as given (IEC 62351-8 roles for an
    operator: then no purpose is needed)."""
    wanted = frozenset(purposes)
    scope = frozenset(meters)
    if not wanted and not extensions:
        raise PkiError("a client certificate needs at least one purpose (e.g. c1222) or role")
    for p in sorted(wanted):
        if not _PURPOSE.fullmatch(p):
            raise PkiError(f"purpose {p!r} must be 1-32 of [a-z0-9_.-]")
        if p in NEVER_EXPORTED:
            raise PkiError(f"purpose {p!r} is never exported by the key server")
    for sel in sorted(scope):
        if not _METERS.fullmatch(sel):
            raise PkiError(f"meter selector {sel!r}: a device id, a prefix ending in *, or *")
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(PURPOSE_URI_PREFIX + p) for p in sorted(wanted)
    ]
    sans += [x509.UniformResourceIdentifier(METERS_URI_PREFIX + m) for m in sorted(scope)]
    if not sans:  # operators: the certificate names them by CN; SAN must not be empty
        sans = [x509.UniformResourceIdentifier(f"urn:amistack:user:{_check_name(name)}")]
    issued = _issue(
        data_dir,
        CertKind.CLIENT,
        name,
        sans,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        wanted,
        valid_days=valid_days,
        force=force,
        now=now,
        extensions=extensions,
    )
    return dataclasses.replace(issued, meters=scope)


def issue_device(
    data_dir: Path | str,
    device_id: str,
    *,
    valid_days: int = DEFAULT_DEVICE_DAYS,
    force: bool = False,
    now: float | None = None,
) -> Issued:
    """`amistack pki issue-device ID`: an EAP-TLS device certificate (ECDSA P-256) for the
    meter `device_id`, under ``devices/``. Enroll the device with ``keys enroll ID --method
    tls`` for the key server to accept it."""
    san = [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + _check_name(device_id))]
    return _issue(
        data_dir,
        CertKind.DEVICE,
        device_id,
        san,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        frozenset(),
        valid_days=valid_days,
        force=force,
        now=now,
    )


def revoke(
    data_dir: Path | str,
    name: str,
    *,
    kind: CertKind | str = CertKind.CLIENT,
    now: float | None = None,
) -> int:
    """`amistack pki revoke NAME`: put the certificate of `name` on the CRL; returns its serial.

    The certificate and key files stay (for the record); the key server refuses the certificate
    from its next request on."""
    layout = PkiLayout.of(data_dir)
    kind = CertKind(kind)
    cert = load_certificate(layout.cert(kind, name))
    ca_cert, ca_key = _load_ca(layout)
    _revoke_serials(layout, ca_cert, ca_key, [cert.serial_number], _when(now))
    return cert.serial_number


# -- reading what the verbs wrote ---------------------------------------------------------------


def load_certificate(path: Path | str) -> x509.Certificate:
    path = Path(path)
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: no such certificate") from None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from None


def check_private_key_file(path: Path | str) -> Path:
    """`path` if it is a regular file only its owner can access; PkiError otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PkiError(f"{path}: no such private key file") from None
    if not stat.S_ISREG(st.st_mode):
        raise PkiError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise PkiError(
            f"{path}: private key is accessible by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
        )
    return path


def load_private_key(path: Path | str) -> ec.EllipticCurvePrivateKey:
    """An EC private key from a PEM file only its owner can read; PkiError otherwise."""
    path = check_private_key_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an EC private key")
    return key


def client_identity(cert: x509.Certificate) -> ClientIdentity:
    """The name and purposes a client certificate carries; PkiError if it is no client cert.

    Does not verify the signature (the TLS handshake did that against our CA)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise PkiError("certificate has no extendedKeyUsage (clientAuth required)") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise PkiError("certificate is not for TLS client authentication")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise PkiError("client certificate must have exactly one subject CN")
    return ClientIdentity(
        name=names[0].value,
        purposes=purposes_of(cert),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc.timestamp(),
        meters=meters_of(cert),
    )


def purposes_of(cert: x509.Certificate) -> frozenset[str]:
    """The purposes named by `urn:amistack:purpose:` SAN URIs (malformed ones ignored)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    out = set()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(PURPOSE_URI_PREFIX):
            name = uri[len(PURPOSE_URI_PREFIX) :]
            if _PURPOSE.fullmatch(name) and name not in NEVER_EXPORTED:
                out.add(name)
    return frozenset(out)


def meters_of(cert: x509.Certificate) -> frozenset[str]:
    """The meter selectors named by `urn:amistack:meters:` SAN URIs (malformed ones ignored)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(
        uri[len(METERS_URI_PREFIX) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(METERS_URI_PREFIX) and _METERS.fullmatch(uri[len(METERS_URI_PREFIX) :])
    )


def load_revoked_serials(crl_path: Path | str, ca_cert: x509.Certificate) -> frozenset[int]:
    """The serials on the CRL at `crl_path`, after checking the CA signed it.

    PkiError when the file is missing, malformed or not signed by `ca_cert`: a caller enforcing
    revocation must fail closed on it."""
    path = Path(crl_path)
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: no such CRL") from None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a PEM CRL ({exc})") from None
    pub = ca_cert.public_key()
    if crl.issuer != ca_cert.subject or not isinstance(pub, ec.EllipticCurvePublicKey):
        raise PkiError(f"{path}: CRL is not issued by our CA")
    try:
        if not crl.is_signature_valid(pub):
            raise PkiError(f"{path}: CRL signature does not verify")
    except (InvalidSignature, TypeError):
        raise PkiError(f"{path}: CRL signature does not verify") from None
    return frozenset(r.serial_number for r in crl)


class RevocationList:
    """`is_revoked(cert)` against the CRL file, re-read whenever the file changes (one stat per
    question), so `pki revoke` reaches a running key server without a restart. Fails closed: a
    missing, broken or foreign CRL, or a certificate of another issuer, counts as revoked."""

    def __init__(self, crl_path: Path | str, ca_cert: x509.Certificate) -> None:
        self.path = Path(crl_path)
        self.ca_cert = ca_cert
        self._seen: tuple[int, int] | None = None
        self._serials: frozenset[int] | None = None

    def is_revoked(self, cert: x509.Certificate) -> bool:
        if cert.issuer != self.ca_cert.subject:
            return True
        try:
            st = self.path.stat()
        except OSError:
            return True
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            try:
                self._serials = load_revoked_serials(self.path, self.ca_cert)
            except PkiError:
                self._serials = None
            self._seen = stamp
        return self._serials is None or cert.serial_number in self._serials


# -- internals ---------------------------------------------------------------------------------


def _issue(
    data_dir: Path | str,
    kind: CertKind,
    name: str,
    sans: Sequence[x509.GeneralName],
    eku: x509.ObjectIdentifier,
    purposes: frozenset[str],
    *,
    valid_days: int,
    force: bool,
    now: float | None,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> Issued:
    layout = PkiLayout.of(data_dir)
    _check_days(valid_days)
    cert_path, key_path = layout.cert(kind, name), layout.key(kind, name)
    old: x509.Certificate | None = None
    if cert_path.exists() or key_path.exists():
        if not force:
            raise PkiExists(cert_path if cert_path.exists() else key_path)
        if cert_path.exists():
            old = load_certificate(cert_path)
    ca_cert, ca_key = _load_ca(layout)
    start = _when(now)
    end = min(start + dt.timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise PkiError("the CA has expired; run `pki init --force` for a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "amistack"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    _make_dirs(cert_path.parent)
    revoked = None
    if old is not None and old.issuer == ca_cert.subject:
        # The replaced certificate must not keep its (possibly wider) authorisation.
        _revoke_serials(layout, ca_cert, ca_key, [old.serial_number], start)
        revoked = old.serial_number
    _write_file(key_path, _key_pem(key), private=True, force=force)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), force=force)
    issued = _issued(cert_path, key_path, cert, purposes)
    return Issued(
        issued.cert_path,
        issued.key_path,
        issued.subject,
        issued.serial,
        issued.not_after,
        issued.purposes,
        revoked,
    )


def _load_ca(layout: PkiLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not layout.ca_cert.exists() or not layout.ca_key.exists():
        raise PkiNotInitialised(f"{layout.root}: no CA here; run `amistack pki init` first")
    cert = load_certificate(layout.ca_cert)
    path = check_private_key_file(layout.ca_key)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: cannot load the CA key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise PkiError(f"{path}: CA key does not match {layout.ca_cert}")
    return cert, key


def _revoke_serials(
    layout: PkiLayout,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    serials: Sequence[int],
    now: dt.datetime,
) -> None:
    try:
        entries = dict.fromkeys(load_revoked_serials(layout.crl, ca_cert))
    except PkiError:
        if layout.crl.exists():
            raise  # a broken CRL is not silently replaced by a shorter one
        entries = {}
    entries.update(dict.fromkeys(serials))
    _write_crl(layout, ca_cert, ca_key, sorted(entries), now)


def _write_crl(
    layout: PkiLayout,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    serials: Sequence[int],
    now: dt.datetime,
) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _BACKDATE)
        # The key server reads the local file on every request, so freshness is not what
        # nextUpdate would protect here; it is set to the CA's end (lab PKI, documented).
        .next_update(max(ca_cert.not_valid_after_utc, now + dt.timedelta(days=1)))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_file(layout.crl, crl.public_bytes(serialization.Encoding.PEM), force=True)


def _issued(
    cert_path: Path, key_path: Path, cert: x509.Certificate, purposes: frozenset[str] = frozenset()
) -> Issued:
    return Issued(
        cert_path,
        key_path,
        cert.subject.rfc4514_string(),
        cert.serial_number,
        cert.not_valid_after_utc.timestamp(),
        purposes,
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not _DNS.fullmatch(host):
        raise PkiError(f"host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.rstrip(".").lower())


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise PkiError(f"name {name!r} must be 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    return name


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise PkiError("validity must be 1..36500 days")


def _when(now: float | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)


def _make_dirs(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{path}: cannot create directory: {exc.strerror}") from None


def _write_file(path: Path, data: bytes, *, private: bool = False, force: bool = False) -> None:
    """Write `data` to `path` atomically (temp file + rename); private files are 0600 from birth.

    Without `force` an existing file is refused, checked again at the rename (link) itself."""
    mode = 0o600 if private else 0o644
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise PkiError(f"{tmp}: cannot create: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, mode)  # the umask can only narrow; make the mode exact anyway
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if `path` appeared meanwhile: never overwrites
            except FileExistsError:
                raise PkiExists(path) from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot write: {exc.strerror}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
