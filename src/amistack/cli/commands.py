"""Registry of sub-commands; each module adds its parsers here."""

from __future__ import annotations

import argparse
from typing import Any

SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register_all(sub: Any) -> None:
    """Add every sub-command to `sub` (argparse's sub-parser action)."""
    del sub  # filled as the services land
    _ = argparse
