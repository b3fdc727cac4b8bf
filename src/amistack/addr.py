"""What every engine and driver share: addresses and the one sans-IO engine shape.

`Addr` is a transport address, (host, port) with the host in IPv4 or IPv6 text form. Beside it
the IEEE 802.15.4 link-layer addresses: `Eui64` (the extended address), `ShortAddr` (16-bit,
assigned by the coordinator) and `PanId`. They hold the value as written (most significant octet
first); frames carry them least significant octet first (802.15.4-2006 §7.2, "Frame formats"),
which `mesh.frame` handles. `Engine` is
the shape of every protocol engine (ARCHITECTURE.md, "One rule for every protocol engine"): the
drivers in `runtime/` (asyncio, real sockets) and `sim/` (virtual clock) drive anything of this
shape; a package that needs more of an engine extends the Protocol instead of copying it.
`text_or_hex` shows a device id (an EAP identity, octets) in logs and audit entries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "BROADCAST_PAN",
    "BROADCAST_SHORT",
    "EUI64_LENGTH",
    "Addr",
    "Engine",
    "Eui64",
    "LinkAddr",
    "MulticastEngine",
    "PanId",
    "ShortAddr",
    "text_or_hex",
]

Addr = tuple[str, int]

EUI64_LENGTH = 8
_UL_BIT = 0x02  # IEEE 802: universal/local bit of the first octet (1: locally administered)
_IG_BIT = 0x01  # IEEE 802: individual/group bit (1: group)


@dataclass(frozen=True, slots=True, order=True)
class Eui64:
    """An IEEE EUI-64, the 802.15.4 extended address."""

    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != EUI64_LENGTH:
            raise ValueError(f"an EUI-64 is 8 octets, not {len(self.value)}")

    @classmethod
    def parse(cls, text: str) -> Eui64:
        """From "02:00:00:00:00:00:00:aa" (colons, dashes or none)."""
        digits = text.replace(":", "").replace("-", "")
        try:
            return cls(bytes.fromhex(digits))
        except ValueError:
            raise ValueError(f"not an EUI-64: {text!r}") from None

    @classmethod
    def random(cls, rng: Callable[[int], bytes]) -> Eui64:
        """A locally administered unicast EUI-64 from `rng` (U/L bit set, I/G clear)."""
        raw = bytearray(rng(EUI64_LENGTH))
        raw[0] = (raw[0] | _UL_BIT) & ~_IG_BIT & 0xFF
        return cls(bytes(raw))

    def interface_id(self) -> bytes:
        """The IPv6 interface identifier: the EUI-64 with its U/L bit inverted (RFC 4291
        Appendix A; RFC 4944 §6)."""
        return bytes((self.value[0] ^ _UL_BIT,)) + self.value[1:]

    @classmethod
    def from_interface_id(cls, iid: bytes) -> Eui64:
        return cls(bytes((iid[0] ^ _UL_BIT,)) + iid[1:])

    def link_local(self) -> ipaddress.IPv6Address:
        """fe80::/64 with this address's interface identifier (RFC 4944 §7)."""
        return ipaddress.IPv6Address(bytes.fromhex("fe80000000000000") + self.interface_id())

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.value)


@dataclass(frozen=True, slots=True, order=True)
class ShortAddr:
    """A 16-bit 802.15.4 short address. 0xFFFF is broadcast; 0xFFFE means the device has none
    and uses its extended address (802.15.4-2006 §7.1, macShortAddress)."""

    value: int

    BROADCAST_VALUE = 0xFFFF
    NONE_VALUE = 0xFFFE

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 0xFFFF:
            raise ValueError(f"a short address is 16 bits, not {self.value}")

    @property
    def is_broadcast(self) -> bool:
        return self.value == self.BROADCAST_VALUE

    def interface_id(self) -> bytes:
        """The IPv6 interface identifier 0000:00ff:fe00:XXXX that 6LoWPAN header compression
        derives from a short address (RFC 6282 §3.2.2)."""
        return b"\x00\x00\x00\xff\xfe\x00" + self.value.to_bytes(2, "big")

    def __str__(self) -> str:
        return f"0x{self.value:04x}"


@dataclass(frozen=True, slots=True, order=True)
class PanId:
    """A 16-bit PAN identifier; 0xFFFF is the broadcast PAN id (802.15.4-2006 §7.1, macPANId)."""

    value: int

    BROADCAST_VALUE = 0xFFFF

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 0xFFFF:
            raise ValueError(f"a PAN id is 16 bits, not {self.value}")

    def __str__(self) -> str:
        return f"0x{self.value:04x}"


LinkAddr = Eui64 | ShortAddr
"""An 802.15.4 device address: extended or short."""

BROADCAST_SHORT = ShortAddr(ShortAddr.BROADCAST_VALUE)
BROADCAST_PAN = PanId(PanId.BROADCAST_VALUE)


class Engine(Protocol):
    """A sans-IO protocol engine: input, output, one timer, events. Never does I/O itself."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> object | None: ...


class TimerlessEngine:
    """The timer and event half of `Engine` for engines that have neither (a relay or a port
    that only moves datagrams): subclasses write `receive_datagram` and `datagrams_to_send`."""

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None

    def next_event(self) -> object | None:
        return None


class WrappingEngine:
    """The timer and event half of `Engine` for an engine that wraps another (`self.engine`) and
    changes only how its datagrams come and go: subclasses write `receive_datagram` and
    `datagrams_to_send`."""

    engine: Engine

    def get_timer(self) -> float | None:
        return self.engine.get_timer()

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)

    def next_event(self) -> object | None:
        return self.engine.next_event()


class MulticastEngine(Engine, Protocol):
    """An engine that can be a multicast group member: told which datagrams came to a group
    (ECHONET Lite guideline §2.4 answers multicast requests differently)."""

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, multicast: bool = False
    ) -> None: ...


def text_or_hex(data: bytes, *, force_hex: bool = False) -> str:
    """Printable UTF-8 as text (a device id), anything else as hex octets."""
    if not force_hex:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if text.isprintable():
                return text
    return data.hex()
