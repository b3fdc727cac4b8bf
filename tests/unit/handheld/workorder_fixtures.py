"""An office (key store, SECADM) and a handheld (SoftHSM2 token, technicians) for work orders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from tests.unit.meter.conftest import SoftHsmToken

from amistack.access import AccessStore, AuditTrail, Principal, Role
from amistack.handheld.technician import TechnicianDesk
from amistack.handheld.workorder import KdfParams, WorkOrder, issue, provision
from amistack.keymgmt.kek import FileKek
from amistack.keymgmt.kek_pkcs11 import Pkcs11Kek
from amistack.keymgmt.store import CredentialStore

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
FAST_KDF = KdfParams(time_cost=1, memory_kib=64, parallelism=1)
TINA_PASSWORD = "tina's long field passphrase"
TOM_PASSWORD = "tom's other long passphrase"
HANDHELD = "handheld-7"
HANDHELD_KEK = "handheld/workorder-kek"
METERS = [f"{0x4D000000 + i:08x}" for i in range(1, 4)]
OTHER_METER = f"{0x4D000000 + 99:08x}"
T0 = 1_800_000_000.0
HOUR = 3600.0


def meter_psk(meter: str) -> bytes:
    return bytes.fromhex(meter) * 4


@dataclass
class Bench:
    office_store: CredentialStore
    secadm: Principal
    desk: TechnicianDesk
    kek: Pkcs11Kek
    order: WorkOrder
    path: Path


def open_handheld_kek(token: SoftHsmToken) -> Pkcs11Kek:
    return Pkcs11Kek.open(token.library, token.label, token.pin, HANDHELD_KEK, os.urandom,
                          create=True)  # fmt: skip


def make_bench(tmp_path: Path, token: SoftHsmToken) -> Iterator[Bench]:
    (tmp_path / "office").mkdir()
    office = CredentialStore(tmp_path / "office" / "keys.db", FileKek(os.urandom(32), os.urandom))
    for meter in [*METERS, OTHER_METER]:
        office.enroll(meter, meter_psk(meter), T0 - HOUR)
    users = AccessStore(tmp_path / "handheld" / "access", hasher=CHEAP)
    users.add_user("tina", TINA_PASSWORD, [Role.OPERATOR], T0 - HOUR)
    users.add_user("tom", TOM_PASSWORD, [Role.OPERATOR], T0 - HOUR)
    desk = TechnicianDesk(users, AuditTrail.open(tmp_path / "handheld", T0 - HOUR), HANDHELD)
    secadm = Principal("sam", frozenset({Role.SECADM}), "session")
    order = issue(secadm, "WO-1", HANDHELD, "tina", METERS, ["read", "events"], T0,
                  T0 + 8 * HOUR, T0 - HOUR)  # fmt: skip
    kek = open_handheld_kek(token)
    path = tmp_path / "handheld" / "orders" / "WO-1.order"
    provision(order, office, kek, TINA_PASSWORD, path, os.urandom, FAST_KDF)
    try:
        yield Bench(office, secadm, desk, kek, order, path)
    finally:
        kek.close()
        users.close()
        desk.audit.close()
        office.close()
