"""amistack.broute -- the B route between a smart meter and a HEMS controller.

  credentials.py  BrouteCredentials (B-route ID + password), psk_from_password
  link.py         the link frame: PANA in the clear, data in AES-CCM* (802.15.4 level 6)
  meter.py        BrouteMeter: PAA + secured link + the ECHONET Lite node (one engine)
  hems.py         BrouteHems: PaC + secured link, keep-alive (§6.4), reconnection stages (§6.5)
  events.py       what both engines report

docs/broute.md describes the design and the guideline chapter-6 cases.
"""

from amistack.broute.credentials import BrouteCredentials, CredentialError, psk_from_password
from amistack.broute.events import (
    AttemptFailed,
    HemsAuthFailed,
    HemsConnected,
    HemsDisconnected,
    KeyRotated,
    LinkDown,
    LinkUp,
    Received,
    ReconnectFailed,
    ReconnectStage,
    ReconnectStageEnded,
    RescanRequested,
    Stage,
)
from amistack.broute.hems import BrouteHems, BrouteHemsConfig, LinkState, NotConnected
from amistack.broute.link import DropReason, LinkDecodeError
from amistack.broute.meter import BrouteMeter, BrouteMeterConfig

__all__ = [
    "AttemptFailed",
    "BrouteCredentials",
    "BrouteHems",
    "BrouteHemsConfig",
    "BrouteMeter",
    "BrouteMeterConfig",
    "CredentialError",
    "DropReason",
    "HemsAuthFailed",
    "HemsConnected",
    "HemsDisconnected",
    "KeyRotated",
    "LinkDecodeError",
    "LinkDown",
    "LinkState",
    "LinkUp",
    "NotConnected",
    "Received",
    "ReconnectFailed",
    "ReconnectStage",
    "ReconnectStageEnded",
    "RescanRequested",
    "Stage",
    "psk_from_password",
]
