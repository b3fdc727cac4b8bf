"""Offline work orders (claim 6), attacked: stolen file, other technician, expiry, tampering."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.handheld.workorder_fixtures import (
    FAST_KDF,
    HANDHELD,
    HOUR,
    METERS,
    OTHER_METER,
    T0,
    TINA_PASSWORD,
    TOM_PASSWORD,
    Bench,
    make_bench,
    meter_psk,
)
from tests.unit.meter.conftest import init_token

from amistack.access import LoginRefused, Principal, Role
from amistack.crypto import pkcs11_token
from amistack.handheld.workorder import (
    WorkOrderError,
    check_clock,
    issue,
    open_work_order,
    provision,
    read_header,
)
from amistack.keymgmt.kek import FileKek
from amistack.securemodule.software import SoftwareModule


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    (tmp_path / "tok").mkdir()
    token = init_token(tmp_path / "tok", monkeypatch)
    yield from make_bench(tmp_path, token)
    leaked = pkcs11_token.open_logins()
    pkcs11_token.close_all()
    assert leaked == 0


def outcomes(b: Bench) -> list[tuple[str, str, str]]:
    return [(e.who, e.action, e.outcome) for e in b.desk.audit.entries()]


def test_the_named_technician_opens_exactly_the_orders_meters(bench: Bench) -> None:
    opened = open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 60)
    assert opened.psks == {m: meter_psk(m) for m in METERS}
    assert OTHER_METER not in opened.psks
    assert opened.order == bench.order
    assert "psk" not in repr(opened).lower() and meter_psk(METERS[0]).hex() not in repr(opened)
    assert outcomes(bench)[-2:] == [("tina", "login", "ok"), ("tina", "workorder_open", "ok")]


def test_file_and_directory_are_owner_only_and_hold_no_psk(bench: Bench) -> None:
    assert stat.S_IMODE(bench.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(bench.path.parent.stat().st_mode) == 0o700
    raw = bench.path.read_bytes()
    for m in METERS:
        for form in (meter_psk(m), meter_psk(m).hex().encode(), base64.b64encode(meter_psk(m))):
            assert form not in raw


def test_stolen_file_without_the_technicians_login_does_not_open(bench: Bench) -> None:
    with pytest.raises(LoginRefused):
        open_work_order(bench.path, bench.kek, bench.desk, "tina", "a guessed passphrase", T0)
    assert outcomes(bench)[-1] == ("tina", "login", "failed")


def test_stolen_file_on_another_token_does_not_open(
    bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thief has the file AND tina's password, but not the handheld's token."""
    other = FileKek(os.urandom(32), os.urandom)
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, other, bench.desk, "tina", TINA_PASSWORD, T0 + 60)
    assert exc.value.reason == "tampered"
    assert outcomes(bench)[-1] == ("tina", "workorder_open", "tampered")


def test_another_technician_is_refused_even_with_a_good_login(bench: Bench) -> None:
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tom", TOM_PASSWORD, T0 + 60)
    assert exc.value.reason == "wrong_technician"
    assert outcomes(bench)[-1] == ("tom", "workorder_open", "wrong_technician")


def test_renaming_the_technician_in_the_file_breaks_the_seal(bench: Bench) -> None:
    body = json.loads(bench.path.read_bytes())
    header = json.loads(base64.b64decode(body["header"]))
    header["technician"] = "tom"
    body["header"] = base64.b64encode(json.dumps(header).encode()).decode()
    bench.path.write_text(json.dumps(body))
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tom", TOM_PASSWORD, T0 + 60)
    assert exc.value.reason == "tampered"


@pytest.mark.parametrize("field", ["not_after", "meters", "operations"])
def test_widening_the_order_breaks_the_seal(bench: Bench, field: str) -> None:
    body = json.loads(bench.path.read_bytes())
    header = json.loads(base64.b64decode(body["header"]))
    header[field] = {"not_after": T0 + 1000 * HOUR, "meters": [*METERS, OTHER_METER],
                     "operations": ["read", "disconnect"]}[field]  # fmt: skip
    body["header"] = base64.b64encode(json.dumps(header).encode()).decode()
    bench.path.write_text(json.dumps(body))
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 60)
    assert exc.value.reason == "tampered"


def test_flipped_ciphertext_bits_are_refused(bench: Bench) -> None:
    body = json.loads(bench.path.read_bytes())
    sealed = bytearray(base64.b64decode(body["sealed"]))
    for i in (1, 20, len(sealed) - 1):
        flipped = bytearray(sealed)
        flipped[i] ^= 1
        body["sealed"] = base64.b64encode(bytes(flipped)).decode()
        bench.path.write_text(json.dumps(body))
        with pytest.raises(WorkOrderError) as exc:
            open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 60)
        assert exc.value.reason == "tampered"


def test_garbage_files_get_a_typed_error(bench: Bench) -> None:
    for junk in (b"", b"{", b"[]", b'{"header": 5}', json.dumps({"header": "!!"}).encode()):
        bench.path.write_bytes(junk)
        with pytest.raises(WorkOrderError) as exc:
            open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0)
        assert exc.value.reason == "unreadable"


def test_a_world_readable_file_is_refused(bench: Bench) -> None:
    os.chmod(bench.path, 0o644)
    with pytest.raises(WorkOrderError, match="readable by others"):
        read_header(bench.path)


def test_after_its_validity_the_order_is_refused_and_destroyed(bench: Bench) -> None:
    """The handheld never came back: the first open after not_after wipes the credentials."""
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 8 * HOUR)
    assert exc.value.reason == "expired"
    assert not bench.path.exists()
    assert outcomes(bench)[-1] == ("tina", "workorder_open", "expired")


def test_before_its_validity_the_order_is_refused(bench: Bench) -> None:
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 - 60)
    assert exc.value.reason == "not_yet_valid"
    assert bench.path.exists()


def test_only_a_secadm_issues_and_only_in_its_area(bench: Bench) -> None:
    operator = Principal("olga", frozenset({Role.OPERATOR}), "session")
    with pytest.raises(WorkOrderError) as exc:
        issue(operator, "WO-2", HANDHELD, "tina", METERS, ["read"], T0, T0 + HOUR, T0)
    assert exc.value.reason == "refused"
    scoped = Principal("sam", frozenset({Role.SECADM}), "cert", aor=frozenset({"4d0000*"}))
    with pytest.raises(WorkOrderError, match="outside"):
        issue(scoped, "WO-2", HANDHELD, "tina", [*METERS, "5e000001"], ["read"], T0, T0 + HOUR,
              T0)  # fmt: skip
    with pytest.raises(WorkOrderError, match="operations"):
        issue(bench.secadm, "WO-2", HANDHELD, "tina", METERS, ["reflash"], T0, T0 + HOUR, T0)
    with pytest.raises(WorkOrderError, match="already be expired"):
        issue(bench.secadm, "WO-2", HANDHELD, "tina", METERS, ["read"], T0 - 9, T0 - 1, T0)


def test_a_revoked_meter_refuses_provisioning(bench: Bench, tmp_path: Path) -> None:
    bench.office_store.revoke(METERS[1], "stolen", T0)
    with pytest.raises(WorkOrderError, match="revoked"):
        provision(bench.order, bench.office_store, bench.kek, TINA_PASSWORD,
                  tmp_path / "x.order", os.urandom, FAST_KDF)  # fmt: skip
    assert not (tmp_path / "x.order").exists()


def test_no_secret_reaches_the_logs(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 60)
    text = caplog.text + "".join(bench.desk.audit.export_lines())
    assert TINA_PASSWORD not in text
    for m in METERS:
        assert meter_psk(m).hex() not in text


def test_a_clock_set_back_does_not_revive_the_order(bench: Bench, tmp_path: Path) -> None:
    """The handheld saw T0+7h; a clock set back to T0+1h (to stretch the order) is refused."""
    clock = SoftwareModule.create(tmp_path / "handheld-clock.pem")
    open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + 7 * HOUR,
                    clock)  # fmt: skip
    with pytest.raises(WorkOrderError) as exc:
        open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD, T0 + HOUR,
                        clock)  # fmt: skip
    assert exc.value.reason == "clock"
    # a small correction (within CLOCK_SLACK_S) is not a rollback
    open_work_order(bench.path, bench.kek, bench.desk, "tina", TINA_PASSWORD,
                    T0 + 7 * HOUR - 60, clock)  # fmt: skip
    check_clock(clock, T0 + 7 * HOUR + 60)
    clock.write_anchor(b"someone else's anchor")
    with pytest.raises(WorkOrderError, match="not the handheld's clock"):
        check_clock(clock, T0 + 8 * HOUR)
