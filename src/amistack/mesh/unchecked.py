"""Building a frozen dataclass on a hot path without its `__init__` and `__post_init__`.

A frozen dataclass's `__init__` sets every field through `object.__setattr__` and then runs
its checks; the mesh builds a few of them for every frame sent or heard (frames, security
headers, IPv6 packets), where the values hold the checks by construction (decoded from fields
of a fixed width, or produced by the engine itself). `unchecked` is for those places only.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["unchecked"]

T = TypeVar("T")


def unchecked(cls: type[T], **fields: Any) -> T:
    """An instance of `cls` (a dataclass with a `__dict__`) holding exactly `fields`."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj
