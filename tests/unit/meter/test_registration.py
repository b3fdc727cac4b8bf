"""`meter.registration.RegisteringMeter`: when and how a meshed meter registers with C12.22's
Registration service (docs/mesh.md): on becoming relay-ready, on each re-authentication while
relay-ready, again before the granted period ends, never while not relay-ready; the request
names the meter's own title and native address, in "cleartext with authentication"; the
head-end's grant becomes `Registered`; no key or no answer is counted, nothing raises. Over
the real C12.22 endpoints of tests/unit/meter/test_node.py."""

from __future__ import annotations

from tests.contexts import make_ctx
from tests.unit.c1222.c1222_harness import HEADEND_ADDR, HEADEND_TITLE, METER_TITLE
from tests.unit.meter.test_node import Rig, make_rig

from amistack.addr import Addr
from amistack.c1222.acse import AcseMessage
from amistack.c1222.epsem import EpsemControl, SecurityMode
from amistack.c1222.events import RequestReceived, RequestTimedOut
from amistack.c1222.registration import MIN_GRANTED_PERIOD, Registration, native_address
from amistack.mesh.node import RelayReady
from amistack.meter.registration import REFRESH, Registered, RegisteringMeter
from amistack.pana.events import Authenticated

AT: Addr = ("fd00:a3e5:1::11", 1153)


def authenticated(reauth: bool) -> Authenticated:
    return Authenticated(1, None, make_ctx(key_id=2), 3600.0, reauth, HEADEND_ADDR)


def registering(rig: Rig, where: list[Addr | None], period: int = 1800) -> RegisteringMeter:
    reg = RegisteringMeter(rig.node, lambda: where[0], period)
    rig.node = reg  # type: ignore[assignment]  # the rig drives the wrapper as the meter engine
    return reg


def test_a_relay_ready_meter_registers_its_title_and_address_and_the_grant_says_so() -> None:
    rig = make_rig()
    reg = registering(rig, [AT])
    reg.node_event(RelayReady(512), rig.now)
    sent = reg.meter.server.datagrams_to_send(rig.now)
    assert len(sent) == 1  # one <register>, readable by the relay, authenticated
    msg = AcseMessage.decode(sent[0][0])
    assert EpsemControl.decode(msg.user_information[0]).security_mode == (
        SecurityMode.CLEARTEXT_AUTH
    )
    rig.client.receive_datagram(sent[0][0], ("192.0.2.10", 1153), rig.now)
    rig.pump()
    served = [e for e in rig.client_events if isinstance(e, RequestReceived)]
    assert len(served) == 1 and served[0].responses[0].ok
    (request,) = served[0].requests
    assert request == Registration(METER_TITLE, native_address(*AT), 1800)
    (granted,) = [e for e in rig.node_events if isinstance(e, Registered)]
    assert granted.period == 1800 and granted.relay == str(HEADEND_TITLE)
    assert reg.refresh_at == rig.now + 1800 * REFRESH
    assert reg.counters == {"sent": 1, "registered": 1}


def test_it_registers_again_on_reauthentication_while_relay_ready_and_before_its_period_ends() -> (
    None
):
    rig = make_rig()
    where: list[Addr | None] = [None]
    reg = registering(rig, where, period=10)  # the head-end grants a minute at least
    reg.node_event(authenticated(reauth=False), rig.now)  # the first success: not yet routable
    reg.node_event(authenticated(reauth=True), rig.now)  # re-authenticated, not in the DODAG
    assert reg.counters["sent"] == 0
    where[0] = AT
    reg.node_event(authenticated(reauth=True), rig.now)
    rig.pump()
    assert reg.counters == {"sent": 1, "registered": 1}
    start = rig.now
    rig.run_until(start + MIN_GRANTED_PERIOD * REFRESH + 1)
    assert reg.counters["refreshed"] == 1 and reg.counters["registered"] == 2
    assert reg.refresh_at == rig.now - 1 + MIN_GRANTED_PERIOD * REFRESH


def test_no_key_no_head_end_or_no_answer_is_counted() -> None:
    keyless = make_rig(keys=False)
    reg = registering(keyless, [AT])
    reg.node_event(RelayReady(512), keyless.now)  # no C12.22 key yet: the next event retries
    assert reg.counters == {"not-sent": 1}
    rig = make_rig()
    reg = registering(rig, [AT])
    rig.client.receive_datagram = lambda *a: None  # type: ignore[method-assign]  # no head-end
    reg.node_event(RelayReady(512), rig.now)
    rig.run_until(rig.now + 60)
    lost = [e for e in rig.node_events if isinstance(e, RequestTimedOut)]
    assert len(lost) == 1 and reg.counters["not-answered"] == 1 and not reg.pending
    assert reg.refresh_at is None  # the next relay-ready or re-authentication tries again
