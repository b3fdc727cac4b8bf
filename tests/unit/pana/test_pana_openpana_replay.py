"""Our engines against OpenPANA's wire bytes: given the same random inputs, our PaC answers the
OpenPANA PAA frames with OpenPANA's PaC frames octet for octet, and our PAA answers OpenPANA's PaC
with OpenPANA's PAA frames (Key-Id aside: ours count from 1, OpenPANA's are random)."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import load_vector

from amistack.crypto import RandomSource
from amistack.eap import EapPeer, EapPskPeer, EapPskServer, EapType
from amistack.pana.auth import sign
from amistack.pana.avp import Avp
from amistack.pana.constants import AvpCode, IntegrityAlgorithm, PrfAlgorithm
from amistack.pana.events import Authenticated, PingCompleted
from amistack.pana.local_backend import LocalEapBackend
from amistack.pana.message import PanaMessage
from amistack.pana.paa import PaaConfig, PanaAuthAgent
from amistack.pana.pac import PacConfig, PanaClient
from amistack.pana.timers import JITTER_BATCH

PAA = ("192.0.2.1", 716)
PAC = ("192.0.2.2", 50000)


def _vec() -> tuple[dict[str, str], dict[int, bytes]]:
    vec = load_vector("pana_openpana_transcript.json")
    return vec, {f["n"]: bytes.fromhex(f["hex"]) for f in vec["frames"]}


def scripted(by_size: dict[int, list[bytes]]) -> RandomSource:
    """Hands out the recorded random values by requested size; RAND = 0 for the timers."""
    queues = {n: list(v) for n, v in by_size.items()}

    def rng(n: int) -> bytes:
        if n == 2 or n == JITTER_BATCH:  # (the PAA draws its timers' RAND in batches)
            return b"\x7f\xff" * (n // 2)
        return queues[n].pop(0)

    return rng


def _eap_psk_fields(frame9: bytes) -> tuple[bytes, bytes]:
    eap = PanaMessage.decode(frame9).octets(AvpCode.EAP_PAYLOAD)
    assert eap is not None
    return eap[6:22], eap[22:38]  # RAND_S, RAND_P (RFC 4764 §5.2)


def _one(out: list[tuple[bytes, tuple[str, int]]]) -> bytes:
    assert len(out) == 1, out
    return out[0][0]


def test_our_pac_reproduces_openpana_pac() -> None:
    vec, f = _vec()
    _, rand_p = _eap_psk_fields(f[9])
    nonce = PanaMessage.decode(f[5]).octets(AvpCode.NONCE)
    isn = PanaMessage.decode(f[18]).seq.to_bytes(4, "big")  # the PaC's first request
    assert nonce is not None
    rng = scripted({4: [isn], 20: [nonce], 16: [rand_p]})
    psk = vec["psk_ascii"].encode()

    def eap() -> EapPeer:
        return EapPeer(b"user", {EapType.PSK: lambda: EapPskPeer(b"user", psk, rng)})

    pac = PanaClient(PacConfig(), eap, rng, PAA)
    pac.start(0.0)
    assert _one(pac.datagrams_to_send(0.0)) == f[1]
    for request, answer in ((2, 3), (4, 5), (8, 9), (12, 13), (16, 17)):
        pac.receive_datagram(f[request], PAA, 1.0)
        assert _one(pac.datagrams_to_send(1.0)) == f[answer], answer
    ev = pac.next_event()
    assert isinstance(ev, Authenticated)
    assert pac.auth_key == bytes.fromhex(vec["pana_auth_key"]) and ev.lifetime == 30.0
    for ping, pong in ((18, 19), (20, 21)):
        pac.ping(2.0)
        assert _one(pac.datagrams_to_send(2.0)) == f[ping]
        pac.receive_datagram(f[pong], PAA, 2.0)
        assert isinstance(pac.next_event(), PingCompleted)
    assert sum(pac.counters.values()) == 0


def test_our_paa_reproduces_openpana_paa() -> None:
    vec, f = _vec()
    rand_s, _ = _eap_psk_fields(f[9])
    par_s = PanaMessage.decode(f[2])
    nonce = PanaMessage.decode(f[4]).octets(AvpCode.NONCE)
    eap_id = PanaMessage.decode(f[4]).octets(AvpCode.EAP_PAYLOAD)
    assert nonce is not None and eap_id is not None
    rng = scripted(
        {4: [par_s.session_id.to_bytes(4, "big"), par_s.seq.to_bytes(4, "big")], 20: [nonce]}
    )
    backend_rng = scripted({1: [eap_id[1:2]], 16: [rand_s]})
    psk = vec["psk_ascii"].encode()
    methods: Callable[[], list[Callable[[], EapPskServer]]] = lambda: [  # noqa: E731
        lambda: EapPskServer(b"hostapd", {b"user": psk}.get, backend_rng)
    ]
    config = PaaConfig(
        session_lifetime=30.0,
        prf_algorithms=(PrfAlgorithm.PRF_HMAC_SHA1,),
        integrity_algorithms=(IntegrityAlgorithm.AUTH_HMAC_SHA1_160,),
    )
    paa = PanaAuthAgent(config, LocalEapBackend(methods, backend_rng), rng)
    for request, answer in ((1, 2), (3, 4), (5, 8), (9, 12)):
        paa.receive_datagram(f[request], PAC, 1.0)
        assert _one(paa.datagrams_to_send(1.0)) == f[answer], answer
    paa.receive_datagram(f[13], PAC, 1.0)
    ours = _one(paa.datagrams_to_send(1.0))
    # frame 16 with our Key-Id (1) and the AUTH that Key-Id implies
    theirs = PanaMessage.decode(f[16])
    avps = tuple(Avp.u32(AvpCode.KEY_ID, 1) if a.code == AvpCode.KEY_ID else a for a in theirs.avps)
    key_ctx = paa._sessions[theirs.session_id].pending
    assert key_ctx is not None
    rebuilt = PanaMessage(
        theirs.msg_type, theirs.flags, theirs.session_id, theirs.seq, avps, theirs.reserved
    )
    assert ours == sign(rebuilt, IntegrityAlgorithm.AUTH_HMAC_SHA1_160, key_ctx[1])
    assert key_ctx[0].msk == bytes.fromhex(vec["msk"])
    assert sum(v for k, v in paa.counters.items() if k != "pci_accepted") == 0
