"""A key server with mesh group keys and `n` meters (MeterAccess engines) on the virtual UDP
network: real PAA, EAP-PSK, SQLite credential store, PaCs (for the group-key tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from amistack.addr import Addr
from amistack.crypto import RandomSource, seeded_random
from amistack.eap import EapPeer, EapPskPeer, EapType
from amistack.keymgmt.groupkeys import GroupKeyConfig, GroupKeyManager
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.server import KeyServer
from amistack.keymgmt.store import CredentialStore
from amistack.keymgmt.ukmf import PurposeRegistry
from amistack.meter.access import AccessConfig, MeterAccess
from amistack.pana.constants import MessageType
from amistack.pana.message import PanaMessage
from amistack.pana.pac import PacConfig, PanaClient
from amistack.sim import LinkConfig, VirtualClock, VirtualNetwork

KS: Addr = ("2001:db8::1", 716)
PAN_ID = 0xFACE
T0 = 1_790_000_000.0
SESSION_LIFETIME = 3600.0
CONFIG = GroupKeyConfig(
    lifetime=86400.0, install_fraction=0.8, rotation_delay=5.0, activation_delay=120.0
)


def psk(i: int) -> bytes:
    return hashlib.sha256(b"group keys" + i.to_bytes(4, "big")).digest()[:16]


def meter_id(i: int) -> str:
    return f"meter-{i:04d}"


def meter_addr(i: int) -> Addr:
    return (f"2001:db8:1::{i + 1:x}", 716)


class Bed:
    def __init__(
        self,
        n: int,
        tmp_path: Path,
        *,
        config: GroupKeyConfig = CONFIG,
        capture: int = 0,
        seed: int = 1,
    ) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.kek = FileKek.create(tmp_path / "kek.key", seeded_random(seed))
        self.store = CredentialStore(tmp_path / "keys.db", self.kek)
        for i in range(n):
            self.store.enroll(meter_id(i), psk(i), T0)
        self.net = VirtualNetwork(
            VirtualClock(T0), seed=seed, default_link=LinkConfig(latency=0.01), capture=capture
        )
        self.server = self.new_server(seed)
        self.net.add_node(KS, self.server)
        self.meters: list[MeterAccess] = []
        for i in range(n):
            ident = meter_id(i).encode()
            m_rng = seeded_random(seed * 1000 + i)

            def new_pac(
                ident: bytes = ident, key: bytes = psk(i), r: RandomSource = m_rng
            ) -> PanaClient:
                def eap() -> EapPeer:
                    return EapPeer(ident, {EapType.PSK: lambda: EapPskPeer(ident, key, r)})

                return PanaClient(PacConfig(), eap, r, KS)

            access = MeterAccess(
                ident.decode(), new_pac, KeyRing(ident, PurposeRegistry()), m_rng, AccessConfig()
            )
            self.meters.append(access)
            self.net.add_node(meter_addr(i), access)
            self.net.call_at(T0 + 0.01 * i, meter_addr(i), access.start)

    def new_server(self, seed: int) -> KeyServer:
        now = self.net.now
        server = KeyServer(
            self.store, rng=seeded_random(seed * 7), session_lifetime=SESSION_LIFETIME, now=now
        )
        manager = GroupKeyManager(
            [PAN_ID], rng=seeded_random(seed * 11), now=now, config=self.config,
            persistence=self.store,
        )  # fmt: skip
        server.enable_group_keys(manager)
        return server

    @property
    def manager(self) -> GroupKeyManager:
        assert self.server.group_keys is not None
        return self.server.group_keys

    def restart_server(self, seed: int = 5) -> None:
        """The key server process restarts (same database, same KEK)."""
        self.net.remove_node(KS)
        self.store.close()
        self.store = CredentialStore(self.tmp_path / "keys.db", self.kek)
        self.server = self.new_server(seed)
        self.net.add_node(KS, self.server)

    def joined(self) -> int:
        return sum(1 for m in self.meters if m.group_keys.serial is not None)

    def holding(self, serial: int) -> int:
        return sum(1 for m in self.meters if m.group_keys.serial == serial)

    def success_pars(self, i: int) -> list[bytes]:
        """The captured PARs with the C flag sent to meter `i`."""
        return [
            data
            for _, _, dst, data in self.net.capture
            if dst == meter_addr(i)
            and (msg := PanaMessage.decode(data)).msg_type == MessageType.AUTH
            and msg.is_request
            and msg.flags & 0x2000
        ]
