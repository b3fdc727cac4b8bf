"""`ring_key_lookup` / `ring_send_key` sort a ring's C12.22 keys out once per change of the ring
(`KeyRing.version`): through every change the cached answers are the ring's own (`lookup`,
`current`), so a revoked, retired, superseded or expired key is refused the moment the ring
says so, never one message later."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.contexts import make_ctx

from amistack.c1222.security import key_id_byte, ring_key_lookup, ring_send_key
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import C1222, PurposeRegistry

T0 = 1_790_000_000.0
DEVICE = b"2.16.124.113620.1.22.0.7"


def _expected(ring: KeyRing, now: float) -> tuple[dict[int, list[bytes]], tuple[int, bytes] | None]:
    """The ring's answers asked directly: candidates by key-id byte, and the key to send."""
    by_byte: dict[int, list[bytes]] = {}
    for kid in ring.key_ids():
        k = ring.lookup(kid, C1222, now)
        if k is not None:
            by_byte.setdefault(key_id_byte(kid), []).append(k.key)
    cur = ring.current(C1222, now)
    return by_byte, None if cur is None else (key_id_byte(cur.key_id), cur.key)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["install", "retire", "shorten", "expire", "wait", "restart"]),
        st.integers(0, 400),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(STEPS)
def test_cached_lookups_answer_as_the_ring_through_every_change(
    steps: list[tuple[str, int]],
) -> None:
    ring = KeyRing(b"meter", PurposeRegistry(), overlap=60.0)
    lookup, send = ring_key_lookup(ring), ring_send_key(ring)
    now, session, gen = T0, 0x1000, 1
    for op, arg in steps:
        if op == "install":
            ring.install(make_ctx(session, gen), 100.0 + arg, now)
            gen += 1
        elif op == "restart":  # a new PANA session: its generations start again at 1
            session, gen = session + 1, 1
            ring.install(make_ctx(session, gen), 100.0 + arg, now)
            gen += 1
        elif op == "retire":
            ring.retire(session, now)
        elif op == "shorten":  # revocation
            ring.shorten(now + arg % 3, now)
        elif op == "expire":
            ring.expire(now)
        else:
            now += arg
        for t in (now, now + 30.0, now + 90.0):  # time passing without a change of the ring
            by_byte, current = _expected(ring, t)
            for b in {*by_byte, 0, 1, 2, 3}:
                assert lookup(DEVICE, b, t) == by_byte.get(b, [])
            assert send(DEVICE, t) == current


def test_a_revoked_key_is_refused_at_once_after_it_was_cached() -> None:
    ring = KeyRing(b"meter", PurposeRegistry(), overlap=60.0)
    lookup, send = ring_key_lookup(ring), ring_send_key(ring)
    ring.install(make_ctx(), 3600.0, T0)
    assert lookup(DEVICE, 1, T0 + 1) and send(DEVICE, T0 + 1) is not None  # cached now
    ring.shorten(T0 + 2, T0 + 1)
    assert lookup(DEVICE, 1, T0 + 2) == [] and send(DEVICE, T0 + 2) is None
