"""tshark's RADIUS dissector checks what our client and server put on the wire.

A full EAP-PSK conversation (our pass-through backend <-> our RADIUS server) is written to a pcap;
tshark, given the shared secret, validates every Response Authenticator, dissects the reassembled
EAP inside, and finds nothing malformed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.conftest import require_tool

from amistack.crypto.rand import seeded_random
from amistack.eap.method import ServerMethodFactory
from amistack.eap.packet import EapType
from amistack.eap.peer import EapPeer
from amistack.eap.psk import EapPskPeer, EapPskServer
from amistack.pana.aaa import AaaOutcome
from amistack.radius.client import RadiusPassthroughBackend
from amistack.radius.server import RadiusEapServer
from amistack.runtime.pcap import PcapWriter

pytestmark = pytest.mark.interop

SECRET = b"tshark-secret"
NAS = ("192.0.2.10", 40000)
AAA = ("192.0.2.20", 1812)
PSK = bytes(range(16))
ID_P = b"meter-42"


def capture_conversation(
    pcap: Path,
    methods: Sequence[ServerMethodFactory] | None = None,
    peer: EapPeer | None = None,
    now: float = 1_700_000_000.0,
    rounds: int = 10,
) -> None:
    """One EAP conversation (EAP-PSK unless `methods` and `peer` say otherwise) between our
    pass-through backend and our RADIUS server, written to `pcap`."""
    rng = seeded_random(11)
    server_methods = methods or [lambda: EapPskServer(b"ks", {ID_P: PSK}.get, rng)]
    server = RadiusEapServer(SECRET, lambda: server_methods, rng)
    backend = RadiusPassthroughBackend(AAA, SECRET, seeded_random(12))
    if peer is None:
        peer = EapPeer(ID_P, {EapType.PSK: lambda: EapPskPeer(ID_P, PSK, seeded_random(13))})
    with PcapWriter(pcap) as writer:
        answer = backend.begin(1, now)
        for _ in range(rounds):
            assert answer is not None
            if answer.outcome is not AaaOutcome.CONTINUE:
                peer.receive(answer.eap or b"")  # the EAP-Success
                assert answer.outcome is AaaOutcome.SUCCESS and answer.msk == peer.msk
                return
            response = peer.receive(answer.eap or b"")
            assert response is not None
            backend.process(1, response, now)
            for data, _ in backend.datagrams_to_send(now):
                writer.write(NAS, AAA, data, now)
                reply = server.handle_datagram(data, NAS, now)
                assert reply is not None
                writer.write(AAA, NAS, reply, now + 0.001)
                backend.receive_datagram(reply, AAA, now)
            item = backend.next_answer()
            answer = item[1] if item else None
            now += 0.01
    raise AssertionError("no outcome")


def test_tshark_validates_our_radius(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "radius.pcap"
    capture_conversation(pcap)
    cmd = [
        tshark, "-n", "-r", str(pcap),
        "-o", f"radius.shared_secret:{SECRET.decode()}",
        "-o", "radius.validate_authenticator:TRUE",
        "-T", "fields", "-E", "separator=|",
        "-e", "radius.code", "-e", "radius.authenticator.valid", "-e", "eap.code",
        "-e", "eap.type", "-e", "_ws.malformed", "-e", "_ws.expert.severity",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    # Response/Identity, EAP-PSK 2 and 4 in Access-Requests; PSK 1 and 3 in Access-Challenges,
    # then the Access-Accept with EAP-Success.
    assert [r[0] for r in rows] == ["1", "11", "1", "11", "1", "2"], rows
    for code, valid, eap_code, _eap_type, malformed, _severity in rows:
        assert eap_code in {"1", "2", "3"}
        assert malformed == ""
        if code != "1":  # tshark validates Response Authenticators of the answers
            assert valid in {"1", "True"}, rows
    assert {r[3] for r in rows if r[2] in {"1", "2"}} >= {"1", "47"}
