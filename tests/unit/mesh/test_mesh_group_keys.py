"""Group keys from the key server in the link layer: meters that got their keys with PANA
(tests/unit/keymgmt/group_key_bed.py) give them to their MeshLink (`mesh.groupkeys`); after a
revocation's rotation the revoked meter's frames are refused, under its old index as under the
new one, while the others keep talking."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from tests.unit.keymgmt.group_key_bed import KS, PAN_ID, T0, Bed
from tests.unit.mesh.mesh_link_harness import PAN, all_frames

from amistack.addr import Eui64
from amistack.crypto import seeded_random
from amistack.keymgmt.groupkeys import GroupKey
from amistack.mesh.groupkeys import apply_group_keys, next_switch
from amistack.mesh.ipv6 import Ipv6Packet
from amistack.mesh.link import MeshLink
from amistack.mesh.security import LinkSecurity, MemoryCounterStore


def link(n: int) -> MeshLink:
    eui = Eui64(bytes([2, 0, 0, 0, 0, 0, 0, n + 1]))
    return MeshLink(LinkSecurity(eui, MemoryCounterStore()), PAN, seeded_random(n))


def packet(src: MeshLink) -> Ipv6Packet:
    return Ipv6Packet(src.own.link_local(), ipaddress.IPv6Address("ff02::1"), 17, b"hello mesh")


def heard(receiver: MeshLink, sender: MeshLink, now: float) -> bool:
    got = [receiver.receive(f, now) for f in all_frames(sender, packet(sender), None)]
    return any(g is not None for g in got)


def test_revoked_meters_frames_are_refused_after_the_rotation(tmp_path: Path) -> None:
    bed = Bed(3, tmp_path)
    bed.net.run_until(T0 + 5)
    revoked, a, b = bed.meters
    links = [link(i) for i in range(3)]
    now = bed.net.now
    for m, ln in zip(bed.meters, links, strict=True):
        assert apply_group_keys(ln, m.group_keys.held(), now) == 1
    assert heard(links[1], links[0], now) and heard(links[2], links[1], now)

    bed.server.revoke("meter-0000", now, reason="tampered")
    bed.net.service(KS)
    bed.net.run_until(T0 + 30)  # rotated and pushed: the new key is installed, not yet used
    (cur, new) = a.group_keys.held()
    assert apply_group_keys(links[1], a.group_keys.held(), bed.net.now) == cur.index
    assert apply_group_keys(links[2], b.group_keys.held(), bed.net.now) == cur.index
    assert links[1].security.key_indexes() == [cur.index, new.index]
    assert heard(links[1], links[2], bed.net.now)  # everyone on the old key until activation
    switch = next_switch(a.group_keys.held(), bed.net.now)
    assert switch == new.not_before

    bed.net.run_until(switch + 1)
    now = bed.net.now
    for m, ln in ((a, links[1]), (b, links[2])):
        assert apply_group_keys(ln, m.group_keys.held(), now) == new.index
        assert ln.security.key_indexes() == [new.index]
    # the revoked meter still holds (and applies) what it had: refused as an unknown key
    apply_group_keys(links[0], revoked.group_keys.held(), now)
    assert not heard(links[1], links[0], now)
    assert links[1].security.counters["unknown-key"] >= 1
    # ... and under the new index with the only key it has: the MIC does not verify
    old = revoked.group_keys.held()[0]
    forged = GroupKey(PAN_ID, new.index, old.serial, old.key, now - 1, now + 100)
    apply_group_keys(links[0], [forged], now)
    assert not heard(links[1], links[0], now)
    assert links[1].security.counters["forged"] >= 1
    # the honest meters keep talking under the new key
    assert heard(links[1], links[2], now) and heard(links[2], links[1], now)


def test_apply_drops_expired_keys_and_waits_for_a_started_one() -> None:
    ln = link(0)
    k1 = GroupKey(PAN_ID, 1, 1, bytes(16), 0.0, 10.0)
    k2 = GroupKey(PAN_ID, 2, 2, bytes(range(16)), 10.0, 20.0)
    assert apply_group_keys(ln, [k1, k2], 5.0) == 1
    assert ln.security.key_indexes() == [1, 2]
    assert apply_group_keys(ln, [k1, k2], 10.0) == 2
    assert ln.security.key_indexes() == [2] and ln.config.key_index == 2
    assert apply_group_keys(ln, [k2], 25.0) is None
    assert ln.security.key_indexes() == []
    assert next_switch([k1, k2], 5.0) == 10.0 and next_switch([k2], 25.0) is None


@pytest.mark.parametrize("index", [0, 8])
def test_group_keys_outside_1_to_7_do_not_exist(index: int) -> None:
    with pytest.raises(ValueError):
        GroupKey(PAN_ID, index, 1, bytes(16), 0.0, 1.0)
