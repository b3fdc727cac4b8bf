"""Attacks on a work session, on the virtual clock with the real key server engine: a meter with
a wrong PSK behind the handheld, a replayed relayed PANA message, a handheld with a wrong
credential, a revoked handheld (time to shut-out), a technician without the role; and the claim
that no meter key passes through the handheld in the clear or stays in it."""

from __future__ import annotations

import gc
import types
from typing import Any

import pytest
from tests.unit.handheld.harness import HANDHELD_ID, build_field

from amistack.access import Role
from amistack.handheld import (
    HandheldRefused,
    NotPermitted,
    Operation,
    WorkEnded,
    WorkState,
)
from amistack.handheld.session import WAN_ADDR
from amistack.keymgmt.groupkeys import gtk_kek
from amistack.mesh.node import radio_addr
from amistack.sim.handheld_area import AreaConfig, area_meter_id, area_meter_psk, handheld_eui

HANDHELD = radio_addr(handheld_eui())


def _ended(field: Any) -> list[WorkEnded]:
    return [e for e in field.area.net.events[HANDHELD] if isinstance(e, WorkEnded)]


def test_a_meter_with_a_wrong_psk_behind_the_handheld_is_refused_the_others_join() -> None:
    field = build_field(AreaConfig(meters=4, wrong_psk=frozenset({3})))
    field.start_work()
    assert field.run_until_joined({1, 2, 4})
    field.area.net.run_until(field.area.net.now + 60.0)
    assert 3 not in field.area.authenticated()
    refused = field.store.audit_log(device_id=area_meter_id(3).encode())
    assert any("fail" in str(entry).lower() for entry in refused)
    assert field.area.meters[2].counters["pana-refused"] >= 1


def test_a_replayed_relayed_pana_message_changes_nothing() -> None:
    field = build_field(AreaConfig(meters=2))
    net = field.area.net
    down: list[bytes] = []  # every packet the key server sent down the channel
    up: list[bytes] = []  # and every packet the handheld sent up it (its own PANA and the PRYs)
    net.capture_hooks.append(
        lambda now, src, dst, data: (
            (down if src == WAN_ADDR else up).append(data) if WAN_ADDR in (src, dst) else None
        )
    )
    session = field.start_work()
    assert field.run_until_joined({1, 2})
    pacs = [m.pac for m in field.area.meters]
    before = [(p.session_id, p.state, p.counters["bad_seq"]) for p in pacs if p is not None]
    successes = field.keyserver.counters["auth-success"]
    assert successes == 3  # the handheld and both meters
    for data in down:  # the whole join again, down the DODAG to the meters ...
        net.inject(WAN_ADDR, HANDHELD, data)
    for data in up:  # ... and up to the key server
        net.inject(HANDHELD, WAN_ADDR, data)
    net.run_until(net.now + 30.0)
    after = [(p.session_id, p.state, p.counters["bad_seq"]) for p in pacs if p is not None]
    for (sid, state, bad), (sid2, state2, bad2) in zip(before, after, strict=True):
        assert (sid2, state2) == (sid, state)  # the sessions stand, unchanged
        assert bad2 > bad  # each PaC saw the replays and refused them (RFC 5191 §5.1)
    assert field.keyserver.counters["auth-success"] == successes  # no new session upstream
    assert field.area.authenticated() == [1, 2]
    assert session.state is WorkState.SERVING


def test_a_handheld_with_a_wrong_credential_never_becomes_root() -> None:
    field = build_field(AreaConfig(meters=2))
    session = field.start_work(psk=bytes(16))
    net = field.area.net
    net.run_until(120.0)
    assert session.root is None and field.area.authenticated() == []
    assert session.state is WorkState.ENDED
    assert any(isinstance(e, HandheldRefused) for e in net.events[HANDHELD])


def test_a_revoked_handheld_is_shut_out_and_the_time_is_measured() -> None:
    field = build_field(AreaConfig(meters=2))
    session = field.start_work()
    assert field.run_until_joined({1, 2})
    net = field.area.net
    t_revoke = net.now
    field.keyserver.revoke(HANDHELD_ID, t_revoke, reason="handheld reported lost")
    net.service(WAN_ADDR)  # the key server's PTR leaves
    net.run_while(lambda: session.state is not WorkState.ENDED, t_revoke + 60.0)
    assert session.state is WorkState.ENDED and session.root is None
    shut_out = net.now - t_revoke
    assert shut_out < 1.0  # one PTR over the channel (10 ms each way here)
    assert _ended(field)[-1].reason.startswith("key server")
    field.area.detach()
    again = field.start_work()  # the same handheld, a new work session: refused
    net.run_until(net.now + 60.0)
    assert again.state is WorkState.ENDED and again.root is None


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {Operation.VIEW, Operation.READ}),
        (Role.OPERATOR, {Operation.VIEW, Operation.READ, Operation.CONNECT, Operation.DISCONNECT}),
        (Role.INSTALLER, {Operation.VIEW, Operation.READ, Operation.COMMISSION}),
    ],
)
def test_a_technician_does_only_what_the_role_grants(role: Role, allowed: set[Operation]) -> None:
    field = build_field(AreaConfig(meters=1))
    session = field.start_work(roles=frozenset({role}))
    now = field.area.net.now
    for op in Operation:
        if op in allowed:
            session.authorize(op, now)
        else:
            with pytest.raises(NotPermitted):
                session.authorize(op, now)
    if Operation.DISCONNECT not in allowed:  # nor can a result of it be put on the display
        with pytest.raises(NotPermitted):
            session.record_result("field-meter-001", Operation.DISCONNECT, {"ok": True}, now)
    assert session.view(now)["may"] == sorted(op.value for op in allowed)


def test_a_technician_without_a_field_role_gets_no_work_session() -> None:
    field = build_field(AreaConfig(meters=1))
    with pytest.raises(NotPermitted):
        field.start_work(roles=frozenset({Role.RBACMNT}))
    viewer = field.start_work(roles=frozenset({Role.VIEWER}))
    assert viewer.state is WorkState.AUTHENTICATING


_CODE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _byte_strings(root: object) -> list[bytes]:
    """Every bytes/bytearray object reachable from `root` (the handheld's whole state), not
    following into code, modules and their caches: in these tests the meters run in the same
    interpreter, so process-wide caches (crypto/eax_prime.py's expanded keys) hold theirs."""
    seen: set[int] = set()
    out: list[bytes] = []
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray | memoryview):
            out.append(bytes(obj))
            continue
        if isinstance(obj, _CODE) or hasattr(obj, "cache_info"):
            continue  # code and modules are the process's, not the session's state
        todo.extend(gc.get_referents(obj))
    return out


def test_no_meter_key_passes_through_the_handheld_in_clear_or_stays_in_it() -> None:
    field = build_field(AreaConfig(meters=3))
    net = field.area.net
    through: list[bytes] = []
    net.capture_hooks.append(
        lambda now, src, dst, data: through.append(data) if HANDHELD in (src, dst) else None
    )
    session = field.start_work()
    assert field.run_until_joined({1, 2, 3})
    secrets: list[bytes] = []
    for i, meter in enumerate(field.area.meters, 1):
        assert meter.pac is not None and meter.pac.context is not None
        ctx = meter.pac.context
        auth_key = meter.pac.auth_key
        assert auth_key is not None
        secrets += [area_meter_psk(1, i), ctx.msk, auth_key, gtk_kek(ctx)]
    assert all(len(s) >= 16 for s in secrets)
    for data in through:
        assert not any(s in data for s in secrets)
    held = b"\x00".join(_byte_strings(session))
    assert not any(s in held for s in secrets)
    session.end("logout", net.now)
    assert session.state is WorkState.ENDED
