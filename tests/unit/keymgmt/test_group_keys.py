"""The group-key ring of a PAN (schedule, key indexes, rotation, persistence) and the wrapped
delivery AVP (round trip, and the attacks: tampering, another session's wrap, stale deliveries;
garbage is in tests/fuzz/test_group_keys_fuzz.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from tests import contexts

from amistack.crypto import seeded_random
from amistack.keymgmt.events import (
    GroupKeyActivated,
    GroupKeyEvent,
    GroupKeyExpired,
    GroupKeyInstalled,
    GroupKeyRotationScheduled,
)
from amistack.keymgmt.groupkeys import (
    GroupKeyConfig,
    GroupKeyDelivery,
    GroupKeyError,
    GroupKeyHolder,
    GroupKeyManager,
    find_delivery,
    gtk_kek,
    next_index,
)
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import GTK_KEK, STANDARD_PURPOSES, PurposeRegistry
from amistack.pana.avp import Avp
from amistack.pana.constants import AMISTACK_VENDOR_ID, VendorAvpCode

PAN = 0xFACE
LIFE = 1000.0
CFG = GroupKeyConfig(lifetime=LIFE, install_fraction=0.8, rotation_delay=5.0, activation_delay=60)


def manager(now: float = 0.0, persistence: CredentialStore | None = None) -> GroupKeyManager:
    return GroupKeyManager(
        [PAN], rng=seeded_random(3), now=now, config=CFG, persistence=persistence
    )


def run(m: GroupKeyManager, until: float) -> list[GroupKeyEvent]:
    """Fire the manager's timers up to `until`; its events."""
    while (t := m.get_timer()) is not None and t <= until:
        m.handle_timer(t)
    return drain(m)


def drain(m: GroupKeyManager) -> list[GroupKeyEvent]:
    out = []
    while (ev := m.next_event()) is not None:
        out.append(ev)
    return out


def test_gtk_kek_is_a_prefix_free_ukmf_purpose_outside_the_key_ring() -> None:
    registry = PurposeRegistry()
    assert GTK_KEK not in registry  # derived on demand, never stored with the generations
    registry.register(GTK_KEK)  # but its label collides with none of the standard ones
    assert len(registry) == len(STANDARD_PURPOSES) + 1


def test_first_key_then_the_next_at_80_percent_then_activation() -> None:
    m = manager()
    (first,) = m.keys(PAN)
    assert (first.index, first.serial, first.not_before, first.not_after) == (1, 1, 0.0, LIFE)
    assert [type(e) for e in drain(m)] == [GroupKeyInstalled, GroupKeyActivated]
    assert m.get_timer() == pytest.approx(0.8 * LIFE)  # wsbrd GTK_NEW_INSTALL_REQUIRED
    assert run(m, 0.8 * LIFE - 1) == []
    (installed,) = run(m, 0.8 * LIFE)
    assert isinstance(installed, GroupKeyInstalled) and installed.reason == "scheduled"
    cur, nxt = m.keys(PAN)
    assert (nxt.index, nxt.not_before, nxt.not_after) == (2, LIFE, 2 * LIFE)
    assert cur.key != nxt.key
    events = run(m, LIFE)
    assert events == [
        GroupKeyExpired(PAN, 1, 1, "expired"),
        GroupKeyActivated(PAN, 2, 2),
    ]
    assert [k.index for k in m.keys(PAN)] == [2]


def test_key_index_wraps_from_7_to_1_and_live_keys_never_share_one() -> None:
    assert [next_index(i) for i in range(1, 8)] == [2, 3, 4, 5, 6, 7, 1]
    m = manager()
    seen = []
    for n in range(1, 10):
        run(m, n * LIFE - 1)
        keys = m.keys(PAN)
        assert len({k.index for k in keys}) == len(keys)
        seen.append(keys[0].index)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 1, 2]
    assert m.serial(PAN) == 10  # the serial never wraps with the index


def test_revocations_batch_into_one_rotation_that_discards_the_next_key() -> None:
    m = manager()
    run(m, 0.9 * LIFE)  # current (index 1) and next (index 2) installed
    old_current, old_next = m.keys(PAN)
    at = m.rotate(PAN, 900.0, "revoked a")
    assert m.rotate(PAN, 902.0, "revoked b") == at == 905.0  # joins the pending rotation
    assert drain(m) == [GroupKeyRotationScheduled(PAN, 905.0, "revoked a")]
    events = run(m, 905.0)
    assert GroupKeyExpired(PAN, 2, 2, "discarded by rotation") in events
    (new,) = [e for e in events if isinstance(e, GroupKeyInstalled)]
    assert (new.reason, new.index, new.not_before) == ("rotation", 3, 965.0)
    cur, nxt = m.keys(PAN)
    assert cur.key == old_current.key and cur.not_after == 965.0  # cut to the activation
    assert old_next.key not in (cur.key, nxt.key)  # the revoked meter's next key is gone
    events = run(m, 965.0)
    assert GroupKeyActivated(PAN, 3, 3) in events
    assert [k.serial for k in m.keys(PAN)] == [3]
    assert m.rotation_at(PAN) is None


def test_a_key_server_restart_keeps_the_ring_and_a_pending_rotation(tmp_path: Path) -> None:
    kek = FileKek.create(tmp_path / "kek", seeded_random(1))
    store = CredentialStore(tmp_path / "db", kek)
    m = manager(persistence=store)
    run(m, 0.85 * LIFE)
    m.rotate(PAN, 850.0, "revoked")
    before = m.keys(PAN)
    store.close()
    store = CredentialStore(tmp_path / "db", kek)
    again = manager(850.0, persistence=store)
    assert [(k.index, k.serial, k.key, k.not_after) for k in again.keys(PAN)] == [
        (k.index, k.serial, k.key, k.not_after) for k in before
    ]
    assert again.rotation_at(PAN) == 855.0  # the revocation's rotation is not forgotten
    # down for longer than every key lived: a fresh key, the serial carries on
    store.close()
    store = CredentialStore(tmp_path / "db", kek)
    late = manager(10 * LIFE, persistence=store)
    (fresh,) = late.keys(PAN)
    assert fresh.serial > before[-1].serial and fresh.not_before == 10 * LIFE
    assert fresh.index != before[-1].index


def test_stored_group_keys_are_wrapped_and_bound_to_their_row(tmp_path: Path) -> None:
    kek = FileKek.create(tmp_path / "kek", seeded_random(1))
    store = CredentialStore(tmp_path / "db", kek)
    m = manager(persistence=store)
    (key,) = m.keys(PAN)
    raw = store._db.execute("SELECT key_blob FROM group_keys").fetchone()[0]
    assert key.key not in bytes(raw)
    store._db.execute("UPDATE group_keys SET not_after = not_after + 1e6")
    with pytest.raises(Exception, match="does not unwrap"):
        store.load_group_keys(PAN)


# -- the delivery AVP ---------------------------------------------------------------------------


def sealed(now: float = 100.0, session: int = 1) -> tuple[Avp, bytes, GroupKeyManager]:
    m = manager()
    run(m, 0.9 * LIFE)
    kek = gtk_kek(contexts.make_ctx(session_id=session))
    return m.delivery(PAN, now).seal(kek), kek, m


def test_delivery_round_trip_with_times_relative_to_the_message() -> None:
    m = manager()
    run(m, 900.0)
    kek = gtk_kek(contexts.make_ctx())
    avp = m.delivery(PAN, 900.0).seal(kek)
    assert (avp.vendor_id, avp.code) == (AMISTACK_VENDOR_ID, VendorAvpCode.GROUP_KEY_DELIVERY)
    assert find_delivery((Avp(2, b"x"), avp)) is avp
    got = GroupKeyDelivery.open(Avp.decode(avp.encode()), kek, 5000.0)  # another clock
    assert (got.pan_id, got.serial) == (PAN, 2)
    cur, nxt = got.keys
    assert [k.key for k in got.keys] == [k.key for k in m.keys(PAN)]
    assert (cur.index, cur.not_before, cur.not_after) == (1, 5000.0, 5100.0)
    assert (nxt.index, nxt.not_before, nxt.not_after) == (2, 5100.0, 6100.0)


def test_no_key_material_in_reprs() -> None:
    avp, kek, m = sealed()
    delivery = GroupKeyDelivery.open(avp, kek, 0.0)
    holder = GroupKeyHolder()
    holder.accept(delivery)
    texts = [repr(delivery), repr(m), repr(holder), *map(repr, m.keys(PAN))]
    for k in m.keys(PAN):
        assert all(k.key.hex() not in t and repr(k.key) not in t for t in texts)


def test_attack_tampered_delivery_is_refused() -> None:
    avp, kek, _ = sealed()
    for i in range(len(avp.value)):
        value = bytearray(avp.value)
        value[i] ^= 0x01
        with pytest.raises(GroupKeyError) as err:
            GroupKeyDelivery.open(Avp(avp.code, bytes(value), avp.vendor_id), kek, 0.0)
        assert err.value.kind == "unwrap"


def test_attack_a_wrap_for_another_session_does_not_open() -> None:
    avp, _, _ = sealed(session=1)
    other = gtk_kek(contexts.make_ctx(session_id=2))
    with pytest.raises(GroupKeyError, match="does not unwrap"):
        GroupKeyDelivery.open(avp, other, 0.0)
    next_generation = gtk_kek(contexts.make_ctx(session_id=1, key_id=2))
    with pytest.raises(GroupKeyError):
        GroupKeyDelivery.open(avp, next_generation, 0.0)


def test_attack_replayed_older_delivery_and_foreign_pan_are_refused() -> None:
    m = manager()
    kek = gtk_kek(contexts.make_ctx())
    old = GroupKeyDelivery.open(m.delivery(PAN, 0.0).seal(kek), kek, 0.0)
    m.rotate(PAN, 1.0, "revoked")
    run(m, 10.0)
    new = GroupKeyDelivery.open(m.delivery(PAN, 10.0).seal(kek), kek, 10.0)
    holder = GroupKeyHolder()
    holder.accept(new)
    with pytest.raises(GroupKeyError) as err:
        holder.accept(old)  # would bring back the key the revoked meter holds
    assert err.value.kind == "stale"
    assert holder.serial == new.serial and len(holder.held()) == 2
    holder.accept(new)  # the same ring again (a re-authentication) is fine
    with pytest.raises(GroupKeyError) as err:
        holder.accept(replace(new, pan_id=PAN + 1))
    assert err.value.kind == "foreign-pan"


def test_wrong_avp_and_lengths_are_malformed() -> None:
    avp, kek, _ = sealed()
    for bad in (
        Avp(avp.code, avp.value),  # no vendor id
        Avp(avp.code + 1, avp.value, AMISTACK_VENDOR_ID),
        Avp(avp.code, avp.value[:-8], AMISTACK_VENDOR_ID),
        Avp(avp.code, b"", AMISTACK_VENDOR_ID),
        Avp(avp.code, avp.value + bytes(32), AMISTACK_VENDOR_ID),
    ):
        with pytest.raises(GroupKeyError) as err:
            GroupKeyDelivery.open(bad, kek, 0.0)
        assert err.value.kind in ("malformed", "unwrap")
