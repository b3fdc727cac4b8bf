"""Group keys end to end on the virtual clock: the key server (real PAA, EAP-PSK, SQLite) gives
every meter (MeterAccess with a real PaC) the PAN's keys in its PANA success, again on every
re-authentication, and pushes a rotation after a revocation; the attacks on the delivery."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest
from tests.unit.keymgmt.group_key_bed import (
    CONFIG,
    KS,
    PAN_ID,
    SESSION_LIFETIME,
    T0,
    Bed,
    meter_addr,
)

from amistack.keymgmt.events import GroupKeyInstalled
from amistack.keymgmt.groupkeys import GroupKeyDelivery, find_delivery, gtk_kek
from amistack.meter.events import AccessRefused, GroupKeysChanged, GroupKeysRefused
from amistack.pana.avp import Avp
from amistack.pana.message import PanaMessage

E = TypeVar("E")


def material(keys: object) -> list[bytes]:
    return [k.key for k in keys]  # type: ignore[attr-defined]


def test_every_meter_gets_the_pan_keys_with_its_pana_success(tmp_path: Path) -> None:
    bed = Bed(4, tmp_path, capture=200)
    bed.net.run_until(T0 + 5)
    assert bed.joined() == 4
    server_keys = material(bed.manager.keys(PAN_ID))
    for i, m in enumerate(bed.meters):
        assert material(m.group_keys.held()) == server_keys
        (changed,) = bed.net.events_of(meter_addr(i), GroupKeysChanged)
        assert (changed.pan_id, changed.serial, [k[0] for k in changed.keys]) == (PAN_ID, 1, [1])
        assert all(key.hex() not in str(changed) + repr(changed) for key in server_keys)
    assert bed.server.counters["group_keys_delivered"] == 4
    # each meter's delivery is its own: the same keys, a different wrap
    values = {
        find_delivery(PanaMessage.decode(bed.success_pars(i)[0]).avps).value for i in range(4)
    }  # type: ignore[union-attr]
    assert len(values) == 4


def test_re_authentication_delivers_again_with_the_next_key(tmp_path: Path) -> None:
    bed = Bed(2, tmp_path)
    installed = T0 + 0.8 * CONFIG.lifetime
    bed.net.run_until(installed + 1)
    assert len(bed.manager.keys(PAN_ID)) == 2
    # The bound on staleness without a push: the PaC re-authenticates at 75 % of each session
    # (PacConfig.reauth_fraction), so the next key reaches every meter that long after it is
    # installed, far ahead of its activation (20 % of the group key lifetime later).
    bed.net.run_until(installed + 0.75 * SESSION_LIFETIME + 1)
    for m in bed.meters:
        assert m.counters["group-keys-accepted"] == m.authentications > 1
        assert material(m.group_keys.held()) == material(bed.manager.keys(PAN_ID))
        assert [k.index for k in m.group_keys.held()] == [1, 2]


def test_revocation_rotates_and_the_push_reaches_every_other_meter(tmp_path: Path) -> None:
    bed = Bed(6, tmp_path)
    bed.net.run_until(T0 + 5)
    old = material(bed.manager.keys(PAN_ID))
    bed.server.revoke("meter-0000", bed.net.now, reason="stolen")
    bed.server.revoke("meter-0001", bed.net.now + 1, reason="stolen")  # batched
    bed.net.service(KS)
    at = bed.manager.rotation_at(PAN_ID)
    assert at == pytest.approx(T0 + 5 + CONFIG.rotation_delay)
    bed.net.run_until(at + 2)
    installed = [e for e in bed.net.events_of(KS, GroupKeyInstalled) if e.reason == "rotation"]
    assert len(installed) == 1  # two revocations, one rotation
    serial = bed.manager.serial(PAN_ID)
    assert bed.holding(serial) == 4
    for m in bed.meters[2:]:
        assert material(m.group_keys.held())[0] == old[0]  # still current until activation
        assert material(m.group_keys.held())[1] not in old
    for m in bed.meters[:2]:  # revoked: still the old ring only
        assert m.group_keys.serial == 1 and material(m.group_keys.held()) == old
    bed.net.run_until(installed[0].not_before + 1)
    for i, m in enumerate(bed.meters[2:], start=2):
        assert [k.serial for k in m.group_keys.held()] == [serial]
        # the cut key left the meter at the activation, on the meter's own timer
        dropped = bed.net.events_of(meter_addr(i), GroupKeysChanged)[-1]
        assert dropped.dropped == (1,) and [k[0] for k in dropped.keys] == [installed[0].index]
    for m in bed.meters[:2]:
        assert not set(material(m.group_keys.held())) & set(material(bed.manager.keys(PAN_ID)))


def test_attack_revoked_meter_asking_again_gets_no_keys(tmp_path: Path) -> None:
    bed = Bed(2, tmp_path)
    bed.net.run_until(T0 + 5)
    bed.server.revoke("meter-0000", bed.net.now)
    bed.net.service(KS)
    bed.net.run_until(T0 + 30)
    revoked = bed.meters[0]
    revoked.reboot(bed.net.now)  # a fresh PANA session to the key server
    bed.net.service(meter_addr(0))
    bed.net.run_until(T0 + 200)
    assert bed.net.events_of(meter_addr(0), AccessRefused)
    assert revoked.group_keys.serial == 1  # never given the rotated ring
    assert bed.server.counters["group_keys_delivered"] == 2 + 1  # the rotation's push to meter 1


def test_attack_replayed_success_par_changes_nothing(tmp_path: Path) -> None:
    bed = Bed(1, tmp_path, capture=500)
    bed.net.run_until(T0 + 5)
    first = bed.success_pars(0)[0]
    bed.server.revoke("meter-0000", bed.net.now)  # (any rotation will do: a newer ring)
    bed.net.service(KS)
    meter = bed.meters[0]
    before = (meter.group_keys.serial, material(meter.group_keys.held()))
    bed.net.inject(KS, meter_addr(0), first)
    bed.net.run_until(T0 + 60)
    assert (meter.group_keys.serial, material(meter.group_keys.held())) == before
    assert meter.counters["group-keys-accepted"] == 1


def test_attack_deliveries_that_do_not_open_are_refused_and_counted(tmp_path: Path) -> None:
    """MeterAccess given a PANA success whose delivery is forged, stale or someone else's."""
    bed = Bed(2, tmp_path, capture=200)
    bed.net.run_until(T0 + 5)
    m0, m1 = bed.meters
    pac0, pac1 = m0.pac, m1.pac
    assert pac0 is not None and pac1 is not None and pac0.context is not None
    ctx0 = pac0.context
    avp1 = find_delivery(pac1.success_avps)
    assert avp1 is not None
    before = m0.group_keys.held()
    # meter 1's wrap handed to meter 0 (another session's GTK-KEK)
    m0._take_group_keys((avp1,), ctx0, bed.net.now)
    # a forged one: meter 0's own, one bit flipped
    own = find_delivery(pac0.success_avps)
    assert own is not None
    forged = Avp(own.code, own.value[:-1] + bytes([own.value[-1] ^ 1]), own.vendor_id)
    m0._take_group_keys((forged,), ctx0, bed.net.now)
    # a stale one: an older ring, correctly wrapped under meter 0's own session
    stale = GroupKeyDelivery(PAN_ID, 0, bed.manager.keys(PAN_ID), bed.net.now).seal(gtk_kek(ctx0))
    m0._take_group_keys((stale,), ctx0, bed.net.now)
    kinds = [e.kind for e in _events(bed, 0, GroupKeysRefused)]
    assert kinds == ["unwrap", "unwrap", "stale"]
    assert m0.counters["group-keys-unwrap"] == 2 and m0.counters["group-keys-stale"] == 1
    assert m0.group_keys.held() == before


def _events(bed: Bed, i: int, kind: type[E]) -> list[E]:
    out = []
    while (ev := bed.meters[i].next_event()) is not None:
        if isinstance(ev, kind):
            out.append(ev)
    return out


def test_key_server_restart_keeps_the_pan_keys(tmp_path: Path) -> None:
    bed = Bed(2, tmp_path)
    bed.net.run_until(T0 + 5)
    keys = material(bed.manager.keys(PAN_ID))
    bed.restart_server()
    assert material(bed.manager.keys(PAN_ID)) == keys
    bed.meters[0].reboot(bed.net.now)
    bed.net.service(meter_addr(0))
    bed.net.run_until(T0 + 30)
    assert bed.meters[0].authentications == 2
    assert material(bed.meters[0].group_keys.held()) == keys


def test_attack_on_path_tampering_with_the_wrapped_keys_is_refused(tmp_path: Path) -> None:
    """An attacker on the path flips a bit of the wrapped keys in the PAR with the C flag: the
    PANA AUTH of the message fails first, so the meter neither authenticates on it nor opens it."""
    bed = Bed(1, tmp_path)
    tampered: list[bytes] = []

    def tamper(now: float, src: object, dst: object, data: bytes) -> bool:
        msg = PanaMessage.decode(data)
        avp = find_delivery(msg.avps) if msg.is_request else None
        if avp is None or tampered:
            return True
        at = data.index(avp.value) + 5
        tampered.append(data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1 :])
        bed.net.inject(KS, meter_addr(0), tampered[-1])
        return False  # the real one never arrives; PANA retransmits it unchanged

    bed.net.filters.append(tamper)
    bed.net.run_until(T0 + 10)
    meter = bed.meters[0]
    pac = meter.pac
    assert tampered and pac is not None and pac.counters["bad_auth"] >= 1
    assert meter.counters["group-keys-unwrap"] == 0  # never reached the unwrap
    # the retransmitted (intact) PAR completes the authentication and delivers the keys
    assert meter.group_keys.serial == 1
    assert material(meter.group_keys.held()) == material(bed.manager.keys(PAN_ID))


def test_a_device_of_an_unknown_pan_authenticates_without_group_keys(tmp_path: Path) -> None:
    bed = Bed(2, tmp_path)
    bed.server.enable_group_keys(
        bed.manager, pan_of=lambda peer: 0x1234 if peer.endswith(b"1") else PAN_ID
    )
    bed.net.run_until(T0 + 5)
    assert [m.authentications for m in bed.meters] == [1, 1]  # PANA is not held up by it
    assert bed.meters[0].group_keys.serial == 1 and bed.meters[1].group_keys.serial is None
    assert bed.server.counters["group_keys_errors"] == 1


def test_a_meter_that_missed_the_push_asks_and_gets_the_new_ring(tmp_path: Path) -> None:
    bed = Bed(2, tmp_path)
    bed.net.run_until(T0 + 5)
    lost = meter_addr(1)
    bed.net.filters.append(lambda now, src, dst, data: dst != lost or now > T0 + 200)
    bed.server.revoke("meter-0000", bed.net.now)
    bed.net.service(KS)
    bed.net.run_until(T0 + 201)  # its push was lost on the way: the PAA gave the run up
    assert bed.server.agent.counters["auth_timeout"] == 1
    meter = bed.meters[1]
    assert meter.group_keys.serial == 1  # past the activation, still on the old ring
    # its mesh layer hears frames under a key index it lacks: it asks, once per interval
    assert meter.request_group_keys(bed.net.now) is True
    assert meter.request_group_keys(bed.net.now + 1) is False
    bed.net.service(lost)
    bed.net.run_until(T0 + 600)  # (the PAA forgot the session: a new one, after back-off)
    assert meter.group_keys.serial == bed.manager.serial(PAN_ID) == 2
