"""A test that cannot run its real part on this host skips with the reason outside CI and FAILS
under CI=true: missing peers, no IPv6 loopback, the interpreted (not mypyc-compiled) codec.
The IPv6 case runs the real tests in a network namespace whose loopback has IPv6 disabled."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tests.conftest as shared
from tests.conftest import REPO, require_tool, unavailable
from tests.unit.echonet import test_codec_compiled

# the IPv6 halves of a few tests that use each helper (require_ipv6_loopback, loopback_hosts)
IPV6_TESTS = [
    "tests/unit/runtime/test_udp.py::test_round_trip_and_retransmission",
    "tests/unit/runtime/test_services.py::test_key_server_serves_ipv4_and_ipv6_on_one_port",
]
NO_IPV6 = 'ip link set lo up && sysctl -q -w net.ipv6.conf.lo.disable_ipv6=1 && exec "$@"'


def _pytest_without_ipv6(ci: str) -> subprocess.CompletedProcess[str]:
    require_tool("unshare")
    if os.geteuid() != 0:
        unavailable("a network namespace without IPv6 needs root")
    env = {**os.environ, "CI": ci}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider"]
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", NO_IPV6, "sh", *cmd, *IPV6_TESTS, "-k", "ipv6"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ipv6_loopback_missing_fails_under_ci() -> None:
    out = _pytest_without_ipv6("true")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "3 failed" in out.stdout, out.stdout
    assert "no IPv6 loopback (::1)" in out.stdout


def test_ipv6_loopback_missing_skips_outside_ci() -> None:
    out = _pytest_without_ipv6("")
    assert out.returncode == 0, out.stdout + out.stderr
    # the IPv6 parametrizations skip; the dual-stack test keeps its IPv4 half
    assert "1 passed, 2 skipped" in out.stdout, out.stdout


@pytest.mark.parametrize("ci", [True, False])
def test_interpreted_codec_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: bool) -> None:
    monkeypatch.setattr(shared, "IN_CI", ci)
    monkeypatch.setattr(test_codec_compiled, "codec_compiled", lambda: False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="not compiled"):
        test_codec_compiled.test_the_compiled_codec_is_not_older_than_its_source()
    with pytest.raises(expected, match="not compiled"):
        test_codec_compiled.test_the_compiled_codec_is_built_under_ci()
