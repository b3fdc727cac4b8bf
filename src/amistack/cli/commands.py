"""Registry of sub-commands: each module adds its parser(s) with a `handler`."""

from __future__ import annotations

from typing import Any


def register_all(sub: Any) -> None:
    """Add every sub-command to `sub` (argparse's sub-parsers action)."""
    from amistack.cli import (
        bench,
        broute,
        concentrator,
        demo,
        handheld,
        headend,
        hems,
        keys,
        keyserver,
        log,
        meter,
        pki,
        sim,
        users,
        workorder,
    )

    for module in (
        demo, keyserver, keys, pki, meter, concentrator, headend, users, hems, log, bench,
        broute, sim, handheld, workorder,
    ):  # fmt: skip
        module.register(sub)
