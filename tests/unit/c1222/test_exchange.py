"""Head-end (C1222Client) <-> meter (C1222Server): every service, under a UKMF C12.22 key
derived from a PANA security context, and every refusal counted."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.unit.c1222.c1222_harness import (
    HEADEND_ADDR,
    HEADEND_TITLE,
    METER_ADDR,
    METER_TITLE,
    T0,
    Pair,
    make_ctx,
    make_pair,
)

from amistack.c1222.acse import AcseMessage
from amistack.c1222.endpoint import C1222Client, EndpointConfig
from amistack.c1222.epsem import Epsem, ResponseControl, SecurityMode
from amistack.c1222.events import RequestReceived, RequestTimedOut, ResponseReceived
from amistack.c1222.security import key_id_byte, protect, ring_key_lookup, ring_send_key, unprotect
from amistack.c1222.services import (
    Identify,
    IdentifyResult,
    Logoff,
    Logon,
    LogonResult,
    Read,
    ReadResult,
    ResponseCode,
    Security,
    Terminate,
    Wait,
    Write,
)
from amistack.c1222.tables import (
    Clock,
    CurrentRegisters,
    GeneralConfig,
    Identification,
    LoadProfile,
    ProcedureResponse,
    ProcedureResult,
    Table,
    decode_intervals,
    demand_reset,
    load_profile_offsets,
    read_switch,
    remote_switch,
    set_date_time,
)
from amistack.crypto import seeded_random
from amistack.crypto.eax_prime import EaxPrime
from amistack.keymgmt.ukmf import C1222, KeyId, derive


def _answer(pair: Pair, rid: int, now: float = T0) -> ResponseReceived:
    pair.pump(now)
    events = []
    while (ev := pair.client.next_event()) is not None:
        events.append(ev)
    answers = [e for e in events if isinstance(e, ResponseReceived) and e.request_id == rid]
    assert len(answers) == 1, events
    return answers[0]


def _read(pair: Pair, table: int, **kw: int) -> bytes:
    rid = pair.client.read(METER_ADDR, METER_TITLE, table, T0, **kw)  # type: ignore[arg-type]
    ans = _answer(pair, rid)
    assert ans.ok, ans.responses
    return ReadResult.decode(ans.responses[0].data).data


def test_keys_are_the_ukmf_c1222_key(pair: Pair) -> None:
    key = pair.meter_ring.current(C1222, T0)
    assert key is not None and key.key == derive(make_ctx(), C1222)
    assert key_id_byte(KeyId(0x1000, 0x1234_5601)) == 0x01


def test_identify_logon_security_wait_logoff_terminate(pair: Pair) -> None:
    rid = pair.client.request(
        METER_ADDR,
        METER_TITLE,
        [
            Identify(),
            Logon(7, b"headend   ", 30),
            Security(b"p" * 20, 7),
            Wait(20),
            Logoff(),
            Terminate(),
        ],
        T0,
    )
    ans = _answer(pair, rid)
    assert ans.ok and ans.peer == METER_TITLE and ans.addr == METER_ADDR
    assert IdentifyResult.decode(ans.responses[0].data).std == 3
    assert LogonResult.decode(ans.responses[1].data).session_idle_timeout == 30
    assert pair.server.sessions() == 0  # logged off / terminated
    served = pair.server.next_event()
    assert isinstance(served, RequestReceived) and served.peer == HEADEND_TITLE


def test_session_expires_on_the_timer(pair: Pair) -> None:
    _answer(pair, pair.client.request(METER_ADDR, METER_TITLE, [Logon(1, b"u" * 10, 10)], T0))
    assert pair.server.sessions() == 1
    timer = pair.server.get_timer()
    assert timer == T0 + 10
    pair.server.handle_timer(timer)
    assert pair.server.sessions() == 0 and pair.server.counters["session-timeouts"] == 1


def test_security_without_logon_is_a_sequence_error(pair: Pair) -> None:
    ans = _answer(pair, pair.client.request(METER_ADDR, METER_TITLE, [Security(b"x" * 20)], T0))
    assert ans.responses[0].code == ResponseCode.ISSS and not ans.ok


def test_read_tables(pair: Pair) -> None:
    st0 = GeneralConfig.decode(_read(pair, Table.GENERAL_CONFIG))
    assert {0, 1, 7, 8, 23, 52, 64, 65} <= st0.std_tables and st0.std_writable == {7}
    assert Identification.decode(_read(pair, Table.GENERAL_MFG_ID)).serial == b"00000001"
    regs = CurrentRegisters.decode(_read(pair, Table.CURRENT_REGISTER_DATA))
    assert regs.active_forward_wh == 123_456 and regs.active_net_wh == 123_456 - 789
    assert Clock.decode(_read(pair, Table.CLOCK)).time == T0
    lp = LoadProfile.decode(_read(pair, Table.LOAD_PROFILE_1))
    assert lp.interval_minutes == 15 and len(lp.intervals) == 96
    assert lp.intervals[5].value_wh == 105
    lp30 = LoadProfile.decode(_read(pair, Table.LOAD_PROFILE_2))
    assert lp30.interval_minutes == 30 and len(lp30.intervals) == 48


def test_partial_read_of_load_profile(pair: Pair) -> None:
    off, cnt = load_profile_offsets(10, 4)
    ivs = decode_intervals(_read(pair, Table.LOAD_PROFILE_1, offset=off, count=cnt))
    assert [i.value_wh for i in ivs] == [110, 111, 112, 113]


def test_partial_read_past_the_end_refused(pair: Pair) -> None:
    rid = pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0, offset=5, count=10)
    assert _answer(pair, rid).responses[0].code == ResponseCode.ONP


def test_unknown_table_and_write_protection(pair: Pair) -> None:
    rid = pair.client.read(METER_ADDR, METER_TITLE, 999, T0)
    assert _answer(pair, rid).responses[0].code == ResponseCode.ONP
    rid = pair.client.request(METER_ADDR, METER_TITLE, [Write(Table.CLOCK, b"\x00" * 7)], T0)
    assert _answer(pair, rid).responses[0].code == ResponseCode.IAR


@pytest.mark.parametrize("connect", [False, True])
def test_remote_switch_and_read_back(pair: Pair, connect: bool) -> None:
    pair.meter.connected = not connect
    ans = _answer(
        pair, pair.client.procedure(METER_ADDR, METER_TITLE, remote_switch(5, connect), T0)
    )
    assert ans.ok
    st8 = ProcedureResponse.decode(ReadResult.decode(ans.responses[1].data).data)
    assert st8.result == ProcedureResult.COMPLETED and st8.sequence == 5
    assert st8.data == bytes([int(connect)]) and pair.meter.connected is connect
    ans = _answer(pair, pair.client.procedure(METER_ADDR, METER_TITLE, read_switch(6), T0))
    st8 = ProcedureResponse.decode(ReadResult.decode(ans.responses[1].data).data)
    assert st8.data == bytes([int(connect)])


def test_demand_reset_and_time_sync(pair: Pair) -> None:
    ans = _answer(pair, pair.client.procedure(METER_ADDR, METER_TITLE, demand_reset(1), T0))
    assert ans.ok and pair.meter.demand_resets == 1
    assert CurrentRegisters.decode(_read(pair, Table.CURRENT_REGISTER_DATA)).demand_resets == 1
    pair.meter.clock_offset = -300.0  # the meter runs 5 minutes late
    ans = _answer(pair, pair.client.procedure(METER_ADDR, METER_TITLE, set_date_time(2, T0), T0))
    st8 = ProcedureResponse.decode(ReadResult.decode(ans.responses[1].data).data)
    assert st8.result == ProcedureResult.COMPLETED and pair.meter.clock_offset == 0.0


def test_meter_pushes_interval_data(pair: Pair) -> None:
    data = LoadProfile(15, T0, ()).encode()
    rid = pair.server.push(HEADEND_ADDR, HEADEND_TITLE, Table.LOAD_PROFILE_1, data, T0, offset=0)
    pair.pump(T0)
    got = pair.client.next_event()
    assert isinstance(got, RequestReceived) and got.peer == METER_TITLE
    assert got.requests == (Write(Table.LOAD_PROFILE_1, data, 0),) and got.key_id == 1
    ack = pair.server.next_event()
    while ack is not None and not isinstance(ack, ResponseReceived):
        ack = pair.server.next_event()
    assert isinstance(ack, ResponseReceived) and ack.request_id == rid and ack.ok


def test_large_table_is_segmented_and_reassembled() -> None:
    pair = make_pair()
    pair.meter.lp15 = 30 * 96  # 30 days of 15-minute intervals: ~14 KB
    lp = LoadProfile.decode(_read(pair, Table.LOAD_PROFILE_1))
    assert len(lp.intervals) == 2880
    assert pair.server.counters["segmented-sent"] == 1
    assert max(len(d) for _, d in pair.wire) <= 1232


def test_timeout_and_retries() -> None:
    pair = make_pair(client_config={"response_timeout": 2.0, "retries": 1})
    rid = pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0)
    first = pair.client.datagrams_to_send(T0)  # lost
    assert len(first) == 1 and pair.client.get_timer() == T0 + 2.0
    pair.client.handle_timer(T0 + 2.0)
    second = pair.client.datagrams_to_send(T0 + 2.0)
    assert len(second) == 1 and second[0][0] != first[0][0]  # new invocation id and IV
    pair.client.handle_timer(T0 + 4.0)
    ev = pair.client.next_event()
    assert isinstance(ev, RequestTimedOut) and ev.request_id == rid
    assert pair.client.counters["timeouts"] == 1 and pair.client.get_timer() is None


def test_late_answer_to_a_retransmission_still_matches() -> None:
    pair = make_pair(client_config={"response_timeout": 2.0, "retries": 2})
    rid = pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0)
    pair.client.datagrams_to_send(T0)
    pair.client.handle_timer(T0 + 2.0)
    assert _answer(pair, rid, T0 + 2.0).ok


# ------------------------------------------------------------------------ refusals


def _capture_request(pair: Pair, now: float = T0) -> bytes:
    pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, now)
    [(data, _)] = pair.client.datagrams_to_send(now)
    return data


def _served(pair: Pair) -> int:
    return pair.server.counters["messages-accepted"]


def test_replayed_message_refused_and_counted(pair: Pair) -> None:
    data = _capture_request(pair)
    pair.server.receive_datagram(data, HEADEND_ADDR, T0)
    pair.server.receive_datagram(data, HEADEND_ADDR, T0 + 1)
    assert _served(pair) == 1 and pair.server.counters["replayed"] == 1
    assert len(pair.server.datagrams_to_send(T0)) == 1  # one answer only


def test_stale_message_refused_and_counted(pair: Pair) -> None:
    old = _capture_request(pair)
    for _ in range(70):  # the window (64) moves past the captured invocation id
        pair.server.receive_datagram(_capture_request(pair), HEADEND_ADDR, T0)
    pair.server.receive_datagram(old, HEADEND_ADDR, T0)
    assert pair.server.counters["stale"] == 1 and _served(pair) == 70


def test_out_of_order_within_the_window_accepted(pair: Pair) -> None:
    a, b = _capture_request(pair), _capture_request(pair)
    pair.server.receive_datagram(b, HEADEND_ADDR, T0)
    pair.server.receive_datagram(a, HEADEND_ADDR, T0)
    assert _served(pair) == 2 and pair.server.counters["replayed"] == 0


@pytest.mark.parametrize("where", [-1, -3, -20, 12])
def test_tampered_message_refused_and_counted(pair: Pair, where: int) -> None:
    data = bytearray(_capture_request(pair))
    data[where] ^= 0x04
    pair.server.receive_datagram(bytes(data), HEADEND_ADDR, T0)
    refused = sum(pair.server.counters[k] for k in ("auth-failed", "decode-error", "no-key"))
    assert refused == 1 and _served(pair) == 0
    # the forged message did not move the replay window: the genuine one still goes through
    pair.server.receive_datagram(_capture_request(pair), HEADEND_ADDR, T0)
    assert _served(pair) == 1


def test_wrong_key_refused_and_counted() -> None:
    pair = make_pair()
    # the head-end holds a different generation with the same key-id byte
    other = make_pair()
    other.headend_ring.install(make_ctx(session_id=0x2000, key_id=1, seed=99), 3600.0, T0)
    pair.server.receive_datagram(_capture_request(other), HEADEND_ADDR, T0)
    assert pair.server.counters["auth-failed"] == 1 and _served(pair) == 0


def test_unknown_key_id_refused_and_counted() -> None:
    pair = make_pair()
    other = make_pair()
    other.headend_ring.install(make_ctx(key_id=2), 3600.0, T0)  # generation 2: key id byte 2
    pair.server.receive_datagram(_capture_request(other), HEADEND_ADDR, T0)
    assert pair.server.counters["no-key"] == 1


def test_expired_key_refused(pair: Pair) -> None:
    data = _capture_request(pair)
    pair.server.receive_datagram(data, HEADEND_ADDR, T0 + 3601)
    assert pair.server.counters["no-key"] == 1


def test_rotation_overlap_keeps_old_messages_readable(pair: Pair) -> None:
    old = _capture_request(pair)
    for ring in (pair.meter_ring, pair.headend_ring):
        ring.install(make_ctx(key_id=2), 3600.0, T0 + 10)
    pair.server.receive_datagram(old, HEADEND_ADDR, T0 + 11)  # superseded, within overlap
    assert _served(pair) == 1
    # the reply uses the generation the request came with
    [(reply, _)] = pair.server.datagrams_to_send(T0 + 11)
    msg = AcseMessage.decode(reply)
    assert msg.auth is not None and msg.auth.key_id == 1
    new = _capture_request(pair, T0 + 11)
    assert AcseMessage.decode(new).auth.key_id == 2  # type: ignore[union-attr]


def test_cleartext_refused_unless_allowed(pair: Pair) -> None:
    rid = pair.client.request(
        METER_ADDR, METER_TITLE, [Read(Table.CLOCK)], T0, security_mode=SecurityMode.CLEARTEXT
    )
    pair.pump(T0)
    assert pair.server.counters["cleartext-refused"] == 1 and rid == 1


def test_cleartext_may_identify_but_never_write() -> None:
    pair = make_pair(
        meter_config={"allow_cleartext": True}, client_config={"allow_cleartext": True}
    )
    clear = SecurityMode.CLEARTEXT
    ans = _answer(
        pair, pair.client.request(METER_ADDR, METER_TITLE, [Identify()], T0, security_mode=clear)
    )
    assert ans.ok
    rid = pair.client.procedure  # noqa: F841 -- documents the protected path
    rid2 = pair.client.request(
        METER_ADDR,
        METER_TITLE,
        [Write(Table.PROC_INITIATE, remote_switch(1, False).encode())],
        T0,
        security_mode=clear,
    )
    assert _answer(pair, rid2).responses[0].code == ResponseCode.ISC
    assert pair.meter.connected is True


def test_authenticate_only_mode(pair: Pair) -> None:
    rid = pair.client.request(
        METER_ADDR, METER_TITLE, [Read(Table.CLOCK)], T0, security_mode=SecurityMode.CLEARTEXT_AUTH
    )
    pair.pump(T0)
    req = AcseMessage.decode(pair.wire[0][1])
    assert req.user_information[0] >> 2 & 3 == SecurityMode.CLEARTEXT_AUTH
    assert Read(Table.CLOCK).encode() in req.user_information  # readable, but MACed
    ans = pair.client.next_event()
    assert isinstance(ans, ResponseReceived) and ans.request_id == rid and ans.ok


def test_ciphertext_hides_the_request(pair: Pair) -> None:
    data = _capture_request(pair)
    assert Read(Table.CLOCK).encode() not in data


def test_wrong_called_title_and_garbage_counted(pair: Pair) -> None:
    data = _capture_request(pair)
    msg = AcseMessage.decode(data)
    pair.server.receive_datagram(
        replace(msg, called_ap_title=HEADEND_TITLE).encode(), HEADEND_ADDR, T0
    )
    pair.server.receive_datagram(b"\x60\x05garbage", HEADEND_ADDR, T0)
    pair.server.receive_datagram(b"", HEADEND_ADDR, T0)
    assert pair.server.counters["wrong-called-title"] == 1
    assert pair.server.counters["decode-error"] == 2


def test_unmatched_response_counted(pair: Pair) -> None:
    _capture_request(pair)  # the client never sees an answer to this one ...
    ans = _answer(pair, pair.client.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0))
    assert ans.ok
    # ... and an answer it already consumed is a replay for it
    s2c = [d for way, d in pair.wire if way == "s2c"]
    pair.client.receive_datagram(s2c[-1], METER_ADDR, T0)
    assert pair.client.counters["replayed"] == 1


def test_response_control_never_and_on_exception(pair: Pair) -> None:
    pair.client.request(
        METER_ADDR, METER_TITLE, [Read(Table.CLOCK)], T0, response_control=ResponseControl.NEVER
    )
    pair.client.request(
        METER_ADDR,
        METER_TITLE,
        [Read(Table.CLOCK)],
        T0,
        response_control=ResponseControl.ON_EXCEPTION,
    )
    pair.client.request(
        METER_ADDR, METER_TITLE, [Read(999)], T0, response_control=ResponseControl.ON_EXCEPTION
    )
    pair.pump(T0)
    assert pair.server.counters["messages-sent"] == 1  # only the failed one is answered
    assert pair.client.counters["unmatched-response"] == 1  # untracked, as documented


def test_one_block_cleartext_cannot_occur() -> None:
    # EAX' refuses a cleartext of <= 16 bytes (ePrint 2012/018). A C12.22 protected message
    # always carries the calling-authentication-value (17 bytes) in its cleartext, so the
    # smallest possible cleartext is already longer; EaxPrime refuses anything shorter.
    key = derive(make_ctx(), C1222)
    header = AcseMessage(b"", calling_ap_invocation_id=0)
    epsem = Epsem((b"\x20",), SecurityMode.CIPHERTEXT_AUTH)
    msg = protect(header, epsem, key, 1, b"\x00" * 4)
    assert len(msg.canonical_cleartext()) > 16
    assert unprotect(msg, [key]).epsem == epsem
    with pytest.raises(ValueError, match="2012/018"):
        EaxPrime(key).encrypt(msg.canonical_cleartext()[:16], b"x")


def test_restarted_peer_under_new_keys_is_not_stale(pair: Pair) -> None:
    for _ in range(70):
        pair.server.receive_datagram(_capture_request(pair), HEADEND_ADDR, T0)
    for ring in (pair.meter_ring, pair.headend_ring):
        ring.install(make_ctx(session_id=0x2000, key_id=2), 3600.0, T0 + 1)
    restarted = C1222Client(
        EndpointConfig(HEADEND_TITLE),
        ring_key_lookup(pair.headend_ring),
        ring_send_key(pair.headend_ring),
        seeded_random(3),
    )
    pair.client = restarted  # invocation ids start at 1 again, under generation 2
    assert _answer(pair, restarted.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0 + 2), T0 + 2).ok
    assert pair.server.counters["stale"] == 0


def test_restarted_peer_with_the_same_generation_is_not_a_replay(pair: Pair) -> None:
    """A meter that restarts gets a new PANA session whose first generation is 1 again: the
    key-id byte repeats, the key does not, and its invocation ids start over."""
    for _ in range(70):
        pair.server.receive_datagram(_capture_request(pair), HEADEND_ADDR, T0)
    for ring in (pair.meter_ring, pair.headend_ring):
        ring.install(make_ctx(session_id=0x3000, key_id=1), 3600.0, T0 + 1)
    restarted = C1222Client(
        EndpointConfig(HEADEND_TITLE),
        ring_key_lookup(pair.headend_ring),
        ring_send_key(pair.headend_ring),
        seeded_random(4),
    )
    pair.client = restarted
    assert _answer(pair, restarted.read(METER_ADDR, METER_TITLE, Table.CLOCK, T0 + 2), T0 + 2).ok
    assert pair.server.counters["replayed"] == 0 and pair.server.counters["stale"] == 0
    again = _capture_request(pair, T0 + 3)  # and a replay under the new key is still refused
    pair.server.receive_datagram(again, HEADEND_ADDR, T0 + 3)
    pair.server.receive_datagram(again, HEADEND_ADDR, T0 + 3)
    assert pair.server.counters["replayed"] == 1
