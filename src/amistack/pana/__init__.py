"""amistack.pana — PANA (RFC 5191) with the RFC 5609 state machines and the RFC 6345 relay.

Layout (aioquic-style split of codec and state):
  constants.py  numbers (message types, flags, AVP codes, result codes, algorithms)
  avp.py, message.py, errors.py   the codec; PanaDecodeError(offset, reason) is its only error
  auth.py       AUTH AVP: HMAC-SHA1-160 (7) / HMAC-SHA256-128 (12), constant-time verify
  keys.py       PanaSecurityContext, session_kdf, pana_auth_key (RFC 5191 §5.3)
  session.py, timers.py   per-session sequence numbers, answer cache, retransmission (§4.2, §9)
  pac.py        PanaClient (PaC)          paa.py   PanaAuthAgent (PAA, one engine, all sessions)
  relay.py      PanaRelay (PRE) and the PRY codec (RFC 6345)
  mux.py        PacMux: many PaCs over one socket, demultiplexed by session id (load, fleets)
  aaa.py, local_backend.py   the AAA seam and the in-process EAP server backend
  events.py     Authenticated, AuthenticationFailed, SessionTerminated, PingCompleted

RFC 5609 states implemented. PaC: INITIAL, WAIT_PAA, OPEN, WAIT_PNA_PING, WAIT_PNA_REAUTH,
SESS_TERM, CLOSED. WAIT_EAP_MSG / WAIT_EAP_RESULT / WAIT_EAP_RESULT_CLOSE are transient here:
`EapPeer` answers synchronously, so the EAP response is piggybacked on the PAN in the same call.
PAA: INITIAL, WAIT_EAP_MSG (waiting for the AAA backend, which may answer later through
`aaa_answer`), WAIT_PAN_OR_PAR, WAIT_SUCC_PAN, WAIT_FAIL_PAN, OPEN, WAIT_PNA_PING, SESS_TERM,
CLOSED. The PAA also accepts an EAP response carried in a PAR from the PaC (non-piggybacked).

Choices:
  * Codec: RFC 5191 has no M bit (only V); unknown and vendor AVPs are decoded, kept (exact round
    trip) and ignored. Reserved header/AVP fields and reserved flag bits are "MUST be zero, ignored
    by the receiver": kept as received, never rejected. Everything else that is malformed (length
    fields, truncation, padding, Message Length != datagram length, wrong-size Unsigned32 AVPs)
    raises PanaDecodeError. AUTH is verified over the received octets, never a re-encoding.
  * Algorithms: the PAA offers both suites in the PAR(S) (PRF 5 and 2, integrity 12 and 7, in
    config order: SHA-1 first for OpenPANA's PaC, which reads only the first); the PaC picks by
    its preference and echoes one of each in its PAN(S).
  * Keys: PANA_AUTH_KEY per RFC 5191 §5.3 with I_PAR/I_PAN of the session's first exchange and the
    nonces of the current EAP run; the C-flag PAR/PAN are protected with the NEW key; every other
    message after the first success carries AUTH under the key in force. Key-Id counts 1, 2, 3...
    per session (a new one per re-authentication), so it doubles as the key generation.
  * Sequence numbers: random initial value per side (from the injected rng); a request equal to
    the last accepted one, octet for octet, gets the cached answer; anything else out of sequence
    is dropped and counted. Answers must match the one outstanding request.
  * Retransmission (RFC 5191 §9 / RFC 3315 §14): PCI IRT 1 s, MRT 120 s, MRC 0 (unlimited);
    requests IRT 1 s, MRT 30 s, MRC 10; configurable (PacConfig/PaaConfig). Give-up ends the
    session (SessionTerminated).
  * Lifetime: Session-Lifetime in the success PAR; the PaC re-authenticates (PNR with A) at
    `reauth_fraction` of it; at expiry each end deletes the session on its own (SessionTerminated
    "session lifetime expired") without PTR -- the PAA after `lifetime_grace` s, for PaCs that
    re-authenticate only at expiry (OpenPANA). Explicit termination (PaC.terminate: LOGOUT,
    PAA.terminate e.g. on revocation: ADMINISTRATIVE) uses PTR/PTA.
  * Failures (EAP failure, authorization refused = backend lifetime <= 0, no MSK) go out as a
    C-flag PAR with Result-Code and produce AuthenticationFailed on both ends; a failed
    re-authentication also ends the session.
  * PAA DoS limits: see paa.py (PCI token bucket per source before anything is answered,
    half-open bound with oldest-eviction, per-source limit, PRY only from `allowed_relays` with a
    per-relay budget, half-open and EAP-run timeouts). Bad AUTH, wrong session, bad sequence number,
    unexpected types: dropped and counted in `counters`, never raised.
"""

from amistack.pana.aaa import AaaAnswer, AaaBackend, AaaOutcome
from amistack.pana.constants import (
    AvpCode,
    Flag,
    IntegrityAlgorithm,
    MessageType,
    PrfAlgorithm,
    ResultCode,
    TerminationCause,
)
from amistack.pana.errors import PanaDecodeError
from amistack.pana.events import (
    Authenticated,
    AuthenticationFailed,
    PanaEvent,
    PingCompleted,
    SessionTerminated,
)
from amistack.pana.keys import PanaSecurityContext, pana_auth_key, session_kdf
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PaaState, PanaAuthAgent, Route
from amistack.pana.pac import PacConfig, PacState, PanaClient
from amistack.pana.relay import PanaRelay
from amistack.pana.timers import PCI_RETRANSMIT, REQ_RETRANSMIT, RetransmitParams

__all__ = [
    "PCI_RETRANSMIT",
    "REQ_RETRANSMIT",
    "AaaAnswer",
    "AaaBackend",
    "AaaOutcome",
    "Authenticated",
    "AuthenticationFailed",
    "AvpCode",
    "Flag",
    "IntegrityAlgorithm",
    "LocalEapBackend",
    "MessageType",
    "PaaConfig",
    "PaaState",
    "PacConfig",
    "PacState",
    "PanaAuthAgent",
    "PanaClient",
    "PanaDecodeError",
    "PanaEvent",
    "PanaMessage",
    "PanaRelay",
    "PanaSecurityContext",
    "PingCompleted",
    "PrfAlgorithm",
    "ResultCode",
    "RetransmitParams",
    "Route",
    "SessionTerminated",
    "TerminationCause",
    "pana_auth_key",
    "session_kdf",
]
