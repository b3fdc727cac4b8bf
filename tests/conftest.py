"""Shared test fixtures: the known-answer vectors in tests/vectors and peer discovery."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Timing is measured by `amistack bench`, never asserted in tests: Hypothesis's default 200 ms
# deadline per example failed fuzz tests on a loaded 2-core machine (347 ms), so it is off.
settings.register_profile("amistack", deadline=None)
settings.load_profile("amistack")

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
        unavailable(f"interop peer {name!r} is not installed (make setup installs it as root)")
    return found


def unavailable(msg: str) -> None:
    """A missing peer or host feature: skip outside CI, fail under CI=true."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def require_ipv6_loopback() -> None:
    """Skip outside CI on a host without ::1; under CI=true the IPv6 half must run."""
    if not has_ipv6_loopback():
        unavailable("no IPv6 loopback (::1) on this host")


def loopback_hosts() -> list[str]:
    """127.0.0.1 and ::1; IPv4 alone outside CI on a host without ::1 (under CI=true: a failure)."""
    if has_ipv6_loopback():
        return ["127.0.0.1", "::1"]
    if IN_CI:
        pytest.fail("no IPv6 loopback (::1) on the CI host")
    return ["127.0.0.1"]


KEY_OPERATOR = "keyops"


def key_operator(data_dir: Path, *roles: Any, name: str = KEY_OPERATOR) -> Path:
    """A user `name` holding `roles` (default SECADM and SECAUD) in DATA_DIR/access.db, and an
    owner-only file with a bearer token of it: what `amistack keys --token-file` takes."""
    import time

    from argon2 import PasswordHasher

    from amistack.access import AccessError, AccessStore, Role

    store = AccessStore(data_dir, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    try:
        with contextlib.suppress(AccessError):  # already there
            store.add_user(name, "correct horse battery", roles or {Role.SECADM, Role.SECAUD}, 0)
        token = store.issue_token(name, time.time()).token
    finally:
        store.close()
    path = data_dir.parent / f"{data_dir.name}-{name}.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def secret_file(directory: Path, text: str, name: str = "psk") -> Path:
    """An owner-only file holding `text` (a PSK for --psk-file)."""
    path = directory / f"{name}-{text[:8]}"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path
