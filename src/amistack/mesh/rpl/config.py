"""RPL parameters: RFC 6550 §17 defaults, and the sets two deployed stacks use as presets.

- `RFC6550`: the RFC defaults (Imin 2^3 ms, 20 doublings, k 10, MinHopRankIncrease 256).
- `WSBRD_SMALL` / `WSBRD_MEDIUM` / `WSBRD_LARGE`: the Wi-SUN border router's network-size
  profiles, from SiliconLabs/wisun-br-linux stack/source/6lowpan/ws/ws_config.h
  (WS_RPL_DIO_IMIN_*, WS_RPL_DIO_DOUBLING_*, WS_RPL_DIO_REDUNDANCY_*,
  WS_RPL_MIN_HOP_RANK_INCREASE 196, WS_RPL_MAX_HOP_RANK_INCREASE 2048, WS_RPL_DEFAULT_LIFETIME*,
  WS_MAX_PARENT_SET_COUNT 2, WS_MAX_DAO_RETRIES 3, WS_MAX_DAO_INITIAL_TIMEOUT 40 s) and
  ws_bbr_api.c (MRHOF, path control size 7, lifetime unit 60 s). Wi-SUN runs non-storing.
- `CONTIKI_NG`: rpl-lite's defaults, from contiki-ng/contiki-ng os/net/routing/rpl-lite/
  rpl-conf.h (RPL_DIO_INTERVAL_MIN 12, RPL_DIO_INTERVAL_DOUBLINGS 8, RPL_DIO_REDUNDANCY 0,
  RPL_MIN_HOPRANKINC 128 with MRHOF, RPL_MAX_RANKINC 8 * 128, lifetime 30 x 60 s,
  RPL_DAO_DELAY 4 s, RPL_DAO_MAX_RETRANSMISSIONS 5, RPL_DAO_RETRANSMISSION_TIMEOUT 5 s,
  RPL_DIS_INTERVAL 30 s), non-storing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amistack.mesh.rpl.constants import (
    DEFAULT_DAO_DELAY,
    DEFAULT_DEFAULT_LIFETIME,
    DEFAULT_DIO_INTERVAL_DOUBLINGS,
    DEFAULT_DIO_INTERVAL_MIN,
    DEFAULT_DIO_REDUNDANCY_CONSTANT,
    DEFAULT_LIFETIME_UNIT,
    DEFAULT_MAX_RANK_INCREASE,
    DEFAULT_MIN_HOP_RANK_INCREASE,
    DEFAULT_PATH_CONTROL_SIZE,
    MRHOF_PARENT_SET_SIZE,
    Mop,
    Ocp,
)
from amistack.mesh.rpl.messages import DodagConfiguration
from amistack.mesh.rpl.trickle import TrickleConfig


@dataclass(frozen=True)
class RplConfig:
    """Everything a node needs besides its addresses. The DODAG Configuration fields are what
    a root advertises; joining nodes take those from the root's DIO instead (§8.2.1)."""

    instance_id: int = 0  # §6.3.1; Contiki-NG's RPL_DEFAULT_INSTANCE 0 compresses best
    mop: Mop = Mop.NON_STORING
    ocp: Ocp = Ocp.MRHOF
    dio_interval_min: int = DEFAULT_DIO_INTERVAL_MIN
    dio_interval_doublings: int = DEFAULT_DIO_INTERVAL_DOUBLINGS
    dio_redundancy_constant: int = DEFAULT_DIO_REDUNDANCY_CONSTANT
    min_hop_rank_increase: int = DEFAULT_MIN_HOP_RANK_INCREASE
    max_rank_increase: int = DEFAULT_MAX_RANK_INCREASE
    default_lifetime: int = DEFAULT_DEFAULT_LIFETIME
    lifetime_unit: int = DEFAULT_LIFETIME_UNIT
    path_control_size: int = DEFAULT_PATH_CONTROL_SIZE
    parent_set_size: int = MRHOF_PARENT_SET_SIZE  # RFC 6719 §5 PARENT_SET_SIZE
    dao_delay: float = DEFAULT_DAO_DELAY  # §17 DEFAULT_DAO_DELAY
    dao_ack: bool = True  # ask for DAO-ACK (the K flag, §6.4)
    # non-storing: each DAO's Target is followed by a Target Descriptor (§6.7.8, opaque to RPL)
    # with this node's rank and its parent link's ETX, for the root's topology report
    # (node.describe_target; docs/mesh.md "Topology reports")
    describe_targets: bool = False
    dao_retransmissions: int = 3
    dao_ack_timeout: float = 5.0
    dis_interval: float = 30.0  # solicit while unattached (§8.3: DIS is optional; no default)
    neighbor_lifetime: float = 3600.0  # forget a neighbour not heard for this long
    detach_hold_down: float = 5.0  # after poisoning, ignore DIOs this long (§8.2.2.5)
    # bounds on what untrusted neighbours can make this node store (never unbounded)
    max_neighbors: int = 64
    max_routes: int = 16384  # a concentrator serves thousands of meters (the 10,000-node bench)
    max_targets_per_dao: int = 16
    dao_rate_per_source: float = 1.0  # DAOs per second a single source may sustain
    dao_burst_per_source: int = 5

    @property
    def trickle(self) -> TrickleConfig:
        return TrickleConfig.for_rpl(
            self.dio_interval_min, self.dio_interval_doublings, self.dio_redundancy_constant
        )

    @property
    def route_lifetime(self) -> float | None:
        """Seconds a DAO route lives (§6.7.6 Default Lifetime x Lifetime Unit); None = ever."""
        if self.default_lifetime == DEFAULT_DEFAULT_LIFETIME:
            return None
        return float(self.default_lifetime * self.lifetime_unit)

    def dodag_configuration(self) -> DodagConfiguration:
        return DodagConfiguration(
            False, self.path_control_size, self.dio_interval_doublings, self.dio_interval_min,
            self.dio_redundancy_constant, self.max_rank_increase, self.min_hop_rank_increase,
            self.ocp, self.default_lifetime, self.lifetime_unit,
        )  # fmt: skip

    def adopt(self, advertised: DodagConfiguration, mop: int) -> RplConfig:
        """This node's configuration inside a DODAG whose root advertised `advertised`."""
        return replace(
            self,
            mop=Mop(mop),
            ocp=Ocp(advertised.ocp),
            dio_interval_min=advertised.dio_interval_min,
            dio_interval_doublings=advertised.dio_interval_doublings,
            dio_redundancy_constant=advertised.dio_redundancy_constant,
            min_hop_rank_increase=advertised.min_hop_rank_increase,
            max_rank_increase=advertised.max_rank_increase,
            default_lifetime=advertised.default_lifetime,
            lifetime_unit=advertised.lifetime_unit,
            path_control_size=advertised.path_control_size,
        )


RFC6550 = RplConfig()

_WSBRD = RplConfig(
    mop=Mop.NON_STORING,
    ocp=Ocp.MRHOF,
    min_hop_rank_increase=196,
    max_rank_increase=2048,
    lifetime_unit=60,
    path_control_size=7,
    parent_set_size=2,
    dao_retransmissions=3,
    dao_ack_timeout=40.0,
)
WSBRD_SMALL = replace(
    _WSBRD, dio_interval_min=15, dio_interval_doublings=2, dio_redundancy_constant=0,
    default_lifetime=120,  # 2 hours in 60 s units
)  # fmt: skip
WSBRD_MEDIUM = replace(
    _WSBRD, dio_interval_min=17, dio_interval_doublings=3, dio_redundancy_constant=10,
    default_lifetime=240,  # 4 hours
)  # fmt: skip
WSBRD_LARGE = replace(
    _WSBRD, dio_interval_min=18, dio_interval_doublings=3, dio_redundancy_constant=10,
    # 8 hours (WS_RPL_DEFAULT_LIFETIME_LARGE) is 480 units of 60 s, past the 8-bit field
    lifetime_unit=120, default_lifetime=240,
)  # fmt: skip
CONTIKI_NG = RplConfig(
    mop=Mop.NON_STORING,
    ocp=Ocp.MRHOF,
    dio_interval_min=12,
    dio_interval_doublings=8,
    dio_redundancy_constant=0,
    min_hop_rank_increase=128,
    max_rank_increase=8 * 128,
    default_lifetime=30,
    lifetime_unit=60,
    dao_delay=4.0,
    dao_retransmissions=5,
    dao_ack_timeout=5.0,
    dis_interval=30.0,
)

PRESETS: dict[str, RplConfig] = {
    "rfc6550": RFC6550,
    "wsbrd-small": WSBRD_SMALL,
    "wsbrd-medium": WSBRD_MEDIUM,
    "wsbrd-large": WSBRD_LARGE,
    "contiki-ng": CONTIKI_NG,
}
