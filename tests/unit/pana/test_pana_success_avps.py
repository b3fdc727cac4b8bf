"""The PAA's `success_avps` hook and the PaC's `success_avps`: extra (vendor) AVPs ride in the
PAR with the C flag of every successful run -- initial, PaC- and PAA-initiated re-authentication
-- under that PAR's AUTH, and nowhere else; a failed run carries none."""

from __future__ import annotations

from collections.abc import Sequence

from tests.unit.pana.pana_harness import PAA_ADDR, World, make_paa, make_pac, pac_addr

from amistack.pana.avp import Avp
from amistack.pana.constants import AMISTACK_VENDOR_ID, FLAG_C, MessageType
from amistack.pana.events import Authenticated, AuthenticationFailed
from amistack.pana.keys import PanaSecurityContext
from amistack.pana.message import PanaMessage


def test_extra_avps_in_each_success_par_only() -> None:
    calls: list[tuple[int, bytes | None, int]] = []

    def extra(sid: int, peer: bytes | None, ctx: PanaSecurityContext, now: float) -> Sequence[Avp]:
        calls.append((sid, peer, ctx.key_id))
        return (Avp(7, ctx.key_id.to_bytes(4, "big"), AMISTACK_VENDOR_ID),)

    paa = make_paa()
    paa.success_avps = extra
    world = World(paa)
    pac = world.add(pac_addr(1), make_pac())
    pac.start(0.0)
    world.run_until(1.0)
    assert pac.success_avps == (Avp(7, (1).to_bytes(4, "big"), AMISTACK_VENDOR_ID),)
    pac.reauthenticate(world.now)  # PaC-initiated
    world.run_until(2.0)
    (sid,) = paa.sessions_for_peer(b"meter-1")
    paa.reauthenticate(sid, world.now)  # PAA-initiated
    world.run_until(3.0)
    assert [c[2] for c in calls] == [1, 2, 3] and {c[1] for c in calls} == {b"meter-1"}
    assert pac.success_avps[0].value == (3).to_bytes(4, "big")
    assert len(world.of(pac_addr(1), Authenticated)) == 3
    carrying = [
        m for _, dst, data in world.wire
        if dst != PAA_ADDR and (m := PanaMessage.decode(data)).avps
        and any(a.vendor_id == AMISTACK_VENDOR_ID for a in m.avps)
    ]  # fmt: skip
    assert [(m.msg_type, bool(m.flags & FLAG_C)) for m in carrying] == [
        (MessageType.AUTH, True)
    ] * 3


def test_a_failed_run_carries_none() -> None:
    paa = make_paa()
    paa.success_avps = lambda *a: (Avp(7, b"x", AMISTACK_VENDOR_ID),)
    world = World(paa)
    pac = world.add(pac_addr(2), make_pac(psk=bytes(16)))  # the wrong PSK
    pac.start(0.0)
    world.run_until(5.0)
    assert world.of(pac_addr(2), AuthenticationFailed)
    assert pac.success_avps == ()
    assert not any(
        a.vendor_id is not None for _, _, data in world.wire for a in PanaMessage.decode(data).avps
    )
