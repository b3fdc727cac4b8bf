"""The fleet page's counts are the whole fleet's, not one page's: registered, commissioned,
authenticated (the engine holds a key generation), stale, disconnected, decommissioned; on both
backends (`status_counts`), refreshed in the background (`views.Refreshed`), and a scoped
principal's page still shows only its meters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.contexts import make_ctx
from tests.unit.headend.conftest import T0, reading
from tests.unit.headend.test_dashboard import login
from tests.unit.headend.test_keys import TITLE, _setup

from amistack.access import Role
from amistack.access.http import AccessControl
from amistack.headend.api import create_app
from amistack.headend.dashboard.fleet import COUNT_ORDER, STALE_AFTER_S, fleet_counts
from amistack.headend.dashboard.views import Refreshed
from amistack.headend.registry import MeterState
from amistack.headend.schema import CommandKind, CommandState
from amistack.headend.storage import ReadingRepository, SqliteRepository

NOW = T0 + 3 * 3600.0
METERS = 70  # more than one page of 50


def fill(repo: ReadingRepository) -> None:
    """m000..m069: every 10th installed only, every 15th decommissioned, the rest commissioned;
    commissioned even meters reported within the hour, the odd ones three hours ago (stale);
    m001 and m003 read their relay back open, m005 open then closed."""
    for i in range(METERS):
        m = f"m{i:03d}"
        repo.register_meter(m, f"2.16.124.113620.1.22.7.{i}", "conc-1", "cell-1", T0)
        if i % 10 == 0:
            continue
        repo.commission_meter(m, T0)
        if i % 15 == 0:
            repo.decommission_meter(m, T0)
            continue
        repo.store_readings([reading(m, 0)], NOW - (600 if i % 2 == 0 else 3 * 3600))
    for m, states in (("m001", ["open"]), ("m003", ["open"]), ("m005", ["open", "closed"])):
        for relay in states:
            kind = CommandKind.DISCONNECT if relay == "open" else CommandKind.RECONNECT
            cmd = repo.create_command(m, kind, {}, T0)
            repo.update_command(cmd.id, CommandState.SENT, T0)
            repo.update_command(cmd.id, CommandState.CONFIRMED, T0, relay_state=relay)


def expected() -> dict[str, int]:
    ids = range(METERS)
    installed = [i for i in ids if i % 10 == 0]
    decom = [i for i in ids if i % 10 and i % 15 == 0]
    commissioned = [i for i in ids if i % 10 and i % 15]
    return {
        "installed": len(installed),
        "commissioned": len(commissioned),
        "stale": sum(1 for i in commissioned if i % 2),
        "disconnected": 2,
        "decommissioned": len(decom),
    }


def test_status_counts_cover_the_whole_fleet_on_both_backends(repo: ReadingRepository) -> None:
    fill(repo)
    counts = fleet_counts(repo, NOW, None)
    assert counts == expected()
    assert list(counts) == ["installed", "commissioned", "stale", "disconnected", "decommissioned"]
    assert fleet_counts(repo, NOW, 7)["authenticated"] == 7
    # nothing received at all: every commissioned meter is stale
    assert repo.status_counts(NOW + 10 * STALE_AFTER_S)["stale"] == expected()["commissioned"]


class FixedEngine:
    """What a running engine tells the dashboard (views.HeadEndView), fixed for the test."""

    def key_generations(self, meter_id: str, now: float) -> list[tuple[str, float]]:
        return []

    def authenticated(self, now: float) -> int:
        return 42

    def counters(self) -> dict[str, int]:
        return {}


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteRepository]:
    r = SqliteRepository(tmp_path)
    yield r
    r.close()


def test_the_fleet_page_shows_the_whole_fleets_counts_on_every_page(
    sqlite: SqliteRepository, access: AccessControl
) -> None:
    fill(sqlite)
    app = create_app(sqlite, access, clock=lambda: NOW, live=FixedEngine())
    with TestClient(app) as client:
        login(client, access, "vic", Role.VIEWER)
        for page in ("/ui/fleet", "/ui/fleet?after=m050", "/ui/fleet?q=m06"):
            text = client.get(page).text
            for state, n in {**expected(), "authenticated": 42}.items():
                assert f'data-count="{state}"' in text
                assert f'<li data-count="{state}"><span class="badge' in text
                shown = text.split(f'data-count="{state}"')[1].split("<strong>")[1]
                assert shown.startswith(f"{n}</strong>"), (page, state, shown[:20])
            assert ">registered</span>" in text


def test_held_counts_the_devices_with_a_valid_generation(sqlite: SqliteRepository) -> None:
    sqlite.register_meter("m-42", str(TITLE.absolute()), "c", "cell", T0)
    keys, directory = _setup(sqlite)
    assert keys.held(T0) == 0
    directory.install(b"m-42", make_ctx(0x42, 1, seed=1), 3600.0, T0)
    keys.lookup(TITLE.device_id, 1, T0)
    assert keys.held(T0) == 1 and keys.held(T0 + 3601) == 0


def test_refreshed_answers_the_kept_value_while_a_thread_computes_the_next() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def compute() -> dict[str, int]:
        calls.append(1)
        if len(calls) > 1:
            gate.wait(5)
        return {"n": len(calls)}

    counts = Refreshed(compute, ttl=0.0)
    assert counts.get() == {"n": 1}  # the first caller waits for it
    time.sleep(0.01)
    assert counts.get() == {"n": 1}  # due: kept value at once, one refresh started
    assert counts.get() == {"n": 1} and len(calls) == 2  # no second refresh meanwhile
    gate.set()
    deadline = time.monotonic() + 5
    while counts.get() != {"n": 2} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counts.get()["n"] >= 2


def test_a_failing_count_does_not_wedge_the_refresh() -> None:
    fail = [True]

    def compute() -> dict[str, int]:
        if fail[0]:
            raise RuntimeError("database gone")
        return {"n": 1}

    counts = Refreshed(compute, ttl=0.0)
    with pytest.raises(RuntimeError):
        counts.get()
    fail[0] = False
    assert counts.get() == {"n": 1}


def test_states_in_the_count_order_are_the_registrys() -> None:
    assert {s.value for s in MeterState} <= set(COUNT_ORDER)


def test_every_background_refresh_runs_on_the_same_thread() -> None:
    """(The repository opens a reader connection per thread and keeps it: a thread per
    refresh would leak one connection every FLEET_COUNTS_S.)"""
    threads: list[int] = []

    def compute() -> dict[str, int]:
        threads.append(threading.get_ident())
        return {"n": len(threads)}

    counts = Refreshed(compute, ttl=0.0)
    counts.get()
    deadline = time.monotonic() + 5
    while len(threads) < 5 and time.monotonic() < deadline:
        counts.get()
        time.sleep(0.01)
    assert len(threads) >= 5 and len(set(threads[1:])) == 1
