"""EAP-TLS (RFC 5216; RFC 9190 for TLS 1.3): mutual certificate authentication, sans-IO.

The TLS handshake runs in OpenSSL (pyOpenSSL, memory BIOs: no socket, nothing written here is
TLS); this module frames its records into EAP and derives the keys:

    server -> peer   EAP-TLS/Start (S flag)
    peer -> server   ClientHello
    server -> peer   ServerHello ... Certificate, CertificateRequest ... Finished
    peer -> server   Certificate, CertificateVerify, Finished (TLS 1.2: + ClientKeyExchange, CCS)
    server -> peer   TLS 1.2: CCS, Finished | TLS 1.3: the commitment message (RFC 9190 §2.5)
    peer -> server   an empty EAP-TLS message (acknowledgement), then EAP-Success

Framing (§3.1): Flags (L: a 4-octet TLS Message Length follows, M: more fragments, S: start),
then the TLS data. A message larger than `fragment_size` goes in fragments: the first with L
and the total length, all but the last with M; the receiver acknowledges each fragment with an
empty EAP-TLS message (§2.1.5). Reassembly is bounded (`MAX_TLS_MESSAGE`) and the exchange is
bounded in rounds (`MAX_ROUNDS`), so a peer cannot make either side hold or loop without end.

Keys: TLS 1.2 (RFC 5216 §2.3) Key_Material = TLS-PRF-128(master_secret, "client EAP
encryption", client.random || server.random), which is the RFC 5705 exporter without context;
MSK = Key_Material[0..63], EMSK = [64..127]; Session-Id = 0x0D || client.random ||
server.random. TLS 1.3 (RFC 9190 §2.3) Key_Material = TLS-Exporter("EXPORTER_EAP_TLS_Key_Material",
"", 128), Method-Id = TLS-Exporter("EXPORTER_EAP_TLS_Method-Id", "", 64), Session-Id = 0x0D ||
Method-Id. With TLS 1.3 the server's handshake ends before the peer's certificate has been
judged by the EAP layer, so the server then sends the protected success indication, one byte
0x00 of application data (RFC 9190 §2.5); the peer accepts EAP-Success only after it (a
close_notify in its place, as drafts had it, is a failure).

Certificates (RFC 5216 §5.2/§5.3, RFC 9190 §5.3): both sides check the chain against their CA
(OpenSSL), validity at the injected `now` (never the host clock), the extended key usage, and
the server checks the revocation list and that the device named by the certificate
(subjectAltName URI ``urn:amistack:device:ID``) is the identity the peer claimed and is enrolled
for EAP-TLS. The authenticated peer id is the certificate's device id, not the EAP identity.
"""

from __future__ import annotations

import hmac
import logging
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, IntFlag

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto

from amistack.eap.method import (
    Decision,
    MethodState,
    PeerMethod,
    ServerMethod,
    ServerMethodStep,
    ServerOutcome,
)
from amistack.eap.packet import EapDecodeError, EapPacket, EapType

logger = logging.getLogger(__name__)

DEVICE_URI_PREFIX = "urn:amistack:device:"
"""A device certificate names its device as subjectAltName URI urn:amistack:device:<id>."""

LENGTH_FIELD_LEN = 4  # RFC 5216 §3.1 TLS Message Length
DEFAULT_FRAGMENT_SIZE = 1024  # TLS data per EAP-TLS message; fits PANA/RADIUS paths comfortably
MAX_TLS_MESSAGE = 64 * 1024  # a reassembled flight: ECDSA chains are ~2 kB, RSA ones < 16 kB
MAX_ROUNDS = 50  # EAP-TLS messages one side accepts per conversation (hostapd: 50 short ones)
KEY_MATERIAL_LEN = 128  # MSK (64) || EMSK (64), RFC 5216 §2.3 / RFC 9190 §2.3
MSK_LEN = 64
METHOD_ID_LEN = 64  # RFC 9190 §2.3
LABEL_TLS12 = b"client EAP encryption"  # RFC 5216 §2.3
LABEL_KEY_MATERIAL = b"EXPORTER_EAP_TLS_Key_Material"  # RFC 9190 §2.3
LABEL_METHOD_ID = b"EXPORTER_EAP_TLS_Method-Id"  # RFC 9190 §2.3
COMMITMENT_MESSAGE = b"\x00"  # RFC 9190 §2.5: protected success indication
TLS13_CONTEXT_RFC9190 = b""  # RFC 9190 §2.3: the exporters' context is empty
# The drafts before RFC 9190 (and hostapd / wpa_supplicant up to 2.10, Debian's today) give the
# exporters the Type-Code as context: a TLS 1.3 run with them needs this on our side.
TLS13_CONTEXT_DRAFT = bytes([EapType.TLS])
_SESSION_ID_TYPE = bytes([EapType.TLS])  # RFC 5216 §2.3, RFC 9190 §2.3: 0x0D || ...

# OpenSSL verify errors that mean "invalid at the host's clock": judged again at `now`.
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10
_TIME_ERRORS = (_X509_V_ERR_CERT_NOT_YET_VALID, _X509_V_ERR_CERT_HAS_EXPIRED)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


class TlsFlags(IntFlag):
    """The Flags octet (RFC 5216 §3.1); the other five bits are reserved, ignored on receipt."""

    LENGTH = 0x80  # L
    MORE = 0x40  # M
    START = 0x20  # S


class EapTlsDecodeError(EapDecodeError):
    """An EAP-TLS message, or a train of fragments, that is not valid (offset into Type-Data)."""


# -- framing (§3.1) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EapTlsFrame:
    """One EAP-TLS message: Flags, the TLS Message Length when L is set, the TLS data."""

    flags: TlsFlags
    data: bytes = b""
    message_length: int | None = None

    @property
    def is_ack(self) -> bool:
        """An empty message without L, M or S: the acknowledgement of a fragment (§2.1.5)."""
        return not self.data and not self.flags & (TlsFlags.LENGTH | TlsFlags.MORE | TlsFlags.START)

    @classmethod
    def decode(cls, type_data: bytes) -> EapTlsFrame:
        if not type_data:
            raise EapTlsDecodeError(0, "EAP-TLS message without its Flags octet")
        flags = TlsFlags(type_data[0] & (TlsFlags.LENGTH | TlsFlags.MORE | TlsFlags.START))
        if not flags & TlsFlags.LENGTH:
            return cls(flags, bytes(type_data[1:]))
        if len(type_data) < 1 + LENGTH_FIELD_LEN:
            raise EapTlsDecodeError(1, "L flag set but the TLS Message Length is cut short")
        (length,) = struct.unpack_from("!I", type_data, 1)
        data = bytes(type_data[1 + LENGTH_FIELD_LEN :])
        if length < len(data):
            raise EapTlsDecodeError(1, f"TLS Message Length {length} < the {len(data)} bytes here")
        return cls(flags, data, length)

    def encode(self) -> bytes:
        head = bytes([self.flags])
        if self.flags & TlsFlags.LENGTH:
            head += struct.pack("!I", self.message_length or 0)
        return head + self.data


ACK = EapTlsFrame(TlsFlags(0))
START = EapTlsFrame(TlsFlags.START)


class Reassembly:
    """Fragments of one TLS message (§2.1.5), bounded by `max_message` bytes."""

    def __init__(self, max_message: int = MAX_TLS_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._expected: int | None = None
        self._open = False

    @property
    def in_progress(self) -> bool:
        return self._open

    def add(self, frame: EapTlsFrame) -> bytes | None:
        """The whole message once its last fragment is in, else None (acknowledge it).
        Raises EapTlsDecodeError for a train that is cut, reordered or too long."""
        more = bool(frame.flags & TlsFlags.MORE)
        if frame.flags & TlsFlags.LENGTH:
            length = frame.message_length or 0
            if length > self.max_message:
                raise EapTlsDecodeError(1, f"TLS Message Length {length} > {self.max_message}")
            if self._open and length != self._expected:
                raise EapTlsDecodeError(1, "a new TLS Message Length in the middle of a train")
            self._expected = length
        elif not self._open and more:
            raise EapTlsDecodeError(0, "first fragment of a train without the L flag")
        if more and not frame.data:
            raise EapTlsDecodeError(1, "an empty fragment with the M flag")
        self._open = True
        self._buf += frame.data
        limit = self.max_message if self._expected is None else self._expected
        if len(self._buf) > limit:
            raise EapTlsDecodeError(0, f"fragments exceed the declared length {limit}")
        if more:
            return None
        if self._expected is not None and len(self._buf) != self._expected:
            raise EapTlsDecodeError(
                0, f"train ended after {len(self._buf)} of {self._expected} bytes"
            )
        message = bytes(self._buf)
        self._buf.clear()
        self._expected = None
        self._open = False
        return message


class Fragmenter:
    """A TLS message to send, cut into fragments of at most `size` bytes of data (§2.1.5)."""

    def __init__(self, size: int = DEFAULT_FRAGMENT_SIZE) -> None:
        if size < 1:
            raise ValueError("fragment size must be >= 1")
        self.size = size
        self._rest = b""
        self._total = 0

    @property
    def in_progress(self) -> bool:
        return bool(self._rest)

    def first(self, message: bytes) -> EapTlsFrame:
        if len(message) <= self.size:
            self._rest = b""
            return EapTlsFrame(TlsFlags(0), message)
        self._total = len(message)
        self._rest = message[self.size :]
        return EapTlsFrame(TlsFlags.LENGTH | TlsFlags.MORE, message[: self.size], len(message))

    def next(self) -> EapTlsFrame:
        chunk, self._rest = self._rest[: self.size], self._rest[self.size :]
        return EapTlsFrame(TlsFlags.MORE if self._rest else TlsFlags(0), chunk)


# -- certificates --------------------------------------------------------------------------------


def device_id_of(cert: x509.Certificate) -> bytes | None:
    """The device a certificate names (SAN URI urn:amistack:device:ID), if exactly one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    ids = [
        uri[len(DEVICE_URI_PREFIX) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(DEVICE_URI_PREFIX)
    ]
    if len(ids) != 1 or not ids[0] or not ids[0].isascii():
        return None
    return ids[0].encode()


def _has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def _valid_at(cert: x509.Certificate, now: float) -> bool:
    return cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp()


def _context(
    role: int,
    certificate: x509.Certificate,
    private_key: PrivateKey,
    trusted: Sequence[x509.Certificate],
    max_version: str,
) -> SSL.Context:
    if max_version not in TLS_VERSIONS:
        raise ValueError(f"TLS version must be one of {sorted(TLS_VERSIONS)}")
    ctx = SSL.Context(role)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)  # RFC 9190 §2.1: nothing older than 1.2
    ctx.set_max_proto_version(TLS_VERSIONS[max_version])
    ctx.use_certificate(certificate)
    ctx.use_privatekey(private_key)
    ctx.check_privatekey()
    store = ctx.get_cert_store()
    if store is None:  # pragma: no cover - OpenSSL always has one
        raise ValueError("OpenSSL context without a certificate store")
    for ca in trusted:
        store.add_cert(crypto.X509.from_cryptography(ca))
    # No resumption: every run is a full authentication against the current enrolment and CRL.
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    return ctx


def _verify_callback(conn: SSL.Connection, cert: object, errnum: int, depth: int, ok: int) -> bool:
    """OpenSSL's per-certificate verdict, handed to the method that owns the connection."""
    owner = conn.get_app_data()
    if not isinstance(owner, _TlsRun):
        return False
    to_crypto = getattr(cert, "to_cryptography", None)
    if to_crypto is None:
        return False
    return owner.verify(to_crypto(), errnum, depth, bool(ok))


@dataclass(frozen=True)
class TlsServerConfig:
    """The key server's side: its certificate, the device CA, and the two questions it asks
    the credential store and the PKI about a device certificate."""

    context: SSL.Context  # our certificate and key, the CA as the only trust anchor
    is_enrolled: Callable[[bytes], bool]  # enrolled for EAP-TLS and not revoked
    is_revoked: Callable[[x509.Certificate], bool]  # on the CRL (fails closed: True)
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    max_message: int = MAX_TLS_MESSAGE
    tls13_context: bytes = TLS13_CONTEXT_RFC9190

    @classmethod
    def build(
        cls,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        trusted: Sequence[x509.Certificate],
        is_enrolled: Callable[[bytes], bool],
        is_revoked: Callable[[x509.Certificate], bool],
        *,
        max_version: str = "1.3",
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        tls13_context: bytes = TLS13_CONTEXT_RFC9190,
    ) -> TlsServerConfig:
        ctx = _context(SSL.TLS_SERVER_METHOD, certificate, private_key, trusted, max_version)
        return cls(
            ctx,
            is_enrolled,
            is_revoked,
            fragment_size,
            MAX_TLS_MESSAGE,
            tls13_context,
        )


@dataclass(frozen=True)
class TlsPeerConfig:
    """The meter's side: its device certificate and key, the CA it trusts for the server, and
    optionally the name the server certificate must carry (subjectAltName DNS or IP)."""

    context: SSL.Context  # the device certificate and key, the CA as the only trust anchor
    server_name: str | None = None
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    max_message: int = MAX_TLS_MESSAGE
    tls13_context: bytes = TLS13_CONTEXT_RFC9190

    @classmethod
    def build(
        cls,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        trusted: Sequence[x509.Certificate],
        *,
        server_name: str | None = None,
        max_version: str = "1.3",
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        tls13_context: bytes = TLS13_CONTEXT_RFC9190,
    ) -> TlsPeerConfig:
        ctx = _context(SSL.TLS_CLIENT_METHOD, certificate, private_key, trusted, max_version)
        return cls(ctx, server_name, fragment_size, MAX_TLS_MESSAGE, tls13_context)


# -- the handshake over memory BIOs --------------------------------------------------------------


@dataclass(frozen=True)
class TlsKeys:
    msk: bytes
    emsk: bytes
    session_id: bytes
    version: str


def derive_keys(conn: SSL.Connection, tls13_context: bytes = TLS13_CONTEXT_RFC9190) -> TlsKeys:
    """MSK, EMSK and Session-Id of a finished handshake (RFC 5216 §2.3, RFC 9190 §2.3)."""
    version = conn.get_protocol_version_name()
    if version == "TLSv1.3":
        km = conn.export_keying_material(LABEL_KEY_MATERIAL, KEY_MATERIAL_LEN, tls13_context)
        method_id = conn.export_keying_material(LABEL_METHOD_ID, METHOD_ID_LEN, tls13_context)
        sid = _SESSION_ID_TYPE + method_id
    else:
        km = conn.export_keying_material(LABEL_TLS12, KEY_MATERIAL_LEN)
        client_random, server_random = conn.client_random(), conn.server_random()
        if client_random is None or server_random is None:  # pragma: no cover - after a handshake
            raise SSL.Error("no randoms after the handshake")
        sid = _SESSION_ID_TYPE + client_random + server_random
    return TlsKeys(km[:MSK_LEN], km[MSK_LEN:KEY_MATERIAL_LEN], sid, version)


class _TlsRun:
    """What peer and server share: the connection, fragments both ways, the round limit."""

    is_server: bool

    def __init__(
        self,
        context: SSL.Context,
        now: Callable[[], float],
        fragment_size: int,
        max_message: int,
    ) -> None:
        self._context = context
        self._now = now
        self.conn: SSL.Connection | None = None
        self.out = Fragmenter(fragment_size)
        self.inbound = Reassembly(max_message)
        self.rounds = 0
        self.keys: TlsKeys | None = None
        self.rejected = ""  # why our verify callback refused the other side's certificate
        self.counters: Counter[str] = Counter()

    def open(self) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        conn.set_app_data(self)
        if self.is_server:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
        self.conn = conn
        return conn

    def output(self) -> bytes:
        assert self.conn is not None
        chunks = []
        while True:
            try:
                chunks.append(self.conn.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)

    def handshake(self, incoming: bytes) -> bool:
        """Feed TLS records; True once the handshake is complete. Raises SSL.Error."""
        assert self.conn is not None
        if incoming:
            self.conn.bio_write(incoming)
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            return False
        return True

    def verify(self, cert: x509.Certificate, errnum: int, depth: int, ok: bool) -> bool:
        if not ok and errnum not in _TIME_ERRORS:
            return self._reject(f"certificate chain does not verify (X509 error {errnum})")
        if not _valid_at(cert, self._now()):
            what = "certificate" if depth == 0 else "CA certificate"
            return self._reject(f"{what} expired or not yet valid")
        if depth > 0:
            return True
        return self.check_leaf(cert)

    def check_leaf(self, cert: x509.Certificate) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _reject(self, reason: str) -> bool:
        if not self.rejected:
            self.rejected = reason
        self.counters["certificate_rejected"] += 1
        return False


# -- peer ----------------------------------------------------------------------------------------


class _PeerPhase(Enum):
    WAIT_START = "wait_start"
    HANDSHAKE = "handshake"
    WAIT_COMMITMENT = "wait_commitment"  # TLS 1.3: handshake done, 0x00 not yet seen
    DONE = "done"


class EapTlsPeer(_TlsRun, PeerMethod):
    """The peer (meter) side of EAP-TLS. `now()` gives Unix time for certificate validity."""

    method_type = EapType.TLS
    is_server = False

    def __init__(self, config: TlsPeerConfig, now: Callable[[], float]) -> None:
        PeerMethod.__init__(self)
        _TlsRun.__init__(self, config.context, now, config.fragment_size, config.max_message)
        self.config = config
        self._phase = _PeerPhase.WAIT_START
        self.failure_reason = ""

    @property
    def msk(self) -> bytes | None:
        return self.keys.msk if self.keys and self.decision is not Decision.FAIL else None

    @property
    def emsk(self) -> bytes | None:
        return self.keys.emsk if self.keys and self.decision is not Decision.FAIL else None

    @property
    def session_id(self) -> bytes | None:
        return self.keys.session_id if self.keys and self.decision is not Decision.FAIL else None

    def check_leaf(self, cert: x509.Certificate) -> bool:
        if not _has_eku(cert, ExtendedKeyUsageOID.SERVER_AUTH):
            return self._reject("server certificate lacks extendedKeyUsage serverAuth")
        name = self.config.server_name
        if name is not None and not _names_host(cert, name):
            return self._reject(f"server certificate is not for {name!r}")
        return True

    def _fail(self, reason: str) -> None:
        logger.info("EAP-TLS peer failed: %s", reason)
        self.counters[reason.split(":")[0]] += 1
        self.failure_reason = reason
        self._phase = _PeerPhase.DONE
        self.state = MethodState.DONE
        self.decision = Decision.FAIL

    def _send(self, message: bytes) -> bytes:
        return self.out.first(message).encode()

    def process(self, request: EapPacket) -> bytes | None:
        try:
            frame = EapTlsFrame.decode(request.type_data)
        except EapDecodeError as exc:
            logger.debug("EAP-TLS peer discards a request: %s", exc)
            self.counters["malformed"] += 1
            return None
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            self._fail("too many EAP-TLS rounds")
            return None
        if self._phase is _PeerPhase.WAIT_START:
            if not frame.flags & TlsFlags.START:
                self.counters["not_start"] += 1
                return None
            self.state = MethodState.CONT
            self._phase = _PeerPhase.HANDSHAKE
            return self._advance(b"")
        if frame.flags & TlsFlags.START:
            self.counters["start_mid_run"] += 1
            return None
        if self.out.in_progress:
            if not frame.is_ack:
                self._fail("protocol: expected the server to acknowledge our fragment")
                return None
            return self.out.next().encode()
        if frame.is_ack and not self.inbound.in_progress:
            self._fail("protocol: an acknowledgement of nothing")
            return None
        try:
            message = self.inbound.add(frame)
        except EapTlsDecodeError as exc:
            self._fail(f"fragments: {exc.reason}")
            return None
        if message is None:
            return ACK.encode()
        return self._advance(message)

    def _advance(self, incoming: bytes) -> bytes | None:
        if self.conn is None:
            self.open()
        assert self.conn is not None
        try:
            if self._phase is _PeerPhase.HANDSHAKE:
                if not self.handshake(incoming):
                    return self._send(self.output())
                out = self.output()
                if self.conn.get_protocol_version_name() == "TLSv1.3":
                    self._phase = _PeerPhase.WAIT_COMMITMENT
                    # The commitment may already be in this flight (it never is with a
                    # conforming server, which sends it after our Finished).
                    return self._send(out) if out else self._commitment()
                return self._succeed(out)
            return self._commitment(incoming)
        except SSL.Error as exc:
            alert = self.output()
            self._fail(f"TLS: {self.rejected or _ssl_reason(exc)}")
            return self._send(alert) if alert else None

    def _commitment(self, incoming: bytes = b"") -> bytes | None:
        """TLS 1.3: read what follows the handshake; the 0x00 commitment ends it (§2.5)."""
        assert self.conn is not None
        if incoming:
            self.conn.bio_write(incoming)
        try:
            data = self.conn.recv(16)
        except SSL.WantReadError:
            return ACK.encode()  # only NewSessionTicket so far: wait for more
        except SSL.ZeroReturnError:
            self._fail("TLS 1.3: close_notify instead of the commitment message")
            return None
        if data != COMMITMENT_MESSAGE:
            self._fail("TLS 1.3: application data other than the commitment message")
            return None
        return self._succeed(b"")

    def _succeed(self, out: bytes) -> bytes:
        assert self.conn is not None
        self.keys = derive_keys(self.conn, self.config.tls13_context)
        self._phase = _PeerPhase.DONE
        self.state = MethodState.DONE
        self.decision = Decision.UNCOND_SUCC
        return self._send(out) if out else ACK.encode()


def _names_host(cert: x509.Certificate, name: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    wanted = name.strip("[]").rstrip(".").lower()
    names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return wanted in names


def _ssl_reason(exc: SSL.Error) -> str:
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and item:
            return str(item[-1])
    return str(exc) or type(exc).__name__


# -- server --------------------------------------------------------------------------------------


class _ServerPhase(Enum):
    START = "start"
    HANDSHAKE = "handshake"
    WAIT_FINAL_ACK = "wait_final_ack"
    DONE = "done"


class EapTlsServer(_TlsRun, ServerMethod):
    """The server side of EAP-TLS. The peer id after SUCCESS is the certificate's device id."""

    method_type = EapType.TLS
    is_server = True

    def __init__(self, config: TlsServerConfig, now: Callable[[], float]) -> None:
        _TlsRun.__init__(self, config.context, now, config.fragment_size, config.max_message)
        self.config = config
        self._phase = _ServerPhase.START
        self._identity: bytes | None = None
        self._peer_id: bytes | None = None
        self._success = False

    def accepts(self, identity: bytes | None) -> bool:
        """Offered only to identities enrolled for EAP-TLS (the method-selection seam)."""
        return identity is not None and self.config.is_enrolled(identity)

    @property
    def msk(self) -> bytes | None:
        return self.keys.msk if self.keys and self._success else None

    @property
    def emsk(self) -> bytes | None:
        return self.keys.emsk if self.keys and self._success else None

    @property
    def session_id(self) -> bytes | None:
        return self.keys.session_id if self.keys and self._success else None

    @property
    def peer_id(self) -> bytes | None:
        return self._peer_id

    def check_leaf(self, cert: x509.Certificate) -> bool:
        if not _has_eku(cert, ExtendedKeyUsageOID.CLIENT_AUTH):
            return self._reject("device certificate lacks extendedKeyUsage clientAuth")
        device = device_id_of(cert)
        if device is None:
            return self._reject("certificate names no device (urn:amistack:device:ID)")
        if self.config.is_revoked(cert):
            return self._reject(f"certificate serial {cert.serial_number:x} is revoked (CRL)")
        if self._identity and not hmac.compare_digest(self._identity, device):
            return self._reject(f"certificate is for device {device!r}, not {self._identity!r}")
        if not self.config.is_enrolled(device):
            return self._reject(f"device {device!r} is not enrolled for EAP-TLS or is revoked")
        self._peer_id = device
        return True

    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        self._identity = identity
        self._phase = _ServerPhase.HANDSHAKE
        self.open()
        return START.encode()

    def _failure(self, reason: str) -> ServerMethodStep:
        logger.info("EAP-TLS server failure: %s", reason, extra={"identity": self._identity})
        self.counters[reason.split(":")[0]] += 1
        self._phase = _ServerPhase.DONE
        return ServerMethodStep(ServerOutcome.FAILURE, reason=reason)

    def _request(self, message: bytes) -> ServerMethodStep:
        return ServerMethodStep(ServerOutcome.REQUEST, self.out.first(message).encode())

    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        try:
            frame = EapTlsFrame.decode(response.type_data)
        except EapDecodeError as exc:
            logger.debug("EAP-TLS server discards a response: %s", exc)
            self.counters["malformed"] += 1
            return ServerMethodStep(ServerOutcome.IGNORE, reason="malformed")
        if self._phase not in (_ServerPhase.HANDSHAKE, _ServerPhase.WAIT_FINAL_ACK):
            self.counters["unexpected"] += 1
            return ServerMethodStep(ServerOutcome.IGNORE, reason="unexpected")
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            return self._failure("too many EAP-TLS rounds")
        if frame.flags & TlsFlags.START:
            return self._failure("protocol: S flag in a response")
        if self.out.in_progress:
            if not frame.is_ack:
                return self._failure("protocol: expected the peer to acknowledge our fragment")
            return ServerMethodStep(ServerOutcome.REQUEST, self.out.next().encode())
        if self._phase is _ServerPhase.WAIT_FINAL_ACK:
            if frame.is_ack:
                self._phase = _ServerPhase.DONE
                self._success = True
                return ServerMethodStep(ServerOutcome.SUCCESS)
            return self._failure("peer did not accept the server's final flight")
        if frame.is_ack and not self.inbound.in_progress:
            return self._failure("protocol: an acknowledgement of nothing")
        try:
            message = self.inbound.add(frame)
        except EapTlsDecodeError as exc:
            return self._failure(f"fragments: {exc.reason}")
        if message is None:
            return ServerMethodStep(ServerOutcome.REQUEST, ACK.encode())
        return self._advance(message)

    def _commit(self, conn: SSL.Connection) -> None:
        """TLS 1.3: no more handshake messages from here (RFC 9190 §2.5)."""
        conn.send(COMMITMENT_MESSAGE)

    def _advance(self, incoming: bytes) -> ServerMethodStep:
        assert self.conn is not None
        try:
            if not self.handshake(incoming):
                out = self.output()
                if not out:
                    return self._failure("protocol: a TLS message that asks for no answer")
                return self._request(out)
            if self._peer_id is None:  # cannot happen with VERIFY_FAIL_IF_NO_PEER_CERT
                return self._failure("no device certificate")
            self.keys = derive_keys(self.conn, self.config.tls13_context)
            if self.keys.version == "TLSv1.3":
                self._commit(self.conn)
        except SSL.Error as exc:
            return self._failure(f"TLS: {self.rejected or _ssl_reason(exc)}")
        self._phase = _ServerPhase.WAIT_FINAL_ACK
        return self._request(self.output())
