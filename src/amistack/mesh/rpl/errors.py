"""The one exception family for untrusted RPL input (control messages, SRH, RPL option)."""

from __future__ import annotations

from amistack.mesh.icmpv6 import Icmpv6DecodeError


class RplDecodeError(Icmpv6DecodeError):
    """A malformed RPL message, option or header: where (byte offset) and why."""


class RplRoutingError(Exception):
    """A packet RPL must not forward: a source-route loop (RFC 6554 §4.2) or a second rank
    inconsistency on the data path (RFC 6550 §11.2.2.2). The caller drops and counts it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
