"""The handheld's secure channel to the office (the patent's VPN): framing and the hello.

Inside one TLS 1.3 connection with mutual certificate authentication (the project's PKI, the
handheld's client certificate carries `urn:amistack:purpose:handheld`), each direction carries
frames: a 2-octet length (network byte order) and that many octets. The handheld's first frame is
its hello, a JSON object naming its device id (the certificate's CN), the technician and the work
order; the gateway's first frame answers it with the addresses of the office services inside
the channel. Every later frame is one IPv6 packet (RFC 8200), at most `MAX_PACKET` octets: the
channel carries the isolated mesh's traffic to the key server and the head-end as IP, like a
VPN, and the gateway forwards their UDP to the real services.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_PACKET",
    "ChannelError",
    "FrameDecoder",
    "Hello",
    "Welcome",
    "frame",
]

MAX_PACKET = 1280 + 40  # RFC 8200 §5 minimum link MTU, plus a header of slack
_LEN = struct.Struct("!H")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")


class ChannelError(Exception):
    """A malformed frame or hello: `offset` into the stream or the object, and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"channel: {reason} (offset {offset})")
        self.offset = offset
        self.reason = reason


def frame(payload: bytes) -> bytes:
    if not 0 < len(payload) <= MAX_PACKET:
        raise ValueError(f"a frame carries 1..{MAX_PACKET} octets")
    return _LEN.pack(len(payload)) + payload


class FrameDecoder:
    """Feed stream octets; take whole frames. A length of 0 or above `MAX_PACKET` is an error
    (the stream cannot be resynchronised: the caller hangs up)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._consumed = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(self._buf)
            if not 0 < n <= MAX_PACKET:
                raise ChannelError(self._consumed, f"frame length {n}")
            if len(self._buf) < _LEN.size + n:
                break
            out.append(bytes(self._buf[_LEN.size : _LEN.size + n]))
            del self._buf[: _LEN.size + n]
            self._consumed += _LEN.size + n
        return out


def _field(obj: dict[str, object], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ChannelError(0, f"{name!r} must be 1-64 of [A-Za-z0-9_.@:-]")
    return value


def _object(data: bytes) -> dict[str, object]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChannelError(0, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ChannelError(0, "not a JSON object")
    return obj


@dataclass(frozen=True)
class Hello:
    """The handheld's first frame: who it is and whom it serves."""

    device: str
    technician: str
    work_order: str

    def encode(self) -> bytes:
        return json.dumps(
            {"device": self.device, "technician": self.technician, "work_order": self.work_order}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        obj = _object(data)
        return cls(_field(obj, "device"), _field(obj, "technician"), _field(obj, "work_order"))


@dataclass(frozen=True)
class Welcome:
    """The gateway's answer: the services' IPv6 addresses and ports inside the channel."""

    keyserver: tuple[str, int]
    headend: tuple[str, int] | None

    def encode(self) -> bytes:
        obj: dict[str, object] = {"keyserver": list(self.keyserver)}
        if self.headend is not None:
            obj["headend"] = list(self.headend)
        return json.dumps(obj).encode()

    @classmethod
    def decode(cls, data: bytes) -> Welcome:
        obj = _object(data)
        ks = _addr(obj.get("keyserver"), "keyserver")
        he = obj.get("headend")
        return cls(ks, None if he is None else _addr(he, "headend"))


def _addr(value: object, name: str) -> tuple[str, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or not 0 < value[1] <= 0xFFFF
    ):
        raise ChannelError(0, f"{name!r} must be [IPv6 address, port]")
    try:
        return str(ipaddress.IPv6Address(value[0])), value[1]
    except ValueError:
        raise ChannelError(0, f"{name!r}: {value[0]!r} is not an IPv6 address") from None
