"""What the README tells a new user holds: the test time it states, a clone that needs nothing
beside it, the readings query it shows (run against the real API), the demo's captures."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from tests.conftest import REPO
from tests.unit.headend.conftest import auth, make_access, reading

from amistack.access import Role
from amistack.headend.api import create_app
from amistack.headend.storage import SqliteRepository

README = (REPO / "README.md").read_text()


def test_the_stated_test_time_and_a_self_contained_clone() -> None:
    development = README.split("## Development", 1)[1]
    assert "about a minute" not in README
    assert "3-4 minutes" in development
    assert "nothing outside the checkout is read" in development  # a clone passes on its own


def test_the_readings_example_runs_against_the_api(tmp_path: Path) -> None:
    bearer = r"curl -H \"Authorization: Bearer \$TOKEN\" "
    example = re.search(bearer + r"'(localhost:8080(/meters/([\w-]+)/readings\?[^']+))'", README)
    assert example is not None, "the README shows how to read readings back, with a token"
    path, meter = example.group(2), example.group(3)
    assert "start=" in path and "end=" in path
    repo = SqliteRepository(tmp_path)
    access = make_access(tmp_path, lambda: 1000.0)
    try:
        repo.register_meter(meter, "2.16.124.113620.1.22.0.7", "conc-1", "cell-1", 0.0)
        repo.store_readings([reading(meter, i) for i in range(4)], 1000.0)
        viewer = auth(access, "vera", Role.VIEWER)
        with TestClient(create_app(repo, access, clock=lambda: 1000.0)) as client:
            assert client.get(path).status_code == 401  # no token, no readings
            got = client.get(path, headers=viewer)
            assert got.status_code == 200, got.text
            assert len(got.json()["items"]) == 4  # the example's range holds the day's readings
            no_range = client.get(path.split("?", 1)[0], headers=viewer)
            assert no_range.status_code in (400, 422)  # both bounds are required, as it says
    finally:
        access.audit.close()
        access.store.close()
        repo.close()


def test_the_demo_sentence_names_what_the_demo_writes() -> None:
    intro = README.split("## What it does today", 1)[0]
    assert "ephemeral" in intro
    for name in ("pana.pcap", "broute.pcap", "c1222/<meter>.pcap", "c1222/<meter>-keys.csv"):
        assert name in intro
    assert "`c1222-keys.csv`" not in intro  # one table cannot decrypt several meters
