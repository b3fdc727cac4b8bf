"""The head-end's key resolver: AP title -> device through the registry, keys by key-id byte
from a key source (KeyRingDirectory, as inside the KeyServer), rollover with overlap, refresh of
cut lifetimes, and the asynchronous path (miss recorded, fetched, datagram fed again)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.contexts import make_ctx

from amistack.c1222.acse import ApTitle
from amistack.c1222.tables import LoadProfile
from amistack.crypto import seeded_random
from amistack.headend.keys import (
    DirectorySource,
    EveryKeySource,
    HeadendKeys,
    repository_resolver,
)
from amistack.headend.service import HeadEnd, HeadEndConfig, KeyNeeded
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing, KeyRingDirectory
from amistack.keymgmt.ukmf import C1222, KeyId, PurposeRegistry, derive
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.sim.fleet import HEADEND_ADDR, HEADEND_TITLE, T0

TITLE = ApTitle((0, 42), relative=True)
AP = TITLE.device_id


@pytest.fixture
def repo(tmp_path: Path) -> SqliteRepository:
    r = SqliteRepository(tmp_path)
    r.register_meter("m-42", str(TITLE.absolute()), "c", "cell", T0)
    return r


def _setup(repo: SqliteRepository, overlap: float = 30.0) -> tuple[HeadendKeys, KeyRingDirectory]:
    directory = KeyRingDirectory(PurposeRegistry(), overlap=overlap)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), DirectorySource(directory))
    return keys, directory


def _meter(ring: KeyRing, seed: int) -> MeterNode:
    """Meter TITLE with its key ring, pushing to the head-end (its model installed 40 days ago)."""
    return MeterNode(
        MeterNodeConfig(TITLE, HEADEND_TITLE, HEADEND_ADDR),
        MeterModel(1, MeterConfig(install_time=T0 - 40 * DAY_S)),
        ring,
        seeded_random(seed),
    )


def test_lookup_resolves_title_to_device_and_key_byte(repo: SqliteRepository) -> None:
    keys, directory = _setup(repo)
    ctx = make_ctx(0x42, 1, seed=1)
    directory.install(b"m-42", ctx, 3600.0, T0)
    assert keys.lookup(AP, 1, T0) == [derive(ctx, C1222)]
    assert keys.lookup(AP, 2, T0) == []  # no generation 2
    assert keys.send_key(AP, T0) == (1, derive(ctx, C1222))
    assert keys.lookup(ApTitle((0, 43), relative=True).device_id, 1, T0) == []
    assert keys.counters["unknown-ap-title"] == 1 and keys.counters["key-miss"] == 1
    assert keys.lookup(AP, 1, T0 + 3601) == []  # expired


def test_rollover_overlap_then_old_generation_dropped(repo: SqliteRepository) -> None:
    keys, directory = _setup(repo, overlap=30.0)
    g1, g2 = make_ctx(0x42, 1, seed=2), make_ctx(0x42, 2, seed=2)
    directory.install(b"m-42", g1, 3600.0, T0)
    assert keys.send_key(AP, T0) == (1, derive(g1, C1222))
    directory.install(b"m-42", g2, 3600.0, T0 + 10)
    # the meter uses generation 2 first: the miss fetches it at once
    assert keys.lookup(AP, 2, T0 + 11) == [derive(g2, C1222)]
    assert keys.lookup(AP, 1, T0 + 12) == [derive(g1, C1222)]  # in flight, within the overlap
    assert keys.send_key(AP, T0 + 12) == (2, derive(g2, C1222))
    # after the refresh interval the cut not_after of generation 1 is known
    assert keys.lookup(AP, 1, T0 + 45) == []
    assert keys.counters["refreshes"] >= 1


def test_candidate_ids_wrap_the_key_byte() -> None:
    ids = HeadendKeys._candidate_ids(KeyId(7, 0x1FF), 0x00)
    assert ids == [KeyId(7, 0x200), KeyId(7, 0x100)]


class AsyncDirectory:
    """An asynchronous key source (the shape of KeyDistClient) over a KeyRingDirectory."""

    def __init__(self, directory: KeyRingDirectory, now: float) -> None:
        self.src = DirectorySource(directory)
        self.now = now

    async def fetch(self, key_id: KeyId, purpose: str) -> object:
        got = self.src.key_for(key_id, purpose, self.now)
        if got is None:
            raise LookupError("not-found")
        return got

    async def current_key(self, device: bytes, purpose: str) -> object:
        got = self.src.current_key(device, purpose, self.now)
        if got is None:
            raise LookupError("not-found")
        return got


def test_async_source_parks_the_push_until_the_key_is_fetched(repo: SqliteRepository) -> None:
    repo.commission_meter("m-42", T0)
    directory = KeyRingDirectory(PurposeRegistry())
    ctx = make_ctx(0x42, 1, seed=3)
    directory.install(b"m-42", ctx, 3600.0, T0)
    ring = KeyRing(b"m-42", PurposeRegistry())
    ring.install(ctx, 3600.0, T0)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), None)
    headend = HeadEnd(HeadEndConfig(HEADEND_TITLE), repo, keys, seeded_random(1), T0)
    node = _meter(ring, 2)
    addr = ("10.0.0.42", 1153)
    full = node.tables.load_profile(15, T0)
    data = LoadProfile(15, full.end_time, full.intervals[-4:])
    node.server.push(HEADEND_ADDR, HEADEND_TITLE, 64, data.encode(), T0)
    [(dgram, _)] = node.datagrams_to_send(T0)
    headend.receive_datagram(dgram, addr, T0)
    assert headend.client.counters["no-key"] == 1
    ev = headend.next_event()
    assert ev == KeyNeeded(b"m-42", 1)
    source = AsyncDirectory(directory, T0)
    assert asyncio.run(keys.fetch_async(source, ev.device, ev.key_byte, T0))
    assert headend.retry_parked(b"m-42", T0 + 0.1) == 1
    assert headend.client.counters["messages-accepted"] == 1
    assert headend.datagrams_to_send(T0 + 0.1) == []  # the ack waits for durability
    headend.handle_timer(T0 + 0.2)  # the Ingestor's latency bound
    assert len(headend.datagrams_to_send(T0 + 0.2)) == 1
    assert repo.count_readings("m-42") == 4


def test_a_restarted_meter_whose_new_session_repeats_the_key_byte_is_heard(
    repo: SqliteRepository,
) -> None:
    """A meter restarts: its new PANA session's first generation has the same key-id byte as
    the old session's key the head-end still caches. The tag fails under the old key, so the
    head-end fetches the current key, parks the push and hears it; the old session's keys go,
    so the head-end also sends under the new one."""
    repo.commission_meter("m-42", T0)
    directory = KeyRingDirectory(PurposeRegistry())
    old, new = make_ctx(0x42, 1, seed=8), make_ctx(0x99, 1, seed=8)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), None)
    keys.install(b"m-42", KeyId(0x42, 1), derive(old, C1222), T0 + 3600)
    directory.install(b"m-42", new, 3600.0, T0)
    ring = KeyRing(b"m-42", PurposeRegistry())
    ring.install(new, 3600.0, T0)
    headend = HeadEnd(HeadEndConfig(HEADEND_TITLE), repo, keys, seeded_random(1), T0)
    node = _meter(ring, 2)
    full = node.tables.load_profile(15, T0)
    node.server.push(
        HEADEND_ADDR,
        HEADEND_TITLE,
        64,
        LoadProfile(15, full.end_time, full.intervals[-4:]).encode(),
        T0,
    )
    [(dgram, _)] = node.datagrams_to_send(T0)
    headend.receive_datagram(dgram, ("10.0.0.42", 1153), T0)
    assert headend.client.counters["auth-failed"] == 1 and keys.counters["key-rejected"] == 1
    ev = headend.next_event()
    assert ev == KeyNeeded(b"m-42", 1)
    assert asyncio.run(keys.fetch_async(AsyncDirectory(directory, T0), ev.device, 1, T0))
    assert headend.retry_parked(b"m-42", T0 + 0.1) == 1
    assert headend.client.counters["messages-accepted"] == 1
    assert keys.send_key(AP, T0 + 0.1) == (1, derive(new, C1222))
    assert keys.lookup(AP, 1, T0 + 0.1) == [derive(new, C1222)]


def test_forged_tags_under_a_cached_key_byte_drive_no_more_fetches_than_misses(
    repo: SqliteRepository,
) -> None:
    directory = KeyRingDirectory(PurposeRegistry())
    ctx = make_ctx(0x42, 1, seed=4)
    directory.install(b"m-42", ctx, 3600.0, T0)
    source = CountingSource(directory)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), source)  # type: ignore[arg-type]
    assert keys.lookup(AP, 1, T0) == [derive(ctx, C1222)]
    asked = source.asks
    for i in range(10_000):  # every forged message fails the tag under the cached key
        keys.rejected(AP, 1, T0 + i / 100)
    # the fetch budget: 3 at once, then one per 10 s over 100 s
    assert source.asks - asked <= 3 + 10
    assert keys.counters["fetch-limited"] >= 9_980
    assert keys.lookup(AP, 1, T0 + 100) == [derive(ctx, C1222)]


class CountingSource(DirectorySource):
    """A sync source counting what it is asked (each ask is an audited request at the key
    server when it is the key-distribution service)."""

    def __init__(self, directory: KeyRingDirectory) -> None:
        super().__init__(directory)
        self.asks = 0

    def key_for(self, key_id: KeyId, purpose: str, now: float) -> object:
        self.asks += 1
        return super().key_for(key_id, purpose, now)

    def current_key(self, device_id: bytes, purpose: str, now: float) -> object:
        self.asks += 1
        return super().current_key(device_id, purpose, now)


def test_forged_key_bytes_do_not_drive_fetches(repo: SqliteRepository) -> None:
    """10,000 lookups naming a registered AP title with key bytes the meter never had, over
    100 s: the key source is asked a bounded number of times, and the real key still works."""
    directory = KeyRingDirectory(PurposeRegistry())
    ctx = make_ctx(0x42, 1, seed=4)
    directory.install(b"m-42", ctx, 3600.0, T0)
    source = CountingSource(directory)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), source)  # type: ignore[arg-type]
    for i in range(10_000):
        assert keys.lookup(AP, 2 + i % 200, T0 + i / 100) == []
    # refreshes every 30 s (4 x up to 2 asks) + the fetch budget (3 + 100 s / 10 s, 3 asks each)
    assert source.asks <= 8 + 3 * 13
    assert keys.counters["fetch-limited"] + keys.counters["negative-hit"] >= 9_900
    assert keys.lookup(AP, 1, T0 + 100) == [derive(ctx, C1222)]
    # a rotation the meter used first is fetched once the budget allows (within 10 s)
    g2 = make_ctx(0x42, 2, seed=5)
    directory.install(b"m-42", g2, 3600.0, T0 + 101)
    assert keys.lookup(AP, 2, T0 + 112) == [derive(g2, C1222)]


def test_forged_pushes_do_not_flood_the_async_key_source(repo: SqliteRepository) -> None:
    """Pushes under a registered AP title and a key id unknown to the key server: one
    KeyNeeded (one fetch) per budget, not one per datagram; nothing parked beyond that."""
    repo.commission_meter("m-42", T0)
    forged_ring = KeyRing(b"m-42", PurposeRegistry())
    forged_ring.install(make_ctx(0x42, 9, seed=6), 3600.0, T0)  # key byte 9, unknown
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), None)
    headend = HeadEnd(HeadEndConfig(HEADEND_TITLE), repo, keys, seeded_random(1), T0)
    forger = _meter(forged_ring, 7)
    full = forger.tables.load_profile(15, T0)
    data = LoadProfile(15, full.end_time, full.intervals[-4:]).encode()
    needed = 0
    for i in range(300):
        now = T0 + i / 10  # 30 s
        forger.server.push(HEADEND_ADDR, HEADEND_TITLE, 64, data, now)
        for dgram, _ in forger.datagrams_to_send(now):
            headend.receive_datagram(dgram, ("10.6.6.6", 1153), now)
        while (ev := headend.next_event()) is not None:
            needed += isinstance(ev, KeyNeeded)
    assert 1 <= needed <= 3 + 3
    assert headend.counters["parked"] == needed


class _Server:
    """A key server's key distribution as the head-end sees it: only its own meters' keys."""

    def __init__(self, keys: dict[bytes, bytes]) -> None:
        self.keys = keys
        self.asked = 0

    async def current_key(self, device: bytes, purpose: str) -> Any:
        self.asked += 1
        if device not in self.keys:
            raise LookupError(f"{device!r}: not found")
        return SimpleNamespace(key_id=KeyId(1, 1), key=self.keys[device], not_after=1e12)

    async def fetch(self, key_id: KeyId, purpose: str) -> Any:
        raise LookupError("not found")


def test_several_key_servers_each_asked_for_its_own_meters() -> None:
    east, west = _Server({b"m-east": b"E" * 16}), _Server({b"m-west": b"W" * 16})
    every = EveryKeySource([east, west])

    async def run() -> None:
        assert (await every.current_key(b"m-west", "c1222")).key == b"W" * 16
        assert (east.asked, west.asked) == (1, 1)
        assert (await every.current_key(b"m-west", "c1222")).key == b"W" * 16
        assert (east.asked, west.asked) == (1, 2)  # the server that answered is asked first
        assert (await every.current_key(b"m-east", "c1222")).key == b"E" * 16
        with pytest.raises(LookupError):  # nobody has it: the last error
            await every.current_key(b"m-none", "c1222")
        with pytest.raises(LookupError):
            await every.fetch(KeyId(9, 9), "c1222")

    asyncio.run(run())
    with pytest.raises(ValueError):
        EveryKeySource([])
