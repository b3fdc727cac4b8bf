"""The SKSTACK-IP module emulator on a pseudo-terminal: B-route software opens the pty as if it
were the serial port of a BP35A1 / BP35C2 and talks to our meter through it.

    host software --pty--> SkstackPty --bytes--> SkstackModule (broute.skstack)
                                                   | radio: BrouteRadio (BrouteHems, PaC)
                                                   v UDP (EngineDriver, loopback by default)
                                                 BrouteMeter (PAA + link + EchonetNode)

`SkstackPty` owns the pty pair (`os.openpty`, raw mode, so no echo or CR/LF translation by the
line discipline: the module does its own echo-back) and keeps the slave open itself so that a
client closing and re-opening the port never makes the master read EIO. Serial bytes go into the
module at once; everything the module answers is written back after every flush of its
`EngineDriver` (commands, radio datagrams, timers), in order.

`run_emulator` builds the whole chain: by default an in-process meter (BrouteMeter wrapping an
EchonetNode with the smart-meter object over a seeded MeterModel) on a loopback UDP socket, or an
external B-route meter (`meter=`), and the module's radio on its own socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amistack.addr import Addr
from amistack.broute.credentials import BrouteCredentials
from amistack.broute.meter import BrouteMeter
from amistack.broute.skstack import (
    Beacon,
    BrouteRadio,
    CommandHandled,
    Dialect,
    ModuleConfig,
    SkstackModule,
    format_ipv6,
    link_local,
)
from amistack.crypto import RandomSource, seeded_random, system_random
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.udp import EngineDriver

log = logging.getLogger(__name__)

__all__ = ["EmulatorConfig", "EmulatorInfo", "SkstackPty", "run_emulator"]

MAX_PENDING = 1 << 20  # bytes held for a client that does not read; older output is dropped


class SkstackPty:
    """A pty whose far end is `module`'s serial line, driven on the running loop."""

    def __init__(
        self,
        module: SkstackModule,
        driver: EngineDriver[SkstackModule],
        link: Path | None = None,
    ) -> None:
        self.module = module
        self.driver = driver
        self.link = link
        self.path = ""
        self._loop = asyncio.get_running_loop()
        self._master = -1
        self._slave = -1
        self._pending = bytearray()
        self._writer = False
        self.counters = driver.counters

    def open(self) -> str:
        """Create the pty (and the `link` symlink to it); returns the slave's path."""
        master, slave = os.openpty()
        try:
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            self.path = os.ttyname(slave)
            if self.link is not None:
                self._make_link(self.link, self.path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave
        self._loop.add_reader(master, self._on_readable)
        return self.path

    @staticmethod
    def _make_link(link: Path, target: str) -> None:
        if link.is_symlink():
            link.unlink()  # a stale link from an earlier run
        elif link.exists():
            raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
        link.symlink_to(target)

    def flush(self) -> None:
        """Write what the module has for the host (the driver's `on_flush`)."""
        out = self.module.serial_to_send()
        if out:
            self._pending += out
            if len(self._pending) > MAX_PENDING:
                dropped = len(self._pending) - MAX_PENDING
                del self._pending[:dropped]
                self.counters["serial_dropped"] += dropped
            self._write()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: no slave open (cannot happen while we hold ours)
            self.counters["pty_read_error"] += 1
            log.debug("pty read: %s", exc)
            return
        if not data:
            return
        self.module.receive_serial(data, self.driver.now())
        self.driver.kick()

    def _write(self) -> None:
        while self._pending and self._master >= 0:
            try:
                n = os.write(self._master, self._pending)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self.counters["pty_write_error"] += 1
                log.debug("pty write: %s", exc)
                self._pending.clear()
                break
            del self._pending[:n]
        if self._pending and not self._writer and self._master >= 0:
            self._loop.add_writer(self._master, self._on_writable)
            self._writer = True

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._master)
        self._writer = False
        self._write()

    def close(self) -> None:
        if self._master >= 0:
            self._loop.remove_reader(self._master)
            if self._writer:
                self._loop.remove_writer(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        if self.link is not None and self.link.is_symlink():
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self.path:
                    self.link.unlink()


@dataclass(frozen=True)
class EmulatorConfig:
    """What `run_emulator` builds. `rbid`/`password`: the credentials the meter accepts (random
    from `seed` when not given). `meter`: an external B-route meter instead of the built-in one
    (then `meter_mac` is its EUI-64 as the scan reports it)."""

    dialect: Dialect = Dialect.BP35C2
    rbid: str | None = None
    password: str | None = None
    seed: int | None = None
    link: Path | None = None
    meter: Addr | None = None
    meter_mac: bytes | None = None
    host: str = "127.0.0.1"  # loopback address of the built-in meter and the module's radio
    channel: int = 0x21
    pan_id: int = 0x8888
    time_scale: float = 0.05
    erxudp_hex: bool = False
    ropt_supported: bool | None = None  # None: as the dialect (BP35A1 yes, BP35C2 no)
    model_start: float | None = None  # the meter model's time at start (default: wall time)
    model_time_factor: float = 1.0  # the meter model runs at this multiple of real time
    module: ModuleConfig = field(default_factory=ModuleConfig)


@dataclass(frozen=True)
class EmulatorInfo:
    """What a user of the emulator needs: where to point the software and what to give it."""

    path: str
    link: Path | None
    rbid: str
    password: str
    dialect: Dialect
    beacon: Beacon
    meter_addr: Addr
    module_mac: bytes
    meter: SmartMeterObject | None = None  # the built-in meter object (tests read it)

    @property
    def meter_ipv6(self) -> str:
        return format_ipv6(link_local(self.beacon.mac))


_ID_ALPHABET = "0123456789ABCDEF"
_PWD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _random_text(rng: RandomSource, alphabet: str, n: int) -> str:
    return "".join(alphabet[b % len(alphabet)] for b in rng(n))


def _module_mac(rng: RandomSource) -> bytes:
    # Rohm's OUI (00:1D:12) as real modules have, the rest from the seed.
    return bytes.fromhex("001D12") + rng(5)


async def run_emulator(
    config: EmulatorConfig,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[EmulatorInfo], None] | None = None,
) -> None:
    """Run the emulator until `stop` is set (see the module docstring)."""
    rng = seeded_random(config.seed) if config.seed is not None else system_random
    rbid = config.rbid or ("00112233" + _random_text(rng, _ID_ALPHABET, 24))
    password = config.password or _random_text(rng, _PWD_ALPHABET, 12)
    creds = BrouteCredentials(rbid, password)
    loop = asyncio.get_running_loop()
    meter_driver: EngineDriver[BrouteMeter] | None = None
    meter_object: SmartMeterObject | None = None
    if config.meter is None:
        meter_engine, meter_object = _builtin_meter(creds, rng, loop.time(), config)
        meter_driver = EngineDriver(meter_engine)
        meter_addr = await meter_driver.bind(config.host, 0)
        meter_mac = meter_engine.eui64
        meter_engine.start(meter_driver.now())
        meter_driver.kick()
    else:
        meter_addr = config.meter
        meter_mac = config.meter_mac or bytes.fromhex("001D129000000001")
    beacon = Beacon(
        channel=config.channel, pan_id=config.pan_id, mac=meter_mac, pair_id=rbid[-8:].upper()
    )
    module_config = ModuleConfig(
        dialect=config.dialect,
        mac=_module_mac(rng),
        erxudp_hex=config.erxudp_hex,
        ropt_supported=config.ropt_supported,
        time_scale=config.time_scale,
        version=config.module.version,
        app_version=config.module.app_version,
        join_timeout=config.module.join_timeout,
        tx_budget=config.module.tx_budget,
        tx_window=config.module.tx_window,
        rx_latency=config.module.rx_latency,
    )
    radio = BrouteRadio(beacon, meter_addr, rng)
    module = SkstackModule(module_config, radio)
    ptys: list[SkstackPty] = []
    # After every flush (serial input, datagrams, timers) the module's answers go to the pty.
    driver = EngineDriver(
        module, on_event=_log_command, on_flush=lambda: ptys[0].flush() if ptys else None
    )
    pty: SkstackPty | None = None
    try:
        await driver.bind(config.host if config.meter is None else _family_any(meter_addr), 0)
        pty = SkstackPty(module, driver, config.link)
        ptys.append(pty)
        path = pty.open()
        if on_ready is not None:
            on_ready(
                EmulatorInfo(
                    path=path,
                    link=config.link,
                    rbid=rbid,
                    password=password,
                    dialect=config.dialect,
                    beacon=beacon,
                    meter_addr=meter_addr,
                    module_mac=module_config.mac,
                    meter=meter_object,
                )
            )
        await stop.wait()
    finally:
        if pty is not None:
            pty.close()
        driver.close()
        if meter_driver is not None:
            meter_driver.close()


def _log_command(event: object) -> None:
    if isinstance(event, CommandHandled):  # never the secrets: the engine names those only
        log.debug("serial command", extra={"command": event.command, "result": event.result})


def _family_any(addr: Addr) -> str:
    return "::" if ":" in addr[0] else "0.0.0.0"


def _builtin_meter(
    creds: BrouteCredentials, rng: RandomSource, now: float, config: EmulatorConfig
) -> tuple[BrouteMeter, SmartMeterObject]:
    """BrouteMeter + EchonetNode + SmartMeterObject over a seeded MeterModel at wall time."""
    model = MeterModel(config.seed if config.seed is not None else rng(8))
    start = time.time() if config.model_start is None else config.model_start
    scale = TimeScale(origin_now=now, origin_model=start, factor=config.model_time_factor)
    meter_object = SmartMeterObject(model, scale)
    node = EchonetNode(NodeProfile([]), [meter_object], rng)
    return BrouteMeter(node, creds, rng), meter_object
