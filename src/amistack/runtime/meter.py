"""The meter's network access over real UDP: `meter.access.MeterAccess` (a PANA client doing
EAP-PSK with the key server, and the policy between sessions) on one socket.

`run_meter(..., once=True)` authenticates once and returns a `MeterResult` saying whether it worked
and, if not, why. Without `once` the meter stays on the network until `stop` is set: the engine
re-authenticates before each session lifetime ends, rotates keys, and starts a new session after
a back-off when one fails or ends; this driver only logs what it reports.
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
from amistack.meter.access import AccessConfig, MeterAccess
from amistack.meter.events import (
    AccessGranted,
    AccessLost,
    AccessRefused,
    GroupKeysChanged,
    GroupKeysRefused,
    KeysChanged,
)
from amistack.runtime.eventtext import event_text
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
    one device may pass the same `PskKeys` to all of them. An `eap.tls.TlsPeerConfig` (the
    device certificate) instead makes it EAP-TLS, with certificate validity at wall-clock time.
    """
    from amistack.eap.method import PeerMethod
    from amistack.eap.packet import EapType
    from amistack.eap.peer import EapPeer
    from amistack.eap.psk import PSK_LEN, EapPskPeer, PskKeys
    from amistack.pana.pac import PacConfig, PanaClient

    ident = device_id.encode()
    if isinstance(psk, bytes | bytearray) and len(psk) == PSK_LEN:
        psk = PskKeys(bytes(psk))  # (a bad PSK still fails in EapPskPeer, as before)
    methods: dict[int, Callable[[], PeerMethod]] = {
        EapType.PSK: lambda: EapPskPeer(ident, psk, rng)
    }
    if not isinstance(psk, bytes | bytearray | PskKeys):
        from amistack.eap.tls import EapTlsPeer, TlsPeerConfig

        if isinstance(psk, TlsPeerConfig):
            tls: TlsPeerConfig = psk
            methods = {EapType.TLS: lambda: EapTlsPeer(tls, time.time)}

    def eap_factory() -> EapPeer:
        return EapPeer(ident, methods)

    return PanaClient(config or PacConfig(), eap_factory, rng, paa)


async def run_meter(
    device_id: str,
    psk: Any,
    paa: Addr,
    *,
    once: bool = False,
    timeout: float = 30.0,
    local_host: str | None = None,
    config: Any | None = None,
    rng: RandomSource = system_random,
    capture: Capture | None = None,
    stop: asyncio.Event | None = None,
    on_rotation: Callable[[AccessGranted], None] | None = None,
    retry_backoff: tuple[float, float] = (1.0, 60.0),
    keyring: Any | None = None,
    on_group_keys: Callable[[tuple[Any, ...]], None] | None = None,
) -> MeterResult:
    """Run the meter's network access (`meter.access.MeterAccess`) against the key server at
    `paa` over UDP (IPv4 or IPv6). `psk`: the device's PSK, or its `eap.tls.TlsPeerConfig`.

    once=True: the result of the first authentication (or `timeout` s without one).
    once=False: run until `stop` is set; the result describes the last state.
    Each authentication installs a key generation (UKMF) in `keyring` (a `keymgmt.KeyRing`, one
    is made when None) on the loop's clock; old generations expire on their own timer.
    `on_group_keys(keys)`: the mesh group keys (`keymgmt.groupkeys.GroupKey`s, on the loop's
    clock) every time the held set changes (a concentrator's link keys).
    """
    from amistack.eap.psk import PSK_LEN, PskKeys
    from amistack.keymgmt.keyring import KeyRing
    from amistack.keymgmt.ukmf import PurposeRegistry

    keys: Any = psk  # an EAP-TLS configuration, or a PSK whose keys are derived once:
    if isinstance(psk, bytes | bytearray) and len(psk) == PSK_LEN:
        keys = PskKeys(bytes(psk))
    ring = keyring if keyring is not None else KeyRing(device_id.encode(), PurposeRegistry())
    access = MeterAccess(
        device_id,
        lambda: build_pac(device_id, keys, paa, rng, config),
        ring,
        rng,
        AccessConfig(retry_backoff=retry_backoff),
    )
    started = time.monotonic()
    host = local_host or ("::" if is_ipv6(paa[0]) else "0.0.0.0")
    stop = stop or asyncio.Event()
    events: asyncio.Queue[object] = asyncio.Queue()
    last = MeterResult(False, device_id, reason="not started")

    def result(ok: bool, **fields: Any) -> MeterResult:
        return MeterResult(
            ok,
            device_id,
            authentications=access.authentications,
            elapsed=time.monotonic() - started,
            **fields,
        )

    def log_key_events(key_events: tuple[Any, ...]) -> None:
        for kev in key_events:
            log.info("meter %s: %s", device_id, event_text(kev), extra={"device_id": device_id})

    async with EngineDriver(access, events=events, capture=capture) as driver:
        await driver.bind(host, 0)
        access.start(driver.now())
        driver.kick()
        log.info("meter %s: PANA-Client-Initiation to %s", device_id, paa)
        while True:
            wait_for = max(0.0, timeout - (time.monotonic() - started)) if once else None
            event = await _next(events, stop, wait_for)
            if event is None:
                if stop.is_set():
                    if not once:
                        access.stop(driver.now())
                        driver.kick()
                    return _with(last, access.authentications, time.monotonic() - started,
                                 "stopped" if not last.ok else "")  # fmt: skip
                return result(
                    False,
                    reason=f"no answer from {paa[0]} port {paa[1]} within {timeout:g} s",
                    timed_out=True,
                )
            if isinstance(event, AccessGranted):
                log.info(
                    "meter %s",
                    event,
                    extra={
                        "device_id": device_id,
                        "session_id": event.session_id,
                        "key_id": event.key_id,
                    },
                )
                log_key_events(event.key_events)
                if on_rotation is not None:
                    on_rotation(event)
                last = result(
                    True,
                    session_id=event.session_id,
                    key_id=event.key_id,
                    lifetime=event.lifetime,
                )
            elif isinstance(event, AccessRefused):
                log.warning("meter %s", event, extra={"device_id": device_id})
                last = result(
                    False,
                    reason=event.reason,
                    session_id=event.session_id,
                    result_code=event.result_code,
                )
            elif isinstance(event, AccessLost):
                log.warning("meter %s", event, extra={"device_id": device_id})
                log_key_events(event.key_events)
                last = result(
                    False,
                    reason=f"session terminated: {event.reason}",
                    session_id=event.session_id,
                )
            elif isinstance(event, KeysChanged):
                log_key_events(event.key_events)
                continue
            elif isinstance(event, GroupKeysRefused):  # a delivery that did not open: an attack?
                log.warning("meter %s: group keys refused: %s", device_id, event.reason,
                            extra={"device_id": device_id, "kind": event.kind})  # fmt: skip
                continue
            elif isinstance(event, GroupKeysChanged):  # key indexes and validity, no keys
                log.info("meter %s", event, extra={"device_id": device_id})
                if on_group_keys is not None:
                    on_group_keys(access.group_keys.held())
                continue
            else:  # RetryScheduled
                log.info("meter %s", event, extra={"device_id": device_id})
                continue
            if once:
                return last


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
