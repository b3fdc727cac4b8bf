"""C12.22 services (ANSI C12.22 §5.3.4 / C12.18 §5.3): requests, responses, response codes.

Every <res-req> of an EPSEM is one of these. A request starts with its service code; a
response starts with a response code and its layout depends on the request it answers, so
`decode_response(request, data)` needs the request. Multi-byte numbers in services are
big-endian (C12.22 §5.3.4); table contents are whatever the table says (tables.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from amistack.c1222.errors import C1222DecodeError
from amistack.c1222.registration import Registration
from amistack.frozeninit import frozen_init

MAX_TABLE_ID = 0xFFFF
MAX_OFFSET = 0xFFFFFF  # <offset> is 3 bytes
MAX_COUNT = 0xFFFF  # <count> is 2 bytes


class ServiceCode(IntEnum):
    """C12.22 §5.3.4 request codes."""

    IDENTIFY = 0x20
    TERMINATE = 0x21
    DISCONNECT = 0x22
    FULL_READ = 0x30
    PARTIAL_READ_OFFSET = 0x3F
    FULL_WRITE = 0x40
    PARTIAL_WRITE_OFFSET = 0x4F
    LOGON = 0x50
    SECURITY = 0x51
    LOGOFF = 0x52
    WAIT = 0x70
    REGISTRATION = 0x27  # §5.3.2.4.10, codec in registration.py


class ResponseCode(IntEnum):
    """C12.22 §5.3.4.1 response codes (0x00..0x1F)."""

    OK = 0x00  # acknowledge
    ERR = 0x01  # error, no reason given
    SNS = 0x02  # service not supported
    ISC = 0x03  # insufficient security clearance
    ONP = 0x04  # operation not possible
    IAR = 0x05  # inappropriate action requested
    BSY = 0x06  # device busy
    DNR = 0x07  # data not ready
    DLK = 0x08  # data locked
    RNO = 0x09  # renegotiate request
    ISSS = 0x0A  # invalid service sequence state
    SME = 0x0B  # security mechanism error
    UAT = 0x0C  # unknown or invalid called ApTitle
    NETT = 0x0D  # network time-out
    NETR = 0x0E  # node not reachable
    RQTL = 0x0F  # request too large
    RSTL = 0x10  # response too large
    SGNP = 0x11  # segmentation not possible
    SGERR = 0x12  # segmentation error


_OK_CODE = int(ResponseCode.OK)  # asked of every response: a plain int, not an enum look-up
_FULL_READ = int(ServiceCode.FULL_READ)  # plain ints: an IntEnum member costs a look-up
_FULL_WRITE = int(ServiceCode.FULL_WRITE)
_PARTIAL_WRITE = int(ServiceCode.PARTIAL_WRITE_OFFSET)
# big-endian heads packed in one call (C12.22 §5.3.4: multi-byte numbers are big-endian)
_WORD = struct.Struct(">H")  # <count>
_CODE_WORD = struct.Struct(">BH")  # <code> <tableid>
_CODE_WORD_WORD = struct.Struct(">BHH")  # <code> <tableid> <count>


def checksum(data: bytes) -> int:
    """C12.18 §5.3: two's complement of the byte sum (so data + cksum sums to 0 mod 256)."""
    return (-sum(data)) & 0xFF


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise C1222DecodeError(len(data), f"{what}: need {n} bytes, got {len(data)}")


def _exact(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise C1222DecodeError(min(len(data), n), f"{what}: expected {n} bytes, got {len(data)}")


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Identify:
    code: ClassVar[int] = ServiceCode.IDENTIFY

    def encode(self) -> bytes:
        return bytes([self.code])


@dataclass(frozen=True)
class Terminate:
    code: ClassVar[int] = ServiceCode.TERMINATE

    def encode(self) -> bytes:
        return bytes([self.code])


@dataclass(frozen=True)
class Logoff:
    code: ClassVar[int] = ServiceCode.LOGOFF

    def encode(self) -> bytes:
        return bytes([self.code])


@dataclass(frozen=True)
class Logon:
    """<logon> ::= 50 <user-id: word16> <user: 10 bytes> <req-session-idle-timeout: word16>."""

    user_id: int
    user: bytes
    session_idle_timeout: int = 60
    code: ClassVar[int] = ServiceCode.LOGON

    def __post_init__(self) -> None:
        if not 0 <= self.user_id <= 0xFFFF or len(self.user) != 10:
            raise ValueError("logon: user id is 16 bits, user name 10 bytes")
        if not 0 <= self.session_idle_timeout <= 0xFFFF:
            raise ValueError("logon: idle timeout is 16 bits")

    def encode(self) -> bytes:
        return (
            bytes([self.code])
            + self.user_id.to_bytes(2, "big")
            + self.user
            + self.session_idle_timeout.to_bytes(2, "big")
        )


@dataclass(frozen=True)
class Security:
    """<security> ::= 51 <password: 20 bytes> [<user-id: word16>]."""

    password: bytes
    user_id: int | None = None
    code: ClassVar[int] = ServiceCode.SECURITY

    def __post_init__(self) -> None:
        if len(self.password) != 20:
            raise ValueError("security: password is 20 bytes")
        if self.user_id is not None and not 0 <= self.user_id <= 0xFFFF:
            raise ValueError("security: user id is 16 bits")

    def encode(self) -> bytes:
        uid = b"" if self.user_id is None else self.user_id.to_bytes(2, "big")
        return bytes([self.code]) + self.password + uid


# Read, Write, Response and ReadResult are built for every message a meter serves or pushes:
# `frozen_init` fills their fields at half the cost of the generated `__init__` (same objects).
@frozen_init
@dataclass(frozen=True)
class Read:
    """Full read (30 <tableid>) or partial read (3F <tableid> <offset: 3> <count: 2>)."""

    table: int
    offset: int | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.table <= MAX_TABLE_ID:
            raise ValueError("table id is 16 bits")
        if (self.offset is None) != (self.count is None):
            raise ValueError("partial read needs both offset and count")
        if self.offset is not None and not 0 <= self.offset <= MAX_OFFSET:
            raise ValueError("offset is 24 bits")
        if self.count is not None and not 0 <= self.count <= MAX_COUNT:
            raise ValueError("count is 16 bits")

    @property
    def code(self) -> int:
        return ServiceCode.FULL_READ if self.offset is None else ServiceCode.PARTIAL_READ_OFFSET

    def encode(self) -> bytes:
        if self.offset is None or self.count is None:
            return _CODE_WORD.pack(_FULL_READ, self.table)  # the full read: every polled read
        head = bytes([self.code]) + self.table.to_bytes(2, "big")
        return head + self.offset.to_bytes(3, "big") + self.count.to_bytes(2, "big")


@frozen_init
@dataclass(frozen=True)
class Write:
    """Full write (40 <tableid> <count> <data> <cksum>) or partial write
    (4F <tableid> <offset: 3> <count> <data> <cksum>)."""

    table: int
    data: bytes
    offset: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.table <= MAX_TABLE_ID:
            raise ValueError("table id is 16 bits")
        if len(self.data) > MAX_COUNT:
            raise ValueError("write data is at most 65535 bytes")
        if self.offset is not None and not 0 <= self.offset <= MAX_OFFSET:
            raise ValueError("offset is 24 bits")

    @property
    def code(self) -> int:
        return ServiceCode.FULL_WRITE if self.offset is None else ServiceCode.PARTIAL_WRITE_OFFSET

    def encode(self) -> bytes:
        # the codes as plain ints (not the enum-valued `code`), the head packed at once: a full
        # write is every push
        data = self.data
        if self.offset is None:
            head = _CODE_WORD_WORD.pack(_FULL_WRITE, self.table, len(data))
        else:
            head = bytes((_PARTIAL_WRITE,)) + self.table.to_bytes(2, "big")
            head += self.offset.to_bytes(3, "big") + len(data).to_bytes(2, "big")
        return head + data + bytes((checksum(data),))


@dataclass(frozen=True)
class Wait:
    """<wait> ::= 70 <time: seconds, 1 byte> — keep the session alive."""

    seconds: int
    code: ClassVar[int] = ServiceCode.WAIT

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= 0xFF:
            raise ValueError("wait is 0..255 s")

    def encode(self) -> bytes:
        return bytes([self.code, self.seconds])


Request = Identify | Terminate | Logoff | Logon | Security | Read | Write | Wait | Registration


def decode_request(data: bytes) -> Request:
    """One <res-req> that is a request; C1222DecodeError otherwise."""
    if not data:
        raise C1222DecodeError(0, "empty service")
    code, body = data[0], data[1:]
    # the common requests first, by plain ints: a push, a polled read
    if code in (_FULL_WRITE, _PARTIAL_WRITE):
        return _decode_write(code, body)
    if code == _FULL_READ:
        _exact(body, 2, "full read")
        return Read(int.from_bytes(body, "big"))
    if code == ServiceCode.IDENTIFY:
        _exact(body, 0, "identify")
        return Identify()
    if code == ServiceCode.TERMINATE:
        _exact(body, 0, "terminate")
        return Terminate()
    if code == ServiceCode.LOGOFF:
        _exact(body, 0, "logoff")
        return Logoff()
    if code == ServiceCode.LOGON:
        _exact(body, 14, "logon")
        return Logon(int.from_bytes(body[:2], "big"), body[2:12], int.from_bytes(body[12:], "big"))
    if code == ServiceCode.SECURITY:
        if len(body) not in (20, 22):
            raise C1222DecodeError(1, "security: 20 or 22 bytes")
        uid = int.from_bytes(body[20:], "big") if len(body) == 22 else None
        return Security(body[:20], uid)
    if code == ServiceCode.PARTIAL_READ_OFFSET:
        _exact(body, 7, "partial read")
        return Read(
            int.from_bytes(body[:2], "big"),
            int.from_bytes(body[2:5], "big"),
            int.from_bytes(body[5:], "big"),
        )
    if code == ServiceCode.WAIT:
        _exact(body, 1, "wait")
        return Wait(body[0])
    if code == ServiceCode.REGISTRATION:
        return Registration.decode(data)
    raise C1222DecodeError(0, f"unsupported service code {code:#04x}")


def _decode_write(code: int, body: bytes) -> Write:
    partial = code == _PARTIAL_WRITE
    head = 7 if partial else 4
    _need(body, head + 1, "write")
    table = int.from_bytes(body[:2], "big")
    offset = int.from_bytes(body[2:5], "big") if partial else None
    count = int.from_bytes(body[head - 2 : head], "big")
    _exact(body, head + count + 1, "write")
    payload = body[head : head + count]
    if checksum(payload) != body[-1]:
        raise C1222DecodeError(1 + len(body) - 1, "write: table data checksum mismatch")
    # what __post_init__ checks holds by construction (a 16-bit table, a 24-bit offset, at
    # most 65535 bytes): fill the frozen fields directly, once per pushed message
    write = object.__new__(Write)
    write.__dict__.update(table=table, data=payload, offset=offset)
    return write


# ----------------------------------------------------------------------------- responses


@frozen_init
@dataclass(frozen=True)
class Response:
    """A response: a code and its code-specific data (`data` is b"" for plain OK / errors)."""

    code: ResponseCode
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes([self.code]) + self.data

    @property
    def ok(self) -> bool:
        return self.code == _OK_CODE


@dataclass(frozen=True)
class IdentifyResult:
    """<ok> <std: 03 = C12.22> <ver> <rev> <feature>* <end-of-list: 00>."""

    std: int = 3
    ver: int = 1
    rev: int = 0
    features: bytes = b""

    def encode(self) -> bytes:
        return bytes([self.std, self.ver, self.rev]) + self.features + b"\x00"

    @classmethod
    def decode(cls, data: bytes) -> IdentifyResult:
        _need(data, 4, "identify response")
        if data[-1] != 0:
            raise C1222DecodeError(len(data) - 1, "identify response: missing end of list")
        return cls(data[0], data[1], data[2], data[3:-1])


@frozen_init
@dataclass(frozen=True)
class ReadResult:
    """<ok> <count: word16> <table data> <cksum>."""

    data: bytes

    def encode(self) -> bytes:
        data = self.data
        return _WORD.pack(len(data)) + data + bytes((checksum(data),))

    @classmethod
    def decode(cls, data: bytes) -> ReadResult:
        _need(data, 3, "read response")
        count = int.from_bytes(data[:2], "big")
        _exact(data, count + 3, "read response")
        payload = data[2 : 2 + count]
        if checksum(payload) != data[-1]:
            raise C1222DecodeError(len(data) - 1, "read response: checksum mismatch")
        return cls(payload)


@dataclass(frozen=True)
class LogonResult:
    """<ok> <resp-session-idle-timeout: word16>."""

    session_idle_timeout: int

    def encode(self) -> bytes:
        return self.session_idle_timeout.to_bytes(2, "big")

    @classmethod
    def decode(cls, data: bytes) -> LogonResult:
        _exact(data, 2, "logon response")
        return cls(int.from_bytes(data, "big"))


_RESPONSE_CODES = {int(c): c for c in ResponseCode}  # a dict look-up, not an enum call
_PLAIN = {c: Response(c) for c in ResponseCode}  # the response of each code without data


def plain_response(code: ResponseCode) -> Response:
    """`Response(code)`, shared (frozen): what the engines answer most requests with."""
    return _PLAIN[code]


def decode_response(data: bytes) -> Response:
    """A response <res-req>: a known response code and its data (parsed later by the caller
    with the result class of its request: `IdentifyResult`, `ReadResult`, `LogonResult`)."""
    if not data:
        raise C1222DecodeError(0, "empty response")
    code = _RESPONSE_CODES.get(data[0])
    if code is None:
        raise C1222DecodeError(0, f"unknown response code {data[0]:#04x}")
    if (
        code != ResponseCode.OK
        and len(data) > 1
        and code not in (ResponseCode.RNO, ResponseCode.BSY)
    ):
        raise C1222DecodeError(1, f"{code.name} carries no data")
    if len(data) == 1:
        return _PLAIN[code]  # immutable: one per code (an ack is a plain OK)
    return Response(code, data[1:])


def is_request(data: bytes) -> bool:
    return bool(data) and data[0] >= 0x20
