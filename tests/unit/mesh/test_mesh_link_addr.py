"""802.15.4 link-layer addresses beside the transport Addr: EUI-64, short address, PAN id."""

from __future__ import annotations

import ipaddress

import pytest

from amistack.addr import BROADCAST_PAN, BROADCAST_SHORT, Eui64, PanId, ShortAddr
from amistack.crypto import seeded_random


def test_eui64_text_interface_id_and_link_local() -> None:
    e = Eui64.parse("ac:de:48:00:00:00:00:01")
    assert e.value == bytes.fromhex("acde480000000001") and str(e) == "ac:de:48:00:00:00:00:01"
    assert Eui64.parse("acde480000000001") == e == Eui64.parse("ac-de-48-00-00-00-00-01")
    # RFC 4291 appendix A: the U/L bit is inverted in the interface identifier
    assert e.interface_id() == bytes.fromhex("aede480000000001")
    assert Eui64.from_interface_id(e.interface_id()) == e
    assert e.link_local() == ipaddress.IPv6Address("fe80::aede:4800:0:1")
    with pytest.raises(ValueError):
        Eui64(bytes(7))
    with pytest.raises(ValueError):
        Eui64.parse("zz")


def test_random_eui64_is_local_unicast_and_seeded() -> None:
    a = Eui64.random(seeded_random(1))
    assert a.value[0] & 0x02 and not a.value[0] & 0x01
    assert a == Eui64.random(seeded_random(1)) != Eui64.random(seeded_random(2))


def test_short_addresses_and_pan_ids() -> None:
    s = ShortAddr(0x0001)
    assert s.interface_id() == bytes.fromhex("000000fffe000001")  # RFC 6282 §3.2.2
    assert BROADCAST_SHORT.is_broadcast and not s.is_broadcast
    assert PanId(0xFFFF) == BROADCAST_PAN and str(PanId(0xABCD)) == "0xabcd"
    for bad in (-1, 0x10000):
        with pytest.raises(ValueError):
            ShortAddr(bad)
        with pytest.raises(ValueError):
            PanId(bad)
