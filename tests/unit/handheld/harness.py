"""The tests' field: the builder is in src (`amistack.sim.handheld_field`), shared with the demo."""

from amistack.sim.handheld_field import (
    HANDHELD_ID,
    HANDHELD_PSK,
    HEADEND,
    KEYSERVER,
    Field,
    Office,
    build_field,
    global_of,
)

__all__ = [
    "HANDHELD_ID",
    "HANDHELD_PSK",
    "HEADEND",
    "KEYSERVER",
    "Field",
    "Office",
    "build_field",
    "global_of",
]
