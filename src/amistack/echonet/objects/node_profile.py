"""The node profile object 0x0EF001 (ECHONET Lite spec part 2, §6.11.1): what a node is and which
device objects it holds (D3-D7)."""

from __future__ import annotations

from collections.abc import Sequence

from amistack.echonet.frame import Eoj
from amistack.echonet.objects.base import (
    OPERATION_ON,
    Access,
    DeviceObject,
    PropertySpec,
    identification_number,
)

__all__ = ["MAX_LISTED_INSTANCES", "NODE_PROFILE", "NodeProfile"]

NODE_PROFILE = Eoj(0x0E, 0xF0, 0x01)  # general node; 0x02 would be a transmission-only node
MAX_LISTED_INSTANCES = 84  # D5/D6 carry at most 84 EOJs (guideline §2.5)
MAX_LISTED_CLASSES = 8  # D7 carries at most 8 class codes
# Version information 0x82: ECHONET Lite 1.14, specified message format (format 1) supported.
DEFAULT_VERSION = bytes((0x01, 0x0E, 0x01, 0x00))


class NodeProfile(DeviceObject):
    """The node profile; `instances` are the node's device objects (never the profile itself).
    Changing them with `set_instances` queues an announcement of D5."""

    def __init__(
        self,
        instances: Sequence[Eoj],
        *,
        manufacturer: bytes = b"\xff\xff\xff",
        unique_id: bytes = b"",
        version: bytes = DEFAULT_VERSION,
        tz_offset_s: int = 9 * 3600,
    ) -> None:
        specs = [
            PropertySpec(0x80, "operation status", Access.GET | Access.ANNO, (1,)),
            PropertySpec(0x82, "version information", Access.GET),
            PropertySpec(0x83, "identification number", Access.GET),
            PropertySpec(0x8A, "manufacturer code", Access.GET),
            PropertySpec(0xD3, "number of self-node instances", Access.GET),
            PropertySpec(0xD4, "number of self-node classes", Access.GET),
            PropertySpec(0xD5, "instance list notification", Access.ANNO),
            PropertySpec(0xD6, "self-node instance list S", Access.GET),
            PropertySpec(0xD7, "self-node class list S", Access.GET),
        ]
        super().__init__(NODE_PROFILE, specs, manufacturer=manufacturer, tz_offset_s=tz_offset_s)
        if len(version) != 4:
            raise ValueError("version information is 4 bytes")
        self.instances: tuple[Eoj, ...] = tuple(dict.fromkeys(instances))
        self._values.update(
            {
                0x80: bytes((OPERATION_ON,)),
                0x82: version,
                0x83: identification_number(manufacturer, unique_id),
                0x8A: manufacturer,
            }
        )

    def set_instances(self, instances: Sequence[Eoj]) -> None:
        new = tuple(dict.fromkeys(instances))
        if new != self.instances:
            self.instances = new
            self._pending.append(0xD5)

    def classes(self) -> list[int]:
        """Class codes of the device objects, in first-seen order (the profile excluded)."""
        return list(dict.fromkeys(e.class_code for e in self.instances))

    def instance_list(self) -> bytes:
        """D5/D6: count + EOJs, the first 84 (a node with more announces a D5 per 84, §2.5)."""
        listed = self.instances[:MAX_LISTED_INSTANCES]
        return bytes((len(listed),)) + b"".join(e.encode() for e in listed)

    def _read_dynamic(self, epc: int, now: float) -> bytes | None:
        if epc == 0xD3:
            return len(self.instances).to_bytes(3, "big")
        if epc == 0xD4:
            return (len(self.classes()) + 1).to_bytes(2, "big")  # + the node profile class
        if epc in (0xD5, 0xD6):
            return self.instance_list()
        if epc == 0xD7:
            cl = self.classes()[:MAX_LISTED_CLASSES]
            return bytes((len(cl),)) + b"".join(c.to_bytes(2, "big") for c in cl)
        return None
