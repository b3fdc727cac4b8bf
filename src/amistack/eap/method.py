"""The EAP method interface: what `EapPeer` and `EapAuthenticator` need from a method.

The EAP layer (peer.py, authenticator.py) does identities, Nak, Notification, duplicate
detection, identifiers and Success/Failure; a method does only its own exchange. The split
follows the method/EAP-layer interface of RFC 4137 (§4.1.1 peer, §4.2.1 authenticator), so a
new method (EAP-TLS, EAP-GPSK, ...) is one new module and neither PANA nor the key server change:

Peer side -- subclass `PeerMethod`:
    * `method_type`: the EAP type number it answers (class attribute).
    * `process(request) -> bytes | None`: given an EAP-Request of that type, return the
      Type-Data of the response, or None to discard the request silently (RFC 4137
      "ignore"). The EAP layer builds the EAP header: Response, the request's Identifier,
      the Length, the same Type. A method whose cryptography covers that header (EAP-PSK's
      protected channel does) rebuilds it with `response_header()`.
    * keep `state` (MethodState) and `decision` (Decision) current after every call; they are
      RFC 4137's methodState and decision. The EAP layer accepts EAP-Success only once
      `decision` is COND_SUCC/UNCOND_SUCC and rejects EAP-Failure once it is UNCOND_SUCC. A
      method that ends with state DONE and decision FAIL without a response fails the
      conversation at once.
    * `msk`, `emsk`, `session_id`: None until the method has derived them (RFC 5247).

Server side -- subclass `ServerMethod`:
    * `method_type` as above.
    * `initial_request(identity, identifier) -> bytes`: Type-Data of the first request;
      `identity` is what the peer sent in Response/Identity (None if it was skipped).
    * `process(response, next_identifier) -> ServerMethodStep`: one step: another request
      (its Type-Data, sent with `next_identifier`), SUCCESS, FAILURE (with a reason) or
      IGNORE (drop the response, keep waiting).
    * `msk`, `emsk`, `session_id`, `peer_id` after SUCCESS.
    * `accepts(identity) -> bool` (default True): whether the method may be offered to the
      peer that sent this Response/Identity. It is the method-selection seam: the
      authenticator proposes the first method that accepts the identity (EAP-TLS accepts only
      devices enrolled for it), and a Nak can only move to another method that accepts it.

An `EapAuthenticator` takes `ServerMethodFactory`s (zero-argument callables returning a fresh
`ServerMethod`, e.g. ``lambda: EapPskServer(b"ks", store.get_psk, rng)``) in preference order;
an `EapPeer` takes a mapping type -> zero-argument factory of `PeerMethod`.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from amistack.eap.packet import HEADER_LEN, EapCode, EapPacket
from amistack.frozeninit import frozen_init


class MethodState(Enum):
    """RFC 4137 §4.1.1 methodState."""

    INIT = "init"
    CONT = "cont"
    MAY_CONT = "may_cont"
    DONE = "done"


class Decision(Enum):
    """RFC 4137 §4.1.1 decision."""

    FAIL = "fail"
    COND_SUCC = "cond_succ"
    UNCOND_SUCC = "uncond_succ"


def response_header(identifier: int, type_: int, type_data_len: int) -> bytes:
    """The 5 bytes (Code, Identifier, Length, Type) of the EAP-Response the EAP layer will build."""
    return struct.pack("!BBHB", EapCode.RESPONSE, identifier, HEADER_LEN + 1 + type_data_len, type_)


def request_header(identifier: int, type_: int, type_data_len: int) -> bytes:
    """The 5 bytes (Code, Identifier, Length, Type) of the EAP-Request the EAP layer will build."""
    return struct.pack("!BBHB", EapCode.REQUEST, identifier, HEADER_LEN + 1 + type_data_len, type_)


class _KeyingMaterial:
    """What a method exports once it succeeds (RFC 5247): none until a subclass says so."""

    @property
    def msk(self) -> bytes | None:
        return None

    @property
    def emsk(self) -> bytes | None:
        return None

    @property
    def session_id(self) -> bytes | None:
        return None


class PeerMethod(_KeyingMaterial, ABC):
    """One run of a method on the peer. Created fresh per conversation by its factory."""

    method_type: ClassVar[int]

    def __init__(self) -> None:
        self.state = MethodState.INIT
        self.decision = Decision.FAIL

    @abstractmethod
    def process(self, request: EapPacket) -> bytes | None:
        """Type-Data of the response to `request`, or None to discard it."""


class ServerOutcome(Enum):
    REQUEST = "request"
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORE = "ignore"


@frozen_init
@dataclass(frozen=True)
class ServerMethodStep:
    """What a server method wants after a response: see `ServerMethod.process`."""

    outcome: ServerOutcome
    type_data: bytes = b""
    reason: str = ""


class ServerMethod(_KeyingMaterial, ABC):
    """One run of a method on the authenticator. Created fresh per conversation."""

    method_type: ClassVar[int]

    @abstractmethod
    def initial_request(self, identity: bytes | None, identifier: int) -> bytes:
        """Type-Data of the first request, to be sent with `identifier`."""

    @abstractmethod
    def process(self, response: EapPacket, next_identifier: int) -> ServerMethodStep:
        """Handle a response of this method's type."""

    @property
    def peer_id(self) -> bytes | None:
        return None

    def accepts(self, identity: bytes | None) -> bool:
        """May this method be offered to the peer that claimed `identity`?"""
        return True


ServerMethodFactory = Callable[[], ServerMethod]
PeerMethodFactory = Callable[[], PeerMethod]
