"""The node profile 0x0EF001 and the device super class rules."""

from __future__ import annotations

from amistack.echonet.frame import Eoj
from amistack.echonet.objects import (
    NODE_PROFILE,
    Access,
    DeviceObject,
    NodeProfile,
    PropertySpec,
    SetStatus,
)
from amistack.echonet.objects.base import super_specs
from amistack.echonet.propmap import decode_propmap

METER = Eoj(0x02, 0x88, 0x01)
NOW = 1_710_040_200.0


def test_node_profile_properties() -> None:
    p = NodeProfile([METER], manufacturer=b"\x00\x00\x77", unique_id=b"node-1")
    assert p.eoj == NODE_PROFILE == Eoj(0x0E, 0xF0, 0x01)
    assert decode_propmap(p.get(0x9F, NOW) or b"") == {
        0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD6, 0xD7,
    }  # fmt: skip
    assert decode_propmap(p.get(0x9D, NOW) or b"") == {0x80, 0xD5}
    assert decode_propmap(p.get(0x9E, NOW) or b"") == set()
    assert p.get(0x80, NOW) == b"\x30"
    assert p.get(0x82, NOW) == bytes((0x01, 0x0E, 0x01, 0x00))
    assert p.get(0x83, NOW) == b"\xfe\x00\x00\x77" + b"node-1".rjust(13, b"\x00")
    assert p.get(0x8A, NOW) == b"\x00\x00\x77"
    assert p.get(0xD3, NOW) == b"\x00\x00\x01"
    assert p.get(0xD4, NOW) == b"\x00\x02"
    assert p.get(0xD6, NOW) == b"\x01\x02\x88\x01"
    assert p.get(0xD7, NOW) == b"\x01\x02\x88"
    # D5 is announce-only: no Get, but the node reads it for its INF.
    assert p.get(0xD5, NOW) is None and p.read(0xD5, NOW) == b"\x01\x02\x88\x01"


def test_instance_lists_cap_at_84_and_announce() -> None:
    many = [Eoj(0x02, 0x88, i) for i in range(1, 101)] + [Eoj(0x01, 0x30, 1)]
    p = NodeProfile([METER])
    assert p.pop_announcements() == []
    p.set_instances(many)
    assert p.pop_announcements() == [0xD5]
    d6 = p.get(0xD6, NOW) or b""
    assert d6[0] == 84 and len(d6) == 1 + 84 * 3
    assert p.get(0xD3, NOW) == (101).to_bytes(3, "big")
    assert p.get(0xD4, NOW) == b"\x00\x03"
    assert p.get(0xD7, NOW) == b"\x02\x02\x88\x01\x30"
    p.set_instances(many)
    assert p.pop_announcements() == []


def test_a_plain_device_object() -> None:
    specs = [
        *super_specs(),
        PropertySpec(0xB0, "mode", Access.GET | Access.SET, (1,), values=frozenset({0x41, 0x42})),
        PropertySpec(0xB3, "temperature", Access.GET | Access.SET | Access.ANNO, (1,), 0, 50),
    ]
    obj = DeviceObject(Eoj(0x01, 0x30, 0x01), specs)
    assert decode_propmap(obj.get(0x9E, NOW) or b"") == {0x81, 0xB0, 0xB3}
    assert decode_propmap(obj.get(0x9D, NOW) or b"") == {0x80, 0x81, 0x88, 0xB3}
    assert obj.set(0xB0, b"\x41", NOW).ok and obj.get(0xB0, NOW) == b"\x41"
    assert obj.set(0xB0, b"\x43", NOW).status is SetStatus.INVALID
    assert obj.set(0xB3, b"\x33", NOW).status is SetStatus.INVALID
    assert obj.clamp(0xB3, b"\x33") == b"\x32"
    assert obj.set(0xB3, b"\x32", NOW).changed
    assert obj.pop_announcements() == [0xB3]
    assert obj.check(0xB3, b"\x10").ok and obj.get(0xB3, NOW) == b"\x32"
    # 0x97/0x98 from the engine clock in local time (JST by default).
    assert obj.get(0x97, NOW) == bytes((12, 10))
    assert obj.get(0x98, NOW) == b"\x07\xe8\x03\x0a"
