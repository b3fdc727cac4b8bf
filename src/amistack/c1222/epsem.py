"""EPSEM, the Extended Protocol Specification for Electronic Metering (ANSI C12.22 §5.3.3).

    <epsem> ::= <epsem-control> [<ed-class>] { <service-length> <res-req> }+

<epsem-control> (one byte, always in clear): bit 7 always 1, bit 6 recovery session,
bit 5 proxy service used, bit 4 ed-class included, bits 3..2 security mode, bits 1..0 response
control. <service-length> is a BER length; each <res-req> is one request (a service code
0x20..0x7F and its parameters) or one response (a response code 0x00..0x1F and its data).
In the protected modes the EPSEM is followed by a 4-byte MAC and, in ciphertext mode, everything
after the control byte is encrypted (security.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from amistack.c1222 import ber
from amistack.c1222.errors import C1222DecodeError

ED_CLASS_LEN = 4
MAC_LEN = 4


class SecurityMode(IntEnum):
    """C12.22 §5.3.3.1, epsem-control bits 3..2."""

    CLEARTEXT = 0
    CLEARTEXT_AUTH = 1
    CIPHERTEXT_AUTH = 2


class ResponseControl(IntEnum):
    """C12.22 §5.3.3.1, epsem-control bits 1..0."""

    ALWAYS = 0
    ON_EXCEPTION = 1
    NEVER = 2


FLAG_ALWAYS = 0x80
FLAG_RECOVERY = 0x40
FLAG_PROXY = 0x20
FLAG_ED_CLASS = 0x10


@dataclass(frozen=True)
class EpsemControl:
    security_mode: SecurityMode = SecurityMode.CLEARTEXT
    response_control: ResponseControl = ResponseControl.ALWAYS
    ed_class_included: bool = False
    recovery: bool = False
    proxy: bool = False

    def encode(self) -> int:
        return (
            FLAG_ALWAYS
            | (FLAG_RECOVERY if self.recovery else 0)
            | (FLAG_PROXY if self.proxy else 0)
            | (FLAG_ED_CLASS if self.ed_class_included else 0)
            | (self.security_mode << 2)
            | self.response_control
        )

    @classmethod
    def decode(cls, byte: int, offset: int = 0) -> EpsemControl:
        known = _CONTROLS.get(byte)
        if known is not None:  # 256 possible bytes: each valid one decoded once
            return known
        control = cls._decode(byte, offset)
        _CONTROLS[byte] = control
        return control

    @classmethod
    def _decode(cls, byte: int, offset: int) -> EpsemControl:
        if not byte & FLAG_ALWAYS:
            raise C1222DecodeError(offset, "EPSEM control bit 7 must be 1")
        try:
            mode = SecurityMode((byte >> 2) & 3)
            rc = ResponseControl(byte & 3)
        except ValueError:
            raise C1222DecodeError(offset, f"reserved EPSEM control value {byte:#04x}") from None
        return cls(
            mode,
            rc,
            bool(byte & FLAG_ED_CLASS),
            bool(byte & FLAG_RECOVERY),
            bool(byte & FLAG_PROXY),
        )


_CONTROLS: dict[int, EpsemControl] = {}  # immutable values by control byte (at most 256)


@dataclass(frozen=True)
class Epsem:
    """The EPSEM in clear: control fields, optional ED class, one or more <res-req> octets."""

    services: tuple[bytes, ...]
    security_mode: SecurityMode = SecurityMode.CLEARTEXT
    response_control: ResponseControl = ResponseControl.ALWAYS
    ed_class: bytes | None = None
    recovery: bool = False
    proxy: bool = False

    def __post_init__(self) -> None:
        if not self.services or not all(self.services):
            raise ValueError("an EPSEM carries at least one non-empty service")
        if self.ed_class is not None and len(self.ed_class) != ED_CLASS_LEN:
            raise ValueError("ED class is 4 bytes")

    @property
    def control(self) -> EpsemControl:
        return EpsemControl(
            self.security_mode,
            self.response_control,
            self.ed_class is not None,
            self.recovery,
            self.proxy,
        )

    def encode_body(self) -> bytes:
        """Everything after the control byte (what ciphertext mode encrypts)."""
        out = [self.ed_class or b""]
        for s in self.services:
            out.append(ber.encode_length(len(s)))
            out.append(s)
        return b"".join(out)

    def encode(self) -> bytes:
        """Control byte + body, without a MAC (cleartext mode as carried)."""
        return bytes([self.control.encode()]) + self.encode_body()

    @classmethod
    def decode_body(cls, control: EpsemControl, body: bytes, offset: int = 1) -> Epsem:
        return cls._of(control, *split_body(control, body, offset))

    @classmethod
    def _of(
        cls, control: EpsemControl, services: tuple[bytes, ...], ed_class: bytes | None
    ) -> Epsem:
        # what __post_init__ checks holds by construction (non-empty services, a 4-byte ED
        # class): fill the frozen fields directly, once per message received
        epsem = object.__new__(cls)
        epsem.__dict__.update(
            services=services,
            security_mode=control.security_mode,
            response_control=control.response_control,
            ed_class=ed_class,
            recovery=control.recovery,
            proxy=control.proxy,
        )
        return epsem

    @classmethod
    def decode(cls, data: bytes) -> Epsem:
        """A cleartext-mode EPSEM (control byte + body, no MAC)."""
        if not data:
            raise C1222DecodeError(0, "empty EPSEM")
        control = EpsemControl.decode(data[0])
        if control.security_mode != SecurityMode.CLEARTEXT:
            raise C1222DecodeError(0, "protected EPSEM: use security.unprotect")
        try:
            return cls.decode_body(control, data[1:])
        except C1222DecodeError as exc:
            raise C1222DecodeError(exc.offset, exc.reason) from None


def split_body(
    control: EpsemControl, body: bytes, offset: int = 1
) -> tuple[tuple[bytes, ...], bytes | None]:
    """(the <res-req> octets, the ED class or None) of an EPSEM body (everything after the
    control byte, in clear): `Epsem.decode_body` without the object, which an endpoint reading
    a message only takes apart again. `offset`: where `body` starts, for errors."""
    n = body[0] if body else 0
    if 0 < n < 0x80 and len(body) == n + 1 and not control.ed_class_included:
        return (body[1:],), None  # one short service, no ED class: the norm
    pos = 0
    ed_class = None
    if control.ed_class_included:
        if len(body) < ED_CLASS_LEN:
            raise C1222DecodeError(offset, "ED class truncated")
        ed_class = body[:ED_CLASS_LEN]
        pos = ED_CLASS_LEN
    services: list[bytes] = []
    while pos < len(body):
        length, start = ber.read_length(body, pos)
        if length == 0:
            raise C1222DecodeError(offset + pos, "empty service")
        if start + length > len(body):
            raise C1222DecodeError(offset + pos, f"service of {length} bytes overruns EPSEM")
        services.append(body[start : start + length])
        pos = start + length
    if not services:
        raise C1222DecodeError(offset + pos, "EPSEM carries no service")
    return tuple(services), ed_class
