"""The demo's B-route chapter: a HEMS reads the household's smart meter over the secured B route.

One meter (`BrouteMeter`: PANA PAA + AES-CCM* link + ECHONET Lite node + the smart meter object
over the metering model) and two HEMS controllers, over real UDP on ::1: one with a wrong
B-route password, refused; then the right one (`BrouteController`: PANA PaC + link + ECHONET
Lite controller), which finds the meter, reads its instantaneous power (E7) with unit and
coefficient (E1, D3), sets the history day (E5 = 1) and reads yesterday's 48 half-hour values
(E2). Every datagram on the wire is counted: PANA in the clear, ECHONET Lite only in secured
frames.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amistack.addr import Addr
from amistack.broute import (
    AttemptFailed,
    BrouteCredentials,
    BrouteHems,
    BrouteMeter,
    LinkUp,
)
from amistack.broute.controller import BrouteController
from amistack.broute.link import KEY_INDEX, LinkDecodeError, PanaFrame, decode_frame
from amistack.cli.hems import energy_scale, history, signed
from amistack.crypto import seeded_random, system_random
from amistack.echonet.controller import ControllerConfig, EchonetController
from amistack.echonet.frame import Eoj, Esv
from amistack.echonet.node import EchonetNode
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.echonet.objects.smart_meter import NO_DATA_S32
from amistack.meter.model import MeterConfig, MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet_controller import ControllerDriver
from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_NOFCS, PcapWriter
from amistack.runtime.udp import EngineDriver

SMART_METER = Eoj(0x02, 0x88, 0x01)
DAY = 86400.0
KEYS_FILE = "broute-ieee802154_keys"  # beside broute.pcap, in Wireshark's key table format


@dataclass
class BrouteReport:
    meter: str = ""
    wrong_password: str = ""
    link_up: str = ""
    power_w: int | None = None
    e5: str = ""
    history_day: int | None = None
    history_kwh: float | None = None
    history_matches: bool = False
    pana_frames: int = 0
    secured_frames: int = 0
    clear_frames: int = 0  # anything else on the wire: must stay 0
    pcap: str | None = None

    def ok(self) -> bool:
        return (
            self.wrong_password.startswith("refused")
            and self.link_up.startswith("PANA")
            and self.power_w is not None
            and self.e5 == "set"
            and self.history_day == 1
            and self.history_matches
            and self.secured_frames > 0
            and self.clear_frames == 0
        )

    def lines(self) -> list[str]:
        kwh = "no data" if self.history_kwh is None else f"{self.history_kwh:.2f} kWh"
        out = [
            f"  meter (PANA PAA + ECHONET Lite smart meter 028801) on {self.meter}",
            f"  a HEMS with a wrong B-route password: {self.wrong_password}",
            f"  the HEMS with the B-route ID and password: {self.link_up}",
            f"  instantaneous power (E7): {self.power_w} W",
            f"  history day (E5) := 1: {self.e5}",
            f"  yesterday's 48 half-hour values (E2, day {self.history_day}): {kwh} in all; "
            f"{'equal to' if self.history_matches else 'DIFFERENT FROM'} the meter's register",
            f"  on the wire: {self.pana_frames} PANA frames (clear), {self.secured_frames} "
            f"AES-CCM* frames, {self.clear_frames} ECHONET Lite frames in the clear",
        ]
        if self.pcap:
            out.append(
                f"  pcap: {self.pcap} (IEEE 802.15.4 frames: wpan / 6lowpan / IPv6 / UDP; "
                f"the link key for Wireshark in {KEYS_FILE})"
            )
        return out


class _Wire:
    """Counts (and optionally records) every datagram the B-route engines put on the wire."""

    def __init__(self, report: BrouteReport, pcap: PcapWriter | None) -> None:
        self.report = report
        self.pcap = pcap

    def capture(self, payload: bytes, src: Addr, dst: Addr) -> None:
        if self.pcap is not None:
            self.pcap.write_frame(payload)
        try:
            frame = decode_frame(payload)
        except LinkDecodeError:
            self.report.clear_frames += 1
            return
        if isinstance(frame, PanaFrame):
            self.report.pana_frames += 1
        else:
            self.report.secured_frames += 1


async def _until(queue: asyncio.Queue[Any], match: Callable[[Any], bool], timeout: float) -> Any:
    async def wait() -> Any:
        while True:
            ev = await queue.get()
            if match(ev):
                return ev

    return await asyncio.wait_for(wait(), timeout)


def _credentials() -> BrouteCredentials:
    rbid = secrets.token_hex(16).upper()  # 32 characters, as the utility issues it
    alphabet = string.ascii_uppercase + string.digits
    return BrouteCredentials(rbid, "".join(secrets.choice(alphabet) for _ in range(12)))


async def chapter_broute(pcap_dir: Path | None, seed: int = 1) -> BrouteReport:
    report = BrouteReport()
    pcap = (
        PcapWriter(pcap_dir / "broute.pcap", linktype=LINKTYPE_IEEE802_15_4_NOFCS)
        if pcap_dir is not None
        else None
    )
    report.pcap = str(pcap_dir / "broute.pcap") if pcap_dir is not None else None
    wire = _Wire(report, pcap)
    loop = asyncio.get_running_loop()
    creds = _credentials()
    model = MeterModel(seed, MeterConfig(two_way=True))
    # the meter has run for 30 days, so yesterday has a full history
    scale = TimeScale(origin_now=loop.time(), origin_model=model.install_time + 30 * DAY)
    obj = SmartMeterObject(model, time=scale)
    node = EchonetNode(NodeProfile([]), [obj], system_random)
    meter_driver = EngineDriver(BrouteMeter(node, creds, system_random), capture=wire.capture)
    drivers: list[EngineDriver[Any]] = [meter_driver]
    try:
        meter_addr = await meter_driver.bind("::1", 0)
        meter_driver.engine.start(meter_driver.now())
        meter_driver.kick()
        report.meter = f"[{meter_addr[0]}]:{meter_addr[1]} (802.15.4 B-route frames on UDP)"

        # a HEMS that was given the wrong password: EAP-PSK fails, the meter keeps serving
        wrong = BrouteCredentials(creds.rbid, "WRONGPASSWD0")
        failures: asyncio.Queue[Any] = asyncio.Queue()
        # only the meter's driver captures: it sees every frame once (in or out)
        intruder = EngineDriver(BrouteHems(wrong, meter_addr, system_random), events=failures)
        drivers.append(intruder)
        await intruder.bind("::1", 0)
        intruder.engine.start(intruder.now())
        intruder.kick()
        failed = await _until(failures, lambda e: isinstance(e, AttemptFailed), 10.0)
        report.wrong_password = f"refused ({failed.reason})"
        intruder.engine.terminate(intruder.now())
        intruder.kick()

        events: asyncio.Queue[Any] = asyncio.Queue()
        controller = EchonetController(
            ControllerConfig(multicast_groups=(), rediscover_interval=None), seeded_random(seed)
        )
        hems = BrouteController(BrouteHems(creds, meter_addr, system_random), controller)
        hems_driver = ControllerDriver(hems, events=events)
        drivers.append(hems_driver)
        await hems_driver.bind("::1", 0)
        hems_driver.start()  # PANA first; the controller probes the meter once the link is up
        if await hems_driver.wait_for_node(SMART_METER.class_code, timeout=10.0) is None:
            raise RuntimeError("the HEMS did not find the smart meter over the B route")
        up = await _until(events, lambda e: isinstance(e, LinkUp), 1.0)
        key = meter_driver.engine.link_key(up.key_id, meter_driver.now())
        if pcap_dir is not None and key is not None:
            keys = pcap_dir / KEYS_FILE  # Wireshark's UAT file: its key table for broute.pcap
            keys.touch(mode=0o600)
            keys.write_text(f'"{key.hex()}","{KEY_INDEX}","No hash"\n')
        report.link_up = (
            f"PANA + EAP-PSK in {up.elapsed * 1000:.0f} ms, link key {up.key_id} (AES-CCM*)"
        )

        got = await hems_driver.get(hems.meter, SMART_METER, [0xE7, 0xE1, 0xD3], timeout=30.0)
        report.power_w = signed(got.value(0xE7), NO_DATA_S32)
        units = energy_scale(got)
        setc = await hems_driver.set(hems.meter, SMART_METER, [(0xE5, b"\x01")], timeout=30.0)
        report.e5 = "set" if setc.esv == Esv.SET_RES else f"refused (ESV {setc.esv:#04x})"
        e2 = await hems_driver.get(hems.meter, SMART_METER, [0xE2], timeout=30.0)
        report.history_day, kwh = history(e2.value(0xE2), units)
        known = [v for v in kwh if v is not None]
        if len(known) >= 2:
            report.history_kwh = known[-1] - known[0]
        report.history_matches = e2.value(0xE2) == obj.get(0xE2, meter_driver.now())
        hems.terminate(hems_driver.now())
        hems_driver.kick()
        await asyncio.sleep(0.05)  # let the PTR go out
    finally:
        for d in drivers:
            d.close()
        if pcap is not None:
            pcap.close()
    return report
