"""The head-end holds a pushed write's ack until its readings are durable: a released ack goes
out once, an ack whose readings never became durable expires after `held_ack_ttl` unsent
(counted), and the engine's timer names the next expiry (a heap of deadlines, not a walk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contexts import make_ctx

from amistack.c1222.acse import ApTitle
from amistack.c1222.tables import LoadProfile
from amistack.crypto import seeded_random
from amistack.headend.keys import HeadendKeys, repository_resolver
from amistack.headend.service import HeadEnd, HeadEndConfig
from amistack.headend.storage import SqliteRepository
from amistack.keymgmt.keyring import KeyRing
from amistack.keymgmt.ukmf import C1222, KeyId, PurposeRegistry, derive
from amistack.meter.model import DAY_S, MeterConfig, MeterModel
from amistack.meter.node import MeterNode, MeterNodeConfig
from amistack.sim.fleet import HEADEND_ADDR, HEADEND_TITLE, T0

TITLE = ApTitle((0, 42), relative=True)
ADDR = ("10.0.0.42", 1153)


def test_unreleased_acks_expire_unsent_and_released_ones_go_out_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = SqliteRepository(tmp_path)
    repo.register_meter("m-42", str(TITLE.absolute()), "c", "cell", T0)
    repo.commission_meter("m-42", T0)
    ctx = make_ctx(0x42, 1, seed=5)
    keys = HeadendKeys(repository_resolver(repo.meter_by_ap_title), None)
    keys.install(b"m-42", KeyId(0x42, 1), derive(ctx, C1222), T0 + 3600)
    ring = KeyRing(b"m-42", PurposeRegistry())
    ring.install(ctx, 3600.0, T0)
    node = MeterNode(
        MeterNodeConfig(TITLE, HEADEND_TITLE, HEADEND_ADDR),
        MeterModel(1, MeterConfig(install_time=T0 - 40 * DAY_S)),
        ring,
        seeded_random(2),
    )
    headend = HeadEnd(
        HeadEndConfig(HEADEND_TITLE, held_ack_ttl=5.0, eventlog_every_s=0.0),
        repo,
        keys,
        seeded_random(1),
        T0,
    )
    full = node.tables.load_profile(15, T0)

    def push(at: float, n: int) -> None:
        data = LoadProfile(15, full.end_time, full.intervals[-n:]).encode()
        node.server.push(HEADEND_ADDR, HEADEND_TITLE, 64, data, at)
        [(dgram, _)] = node.datagrams_to_send(at)
        headend.receive_datagram(dgram, ADDR, at)

    push(T0, 1)
    assert headend.counters["acks-held"] == 1 and headend.datagrams_to_send(T0) == []
    headend.handle_timer(T0 + 0.1)  # durable: the ack goes out, once
    assert len(headend.datagrams_to_send(T0 + 0.1)) == 1
    # the store fails from now on: the next push's ack stays held, then expires unsent
    monkeypatch.setattr(repo, "store_readings", _fail)
    push(T0 + 1, 2)
    assert headend.counters["acks-held"] == 2
    timer = headend.get_timer()
    assert timer is not None and timer <= T0 + 6
    headend.handle_timer(T0 + 5.9)
    assert headend.counters["held-ack-expired"] == 0
    headend.handle_timer(T0 + 6.0)
    assert headend.counters["held-ack-expired"] == 1
    assert headend.counters["acks-released"] == 1
    assert headend.datagrams_to_send(T0 + 6.0) == []
    headend.handle_timer(T0 + 100)  # nothing held is expired twice
    assert headend.counters["held-ack-expired"] == 1


def _fail(*args: object, **kwargs: object) -> object:
    raise OSError("disk full")
