"""pychonet (the asyncio ECHONET Lite controller library behind Home Assistant's integration) as
the controller of our smart-meter node, over real UDP 3610 on loopback.

Our node (`EchonetDriver` + `EchonetNode` + `NodeProfile` + `SmartMeterObject`) listens on
127.0.40.1:3610; pychonet's `UDPServer` is bound to 127.0.40.2:3610 (it takes a `local_ip` and
binds the host it is `run` on, so no network namespace is needed). Everything is unicast: the
node sends no multicast (no groups configured, no startup INF) and pychonet is asked to discover
the node by its address (`discover(host)`), never by multicast. pychonet's constructor joins
224.0.23.0 on the loopback address it is given; joining sends nothing.

pychonet keeps the raw EDT of every answer in its state; each one is compared byte for byte with
what our object says at the same (frozen) model time.

pychonet's default, multicast discovery runs in the second test, inside a network namespace pair
(never on the host).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from tests.conftest import IN_CI

from amistack.crypto.rand import seeded_random
from amistack.echonet.events import PropertiesWritten
from amistack.echonet.node import EchonetNode, NodeConfig
from amistack.echonet.objects import NodeProfile, SmartMeterObject
from amistack.echonet.propmap import decode_propmap
from amistack.meter.model import MeterModel
from amistack.meter.tables import TimeScale
from amistack.runtime.echonet import EchonetDriver
from amistack.runtime.loop import new_event_loop

pytestmark = pytest.mark.interop

NODE_HOST = "127.0.40.1"
PYCHONET_HOST = "127.0.40.2"
METER_CLASS = (0x02, 0x88)
# Model time of the test: ten days after installation, mid-afternoon, so that E2's yesterday
# (E5 = 1) has data. The scale is all but frozen (factor 1e-9) so that a value read by pychonet
# equals the value our object gives a moment later.
MODEL_T = 1_704_034_800.0 + 10 * 86400 + 14 * 3600 + 1200

T = TypeVar("T")


def _run(main: Callable[[], Awaitable[T]]) -> T:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _pychonet() -> Any:
    try:
        import pychonet
        from pychonet.lib.udpserver import UDPServer
    except ImportError as exc:
        msg = f"interop peer pychonet is not installed (make setup installs it): {exc}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return pychonet, UDPServer


def _skip_bind(what: str, exc: OSError) -> None:
    if IN_CI or exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        raise exc
    pytest.skip(f"cannot bind {what}: {exc}")


def test_pychonet_discovers_reads_and_sets_our_meter() -> None:
    pychonet, udp_server = _pychonet()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        meter = SmartMeterObject(
            MeterModel(40), TimeScale(origin_now=loop.time(), origin_model=MODEL_T, factor=1e-9)
        )
        profile = NodeProfile([])
        node = EchonetNode(profile, [meter], seeded_random(40), NodeConfig(multicast_groups=()))
        written: list[PropertiesWritten] = []
        driver = EchonetDriver(
            node, on_event=lambda e: written.append(e) if isinstance(e, PropertiesWritten) else None
        )
        try:
            await driver.open(ipv4=NODE_HOST, multicast=False)
        except OSError as exc:
            driver.close()
            _skip_bind(f"{NODE_HOST}:3610 for our node", exc)
        server = udp_server(local_ip=PYCHONET_HOST)
        try:
            try:
                server.run(PYCHONET_HOST, 3610, loop)
            except OSError as exc:
                _skip_bind(f"{PYCHONET_HOST}:3610 for pychonet", exc)
            api = pychonet.ECHONETAPIClient(server)
            logs: list[str] = []
            api.configure(message_timeout=30, logger=lambda *a: logs.append(" ".join(map(str, a))))

            # Discovery: unicast Get of 8A, 8C, 83, D6 to 0EF001. We have no product code (8C),
            # so the answer is Get_SNA with 8C empty; pychonet must still take the instances.
            assert await api.discover(NODE_HOST) is True
            state = api.state[NODE_HOST]
            assert state["discovered"] is True
            assert list(state["instances"]) == [METER_CLASS[0]]
            assert list(state["instances"][0x02]) == [METER_CLASS[1]]
            assert list(state["instances"][0x02][0x88]) == [1]
            assert state["uid"] == (profile.get(0x83, driver.now()) or b"")[1:].hex()  # §2.8
            assert state["manufacturer"] == "Experimental"  # 8A = 0xFFFFFF
            profile_d6 = profile.get(0xD6, driver.now())
            assert profile_d6 == b"\x01\x02\x88\x01"

            # Property maps (9D 9E 9F): pychonet decodes both encodings into EPC lists.
            assert await api.getAllPropertyMaps(NODE_HOST, 0x02, 0x88, 0x01) is True
            inst = state["instances"][0x02][0x88][0x01]
            now = driver.now()
            for epc in (0x9D, 0x9E, 0x9F):
                ours = decode_propmap(meter.get(epc, now) or b"")
                assert sorted(inst[epc]) == sorted(ours), f"EPC 0x{epc:02X}"
            assert {0xE7, 0xE0, 0xE1, 0xD3, 0xE2} <= set(inst[0x9F])
            assert set(inst[0x9E]) >= {0xE5}

            lvsm = pychonet.LowVoltageSmartElectricEnergyMeter(NODE_HOST, api, 0x01)
            values = await lvsm.update([0xE7, 0xE0, 0xE1, 0xD3, 0xE2])
            now = driver.now()
            for epc in (0xE7, 0xE0, 0xE1, 0xD3, 0xE2):
                assert inst[epc] == meter.get(epc, now), f"EPC 0x{epc:02X}"
            # ... and pychonet's own decoding of them agrees with ours.
            e7 = int.from_bytes(meter.get(0xE7, now) or b"", "big", signed=True)
            assert values[0xE7] == e7
            assert values[0xE0] == int.from_bytes(meter.get(0xE0, now) or b"", "big")
            assert values[0xD3] == 1
            assert values[0xE1] == pytest.approx(0.1)  # E1 = 0x01: 0.1 kWh
            assert len(inst[0xE2]) == 2 + 48 * 4 and inst[0xE2][:2] == b"\x00\x00"

            # SetC of E5 (history day 1), then Get E2: yesterday's 48 half-hour values.
            assert await lvsm.setMessage(0xE5, 1, 1) is True
            assert meter.history_day == 1
            assert [w.props[0].edt for w in written] == [b"\x01"]
            assert await lvsm.getMessage(0xE2) == meter.get(0xE2, driver.now())
            assert inst[0xE2][:2] == b"\x00\x01" and len(inst[0xE2]) == 194
            # an out-of-range day is refused (SetC_SNA, guideline §2.2): pychonet reports failure
            assert await lvsm.setMessage(0xE5, 100, 1) is False
            assert meter.history_day == 1

            assert node.counters["malformed"] == 0
            assert node.counters["rx_request"] >= 6
            assert not [m for m in logs if "rror" in m], logs
        finally:
            server.close()
            driver.close()
            await asyncio.sleep(0)

    _run(main)


def test_pychonet_finds_our_meter_by_multicast_in_a_netns_pair() -> None:
    """pychonet's default discovery, which must not run on the host: our meter in netns A,
    pychonet on 192.0.2.2:3610 in netns B (the netns pair of tests/netns.py).
    As in Home Assistant's integration: a multicast Get of D6 to 224.0.23.0; our node answers
    unicast after its §2.4 delay; pychonet reports the unknown host to `discover_callback`, which
    runs the unicast discovery of that host; then maps and E7."""
    pychonet, udp_server = _pychonet()
    from tests.netns import (
        A4,
        B4,
        MeterInNetns,
        in_netns,
        make_netns_pair,
        meter_node,
    )

    pairs = make_netns_pair()
    pair = next(pairs)
    try:
        node = meter_node(23, NodeConfig(multicast_reply_delay=0.3))

        async def hems() -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            server = udp_server(local_ip=B4)
            server.run(B4, 3610, loop)
            try:
                api = pychonet.ECHONETAPIClient(server)
                found: list[str] = []

                async def on_unknown(host: str) -> None:
                    found.append(host)

                api.configure(message_timeout=10, logger=lambda *a: None)
                api.configure(discover_callback=on_unknown)
                await api.discover()  # multicast: 224.0.23.0, from pychonet's socket
                assert found == [A4], found
                api.configure(message_timeout=30)
                assert await api.discover(A4) is True
                state = api.state.get(A4, {})
                if state:
                    await api.getAllPropertyMaps(A4, 0x02, 0x88, 0x01)
                    lvsm = pychonet.LowVoltageSmartElectricEnergyMeter(A4, api, 0x01)
                    state = dict(state, e7=await lvsm.update(0xE7))
                return state
            finally:
                server.close()
                await asyncio.sleep(0)

        def run_hems() -> dict[str, Any]:
            return _run(hems)

        with MeterInNetns(pair.ns_a, pair.if_a, node, ipv6=None):
            state = in_netns(pair.ns_b, run_hems)
    finally:
        for _ in pairs:
            pass
    assert state, "pychonet found nothing"
    assert list(state["instances"]) == [0x02]
    maps = state["instances"][0x02][0x88][0x01]
    assert 0xE7 in maps[0x9F]
    assert isinstance(state["e7"], int)
    assert node.counters["rx_request"] >= 3
