"""The meter registry's life cycle: installed -> commissioned -> decommissioned.

A meter is registered when it is installed (its device id, the key server's identity for it, its
ANSI C12.22 AP title, and where it hangs: concentrator and cell). It is commissioned once it
has authenticated and answered a first read; only then does the head-end schedule its reads.
Decommissioning stops collection; the row stays (its readings and events keep their owner), and
it is reversible: a decommissioned meter can be commissioned again (re-commission, by an
INSTALLER or SECADM), so a mistaken or malicious decommission never locks a meter out. The
transitions are one explicit table, like h11's `_state.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import serialization

from amistack.securemodule.base import SecureModuleError, load_p256_public_key


class MeterState(StrEnum):
    INSTALLED = "installed"
    COMMISSIONED = "commissioned"
    DECOMMISSIONED = "decommissioned"


# state -> states it may move to
TRANSITIONS: dict[MeterState, frozenset[MeterState]] = {
    MeterState.INSTALLED: frozenset({MeterState.COMMISSIONED, MeterState.DECOMMISSIONED}),
    MeterState.COMMISSIONED: frozenset({MeterState.DECOMMISSIONED}),
    MeterState.DECOMMISSIONED: frozenset({MeterState.COMMISSIONED}),  # re-commission
}

MAX_ID = 255  # device ids are EAP-PSK ID_Ps / NAIs: short printable strings


class HeadendError(Exception):
    """A head-end operation that cannot be done; `code` says why (the API maps it onto 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        # "not_found" | "exists" | "invalid_transition" | "invalid" | "no_key"
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Meter:
    meter_id: str  # the device id: the key server's identity (EAP-PSK ID_P) for this meter
    ap_title: str  # ANSI C12.22 AP title, dotted (e.g. "2.16.124.113620.1.22.0.1")
    concentrator: str
    cell: str
    state: MeterState
    installed_at: float
    commissioned_at: float | None = None
    decommissioned_at: float | None = None


def check_transition(meter: Meter, to: MeterState) -> None:
    if to not in TRANSITIONS[meter.state]:
        raise HeadendError(
            "invalid_transition",
            f"meter {meter.meter_id!r} is {meter.state.value}; it cannot become {to.value}",
        )


def check_meter_fields(meter_id: str, ap_title: str, concentrator: str, cell: str) -> None:
    if not meter_id or len(meter_id) > MAX_ID or not meter_id.isprintable():
        raise HeadendError("invalid", "meter_id must be 1-255 printable characters")
    parts = ap_title.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise HeadendError("invalid", f"ap_title {ap_title!r} is not a dotted object identifier")
    for name, value in (("concentrator", concentrator), ("cell", cell)):
        if len(value) > MAX_ID or not value.isprintable():
            raise HeadendError("invalid", f"{name} must be at most 255 printable characters")


MAX_KEY_PEM = 4096  # an EC P-256 SPKI PEM is ~180 bytes


def check_eventlog_key(public_key_pem: str | bytes) -> tuple[str, str]:
    """A meter's event-log public key (its secure module's SPKI PEM, EC P-256), normalised:
    (PEM text, key id hex = SHA-256 of the DER SPKI, as the signed heads carry it)."""
    raw = public_key_pem
    if isinstance(raw, str):
        raw = raw.encode("ascii", "replace")
    if len(raw) > MAX_KEY_PEM:
        raise HeadendError("invalid", "the event-log key is not a PEM public key (too long)")
    try:
        key = load_p256_public_key(raw)
    except SecureModuleError as exc:
        raise HeadendError("invalid", f"event-log key: {exc}") from None
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, hashlib.sha256(der).hexdigest()
