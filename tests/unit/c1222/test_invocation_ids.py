"""The head-end's C12.22 invocation ids survive a restart (c1222.endpoint, InvocationIdStore):
a new client on the same store goes on above every id the old one used, so the meter's replay
window accepts it at once; the store is written ahead, a block at a time, before ids are used."""

from __future__ import annotations

from pathlib import Path

from tests.unit.c1222.c1222_harness import (
    HEADEND_TITLE,
    METER_ADDR,
    METER_TITLE,
    T0,
    Pair,
    make_pair,
)

from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.events import ResponseReceived
from amistack.c1222.security import ring_key_lookup, ring_send_key
from amistack.c1222.tables import Table
from amistack.crypto import seeded_random
from amistack.runtime.headend import InvocationIdFile


class MemoryStore:
    def __init__(self) -> None:
        self.mark = 0
        self.writes = 0

    def reserved(self) -> int:
        return self.mark

    def reserve(self, mark: int) -> None:
        self.mark = mark
        self.writes += 1


def _reads_ok(pair: Pair, client: C1222Client, n: int, now: float) -> int:
    ok = 0
    pair.client = client
    for _ in range(n):
        client.read(METER_ADDR, METER_TITLE, Table.CURRENT_REGISTER_DATA, now)
        pair.pump(now)
        while (ev := client.next_event()) is not None:
            ok += isinstance(ev, ResponseReceived) and ev.ok
    return ok


def _restarted(pair: Pair, store: MemoryStore) -> C1222Client:
    """A new head-end process: a new client under the same keys, on the same store."""
    return C1222Client(
        EndpointConfig(HEADEND_TITLE, invocation_block=16),
        ring_key_lookup(pair.headend_ring),
        ring_send_key(pair.headend_ring),
        seeded_random(3),
        invocation_ids=store,
    )


def test_a_restarted_client_is_refused_without_a_store() -> None:
    pair = make_pair()
    assert _reads_ok(pair, pair.client, 100, T0) == 100
    again = C1222Client(
        EndpointConfig(HEADEND_TITLE),
        ring_key_lookup(pair.headend_ring),
        ring_send_key(pair.headend_ring),
        seeded_random(3),
    )
    assert _reads_ok(pair, again, 5, T0 + 1) == 0  # what the meters saw before
    assert pair.server.counters["stale"] + pair.server.counters["replayed"] >= 5


def test_a_restarted_client_goes_on_above_every_used_id() -> None:
    pair = make_pair()
    store = MemoryStore()
    first = _restarted(pair, store)
    assert _reads_ok(pair, first, 100, T0) == 100
    assert store.writes == 7 and store.mark == 1 + 7 * 16  # 16 ids reserved at a time
    again = _restarted(pair, store)  # a crash: whatever was reserved counts as used
    assert _reads_ok(pair, again, 5, T0 + 1) == 5
    assert pair.server.counters["stale"] == 0 and pair.server.counters["replayed"] == 0


def test_invocation_id_file(tmp_path: Path) -> None:
    f = InvocationIdFile(tmp_path / "mark")
    assert f.reserved() == 0
    f.reserve(4096)
    assert InvocationIdFile(tmp_path / "mark").reserved() == 4096
    (tmp_path / "mark").write_text("garbage")
    try:
        f.reserved()
    except ValueError as exc:
        assert "not an invocation-id mark" in str(exc)
    else:
        raise AssertionError("a corrupt mark must not be taken as 0")
