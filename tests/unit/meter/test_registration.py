"""`meter.registration.Registration`: when a meshed meter registers with the head-end (a
C12.22 Identify that the concentrator's relay binds, docs/mesh.md): on becoming relay-ready,
on each re-authentication while relay-ready, never otherwise; the head-end's answer becomes
`Registered`; no key or no answer is counted, nothing raises. Over the real
C12.22 endpoints of tests/unit/meter/test_node.py."""

from __future__ import annotations

from tests.contexts import make_ctx
from tests.unit.c1222.c1222_harness import HEADEND_ADDR, METER_TITLE
from tests.unit.meter.test_node import make_rig

from amistack.c1222.events import RequestReceived, RequestTimedOut
from amistack.c1222.services import Identify
from amistack.mesh.node import RelayReady
from amistack.meter.registration import Registered, Registration
from amistack.pana.events import Authenticated


def authenticated(reauth: bool) -> Authenticated:
    return Authenticated(1, None, make_ctx(key_id=2), 3600.0, reauth, HEADEND_ADDR)


def test_a_relay_ready_meter_registers_and_the_answer_says_so() -> None:
    rig = make_rig()
    reg = Registration(rig.node)
    assert reg.handle(RelayReady(512), True, rig.now) == RelayReady(512)
    rig.pump()
    identify = [e for e in rig.client_events if isinstance(e, RequestReceived)]
    assert len(identify) == 1 and identify[0].peer.same_node(METER_TITLE)
    assert isinstance(identify[0].requests[0], Identify) and identify[0].responses[0].ok
    reported = [reg.handle(e, True, rig.now) for e in rig.node_events]
    assert [type(e) for e in reported].count(Registered) == 1
    assert reg.counters == {"sent": 1, "registered": 1}


def test_it_registers_again_on_reauthentication_only_while_relay_ready() -> None:
    rig = make_rig()
    reg = Registration(rig.node)
    reg.handle(authenticated(reauth=False), True, rig.now)  # the first success: not yet routable
    reg.handle(authenticated(reauth=True), False, rig.now)  # re-authenticated, not in the DODAG
    assert reg.counters["sent"] == 0
    reg.handle(authenticated(reauth=True), True, rig.now)
    assert reg.counters["sent"] == 1


def test_no_key_no_head_end_or_no_answer_is_counted() -> None:
    keyless = make_rig(keys=False)
    reg = Registration(keyless.node)
    reg.handle(RelayReady(512), True, keyless.now)  # no C12.22 key yet: the next event retries
    assert reg.counters == {"not-sent": 1}
    rig = make_rig()
    reg = Registration(rig.node)
    reg.handle(RelayReady(512), True, rig.now)
    (rid,) = reg.pending
    lost = RequestTimedOut(rid, METER_TITLE, (Identify(),))
    assert reg.handle(lost, True, rig.now) is lost
    assert reg.counters["not-answered"] == 1 and not reg.pending
