"""Fixtures for the C12.22 tests (the harness is in c1222_harness.py)."""

from __future__ import annotations

import pytest
from tests.unit.c1222.c1222_harness import Pair, make_pair


@pytest.fixture
def pair() -> Pair:
    return make_pair()
