"""A Rohm SKSTACK-IP Wi-SUN module (BP35A1 / BP35C2) as a sans-IO engine: serial bytes in, serial
bytes out, and a radio behind it.

HEMS software that talks to a B-route module over a serial line (SKSETRBID, SKSETPWD, SKSCAN,
SKLL64, SKJOIN, SKSENDTO, ...) can run against this engine unchanged; the runtime
(`runtime.skstack_pty`) puts it behind a pseudo-terminal. The engine does the command layer only:

- `receive_serial(data, now)` takes whatever the host wrote; `serial_to_send()` returns what the
  module answers (echo-back, `OK` / `FAIL ERxx`, `EVENT nn`, `EPANDESC`, `ERXUDP`, ...);
- the radio side is a `Radio` (what a scan hears, PANA as the PaC, UDP through the secured
  link); `BrouteRadio` puts the B-route HEMS engine (`broute.hems.BrouteHems`) there;
- the engine shape of every amistack engine (`receive_datagram`, `datagrams_to_send`,
  `get_timer`, `handle_timer`, `next_event`) passes the radio's datagrams through, so one
  `EngineDriver` runs module and radio together.

Formats follow the public descriptions of the BP35A1 command reference (SE edition 1.3.0) and of
the BP35C0/C2 dual-stack firmware, as B-route libraries (momonga, Smdn.Net.SkStackIP) parse them:
lines end in CRLF, except the product-setting commands ROPT/WOPT whose command and status line end
in CR alone; numbers are upper-case hex; IPv6 addresses are written in full (8 groups of 4 digits).
The two dialects differ where the BP35C2 firmware serves two radios (B route and HAN) and so names
a *side* (0 = B route, 1 = HAN): `SKSCAN` and `SKSENDTO` take it as an argument, `EVENT` and
`ERXUDP` and `EPANDESC` report it, `SKINFO` reports it in place of the BP35A1's short address
(0xFFFE there), and register SA2 puts the receive LQI into `ERXUDP` (BP35C2 only; the BP35A1
accepts and stores SA2 without effect). docs/skstack-emulator.md lists every difference.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Protocol

from amistack.addr import Addr
from amistack.broute.credentials import BrouteCredentials, CredentialError
from amistack.broute.events import (
    KeyRotated,
    LinkDown,
    LinkUp,
    Received,
    ReconnectFailed,
    RescanRequested,
)
from amistack.broute.hems import BrouteHems, BrouteHemsConfig, NotConnected
from amistack.broute.link import LinkDecodeError, PanaFrame, decode_frame
from amistack.crypto import RandomSource
from amistack.pana.constants import Flag, MessageType
from amistack.pana.errors import PanaDecodeError
from amistack.pana.message import PanaMessage
from amistack.pana.pac import PacState, PanaClient

log = logging.getLogger(__name__)

__all__ = [
    "Beacon",
    "BrouteRadio",
    "CommandHandled",
    "Dialect",
    "ErrorCode",
    "EventNum",
    "ModuleConfig",
    "PanaClosedByPeer",
    "PanaFailed",
    "PanaReauthStarted",
    "PanaSucceeded",
    "PanaTerminateTimeout",
    "PanaTerminated",
    "Radio",
    "RadioEvent",
    "SkstackModule",
    "UdpReceived",
    "format_ipv6",
    "link_local",
]

CRLF = b"\r\n"
CR = b"\r"
EL_PORT = 3610  # ECHONET Lite
PANA_PORT = 716  # RFC 5191 §1

# ARIB STD-T108 §3.4 (920 MHz band): a station may transmit for at most 360 s in any hour.
TX_WINDOW_S = 3600.0
TX_BUDGET_S = 360.0
RADIO_BPS = 100_000  # IEEE 802.15.4g 2GFSK as used on the B route (Wi-SUN profile)
FRAME_OVERHEAD = 60  # PHY/MAC/6LoWPAN/UDP header bytes per UDP datagram sent, for airtime
MAX_LINE = 1600  # longest serial line accepted (a SKSENDTO header plus slack); longer is ER09
MAX_SENDTO = 0x04D0  # BP35A1 reference §3.7: DATALEN 0x0001..0x04D0
FIRST_CHANNEL = 0x21  # channel 33 (922.5 MHz); a scan mask's bit 0
N_CHANNELS = 28  # channels 33..60
CHANNEL_PAGE = 9  # IEEE 802.15.4g 920 MHz band
SIDE_BROUTE = 0
ALL_NODES = ipaddress.IPv6Address("ff02::1")  # where ECHONET Lite multicasts go on the B route


class Dialect(Enum):
    """Which module the engine answers as."""

    BP35A1 = "bp35a1"
    BP35C2 = "bp35c2"


class ErrorCode(IntEnum):
    """`FAIL ERxx` codes (BP35A1 reference §7; ER01-03, ER07, ER08 are reserved)."""

    UNSUPPORTED = 4  # ER04: the command is not supported
    ARGUMENT_COUNT = 5  # ER05: wrong number of arguments
    ARGUMENT = 6  # ER06: an argument has the wrong form or is out of range
    UART = 9  # ER09: UART input error (line too long, ...)
    FAILED = 10  # ER10: accepted but could not be executed


class EventNum(IntEnum):
    """`EVENT nn` numbers (hex on the wire), BP35A1 reference §4.8."""

    NS_RECEIVED = 0x01
    NA_RECEIVED = 0x02
    ECHO_REQUEST = 0x05
    ED_SCAN_DONE = 0x1F
    BEACON = 0x20
    UDP_SENT = 0x21
    SCAN_DONE = 0x22
    PANA_FAILED = 0x24
    PANA_SUCCEEDED = 0x25
    PANA_TERM_RECEIVED = 0x26
    PANA_TERMINATED = 0x27
    PANA_TERM_TIMEOUT = 0x28
    SESSION_EXPIRED = 0x29
    TX_RESTRICTED = 0x32
    TX_RELEASED = 0x33


# -- the radio side --------------------------------------------------------------------------


@dataclass(frozen=True)
class Beacon:
    """A PAN a scan hears: the coordinator (the meter) and what its beacon says."""

    channel: int  # 0x21..0x3C
    pan_id: int
    mac: bytes  # EUI-64 of the coordinator
    pair_id: str  # 8 characters: the last 8 of the B-route ID the meter was issued
    lqi: int = 0xC0
    channel_page: int = CHANNEL_PAGE


@dataclass(frozen=True)
class PanaSucceeded:
    """PANA authentication (initial or re-authentication) succeeded: EVENT 25."""


@dataclass(frozen=True)
class PanaFailed:
    """PANA authentication failed or went unanswered: EVENT 24."""

    reason: str = ""


@dataclass(frozen=True)
class PanaTerminated:
    """The session this side ended (SKTERM) was terminated: EVENT 27."""


@dataclass(frozen=True)
class PanaTerminateTimeout:
    """SKTERM's termination request went unanswered: EVENT 28."""


@dataclass(frozen=True)
class PanaClosedByPeer:
    """The meter (PAA) terminated the session: EVENT 26."""


@dataclass(frozen=True)
class PanaReauthStarted:
    """The session lifetime ran out and re-authentication started: EVENT 29."""


@dataclass(frozen=True)
class UdpReceived:
    """A UDP datagram from the meter, decrypted from the secured link: ERXUDP."""

    payload: bytes
    src_port: int
    dst_port: int
    secured: bool = True
    lqi: int | None = None
    multicast: bool = False  # sent to the all-nodes group (an INF): ERXUDP shows FF02::1


RadioEvent = (
    PanaSucceeded
    | PanaFailed
    | PanaTerminated
    | PanaTerminateTimeout
    | PanaClosedByPeer
    | PanaReauthStarted
    | UdpReceived
)


class Radio(Protocol):
    """What the module needs from its radio: the B-route meter it can hear, PANA as PaC with the
    credentials SKSETRBID/SKSETPWD gave, and UDP to the meter through the secured link. It is a
    sans-IO engine itself (its datagrams travel however the runtime carries them)."""

    def beacons(self) -> Sequence[Beacon]: ...

    def join(self, rbid: str, password: str, now: float) -> None: ...

    def reauthenticate(self, now: float) -> bool: ...

    def send(self, payload: bytes, src_port: int, dst_port: int, now: float) -> bool: ...

    def terminate(self, now: float) -> bool: ...

    def reset(self, now: float) -> None: ...

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> RadioEvent | None: ...


# -- module events (for logs) ------------------------------------------------------------------


@dataclass(frozen=True)
class CommandHandled:
    """The module executed (or refused) one command line; `result` is OK, FAIL ERxx or a tag."""

    command: str
    result: str


# -- configuration -----------------------------------------------------------------------------


def _default_version(dialect: Dialect) -> str:
    return "1.2.10" if dialect is Dialect.BP35A1 else "1.5.2"


@dataclass(frozen=True)
class ModuleConfig:
    """How the emulated module presents itself and how fast its radio seems to be.

    `erxudp_hex` is the factory WOPT setting (BP35A1 ships binary); WOPT changes it for the life
    of the engine, across SKRESET, as the real module keeps it in flash. `ropt_supported` (None:
    by dialect) says whether the product-setting commands ROPT/WOPT exist: the BP35A1 has them;
    the BP35C2 is modelled without them (FAIL ER04, ERXUDP data always hex ASCII), as B-route
    libraries expect of it; True gives a BP35C2 firmware that has them. `time_scale` shortens
    the radio's real timings (scan windows, unanswered PANA) so that software written for the
    real module does not wait minutes.

    `rx_latency` (s, not scaled) is how long after its datagram reached the radio an ERXUDP is
    written to the serial line: a real module's answer from the meter takes tens of
    milliseconds over the air (a 100 kbit/s radio, CSMA, the meter's own processing), so the
    `EVENT 21` and `OK` of a SKSENDTO always reach the host well before the answer's ERXUDP.
    Some host software relies on that (it drops an ERXUDP read in the same chunk as the EVENT
    lines before it); 0 writes it at once. Radio events behind a held ERXUDP wait for it, so
    the order on the serial line is the radio's."""

    dialect: Dialect = Dialect.BP35C2
    mac: bytes = bytes.fromhex("001D129012345678")
    version: str | None = None
    app_version: str = "rev26e"
    erxudp_hex: bool = False
    ropt_supported: bool | None = None
    time_scale: float = 0.05
    join_timeout: float = 40.0  # s before scaling: PANA retransmissions to a silent peer
    rx_latency: float = 0.03  # s from a datagram's arrival to its ERXUDP on the serial line
    tx_budget: float = TX_BUDGET_S
    tx_window: float = TX_WINDOW_S

    def __post_init__(self) -> None:
        if len(self.mac) != 8:
            raise ValueError("the module's MAC is an EUI-64 (8 bytes)")
        if not self.time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if not 0 <= self.rx_latency <= 10:
            raise ValueError("rx_latency must be 0..10 s")


@dataclass
class _Register:
    kind: str  # "uint", "bin", "chars"
    width: int  # hex digits (uint) or characters (chars)
    default: int | str
    writable: bool = True
    lo: int = 0
    hi: int = 0


# BP35A1 reference §3.1 (SKSREG) register set; SA2 is the BP35C2 "LQI in ERXUDP" switch.
_REGISTERS: dict[str, _Register] = {
    "S02": _Register("uint", 2, FIRST_CHANNEL, lo=FIRST_CHANNEL, hi=FIRST_CHANNEL + N_CHANNELS - 1),
    "S03": _Register("uint", 4, 0xFFFF, lo=0, hi=0xFFFF),
    "S07": _Register("uint", 8, 0, writable=False),
    "S0A": _Register("chars", 8, "00000000"),
    "S15": _Register("bin", 1, 0),
    "S16": _Register("uint", 8, 0x384, lo=0x3C, hi=0xFFFFFFFF),
    "S17": _Register("bin", 1, 1),
    "SA0": _Register("bin", 1, 0),
    "SA1": _Register("bin", 1, 1),
    "SA2": _Register("bin", 1, 0),
    "SFB": _Register("bin", 1, 0, writable=False),
    "SFD": _Register("uint", 16, 0, writable=False),
    "SFE": _Register("bin", 1, 1),
    "SFF": _Register("bin", 1, 0),
}

# SKUDPPORT handles 1..6 and their ports after reset (BP35A1 reference §3.13: 3610 and 716 open).
_DEFAULT_PORTS = {1: EL_PORT, 2: PANA_PORT, 3: 0, 4: 0, 5: 0, 6: 0}


class _CommandError(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(f"ER{code:02d}")
        self.code = code


def _hex(token: str, max_digits: int) -> int:
    if not 1 <= len(token) <= max_digits or any(c not in "0123456789abcdefABCDEF" for c in token):
        raise _CommandError(ErrorCode.ARGUMENT)
    return int(token, 16)


def _ipv6(token: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(token)
    except ValueError:
        raise _CommandError(ErrorCode.ARGUMENT) from None


def format_ipv6(addr: ipaddress.IPv6Address) -> str:
    """The module's way of writing an IPv6 address: 8 groups of 4 upper-case hex digits."""
    return addr.exploded.upper()


def link_local(mac: bytes) -> ipaddress.IPv6Address:
    """fe80::/64 with the interface identifier from an EUI-64, universal/local bit inverted
    (RFC 4291 §2.5.1 and Appendix A): what SKLL64 computes."""
    iid = bytes([mac[0] ^ 0x02]) + mac[1:]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)


@dataclass
class _Scan:
    mode: int
    channels: list[int]
    per_channel: float
    started: float
    index: int = 0


@dataclass
class _Tx:
    when: float
    airtime: float


@dataclass
class _State:
    registers: dict[str, int | str] = field(default_factory=dict)
    rbid: str = ""
    password: str = ""
    ports: dict[int, int] = field(default_factory=lambda: dict(_DEFAULT_PORTS))
    joining: bool = False
    join_deadline: float | None = None
    session: bool = False
    terminating: bool = False
    peer: ipaddress.IPv6Address | None = None
    scan: _Scan | None = None


class SkstackModule:
    """The module: serial command engine plus the radio it drives (see the module docstring)."""

    def __init__(
        self,
        config: ModuleConfig,
        radio: Radio,
    ) -> None:
        self.config = config
        self._radio = radio
        self._a1 = config.dialect is Dialect.BP35A1
        self._ropt = self._a1 if config.ropt_supported is None else config.ropt_supported
        self._in = bytearray()
        self._out = bytearray()
        self._held: deque[tuple[float, bytes]] = deque()  # radio output not yet due (rx_latency)
        self._skip_lf = False
        self._sendto: tuple[list[str], int, bytes] | None = None  # header tokens, length, raw
        self._opt = 0x01 if config.erxudp_hex else 0x00
        self._events: deque[CommandHandled] = deque()
        self._tx: deque[_Tx] = deque()
        self._tx_total_ms = 0.0
        self._restricted = False
        self._own = link_local(config.mac)
        self._state = _State()
        self.counters: Counter[str] = Counter()
        self._reset_registers()

    # -- serial side ---------------------------------------------------------------------------

    def receive_serial(self, data: bytes, now: float) -> None:
        """Bytes the host wrote to the serial line."""
        self._in += data
        self._process_input(now)

    def serial_to_send(self) -> bytes:
        """Bytes the module writes to the host (empty when nothing is pending)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- engine shape (the radio's datagrams pass through) --------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self._radio.receive_datagram(data, addr, now)
        self._pump_radio(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        self._pump_radio(now)
        out = self._radio.datagrams_to_send(now)
        st = self._state
        if out and (st.joining or st.terminating) and st.peer is not None:
            # The module reports each PANA message it sends during SKJOIN/SKTERM (EVENT 21).
            for _ in out:
                self._event(EventNum.UDP_SENT, st.peer, param=0)
        return out

    def get_timer(self) -> float | None:
        times = [t for t in (self._radio.get_timer(), self._own_timer()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        radio_at = self._radio.get_timer()
        if radio_at is not None and radio_at <= now:
            self._radio.handle_timer(now)
        st = self._state
        if st.scan is not None:
            self._advance_scan(now)
        if st.join_deadline is not None and st.join_deadline <= now:
            st.join_deadline = None
            if st.joining:
                st.joining = False
                self._event(EventNum.PANA_FAILED, st.peer or self._own)
        self._release_tx(now)
        self._pump_radio(now)
        self._release_held(now)

    def next_event(self) -> CommandHandled | None:
        return self._events.popleft() if self._events else None

    # -- registers -----------------------------------------------------------------------------

    def register(self, name: str) -> int | str:
        """A register's value by SKSREG name ("S2", "S02", "SFE")."""
        key = self._register_key(name)
        if key is None:
            raise KeyError(name)
        return self._state.registers[key]

    @property
    def session_established(self) -> bool:
        return self._state.session

    @property
    def erxudp_hex(self) -> bool:
        return bool(self._opt & 0x01) or not self._ropt

    def _reset_registers(self) -> None:
        self._state.registers = {k: r.default for k, r in _REGISTERS.items()}

    @staticmethod
    def _register_key(name: str) -> str | None:
        name = name.upper()
        if len(name) < 2 or name[0] != "S":
            return None
        try:
            n = int(name[1:], 16)
        except ValueError:
            return None
        key = f"S{n:02X}"
        return key if key in _REGISTERS else None

    # -- input framing -------------------------------------------------------------------------

    def _process_input(self, now: float) -> None:
        buf = self._in
        while buf:
            if self._sendto is not None:
                tokens, length, raw = self._sendto
                if len(buf) < length:
                    return
                data = bytes(buf[:length])
                del buf[:length]
                self._sendto = None
                self._skip_lf = False
                self._echo(CRLF)  # the header was echoed; the binary data is not
                self._run(tokens, raw, now, data)
                continue
            if self._skip_lf and buf[:1] == b"\n":
                del buf[:1]
                self._skip_lf = False
                continue
            self._skip_lf = False
            if self._sendto_header(buf):
                continue
            end = -1
            for i, b in enumerate(buf):
                if b in (0x0D, 0x0A):
                    end = i
                    break
            if end < 0:
                if len(buf) > MAX_LINE:
                    self.counters["uart_overflow"] += 1
                    buf.clear()
                    self._fail(ErrorCode.UART, "?")
                return
            line = bytes(buf[:end])
            terminator = buf[end : end + 1]
            del buf[: end + 1]
            self._skip_lf = terminator == CR
            self._line(line, bytes(terminator), now)

    def _sendto_header(self, buf: bytearray) -> bool:
        """SKSENDTO ends its header with a space, not CRLF, and binary data follows
        (BP35A1 reference §3.7): cut the header off once all its fields are in. False when `buf`
        holds no complete SKSENDTO header (it is then framed as an ordinary line)."""
        if not buf.startswith(b"SKSENDTO "):
            return False
        nfields = 6 if self._a1 else 7  # command, handle, ip, port, sec, [side,] datalen
        spaces = 0
        for i, b in enumerate(buf):
            if b in (0x0D, 0x0A):
                return False  # a short line: framed (and refused) as an ordinary command
            if b != 0x20:
                continue
            spaces += 1
            if spaces < nfields:
                continue
            raw = bytes(buf[:i])
            del buf[: i + 1]
            self._echo(raw + b" ")
            tokens = raw.decode("ascii", "replace").split(" ")
            try:
                length = _hex(tokens[-1], 4)
            except _CommandError:
                length = 0
            if not 1 <= length <= MAX_SENDTO:
                self._echo(CRLF)
                self._fail(ErrorCode.ARGUMENT, "SKSENDTO")
            else:
                self._sendto = (tokens, length, raw)
            return True
        return False

    def _echo(self, raw: bytes) -> None:
        if self._state.registers["SFE"] == 1:
            self._out += raw

    def _line(self, raw: bytes, terminator: bytes, now: float) -> None:
        # Fields are separated by spaces (only: str.split() would also split on \x1c-\x1f).
        tokens = [t for t in raw.decode("ascii", "replace").split(" ") if t]
        if not tokens:
            return
        command = tokens[0]
        if command in ("ROPT", "WOPT"):
            # Product-setting commands: CR-terminated echo and status line.
            self._echo(raw + CR)
        else:
            self._echo(raw + CRLF)
        self._run(tokens, raw, now, None)

    # -- commands ------------------------------------------------------------------------------

    def _run(self, tokens: list[str], raw: bytes, now: float, data: bytes | None) -> None:
        command = tokens[0]  # the module knows its commands in upper case only
        handler = _COMMANDS.get(command)
        shown = command if command in ("SKSETPWD", "SKSETRBID") else " ".join(tokens)
        if handler is None:
            self._fail(ErrorCode.UNSUPPORTED, shown)
            return
        try:
            result = handler(self, tokens[1:], now, data)
        except _CommandError as exc:
            self._fail(exc.code, shown)
            return
        self._events.append(CommandHandled(shown, result))

    def _fail(self, code: ErrorCode, shown: str) -> None:
        self.counters[f"ER{code:02d}"] += 1
        self._write(f"FAIL ER{code:02d}")
        self._events.append(CommandHandled(shown, f"FAIL ER{code:02d}"))

    def _write(self, line: str, end: bytes = CRLF) -> None:
        self._out += line.encode("ascii") + end

    def _ok(self) -> str:
        self._write("OK")
        return "OK"

    @staticmethod
    def _nargs(args: list[str], *counts: int) -> None:
        if len(args) not in counts:
            raise _CommandError(ErrorCode.ARGUMENT_COUNT)

    def _cmd_skver(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        self._write(f"EVER {self.config.version or _default_version(self.config.dialect)}")
        return self._ok()

    def _cmd_skappver(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        self._write(f"EAPPVER {self.config.app_version}")
        return self._ok()

    def _cmd_skinfo(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        regs = self._state.registers
        # BP35A1: the 16-bit short address, 0xFFFE (none); BP35C2: the side of the B route.
        last = "FFFE" if self._a1 else f"{SIDE_BROUTE:X}"
        self._write(
            f"EINFO {format_ipv6(self._own)} {self.config.mac.hex().upper()} "
            f"{regs['S02']:02X} {regs['S03']:04X} {last}"
        )
        return self._ok()

    def _cmd_skreset(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        self._radio.reset(now)
        self._held.clear()  # what the radio had not delivered yet is lost with it
        self._state = _State()
        self._reset_registers()
        self._sendto = None
        return self._ok()

    def _cmd_sksreg(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 1, 2)
        key = self._register_key(args[0])
        if key is None:
            raise _CommandError(ErrorCode.ARGUMENT)
        reg = _REGISTERS[key]
        regs = self._state.registers
        if len(args) == 1:
            value = regs[key]
            if key == "SFB":
                value = 1 if self._restricted else 0
            elif key == "SFD":
                value = int(self._tx_total_ms)
            if reg.kind == "chars" or reg.kind == "bin":
                self._write(f"ESREG {value}")
            else:
                self._write(f"ESREG {int(value):0{reg.width}X}")
            return self._ok()
        if not reg.writable:
            raise _CommandError(ErrorCode.ARGUMENT)
        token = args[1]
        if reg.kind == "chars":
            if len(token) != reg.width:
                raise _CommandError(ErrorCode.ARGUMENT)
            regs[key] = token
        elif reg.kind == "bin":
            if token not in ("0", "1"):
                raise _CommandError(ErrorCode.ARGUMENT)
            regs[key] = int(token)
        else:
            value = _hex(token, reg.width)
            if not reg.lo <= value <= reg.hi:
                raise _CommandError(ErrorCode.ARGUMENT)
            regs[key] = value
        return self._ok()

    def _cmd_sksetrbid(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 1)
        rbid = args[0]
        if len(rbid) != 32:
            raise _CommandError(ErrorCode.ARGUMENT)
        self._state.rbid = rbid
        # The pairing ID a B-route active scan carries is the ID's last 8 characters (S0A).
        self._state.registers["S0A"] = rbid[-8:].upper()
        return self._ok()

    def _cmd_sksetpwd(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 2)
        length = _hex(args[0], 2)
        if not 1 <= length <= 32 or len(args[1]) != length:
            raise _CommandError(ErrorCode.ARGUMENT)
        self._state.password = args[1]
        return self._ok()

    def _cmd_skscan(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 3 if self._a1 else 4)
        mode = _hex(args[0], 1)
        mask = _hex(args[1], 8)
        duration = _hex(args[2], 2)
        if mode not in (0, 2, 3) or duration > 14:
            raise _CommandError(ErrorCode.ARGUMENT)
        if not self._a1 and _hex(args[3], 1) != SIDE_BROUTE:
            raise _CommandError(ErrorCode.ARGUMENT)  # the emulated HAN side has no PANs
        st = self._state
        if st.scan is not None or st.joining:
            raise _CommandError(ErrorCode.FAILED)
        channels = [FIRST_CHANNEL + i for i in range(N_CHANNELS) if mask >> i & 1]
        # 802.15.4 scan time per channel: aBaseSuperframeDuration * (2^n + 1) symbols, about
        # 9.6 ms * (2^n + 1) at the B route's 50 ksymbol/s.
        per_channel = 0.0096 * (2**duration + 1) * self.config.time_scale
        st.scan = _Scan(mode, channels, per_channel, now)
        self._ok()
        if not channels:
            self._finish_scan()
        return "OK"

    def _advance_scan(self, now: float) -> None:
        scan = self._state.scan
        if scan is None:
            return
        while scan.index < len(scan.channels):
            if scan.started + scan.per_channel * (scan.index + 1) > now:
                return
            channel = scan.channels[scan.index]
            scan.index += 1
            if scan.mode == 0:
                continue
            for beacon in self._radio.beacons():
                if beacon.channel != channel:
                    continue
                # Mode 2 carries the pairing ID (S0A) and a B-route meter answers only its own.
                paired = beacon.pair_id.upper() == str(self._state.registers["S0A"]).upper()
                if scan.mode == 2 and not paired:
                    continue
                self._beacon(beacon, with_pair_id=scan.mode == 2)
        self._finish_scan()

    def _finish_scan(self) -> None:
        scan = self._state.scan
        self._state.scan = None
        if scan is not None and scan.mode == 0:
            self._event(EventNum.ED_SCAN_DONE, self._own)
            heard = {b.channel: b.lqi for b in self._radio.beacons()}
            pairs = " ".join(f"{ch:02X} {heard.get(ch, 0x1E):02X}" for ch in scan.channels)
            self._write("EEDSCAN")
            self._write(pairs)
            return
        self._event(EventNum.SCAN_DONE, self._own)

    def _beacon(self, beacon: Beacon, *, with_pair_id: bool) -> None:
        self._event(EventNum.BEACON, link_local(beacon.mac))
        self._write("EPANDESC")
        self._write(f"  Channel:{beacon.channel:02X}")
        self._write(f"  Channel Page:{beacon.channel_page:02X}")
        self._write(f"  Pan ID:{beacon.pan_id:04X}")
        self._write(f"  Addr:{beacon.mac.hex().upper()}")
        self._write(f"  LQI:{beacon.lqi:02X}")
        if not self._a1:
            self._write(f"  Side:{SIDE_BROUTE:X}")
        if with_pair_id:
            self._write(f"  PairID:{beacon.pair_id.upper()}")

    def _cmd_skll64(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 1)
        if len(args[0]) != 16:
            raise _CommandError(ErrorCode.ARGUMENT)
        mac = _hex(args[0], 16).to_bytes(8, "big")
        # SKLL64 answers with the address line alone, no status line (reference §3.27).
        self._write(format_ipv6(link_local(mac)))
        return "LL64"

    def _meter_beacon(self) -> Beacon | None:
        regs = self._state.registers
        for beacon in self._radio.beacons():
            if beacon.channel == regs["S02"] and beacon.pan_id == regs["S03"]:
                return beacon
        return None

    def _cmd_skjoin(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 1)
        peer = _ipv6(args[0])
        st = self._state
        if st.joining or st.scan is not None or st.terminating:
            raise _CommandError(ErrorCode.FAILED)
        self._ok()
        st.peer = peer
        st.joining = True
        st.session = False
        beacon = self._meter_beacon()
        reachable = beacon is not None and link_local(beacon.mac) == peer
        if not reachable or not st.rbid or not st.password:
            # Nobody answers PANA on this channel/PAN/address (or the module has no credentials
            # to offer): the PaC retransmits until it gives up, then EVENT 24.
            st.join_deadline = now + self.config.join_timeout * self.config.time_scale
            return "OK"
        self._radio.join(st.rbid, st.password, now)
        self._pump_radio(now)
        return "OK"

    def _cmd_skrejoin(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        st = self._state
        if not st.session or not self._radio.reauthenticate(now):
            raise _CommandError(ErrorCode.FAILED)
        st.joining = True
        return self._ok()

    def _cmd_sksendto(self, args: list[str], now: float, data: bytes | None) -> str:
        if data is None:  # a SKSENDTO line that ended before its data
            raise _CommandError(ErrorCode.ARGUMENT_COUNT)
        self._nargs(args, 5 if self._a1 else 6)
        handle = _hex(args[0], 1)
        dest = _ipv6(args[1])
        port = _hex(args[2], 4)
        sec = _hex(args[3], 1)
        if handle not in self._state.ports or sec > 2 or port == 0:
            raise _CommandError(ErrorCode.ARGUMENT)
        if not self._a1 and _hex(args[4], 1) != SIDE_BROUTE:
            raise _CommandError(ErrorCode.ARGUMENT)
        if self._restricted:
            # ARIB STD-T108 duty cycle exhausted (EVENT 32 was sent): nothing goes on the air.
            raise _CommandError(ErrorCode.FAILED)
        st = self._state
        src_port = st.ports[handle]
        # Over the B route, data travels only inside the PANA-secured link (sec 1, or 2 "if
        # able"); plaintext (sec 0) or a peer without a session is a failed transmission.
        ok = (
            st.session
            and st.peer == dest
            and sec in (1, 2)
            and src_port != 0
            and self._radio.send(data, src_port, port, now)
        )
        self._airtime(len(data), now)
        self._event(EventNum.UDP_SENT, dest, param=0 if ok else 1)
        return self._ok()

    def _cmd_skterm(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        st = self._state
        if not st.session or not self._radio.terminate(now):
            raise _CommandError(ErrorCode.FAILED)
        st.terminating = True
        self._ok()
        self._pump_radio(now)
        return "OK"

    def _cmd_skudpport(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 2)
        handle = _hex(args[0], 1)
        port = _hex(args[1], 4)
        if handle not in self._state.ports:
            raise _CommandError(ErrorCode.ARGUMENT)
        self._state.ports[handle] = port
        return self._ok()

    def _cmd_noop(self, args: list[str], now: float, data: bytes | None) -> str:
        # SKSAVE / SKLOAD / SKADDNBR: accepted; the emulator keeps no flash or neighbour cache.
        return self._ok()

    def _cmd_ropt(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 0)
        if not self._ropt:
            raise _CommandError(ErrorCode.UNSUPPORTED)
        self._write(f"OK {self._opt:02X}", CR)
        return f"OK {self._opt:02X}"

    def _cmd_wopt(self, args: list[str], now: float, data: bytes | None) -> str:
        self._nargs(args, 1)
        if not self._ropt:
            raise _CommandError(ErrorCode.UNSUPPORTED)
        mode = _hex(args[0], 2)
        if mode not in (0, 1):
            raise _CommandError(ErrorCode.ARGUMENT)
        self._opt = mode
        self._write("OK", CR)
        return "OK"

    # -- radio events -> serial ----------------------------------------------------------------

    def _pump_radio(self, now: float) -> None:
        st = self._state
        while (event := self._radio.next_event()) is not None:
            peer = st.peer or self._own
            mark = len(self._out)
            if isinstance(event, UdpReceived):
                self._erxudp(event, peer)
                if len(self._out) > mark:  # held for rx_latency, behind anything held before
                    self._hold(now + self.config.rx_latency, mark)
                continue
            if isinstance(event, PanaSucceeded):
                st.joining = False
                st.join_deadline = None
                st.session = True
                self._event(EventNum.PANA_SUCCEEDED, peer)
            elif isinstance(event, PanaFailed):
                log.info("PANA failed (EVENT 24)", extra={"reason": event.reason})
                st.joining = False
                st.join_deadline = None
                st.session = False
                self._event(EventNum.PANA_FAILED, peer)
            elif isinstance(event, PanaTerminated):
                st.terminating = False
                st.session = False
                self._event(EventNum.PANA_TERMINATED, peer)
            elif isinstance(event, PanaTerminateTimeout):
                st.terminating = False
                st.session = False
                self._event(EventNum.PANA_TERM_TIMEOUT, peer)
            elif isinstance(event, PanaClosedByPeer):
                st.session = False
                self._event(EventNum.PANA_TERM_RECEIVED, peer)
            elif isinstance(event, PanaReauthStarted):
                st.joining = True
                st.session = False  # until EVENT 25: SKSENDTO fails meanwhile
                self._event(EventNum.SESSION_EXPIRED, peer)
            if self._held:  # an ERXUDP before it is still held: keep the radio's order
                self._hold(now, mark)
        self._release_held(now)

    def _hold(self, due: float, mark: int) -> None:
        """Move what was written from `mark` on into the held queue, due at `due` at the
        earliest and never before what is held already."""
        if self._held:
            due = max(due, self._held[-1][0])
        self._held.append((due, bytes(self._out[mark:])))
        del self._out[mark:]

    def _release_held(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            self._out += self._held.popleft()[1]

    def _erxudp(self, rx: UdpReceived, sender: ipaddress.IPv6Address) -> None:
        if rx.dst_port not in self._state.ports.values():
            self.counters["udp_port_closed"] += 1
            return
        beacon = self._meter_beacon()
        lla = beacon.mac.hex().upper() if beacon is not None else "0" * 16
        fields = [
            "ERXUDP",
            format_ipv6(sender),
            format_ipv6(ALL_NODES if rx.multicast else self._own),
            f"{rx.src_port:04X}",
            f"{rx.dst_port:04X}",
            lla,
        ]
        if not self._a1 and self._state.registers["SA2"] == 1:
            fields.append(f"{rx.lqi if rx.lqi is not None else (beacon.lqi if beacon else 0):02X}")
        fields.append("1" if rx.secured else "0")
        if not self._a1:
            fields.append(f"{SIDE_BROUTE:X}")
        fields.append(f"{len(rx.payload):04X}")
        head = " ".join(fields).encode("ascii") + b" "
        body = rx.payload.hex().upper().encode("ascii") if self.erxudp_hex else rx.payload
        self._out += head + body + CRLF

    def _event(
        self, num: EventNum, addr: ipaddress.IPv6Address, *, param: int | None = None
    ) -> None:
        parts = [f"EVENT {num:02X}", format_ipv6(addr)]
        if not self._a1:
            parts.append(f"{SIDE_BROUTE:X}")
        if param is not None:
            parts.append(f"{param:02X}")
        self._write(" ".join(parts))

    # -- transmission duty cycle (EVENT 32 / 33, registers SFB and SFD) ---------------------------

    def _airtime(self, nbytes: int, now: float) -> None:
        airtime = (nbytes + FRAME_OVERHEAD) * 8 / RADIO_BPS
        self._tx.append(_Tx(now, airtime))
        self._tx_total_ms += airtime * 1000
        self._release_tx(now)
        if not self._restricted and self._tx_used(now) > self.config.tx_budget:
            self._restricted = True
            self._event(EventNum.TX_RESTRICTED, self._own)

    def _tx_used(self, now: float) -> float:
        return sum(t.airtime for t in self._tx if t.when > now - self.config.tx_window)

    def _release_tx(self, now: float) -> None:
        while self._tx and self._tx[0].when <= now - self.config.tx_window:
            self._tx.popleft()
        if self._restricted and self._tx_used(now) <= self.config.tx_budget:
            self._restricted = False
            self._event(EventNum.TX_RELEASED, self._own)

    def _own_timer(self) -> float | None:
        st = self._state
        times: list[float] = []
        if st.scan is not None:
            times.append(st.scan.started + st.scan.per_channel * (st.scan.index + 1))
        if st.join_deadline is not None:
            times.append(st.join_deadline)
        if self._restricted and self._tx:
            times.append(self._tx[0].when + self.config.tx_window)
        if self._held:
            times.append(self._held[0][0])
        return min(times) if times else None


_Handler = Callable[[SkstackModule, list[str], float, "bytes | None"], str]

_COMMANDS: dict[str, _Handler] = {
    "SKVER": SkstackModule._cmd_skver,
    "SKAPPVER": SkstackModule._cmd_skappver,
    "SKINFO": SkstackModule._cmd_skinfo,
    "SKRESET": SkstackModule._cmd_skreset,
    "SKSREG": SkstackModule._cmd_sksreg,
    "SKSETRBID": SkstackModule._cmd_sksetrbid,
    "SKSETPWD": SkstackModule._cmd_sksetpwd,
    "SKSCAN": SkstackModule._cmd_skscan,
    "SKLL64": SkstackModule._cmd_skll64,
    "SKJOIN": SkstackModule._cmd_skjoin,
    "SKREJOIN": SkstackModule._cmd_skrejoin,
    "SKSENDTO": SkstackModule._cmd_sksendto,
    "SKTERM": SkstackModule._cmd_skterm,
    "SKUDPPORT": SkstackModule._cmd_skudpport,
    "SKSAVE": SkstackModule._cmd_noop,
    "SKLOAD": SkstackModule._cmd_noop,
    "SKADDNBR": SkstackModule._cmd_noop,
    "ROPT": SkstackModule._cmd_ropt,
    "WOPT": SkstackModule._cmd_wopt,
}


# -- the radio over the B route ------------------------------------------------------------------


class BrouteRadio:
    """The module's radio as the HEMS end of our B route: the meter it hears (`beacon`, at UDP
    address `meter`) and, once SKJOIN runs, a `BrouteHems` (PaC + secured link) with the
    credentials SKSETRBID/SKSETPWD gave. Its events become the module's radio events:

    - LinkUp -> EVENT 25; a failed first authentication -> EVENT 24, once: the HEMS engine is
      dropped and the host software decides whether to SKJOIN again, as with the real module
      (BrouteHems itself would retry and rescan, guideline §6.5, for software with no module);
    - KeyRotated (a re-authentication before the session lifetime ends) -> EVENT 29 then 25;
    - the link lost while up -> EVENT 29 and BrouteHems reconnects (EVENT 25, or EVENT 24 when
      it falls back to rescanning); the meter ending the session -> EVENT 26;
    - SKTERM: EVENT 27 when the meter's PTA arrives, EVENT 28 when the PTR goes unanswered.
    """

    def __init__(
        self,
        beacon: Beacon,
        meter: Addr,
        rng: RandomSource,
        config: BrouteHemsConfig | None = None,
    ) -> None:
        self.beacon = beacon
        self.meter = meter
        self._rng = rng
        self._config = config or BrouteHemsConfig()
        self._hems: BrouteHems | None = None
        self._up = False
        self._seen_failures = 0
        self._term_pac: PanaClient | None = None
        self._term_answered = False
        self._events: deque[RadioEvent] = deque()
        self.counters: Counter[str] = Counter()

    def beacons(self) -> Sequence[Beacon]:
        return (self.beacon,)

    def join(self, rbid: str, password: str, now: float) -> None:
        self.reset(now)
        try:
            creds = BrouteCredentials(rbid, password)
        except CredentialError:
            # Not an ID/password a utility issues: no PSK the meter could share (EVENT 24).
            self._events.append(PanaFailed("credentials"))
            return
        self._hems = BrouteHems(creds, self.meter, self._rng, self._config)
        self._seen_failures = 0
        self._hems.start(now)

    def reauthenticate(self, now: float) -> bool:
        hems = self._hems
        if hems is None or not self._up or hems.pac is None:
            return False
        hems.pac.reauthenticate(now)
        return True

    def send(self, payload: bytes, src_port: int, dst_port: int, now: float) -> bool:
        if self._hems is None or not self._up:
            return False
        try:
            self._hems.send(payload, src_port, dst_port, now)
        except NotConnected:
            return False
        return True

    def terminate(self, now: float) -> bool:
        hems = self._hems
        if hems is None or not self._up or hems.pac is None:
            return False
        self._term_pac = hems.pac
        self._term_answered = False
        self._up = False
        hems.terminate(now)
        return True

    def reset(self, now: float) -> None:
        self._hems = None
        self._up = False
        self._term_pac = None
        self._events.clear()

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self._term_pac is not None:
            self._note_pta(data)
        if self._hems is not None:
            self._hems.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return self._hems.datagrams_to_send(now) if self._hems is not None else []

    def get_timer(self) -> float | None:
        return self._hems.get_timer() if self._hems is not None else None

    def handle_timer(self, now: float) -> None:
        if self._hems is not None:
            self._hems.handle_timer(now)

    def next_event(self) -> RadioEvent | None:
        self._translate()
        return self._events.popleft() if self._events else None

    def _note_pta(self, data: bytes) -> None:
        """Whether the meter answered our PTR (EVENT 27) or not (EVENT 28): BrouteHems ends the
        link at once on terminate, so the answer is looked for here."""
        try:
            frame = decode_frame(data)
            if isinstance(frame, PanaFrame):
                msg = PanaMessage.decode(frame.message)
                if msg.msg_type == MessageType.TERMINATION and not msg.flags & Flag.R:
                    self._term_answered = True
        except (LinkDecodeError, PanaDecodeError):
            pass  # BrouteHems counts and drops it

    def _translate(self) -> None:
        hems = self._hems
        if hems is None:
            return
        term = self._term_pac
        if term is not None and term.state is PacState.CLOSED:
            self._term_pac = None
            self._events.append(PanaTerminated() if self._term_answered else PanaTerminateTimeout())
            self._hems = None
            return
        while (event := hems.next_event()) is not None:
            if isinstance(event, LinkUp):
                self._up = True
                self._events.append(PanaSucceeded())
            elif isinstance(event, KeyRotated):
                self._events.append(PanaReauthStarted())
                self._events.append(PanaSucceeded())
            elif isinstance(event, Received):
                self._events.append(
                    UdpReceived(
                        event.payload, event.src_port, event.dst_port, multicast=event.multicast
                    )
                )
            elif isinstance(event, LinkDown):
                if term is not None:
                    continue  # SKTERM: the outcome is the PTA (above)
                self._up = False
                if event.by_meter:
                    self._events.append(PanaClosedByPeer())
                    self._hems = None
                    return
                self._events.append(PanaReauthStarted())
            elif isinstance(event, (RescanRequested, ReconnectFailed)):
                self._events.append(PanaFailed("no answer"))
                self._hems = None
                return
        failures = hems.counters["auth_failed"] + hems.counters["session_terminated"]
        if not self._up and term is None and failures > self._seen_failures:
            # BrouteHems retries a failed first authentication on its own and says nothing;
            # the module reports it (EVENT 24) and leaves the retry to the host.
            self._seen_failures = failures
            self._events.append(PanaFailed("authentication failed"))
            self._hems = None
