"""The head-end's key cache watches the key directory's record of the generation it fetched
(`HeadendKeys` over a source with an in-process `directory`: `DirectorySource`, `KeyServer`)
instead of asking the source again on every due refresh. Written as an attacker would: a key
revoked, cut, retired or superseded at the key server stops being accepted exactly when it did
when every refresh asked the source; and a refresh that finds the record unchanged costs no
source call."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.contexts import make_ctx
from tests.unit.headend.test_keys import CountingSource

from amistack.headend.keys import HeadendKeys
from amistack.keymgmt.keyring import KeyRingDirectory
from amistack.keymgmt.ukmf import C1222, PurposeRegistry, derive

T0 = 1_700_000_000.0
AP = b"ap-42"
DEVICE = b"m-42"


class Undirected:
    """The same source without `directory`: every due refresh asks it (as before the watch)."""

    def __init__(self, source: CountingSource) -> None:
        self.key_for, self.current_key = source.key_for, source.current_key


def _pair(overlap: float = 30.0) -> tuple[KeyRingDirectory, HeadendKeys, HeadendKeys, Any, Any]:
    directory = KeyRingDirectory(PurposeRegistry(), overlap=overlap)
    plain, watching = Undirected(CountingSource(directory)), CountingSource(directory)
    resolve = {AP: DEVICE.decode()}.get
    return (
        directory,
        HeadendKeys(resolve, plain),
        HeadendKeys(resolve, watching),
        plain,
        watching,
    )


def test_revoked_key_refused_after_the_same_refresh_bound() -> None:
    directory, plain, watching, _, _ = _pair()
    ctx = make_ctx(0x42, 1, seed=3)
    directory.install(DEVICE, ctx, 86_400.0, T0)
    key = derive(ctx, C1222)
    for keys in (plain, watching):
        assert keys.lookup(AP, 1, T0) == [key]
    directory.shorten(DEVICE, T0 + 5, T0 + 5)  # revoked at the key server
    for keys in (plain, watching):
        # within the refresh interval the cached key still answers, as it always did
        assert keys.lookup(AP, 1, T0 + 29) == [key]
        # the refresh falls due: the forger's push under the revoked key is refused
        assert keys.lookup(AP, 1, T0 + 30) == []
        assert keys.send_key(AP, T0 + 30) is None


def test_unchanged_key_refreshed_without_asking_the_source() -> None:
    directory, _, watching, _, source = _pair()
    directory.install(DEVICE, make_ctx(0x42, 1, seed=4), 86_400.0, T0)
    assert watching.lookup(AP, 1, T0) != []
    asked = source.asks
    for i in range(1, 50):  # one push per 15-minute slot: every one a due refresh
        assert watching.lookup(AP, 1, T0 + i * 900) != []
        assert watching.send_key(AP, T0 + i * 900) is not None
    assert source.asks == asked
    assert watching.counters["refreshes"] == 49 and watching.counters["refresh-watched"] == 49


def test_superseding_generation_is_fetched_on_the_next_due_refresh() -> None:
    directory, plain, watching, _, _ = _pair(overlap=60.0)
    g1, g2 = make_ctx(0x42, 1, seed=5), make_ctx(0x42, 2, seed=5)
    directory.install(DEVICE, g1, 86_400.0, T0)
    for keys in (plain, watching):
        assert keys.send_key(AP, T0) == (1, derive(g1, C1222))
    directory.install(DEVICE, g2, 86_400.0, T0 + 100)
    for keys in (plain, watching):
        assert keys.send_key(AP, T0 + 101) == (2, derive(g2, C1222))
        assert keys.lookup(AP, 1, T0 + 140) == [derive(g1, C1222)]  # overlap
        assert keys.lookup(AP, 1, T0 + 200) == []  # cut at the supersede + overlap


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["lookup", "send", "install", "shorten", "retire", "expire", "forget"]),
        st.integers(1, 4000),  # seconds forward
        st.integers(1, 3),  # key byte / generation
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_watching_answers_exactly_as_asking_every_refresh(ops: list[tuple[str, int, int]]) -> None:
    """Any interleaving of key-server changes and head-end look-ups: the watching cache gives
    the same answers as the cache that asks its source on every due refresh."""
    directory, plain, watching, _, _ = _pair(overlap=60.0)
    now, gen, session = T0, 1, 0x42
    directory.install(DEVICE, make_ctx(session, gen, seed=6), 7_200.0, now)
    for op, dt, arg in ops:
        now += dt
        if op == "install":
            gen += 1
            directory.install(DEVICE, make_ctx(session, gen, seed=6), 7_200.0, now)
        elif op == "shorten":
            directory.shorten(DEVICE, now + arg * 20, now)
        elif op == "retire":
            directory.retire(DEVICE, session, now)
            session, gen = session + 1, 1
            directory.install(DEVICE, make_ctx(session, gen, seed=6), 7_200.0, now)
        elif op == "expire":
            directory.expire(now)
        elif op == "forget":
            plain.forget(DEVICE)
            watching.forget(DEVICE)
        elif op == "lookup":
            assert plain.lookup(AP, arg, now) == watching.lookup(AP, arg, now)
        else:
            assert plain.send_key(AP, now) == watching.send_key(AP, now)
        assert plain.generations(DEVICE, now) == watching.generations(DEVICE, now)
