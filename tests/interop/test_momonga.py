"""momonga (a B-route library for Rohm BP35A1 / BP35C2 modules, PyPI) against the SKSTACK-IP
emulator: it opens the emulator's pty as its serial port, resets the module, scans, joins (PANA),
and reads instantaneous power (E7), instantaneous current (E8) and cumulative energy (E0) from
our smart meter, which sits behind the emulator on the secured B route over loopback UDP
(127.0.30.x). Every value is checked against the meter object at the same model time (the model
clock is all but frozen, factor 1e-9).

Each dialect is run (the BP35C2 without ROPT/WOPT: momonga then assumes hex ERXUDP; the BP35A1
with them: momonga switches to hex with WOPT), and a BP35C2 firmware that has ROPT/WOPT.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest
from tests.conftest import IN_CI

from amistack.broute.skstack import Dialect
from amistack.runtime.loop import new_event_loop
from amistack.runtime.skstack_pty import EmulatorConfig, EmulatorInfo, run_emulator

pytestmark = pytest.mark.interop

HOST = "127.0.30.1"
RBID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
MODEL_T = 1_704_034_800.0 + 10 * 86400 + 14 * 3600 + 1200  # 14:20 JST, ten days installed


def _momonga() -> ModuleType:
    try:
        import momonga
    except ImportError as exc:
        msg = f"interop peer momonga is not installed (pip install momonga): {exc}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return momonga


class Emulator:
    """`run_emulator` on its own event loop in a thread."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.info: EmulatorInfo | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await run_emulator(self.config, stop=self._stop, on_ready=self._on_ready)

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            self._loop.close()

    def _on_ready(self, info: EmulatorInfo) -> None:
        self.info = info
        self._ready.set()

    def __enter__(self) -> EmulatorInfo:
        self._thread.start()
        assert self._ready.wait(10), "the emulator did not start"
        if self.info is None:
            raise AssertionError(f"the emulator failed: {self.error!r}")
        return self.info

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture(
    params=[
        ("bp35c2", None),
        ("bp35a1", None),
        ("bp35c2", True),
    ],
    ids=["bp35c2", "bp35a1", "bp35c2-with-ropt"],
)
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorInfo]:
    dialect, ropt = request.param
    config = EmulatorConfig(
        dialect=Dialect(dialect),
        rbid=RBID,
        password=PASSWORD,
        seed=3,
        host=HOST,
        time_scale=0.05,
        ropt_supported=ropt,
        model_start=MODEL_T,
        model_time_factor=1e-9,
    )
    with Emulator(config) as info:
        yield info


def _s16(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def test_momonga_reads_e7_e8_e0(emulator: EmulatorInfo) -> None:
    momonga = _momonga()
    meter = emulator.meter
    assert meter is not None
    mo = momonga.Momonga(rbid=RBID, pwd=PASSWORD, dev=emulator.path)
    mo.internal_xmit_interval = 0  # momonga sleeps 5 s between requests for real radios
    with mo:
        power = mo.get_instantaneous_power()
        current = mo.get_instantaneous_current()
        energy = mo.get_measured_cumulative_energy()
        expected_dialect = "BP35A1" if emulator.dialect is Dialect.BP35A1 else "BP35C2"
        assert mo.session_manager.skw.device_type.name == expected_dialect
    # The model clock is all but frozen: a few seconds of engine time after the start are a few
    # nanoseconds of model time, inside the same second as MODEL_T (its values change per second).
    now = meter.time.origin_now + 5.0
    e7 = meter.read(0xE7, now)
    e8 = meter.read(0xE8, now)
    e0 = meter.read(0xE0, now)
    d3 = meter.read(0xD3, now)
    e1 = meter.read(0xE1, now)
    assert e7 is not None and e8 is not None and e0 is not None and d3 is not None
    assert e1 == b"\x01"  # 0.1 kWh
    assert power == int.from_bytes(e7, "big", signed=True)
    assert power > 0  # mid-afternoon: the household draws power
    assert current == {
        "r phase current": pytest.approx(_s16(e8[:2]) / 10),
        "t phase current": pytest.approx(_s16(e8[2:]) / 10),
    }
    assert energy == pytest.approx(int.from_bytes(e0, "big") * 0.1 * int.from_bytes(d3, "big"))


def test_momonga_wrong_password_then_the_right_one() -> None:
    """EVENT 24 reaches momonga as its join failure; the module and the meter keep serving, and
    the next session (a new PANA run on the same module, guideline §6.7) reads the meter."""
    momonga = _momonga()
    config = EmulatorConfig(
        rbid=RBID,
        password=PASSWORD,
        seed=5,
        host="127.0.30.2",
        time_scale=0.05,
        model_start=MODEL_T,
        model_time_factor=1e-9,
    )
    with Emulator(config) as info:
        bad = momonga.Momonga(rbid=RBID, pwd="0123456789AC", dev=info.path, join_retries=1)
        bad.internal_xmit_interval = 0
        with pytest.raises(momonga.MomongaSkJoinFailure):
            bad.open()
        good = momonga.Momonga(rbid=RBID, pwd=PASSWORD, dev=info.path)
        good.internal_xmit_interval = 0
        with good:
            power = good.get_instantaneous_power()
        assert info.meter is not None
        e7 = info.meter.read(0xE7, info.meter.time.origin_now + 5.0)
        assert e7 is not None and power == int.from_bytes(e7, "big", signed=True)
