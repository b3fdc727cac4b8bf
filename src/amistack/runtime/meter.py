"""The meter's network access over real UDP: a PANA client (PaC) doing EAP-PSK with the key server.

`run_meter(..., once=True)` authenticates once and returns a `MeterResult` saying whether it worked
and, if not, why. Without `once` the meter stays on the network: it re-authenticates before each
session lifetime ends (the PaC engine's timer does that), logs every key rotation, and starts a new
session, with back-off, after a failure or termination, until `stop` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amistack.addr import Addr
from amistack.crypto import RandomSource, system_random
from amistack.runtime.udp import Capture, EngineDriver, is_ipv6

log = logging.getLogger(__name__)

PANA_PORT = 716  # RFC 5191 §6.1


@dataclass(frozen=True)
class MeterResult:
    """How a meter run ended: `ok`, else `reason` (and the PANA Result-Code if there was one)."""

    ok: bool
    device_id: str
    reason: str = ""
    session_id: int | None = None
    key_id: int | None = None
    lifetime: float | None = None
    result_code: int | None = None
    authentications: int = 0
    elapsed: float = 0.0
    timed_out: bool = False  # nothing answered (no PAA there, or the path drops PANA)

    @property
    def exit_code(self) -> int:
        """For `--once`: 0 authenticated, 2 no answer from the PAA, 1 any other failure."""
        if self.ok:
            return 0
        return 2 if self.timed_out else 1

    def __str__(self) -> str:
        if self.ok:
            return (
                f"{self.device_id}: authenticated (session {self.session_id:#010x}, "
                f"key id {self.key_id}, lifetime {self.lifetime:g} s)"
            )
        code = f", result code {self.result_code}" if self.result_code is not None else ""
        return f"{self.device_id}: authentication failed: {self.reason}{code}"


@dataclass(frozen=True)
class KeyRotation:
    """Logged (and handed to `on_rotation`) after each successful (re-)authentication."""

    device_id: str
    session_id: int
    key_id: int
    lifetime: float
    reauth: bool
    key_events: tuple[object, ...] = ()  # what the meter's key ring did (keymgmt.events)


def build_pac(
    device_id: str,
    psk: Any,
    paa: Addr,
    rng: RandomSource = system_random,
    config: Any | None = None,
) -> Any:
    """A `PanaClient` that authenticates `device_id` with EAP-PSK under `psk` to the PAA `paa`.

    `psk`: the 16-byte PSK or `eap.psk.PskKeys` derived from it; either way AK and KDK are
    derived once per client (not per authentication), and a caller building many clients for
    one device may pass the same `PskKeys` to all of them."""
    from amistack.eap.packet import EapType
    from amistack.eap.peer import EapPeer
    from amistack.eap.psk import PSK_LEN, EapPskPeer, PskKeys
    from amistack.pana.pac import PacConfig, PanaClient

    ident = device_id.encode()
    if isinstance(psk, bytes | bytearray) and len(psk) == PSK_LEN:
        psk = PskKeys(bytes(psk))  # (a bad PSK still fails in EapPskPeer, as before)

    def eap_factory() -> EapPeer:
        return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, psk, rng)})

    return PanaClient(config or PacConfig(), eap_factory, rng, paa)


async def run_meter(
    device_id: str,
    psk: bytes,
    paa: Addr,
    *,
    once: bool = False,
    timeout: float = 30.0,
    local_host: str | None = None,
    config: Any | None = None,
    rng: RandomSource = system_random,
    capture: Capture | None = None,
    stop: asyncio.Event | None = None,
    on_rotation: Callable[[KeyRotation], None] | None = None,
    retry_backoff: tuple[float, float] = (1.0, 60.0),
    keyring: Any | None = None,
) -> MeterResult:
    """Run the meter's PaC against the key server at `paa` over UDP (IPv4 or IPv6).

    once=True: the result of the first authentication (or `timeout` s without one).
    once=False: run until `stop` is set; the result describes the last state.
    Each authentication installs a key generation (UKMF) in `keyring` (a `keymgmt.KeyRing`, one
    is made when None) on the loop's clock; old generations expire on their own timer.
    """
    from amistack.keymgmt.keyring import KeyRing
    from amistack.keymgmt.ukmf import PurposeRegistry
    from amistack.pana.events import Authenticated, AuthenticationFailed, SessionTerminated

    loop = asyncio.get_running_loop()
    ring = keyring if keyring is not None else KeyRing(device_id.encode(), PurposeRegistry())
    expiry: list[asyncio.TimerHandle | None] = [None]

    def log_key_events(key_events: list[Any]) -> None:
        for kev in key_events:
            log.info("meter %s: %s", device_id, kev, extra={"device_id": device_id})

    def arm_expiry() -> None:
        if expiry[0] is not None:
            expiry[0].cancel()
        at = ring.get_timer()
        expiry[0] = None if at is None else loop.call_at(at, on_expiry)

    def on_expiry() -> None:
        expiry[0] = None
        log_key_events(ring.expire(loop.time()))
        arm_expiry()

    started = time.monotonic()
    host = local_host or ("::" if is_ipv6(paa[0]) else "0.0.0.0")
    stop = stop or asyncio.Event()
    events: asyncio.Queue[object] = asyncio.Queue()
    backoff = retry_backoff[0]
    authentications = 0
    last = MeterResult(False, device_id, reason="not started")

    def elapsed() -> float:
        return time.monotonic() - started

    try:
        while True:
            pac = build_pac(device_id, psk, paa, rng, config)
            async with EngineDriver(pac, events=events, capture=capture) as driver:
                await driver.bind(host, 0)
                pac.start(driver.now())
                driver.kick()
                log.info("meter %s: PANA-Client-Initiation to %s", device_id, paa)
                while True:
                    if once:
                        wait_for: float | None = max(0.0, timeout - elapsed())
                    else:
                        wait_for = None
                    event = await _next(events, stop, wait_for)
                    if event is None:
                        if stop.is_set():
                            if not once:
                                pac.terminate(driver.now())
                                driver.kick()
                            return _with(
                                last, authentications, elapsed(), "stopped" if not last.ok else ""
                            )
                        return MeterResult(
                            False,
                            device_id,
                            reason=f"no answer from {paa[0]} port {paa[1]} within {timeout:g} s",
                            authentications=authentications,
                            elapsed=elapsed(),
                            timed_out=True,
                        )
                    if isinstance(event, Authenticated):
                        authentications += 1
                        backoff = retry_backoff[0]
                        key_events = ring.install(event.context, event.lifetime, driver.now())
                        arm_expiry()
                        rotation = KeyRotation(
                            device_id,
                            event.session_id,
                            event.context.key_id,
                            event.lifetime,
                            event.reauth,
                            tuple(key_events),
                        )
                        log.info(
                            "meter %s: %s, session %#010x key id %d lifetime %g s",
                            device_id,
                            "keys rotated" if event.reauth else "authenticated",
                            event.session_id,
                            event.context.key_id,
                            event.lifetime,
                            extra={
                                "device_id": device_id,
                                "session_id": event.session_id,
                                "key_id": event.context.key_id,
                            },
                        )
                        log_key_events(key_events)
                        if on_rotation is not None:
                            on_rotation(rotation)
                        last = MeterResult(
                            True,
                            device_id,
                            session_id=event.session_id,
                            key_id=event.context.key_id,
                            lifetime=event.lifetime,
                            authentications=authentications,
                            elapsed=elapsed(),
                        )
                        if once:
                            return last
                    elif isinstance(event, AuthenticationFailed):
                        log.warning(
                            "meter %s: authentication failed (%s, result code %d)",
                            device_id,
                            event.reason,
                            event.result_code,
                        )
                        last = MeterResult(
                            False,
                            device_id,
                            reason=event.reason,
                            session_id=event.session_id,
                            result_code=event.result_code,
                            authentications=authentications,
                            elapsed=elapsed(),
                        )
                        if once:
                            return last
                        break
                    elif isinstance(event, SessionTerminated):
                        log.warning("meter %s: session ended: %s", device_id, event.reason)
                        log_key_events(ring.retire(event.session_id, driver.now()))
                        arm_expiry()
                        last = MeterResult(
                            False,
                            device_id,
                            reason=f"session terminated: {event.reason}",
                            session_id=event.session_id,
                            authentications=authentications,
                            elapsed=elapsed(),
                        )
                        if once:
                            return last
                        break
            # the session is gone: try again after a growing pause, unless told to stop
            log.info("meter %s: new session in %g s", device_id, backoff)
            if await _sleep_or_stop(stop, backoff):
                return _with(last, authentications, elapsed(), "stopped")
            backoff = min(backoff * 2, retry_backoff[1])

    finally:
        if expiry[0] is not None:
            expiry[0].cancel()


def _with(result: MeterResult, n: int, elapsed: float, reason: str) -> MeterResult:
    return dataclasses.replace(
        result, reason=reason or result.reason, authentications=n, elapsed=elapsed
    )


async def _next(
    events: asyncio.Queue[object], stop: asyncio.Event, timeout: float | None
) -> object | None:
    """The next engine event; None when `stop` is set or `timeout` passes first."""
    if not events.empty():
        return events.get_nowait()
    get = asyncio.ensure_future(events.get())
    halt = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {get, halt}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        halt.cancel()
        if not get.done():
            get.cancel()
    if get in done:
        return get.result()
    return None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
