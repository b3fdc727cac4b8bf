"""One readable log line per engine event: `Name field=value ...`, never a dataclass repr (an
event class with its own `__str__` is shown by that).

Session ids in hex (PANA's Unsigned32 as 0x%08x, EAP/RADIUS Session-Ids as hex octets), device
ids and other text as text (bytes that are not printable UTF-8 as hex, never mojibake),
addresses as host:port ([v6]:port), enums by name, and no key material: a security context is
shown by its key id only.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

from amistack.addr import text_or_hex

_HIDDEN = frozenset({"key", "msk", "psk", "emsk"})  # never logged, whatever the event


def _value(name: str, value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, int):
        return f"{value:#010x}" if name == "session_id" else str(value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, bytes | bytearray):
        return text_or_hex(bytes(value), force_hex=name == "session_id")
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return ",".join(value) or "-"  # e.g. the purposes of a key generation
    key_id = getattr(value, "key_id", None)
    if key_id is not None and not isinstance(value, str) and dataclasses.is_dataclass(value):
        return str(key_id)  # a security context: its key id, never its keys
    text = str(value)
    return repr(text) if " " in text else text


def event_text(event: object) -> str:
    """`Name field=value ...` (see the module docstring)."""
    name = type(event).__name__
    if type(event).__str__ is not object.__str__:
        return str(event)  # the event says it best itself (e.g. meter.events.AccessRefused)
    if not dataclasses.is_dataclass(event):
        return f"{name} {event!r}"
    parts = [name]
    for f in dataclasses.fields(event):
        if f.name in _HIDDEN:
            continue
        value = getattr(event, f.name)
        if f.name == "context":
            parts.append(f"key_id={getattr(value, 'key_id', None)}")
            continue
        parts.append(f"{f.name}={_value(f.name, value)}")
    return " ".join(parts)


__all__ = ["event_text", "text_or_hex"]
