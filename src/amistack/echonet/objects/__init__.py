"""ECHONET Lite objects: the device super class, the node profile and the smart meter."""

from __future__ import annotations

from amistack.echonet.objects.base import (
    Access,
    DeviceObject,
    PropertySpec,
    RemoteControl,
    RemoteControlPolicy,
    SetResult,
    SetStatus,
    SuperEpc,
)
from amistack.echonet.objects.node_profile import NODE_PROFILE, NodeProfile
from amistack.echonet.objects.smart_meter import (
    NO_DATA_S16,
    NO_DATA_S32,
    NO_DATA_U32,
    OneWayMode,
    SmartMeterConfig,
    SmartMeterObject,
)

__all__ = [
    "NODE_PROFILE",
    "NO_DATA_S16",
    "NO_DATA_S32",
    "NO_DATA_U32",
    "Access",
    "DeviceObject",
    "NodeProfile",
    "OneWayMode",
    "PropertySpec",
    "RemoteControl",
    "RemoteControlPolicy",
    "SetResult",
    "SetStatus",
    "SmartMeterConfig",
    "SmartMeterObject",
    "SuperEpc",
]
