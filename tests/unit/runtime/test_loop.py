"""uvloop is preferred when importable; asyncio's loop remains available."""

from __future__ import annotations

import asyncio

from amistack.runtime.loop import install_uvloop, is_uvloop, new_event_loop, run, uvloop_available


def test_uvloop_is_installed_in_this_environment() -> None:
    # pyproject.toml depends on uvloop on every platform but Windows
    assert uvloop_available()


def test_new_event_loop_prefers_uvloop() -> None:
    for prefer, expected in ((True, True), (False, False)):
        loop = new_event_loop(prefer)
        try:
            assert is_uvloop(loop) is expected
        finally:
            loop.close()


def test_install_uvloop_sets_the_policy() -> None:
    old = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop() is True
        loop = asyncio.new_event_loop()
        try:
            assert is_uvloop(loop)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(old)


def test_run_returns_the_coroutine_result_on_uvloop() -> None:
    async def main() -> bool:
        await asyncio.sleep(0)
        return is_uvloop(asyncio.get_running_loop())

    assert run(main) is True
    assert run(main, prefer_uvloop=False) is False
