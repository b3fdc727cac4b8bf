"""Key rings: install/rotate, overlap, expiry with wiping, revocation shortening, directory."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.crypto import PrfHash, seeded_random
from amistack.keymgmt.events import (
    KeysExpired,
    KeysInstalled,
    KeysRetired,
    KeysShortened,
    KeysSuperseded,
)
from amistack.keymgmt.keyring import AppKey, KeyRing, KeyRingDirectory, KeyRingError
from amistack.keymgmt.ukmf import C1222, LINK, PANA_AUTH, KeyId, PurposeRegistry, derive
from amistack.pana.keys import PanaSecurityContext

CtxFactory = Callable[..., PanaSecurityContext]


class MemoryPersistence:
    """A real (in-memory) implementation of the persistence hook, recording what it holds."""

    def __init__(self) -> None:
        self.rows: dict[tuple[KeyId, str], tuple[bytes, float]] = {}
        self.saved: dict[tuple[KeyId, str], AppKey] = {}  # copies, as a database holds them

    def save_keys(self, peer_id: bytes, keys: Sequence[AppKey]) -> None:
        for k in keys:
            self.rows[(k.key_id, k.purpose.name)] = (peer_id, k.not_after)
            self.saved[(k.key_id, k.purpose.name)] = AppKey(
                k.key_id, k.purpose, k.key, k.not_before, k.not_after, k.superseded_at
            )

    def delete_keys(self, keys: Sequence[AppKey]) -> None:
        for k in keys:
            del self.rows[(k.key_id, k.purpose.name)]
            del self.saved[(k.key_id, k.purpose.name)]

    def restored(self, overlap: float, now: float) -> dict[tuple[KeyId, str], tuple[float, float]]:
        """What a restart at `now` would have: (not_after, superseded_at) of each live key."""
        ring = KeyRing(b"p", PurposeRegistry(), overlap=overlap)
        ring.restore(
            AppKey(k.key_id, k.purpose, k.key, k.not_before, k.not_after, k.superseded_at)
            for k in self.saved.values()
        )
        return live(ring, now)


def live(ring: KeyRing, now: float) -> dict[tuple[KeyId, str], tuple[float, float | None]]:
    return {
        (k.key_id, k.purpose.name): (k.not_after, k.superseded_at)
        for k in ring.keys()  # noqa: SIM118 - KeyRing.keys() yields AppKeys
        if k.not_after > now
    }


def test_install_derives_every_purpose(make_ctx: CtxFactory) -> None:
    ring = KeyRing(b"m1", PurposeRegistry())
    ctx = make_ctx(session_id=9, key_id=1)
    events = ring.install(ctx, lifetime=100.0, now=10.0)
    assert events == [
        KeysInstalled(b"m1", KeyId(9, 1), ("pana-auth", "c1222", "link"), 10.0, 110.0, None)
    ]
    for purpose in (PANA_AUTH, C1222, LINK):
        key = ring.current(purpose, 10.0)
        assert key is not None and key.key == derive(ctx, purpose)
        assert ring.lookup(KeyId(9, 1), purpose.name, 50.0) is key
    assert ring.get_timer() == 110.0


def test_rotation_overlap_and_current(make_ctx: CtxFactory) -> None:
    ring = KeyRing(b"m1", PurposeRegistry(), overlap=5.0)
    g1, g2 = make_ctx(key_id=1), make_ctx(key_id=2)
    ring.install(g1, 100.0, now=0.0)
    events = ring.install(g2, 100.0, now=75.0)
    assert isinstance(events[0], KeysInstalled) and events[0].previous == KeyId.of(g1)
    assert events[1] == KeysSuperseded(b"m1", KeyId.of(g1), KeyId.of(g2), 80.0)
    # send with the new generation only; the old one still decrypts within the overlap
    cur = ring.current(C1222, 76.0)
    assert cur is not None and cur.key_id == KeyId.of(g2)
    old = ring.lookup(KeyId.of(g1), C1222, 79.9)
    assert old is not None and old.key == derive(g1, C1222)
    assert ring.lookup(KeyId.of(g1), C1222, 80.0) is None
    assert ring.get_timer() == 80.0


def test_superseded_never_current_even_if_newest_expired(make_ctx: CtxFactory) -> None:
    ring = KeyRing(b"m1", PurposeRegistry(), overlap=50.0)
    ring.install(make_ctx(key_id=1), 100.0, now=0.0)
    ring.install(make_ctx(key_id=2), 10.0, now=1.0)  # short-lived new generation
    assert ring.current(LINK, 20.0) is None  # the old one (valid to 51) must not come back
    assert ring.lookup(KeyId(0x1000, 1), LINK, 20.0) is not None


def test_expire_removes_wipes_and_persists(make_ctx: CtxFactory) -> None:
    store = MemoryPersistence()
    ring = KeyRing(b"m1", PurposeRegistry(), overlap=5.0, persistence=store)
    ring.install(make_ctx(key_id=1), 100.0, now=0.0)
    held = ring.lookup(KeyId(0x1000, 1), C1222, 1.0)
    assert held is not None and len(store.rows) == 3
    ring.install(make_ctx(key_id=2), 100.0, now=50.0)
    # the cut is not written back; a restart derives it from the successor
    assert store.rows[(KeyId(0x1000, 1), "c1222")] == (b"m1", 100.0)
    assert store.restored(5.0, 50.0)[(KeyId(0x1000, 1), "c1222")] == (55.0, 50.0)
    assert ring.expire(54.9) == []
    events = ring.expire(55.0)
    assert events == [KeysExpired(b"m1", KeyId(0x1000, 1), ("pana-auth", "c1222", "link"))]
    assert held.wiped and bytes(held._material) == bytes(16)
    with pytest.raises(KeyRingError, match="wiped"):
        _ = held.key
    assert set(store.rows) == {(KeyId(0x1000, 2), p) for p in ("pana-auth", "c1222", "link")}
    assert ring.key_ids() == [KeyId(0x1000, 2)]
    ring.expire(150.0)
    assert store.rows == {} and len(ring) == 0 and ring.get_timer() is None


def test_wipe_zeroes_the_buffer_in_place() -> None:
    key = AppKey(KeyId(1, 1), C1222, b"\x11" * 16, 0.0, 1.0)
    view = memoryview(key._material)  # a view sees the very buffer the key lived in
    assert view.tobytes() == b"\x11" * 16
    key.wipe()
    assert view.tobytes() == bytes(16) and key.wiped
    assert not key.valid_at(0.5)


def test_failed_persistence_delete_keeps_memory(make_ctx: CtxFactory) -> None:
    class Failing(MemoryPersistence):
        fail = True

        def delete_keys(self, keys: Sequence[AppKey]) -> None:
            if self.fail:
                raise OSError("disk gone")
            super().delete_keys(keys)

    store = Failing()
    ring = KeyRing(b"m1", PurposeRegistry(), persistence=store)
    ring.install(make_ctx(), 10.0, now=0.0)
    with pytest.raises(OSError):
        ring.expire(10.0)
    assert len(ring) == 1 and len(store.rows) == 3
    store.fail = False
    assert len(ring.expire(10.0)) == 1 and store.rows == {}


def test_shorten_for_revocation(make_ctx: CtxFactory) -> None:
    store = MemoryPersistence()
    ring = KeyRing(b"hh", PurposeRegistry(), overlap=30.0, persistence=store)
    ring.install(make_ctx(key_id=1), 3600.0, now=0.0)
    ring.install(make_ctx(key_id=2), 3600.0, now=100.0)  # gen 1 valid until 130
    events = ring.shorten(120.0, now=110.0)
    # gen 1 (130) and gen 2 (3700) both cut to 120
    assert [e for e in events if isinstance(e, KeysShortened)] == [
        KeysShortened(b"hh", KeyId(0x1000, 1), 120.0),
        KeysShortened(b"hh", KeyId(0x1000, 2), 120.0),
    ]
    assert all(not_after == 120.0 for _, not_after in store.rows.values())
    assert ring.current(C1222, 119.0) is not None
    assert ring.current(C1222, 120.0) is None
    assert ring.get_timer() == 120.0
    # a later shorten never lengthens
    assert ring.shorten(500.0, now=111.0) == []


def test_retire_when_the_session_ends(make_ctx: CtxFactory) -> None:
    store = MemoryPersistence()
    ring = KeyRing(b"m", PurposeRegistry(), overlap=5.0, persistence=store)
    ring.install(make_ctx(session_id=1), 100.0, now=0.0)
    ring.install(make_ctx(session_id=2), 100.0, now=1.0)  # a newer session of the same meter
    events = ring.retire(2, now=10.0)  # session 1 was superseded at 1 and also ends now (6)
    assert events == [
        KeysRetired(b"m", KeyId(2, 1), 15.0),
        KeysExpired(b"m", KeyId(1, 1), ("pana-auth", "c1222", "link")),
    ]
    assert ring.current(C1222, 10.0) is None  # neither generation is sent with any more
    assert ring.lookup(KeyId(2, 1), C1222, 14.0) is not None
    assert store.rows[(KeyId(2, 1), "c1222")] == (b"m", 15.0)
    assert ring.retire(99, now=10.0) == []
    ring.expire(15.0)
    assert ring.key_ids() == [] and store.rows == {}


def test_shorten_to_now_expires_immediately(make_ctx: CtxFactory) -> None:
    store = MemoryPersistence()
    ring = KeyRing(b"hh", PurposeRegistry(), persistence=store)
    ring.install(make_ctx(), 3600.0, now=0.0)
    events = ring.shorten(0.0, now=42.0)  # in the past: clamps to now
    assert [type(e) for e in events] == [KeysShortened, KeysExpired]
    assert len(ring) == 0 and store.rows == {}


def test_duplicate_generation_and_bad_lifetime(make_ctx: CtxFactory) -> None:
    ring = KeyRing(b"m1", PurposeRegistry())
    ring.install(make_ctx(), 10.0, now=0.0)
    with pytest.raises(KeyRingError, match="already installed"):
        ring.install(make_ctx(), 10.0, now=1.0)
    with pytest.raises(KeyRingError, match="lifetime"):
        ring.install(make_ctx(key_id=5), 0.0, now=1.0)


def test_extra_registered_purpose_is_derived(make_ctx: CtxFactory) -> None:
    reg = PurposeRegistry()
    dlms = reg.add("dlms", b"amistack DLMS key", 32)
    ring = KeyRing(b"m1", reg)
    ctx = make_ctx()
    ring.install(ctx, 10.0, now=0.0)
    key = ring.current("dlms", 1.0)
    assert key is not None and key.key == derive(ctx, dlms) and len(key.key) == 32


def test_no_key_material_in_repr_or_logs(
    make_ctx: CtxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ring = KeyRing(b"m1", PurposeRegistry(), overlap=1.0)
    ctx = make_ctx()
    ring.install(ctx, 10.0, now=0.0)
    ring.install(make_ctx(key_id=2), 10.0, now=1.0)
    ring.expire(100.0)
    ring2 = KeyRing(b"m1", PurposeRegistry())
    ring2.install(ctx, 10.0, now=0.0)
    key = ring2.current(C1222, 0.0)
    assert key is not None
    texts = [
        repr(key),
        repr(ring2),
        str(key),
        caplog.text,
        *(repr(r.__dict__) for r in caplog.records),
    ]
    for purpose in PurposeRegistry():
        secret = derive(ctx, purpose)
        for text in texts:
            assert secret.hex() not in text and repr(secret) not in text
    assert "c1222" in repr(key)


def test_directory_lookup_by_key_id(make_ctx: CtxFactory) -> None:
    d = KeyRingDirectory(PurposeRegistry(), overlap=5.0)
    a, b = make_ctx(session_id=1), make_ctx(session_id=2)
    d.install(b"meter-a", a, 100.0, now=0.0)
    d.install(b"meter-b", b, 50.0, now=0.0)
    ka = d.lookup(KeyId(1, 1), C1222, 1.0)
    kb = d.lookup(KeyId(2, 1), C1222, 1.0)
    assert ka is not None and ka.key == derive(a, C1222)
    assert kb is not None and kb.key == derive(b, C1222)
    assert d.peer_of(KeyId(2, 1)) == b"meter-b"
    assert d.lookup(KeyId(3, 1), C1222, 1.0) is None
    with pytest.raises(KeyRingError, match="another peer"):
        d.install(b"meter-c", make_ctx(session_id=1), 10.0, now=2.0)


def test_directory_timer_and_expiry_across_peers(make_ctx: CtxFactory) -> None:
    d = KeyRingDirectory(PurposeRegistry(), overlap=5.0)
    d.install(b"a", make_ctx(session_id=1), 100.0, now=0.0)
    d.install(b"b", make_ctx(session_id=2), 50.0, now=0.0)
    assert d.get_timer() == 50.0
    d.shorten(b"a", 20.0, now=1.0)
    assert d.get_timer() == 20.0
    events = d.handle_timer(20.0)
    assert events == [KeysExpired(b"a", KeyId(1, 1), ("pana-auth", "c1222", "link"))]
    assert d.get(b"a") is None and d.peer_of(KeyId(1, 1)) is None
    assert d.get_timer() == 50.0
    d.install(b"b", make_ctx(session_id=2, key_id=2), 50.0, now=30.0)
    assert d.get_timer() == 35.0  # b's generation 1 now ends with the overlap
    assert [type(e) for e in d.expire(35.0)] == [KeysExpired]
    assert d.get_timer() == 80.0
    d.expire(80.0)
    assert d.get_timer() is None and len(d) == 0


def test_directory_restore(make_ctx: CtxFactory) -> None:
    ctx = make_ctx(session_id=4, key_id=7)
    d = KeyRingDirectory(PurposeRegistry())
    keys = [(b"m", AppKey(KeyId(4, 7), p, derive(ctx, p), 0.0, 60.0)) for p in PurposeRegistry()]
    d.restore(keys)
    cur = d.current(b"m", C1222, 1.0)
    assert cur is not None and cur.key == derive(ctx, C1222)
    assert d.lookup(KeyId(4, 7), LINK, 1.0) is not None and d.get_timer() == 60.0


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("install"), st.floats(1.0, 200.0)),
        st.tuples(st.just("advance"), st.floats(0.0, 120.0)),
        st.tuples(st.just("shorten"), st.floats(-10.0, 300.0)),
        st.tuples(st.just("expire"), st.just(0.0)),
        st.tuples(st.just("retire"), st.just(0.0)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, overlap=st.floats(0.0, 60.0))
def test_ring_invariants_under_random_operations(
    ops: list[tuple[str, float]], overlap: float
) -> None:
    reg = PurposeRegistry()
    store = MemoryPersistence()
    ring = KeyRing(b"p", reg, overlap=overlap, persistence=store)
    now, generation = 0.0, 0
    rng = seeded_random(1)
    for op, arg in ops:
        if op == "install":
            generation += 1
            ctx = PanaSecurityContext(
                1, generation, PrfHash.SHA1, rng(64), rng(16), rng(16), b"par", b"pan"
            )
            ring.install(ctx, arg, now)
        elif op == "advance":
            now += arg
        elif op == "shorten":
            ring.shorten(now + arg, now)
        elif op == "retire":
            ring.retire(1, now)
        else:
            ring.expire(now)
        keys = list(ring.keys())
        # persistence holds every key, and a restart now would restore exactly what memory has
        assert {(k.key_id, k.purpose.name) for k in keys} == set(store.rows)
        assert store.restored(overlap, now) == live(ring, now)
        assert ring.get_timer() == min((k.not_after for k in keys), default=None)
        for k in keys:
            assert not k.wiped
            if k.superseded_at is not None:
                assert k.not_after <= k.superseded_at + overlap
        newest = ring.key_ids()[-1] if keys else None
        for purpose in reg:
            cur = ring.current(purpose, now)
            if cur is not None:
                assert cur.superseded_at is None and cur.valid_at(now)
                assert cur.key_id == newest
            for kid in ring.key_ids():
                got = ring.lookup(kid, purpose, now)
                assert got is None or now < got.not_after
        # at most one generation is not superseded
        assert len({k.key_id for k in keys if k.superseded_at is None}) <= 1


def test_cached_timer_and_live_set_follow_every_change(make_ctx: CtxFactory) -> None:
    """get_timer is cached and install touches only unsuperseded generations: after any mix of
    operations both must agree with a brute-force look at every key."""
    rnd = random.Random(5)
    ring = KeyRing(b"m", PurposeRegistry(), overlap=5.0)
    now = 0.0
    for step in range(300):
        now += rnd.random() * 3
        op = rnd.random()
        if op < 0.5:
            ring.install(make_ctx(session_id=rnd.randrange(4), key_id=step + 1), 20.0, now=now)
        elif op < 0.65:
            ring.shorten(now + rnd.random() * 10, now)
        elif op < 0.8:
            ring.retire(rnd.randrange(4), now)
        else:
            ring.expire(now)
        keys = list(ring.keys())
        assert ring.get_timer() == min((k.not_after for k in keys), default=None)
        unsuperseded = {k.key_id for k in keys if k.superseded_at is None}
        assert not unsuperseded or unsuperseded == {ring.key_ids()[-1]}
        current = ring.current("c1222", now)
        assert current is None or current.superseded_at is None
