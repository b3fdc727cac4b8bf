"""Shared test fixtures: the known-answer vectors in tests/vectors and peer discovery."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_vector(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"known-answer vector {path} is missing from tests/vectors")
    return json.loads(path.read_text())


def require_tool(name: str) -> str:
    """Path of an external peer; skip outside CI when missing, fail under CI=true."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        msg = f"interop peer {name!r} is not installed (make setup installs it as root)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return found
