"""Glue from the mesh group keys (keymgmt/groupkeys.py) to a node's link layer.

A meter's `MeterAccess` holds the group keys its key server delivered; `apply_group_keys` makes
a `MeshLink` use them: each key is installed at its 802.15.4 key index (key id mode 1), any
index no longer delivered is removed (so frames under a discarded or expired key are refused as
`unknown-key`), and frames are sent under the newest key that has started. Call it whenever the
keys change (`meter.events.GroupKeysChanged`) and when a delivered key's start time comes
(`next_switch`): the next key is installed ahead of its start, so neighbours accept it before
anyone sends under it (docs/mesh-keys.md, "Rotation timeline").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from amistack.keymgmt.groupkeys import GroupKey
from amistack.mesh.link import MeshLink

__all__ = ["apply_group_keys", "next_switch"]


def apply_group_keys(link: MeshLink, keys: Iterable[GroupKey], now: float) -> int | None:
    """Install `keys` (the live ones) in `link`'s security, drop every other index, and send
    under the newest started key; returns that key index (None: no key has started, the link
    keeps its send index and sends nothing secured that a neighbour would accept)."""
    live = [k for k in keys if k.not_after > now]
    security = link.security
    wanted = {k.index for k in live}
    for index in security.key_indexes():
        if index not in wanted:
            security.remove_key(index)
    for k in live:
        security.install_key(k.index, k.key)
    started = [k for k in live if k.not_before <= now]
    if not started:
        return None
    send = max(started, key=lambda k: k.not_before).index
    if link.config.key_index != send:
        link.config = replace(link.config, key_index=send)
    return send


def next_switch(keys: Iterable[GroupKey], now: float) -> float | None:
    """When `apply_group_keys` must run again: the next start or end of a key after `now`."""
    times = [t for k in keys for t in (k.not_before, k.not_after) if t > now]
    return min(times, default=None)
