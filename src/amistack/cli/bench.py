"""`amistack bench`: benchmarks that print JSON (measured, never asserted in tests)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run a benchmark and print its results (JSON with --json)",
        description="Benchmarks. Each measures a baseline in the same run (e.g. raw UDP echo) "
        "because shared machines are noisy: compare ratios across machines, not raw rates.",
    )
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    a = bsub.add_parser(
        "auth",
        help="full PANA + EAP-PSK authentications per second against one key-server process",
        description="Full PANA (RFC 5191) + EAP-PSK (RFC 4764) authentications per second: one "
        "key-server process, the PaCs in separate process(es), over loopback UDP. By default "
        "(--server both) the whole key server and its baseline, the protocol path alone (paa), "
        "alternate for --rounds pairs: per path auths_per_s, server_cpu_us_per_auth, "
        "p50_ms/p99_ms per round and their medians, client_cpu_us_per_auth (the PaCs' "
        "process), server_core_auths_per_s (the rate the server's CPU per authentication "
        "allows on a core of its own), target_met (the key server's medians against 3,000/s), "
        "keyserver_vs_paa (the ratio per round) and udp_echo_per_s (raw UDP echo round trips "
        "per second at the same concurrency). With --server keyserver or paa: one run of that "
        "path, flat keys.",
    )
    a.add_argument("--sessions", type=int, default=3000, help="authentications to run")
    a.add_argument("--concurrency", type=int, default=64, help="authentications in flight")
    a.add_argument(
        "--server",
        choices=("both", "keyserver", "paa"),
        default="both",
        help="keyserver: the whole key server (SQLite store, key rings, audit); "
        "paa: the PANA agent with PSKs in memory (protocol cost only); "
        "both (default): the two alternating, for --rounds pairs",
    )
    a.add_argument(
        "--method",
        choices=("psk", "tls"),
        default="psk",
        help="tls: EAP-TLS with ECDSA P-256 device certificates, EAP-PSK measured beside it "
        "in the same run (--rounds pairs on the --server path; both means keyserver): "
        "tls/psk auths_per_s and server_cpu_us_per_auth, tls_vs_psk, tls_cpu_per_psk",
    )
    a.add_argument("--rounds", type=int, default=3, help="pairs of runs with --server both")
    a.add_argument(
        "--eap-identity",
        action="store_true",
        help="open each EAP conversation with Request/Identity (11 datagrams per "
        "authentication, as before issue 12) instead of EAP-PSK's first message (9, as "
        "amistack keyserver runs EAP-PSK alone)",
    )
    a.add_argument("--processes", type=int, default=1, help="PaC processes (default 1)")
    a.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    a.add_argument("--profile-dir", metavar="DIR", help="write cProfile stats of each process")
    a.add_argument("--json", action="store_true", help="print only the JSON document")
    a.set_defaults(handler=_auth)

    e = bsub.add_parser(
        "eventlog",
        help="tamper-evident event log: appends/s, 1M-entry verification, proof size",
        description="The Merkle event log against the naive whole-log signature on the same data: "
        "appends per second with a signed head on 1% of events (software key and SoftHSM2), "
        "verification time of a 1,000,000-entry log, inclusion-proof size at 1M entries.",
    )
    e.add_argument("--entries", type=int, default=200_000, help="entries for the append rates")
    e.add_argument("--big", type=int, default=1_000_000, help="entries of the verified log")
    e.add_argument(
        "--fsync",
        choices=("always", "checkpoint", "never"),
        default="checkpoint",
        help="when appends reach the disk (default: at every signed head)",
    )
    e.add_argument("--no-softhsm", action="store_true", help="skip the PKCS#11 (SoftHSM2) run")
    e.add_argument("--json", action="store_true", help="print only the JSON document")
    e.set_defaults(handler=_eventlog)

    m = bsub.add_parser(
        "meter",
        help="metering model: intervals, register and profile reads per second",
        description="The deterministic metering model that every simulated meter runs: 15-minute "
        "intervals computed per second, random register reads and one-day profile reads.",
    )
    m.add_argument("--meters", type=int, default=1000, help="meters (default 1000)")
    m.add_argument("--days", type=int, default=7, help="days of intervals per meter (default 7)")
    m.add_argument("--json", action="store_true", help="print only the JSON document")
    m.set_defaults(handler=_meter)

    db = bsub.add_parser(
        "dashboard",
        help="the dashboard's fleet page with a large registry (100,000 meters by default)",
        description="The fleet page (first page, a search, a state filter, a deep page) served "
        "by the real app on loopback over a SQLite database of --meters meters with --readings "
        "half-hour readings today on every other meter; the plain API's meter list on the same "
        "server is the baseline. p50/p95/max milliseconds per request.",
    )
    db.add_argument("--meters", type=int, default=100_000, help="meters (default 100000)")
    db.add_argument("--readings", type=int, default=8, help="readings per meter (default 8)")
    db.add_argument("--rounds", type=int, default=20, help="requests per page (default 20)")
    db.add_argument("--json", action="store_true", help="print only the JSON document")
    db.set_defaults(handler=_dashboard)

    mesh = bsub.add_parser(
        "mesh",
        help="RPL mesh formation: every meter joins through PANA relays, 100 to 10,000 nodes",
        description="Meshes of --sizes meters (random geometric placement, seeded, at the same "
        "density at every size; a concentrator at the centre of each of round(N / "
        "--meters-per-dodag) square cells, so every DODAG holds the same number of meters at "
        "every size, or with --per-concentrator a k x k grid of them, k = round(sqrt(N / that)); "
        "unit-disk radio with per-frame loss, stated in the output) form on the virtual clock "
        "while every "
        "meter authenticates with PANA + EAP-PSK against the real key-server engine through "
        "its parent relay: simulated time to 50/95/100 % authenticated and relay-ready, link "
        "frames per node, wall time, link frames per wall second (CCM* on every secured "
        "frame) against a CCM*-only baseline, CPU time, CPU per link frame, and the growth of "
        "CPU, wall and CPU per frame against N log N from size to size; then "
        "one C12.22 read of every meter over the mesh by a head-end on the WAN: delivery ratio "
        "and p50/p99 simulated latency.",
    )
    mesh.add_argument("--sizes", default="100,1000", help="comma-separated sizes (100,1000)")
    mesh.add_argument("--seed", type=int, default=1, help="placement and engines' seed")
    mesh.add_argument("--max-time", type=float, default=7200.0, help="simulated s per size (7200)")
    placement = mesh.add_mutually_exclusive_group()
    placement.add_argument(
        "--meters-per-dodag", type=int, default=None,
        help="meters under each concentrator at every size (default 100: the largest that "
        "100, 1,000 and 10,000 nodes all hold exactly)",
    )  # fmt: skip
    placement.add_argument(
        "--per-concentrator", type=int, default=None,
        help="instead: a k x k grid of concentrators, k = round(sqrt(N / this)) (400 gives 100, "
        "250 and 400 meters a DODAG at 100, 1,000 and 10,000 nodes)",
    )  # fmt: skip
    mesh.add_argument("--json", action="store_true", help="print only the JSON document")
    mesh.set_defaults(handler=_mesh)

    g = bsub.add_parser(
        "ingest",
        help="head-end ingest: interval readings per second end to end (decrypt, verify, store)",
        description="Interval readings per second through the head-end: C12.22 decode, EAX' "
        "verify and decrypt, table decode and group-commit store, into SQLite and PostgreSQL "
        "(a throwaway cluster unless --dsn). The baseline, measured in the same run, is the raw "
        "insert (SQLite executemany) / COPY (PostgreSQL) rate of the same rows. End to end it "
        "also reports cpu_us_per_message (this process + the decoding workers: the rate on "
        "idle cores is cores / that; 47,000/s on 2 cores needs <= 42.5) and, in this process "
        "on a sample of the same messages, the decode alone (decode_cpu_us_per_message) and "
        "EAX' alone by the C extension and by the reference over cryptography "
        "(eax_native_cpu_us_per_message, eax_reference_cpu_us_per_message; eax_native says "
        "whether the head-end uses the extension).",
    )
    g.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    g.add_argument("--readings", type=int, default=200_000, help="readings to ingest")
    g.add_argument(
        "--per-message",
        type=int,
        default=1,
        help="intervals per C12.22 message (default 1: a meter's latest slot)",
    )
    g.add_argument("--workers", type=int, help="decoding processes (default: one per CPU)")
    g.add_argument("--dsn", help="an existing PostgreSQL database (default: a throwaway cluster)")
    g.add_argument(
        "--path",
        choices=("e2e", "store", "engine"),
        default="e2e",
        help="e2e (default): decode in worker processes and store; store: the storage path "
        "alone; engine: CPU per pushed message through the real engines in one process - "
        "meters' C12.22 servers push, the HeadEnd (replay windows, key look-up, collector, "
        "ingest into SQLite in memory, the protected ack) takes them, the meters take the acks: "
        "headend_cpu_us_per_message and meter_cpu_us_per_message, with the decode-only path "
        "(decode_cpu_us_per_message) as the baseline and the C12.22 engines alone, one meter's "
        "server and the head-end's client (c1222_engines_cpu_us_per_message); "
        "--readings / --per-message messages "
        "timed after a warm-up slot (each meter's first message)",
    )
    g.add_argument("--json", action="store_true", help="print only the JSON document")
    g.set_defaults(handler=_ingest)

    sc = bsub.add_parser(
        "scale",
        help="past one box: 1 vs 2 key servers and 1 vs 2 collectors on one PostgreSQL",
        description="Several processes against one PostgreSQL (a throwaway cluster unless "
        "--dsn): 1 then 2 key-server processes (the real runtime, each its own PaC fleet "
        "process) doing full PANA + EAP-PSK authentications, and 1 then 2 collector processes "
        "(headend --shard by meter) decoding and storing C12.22 messages of one reading each. "
        "Per process and aggregate rates with each process's CPU seconds, the revocation "
        "propagation time between key servers (LISTEN/NOTIFY), and the database's own COPY "
        "rate of the same readings as the baseline. See docs/scale-out.md.",
    )
    sc.add_argument("--sessions", type=int, default=1000, help="authentications per run")
    sc.add_argument("--concurrency", type=int, default=32, help="authentications in flight")
    sc.add_argument("--devices", type=int, default=64, help="enrolled bench meters")
    sc.add_argument("--readings", type=int, default=20_000, help="readings (messages) per run")
    sc.add_argument("--dsn", help="an existing PostgreSQL database (default: a throwaway cluster)")
    sc.add_argument("--json", action="store_true", help="print only the JSON document")
    sc.set_defaults(handler=_scale)

    c = bsub.add_parser(
        "collection",
        help="polled vs pushed interval collection at several fleet sizes (simulated cells)",
        description="Polled (head-end controlled, per-cell throttled) against pushed (meters at "
        "randomized offsets) collection of one half-hour slot, on the virtual clock and network "
        "with shared cells of limited capacity: readings lost, late, backfilled, slot time, "
        "packets per reading. See docs/collection.md.",
    )
    c.add_argument("--sizes", default="100,1000,10000", help="fleet sizes, comma-separated")
    c.add_argument("--cells", type=int, default=4, help="cells the fleet shares (default 4)")
    c.add_argument("--cell-pps", type=float, help="packets per second a cell carries")
    c.add_argument("--json", action="store_true", help="print only the JSON document")
    c.set_defaults(handler=_collection)

    gk = bsub.add_parser(
        "group-keys",
        help="a revocation's mesh group-key rotation reaching a fleet (simulated cells)",
        description="Revoke one meter of a joined fleet and measure, on the virtual clock, how "
        "long the rotated group keys take to reach every other meter (paced PANA "
        "re-authentications), against every meter re-authenticating at once. See "
        "docs/mesh-keys.md.",
    )
    gk.add_argument("--meters", type=int, default=1000, help="fleet size (default 1000)")
    gk.add_argument("--cells", type=int, default=4, help="cells the fleet shares (default 4)")
    gk.add_argument("--cell-pps", type=float, help="packets per second a cell carries")
    gk.add_argument(
        "--push-rate", type=float, default=5.0, help="sessions re-authenticated per second"
    )
    gk.add_argument("--json", action="store_true", help="print only the JSON document")
    gk.set_defaults(handler=_group_keys)

    mx = bsub.add_parser(
        "mixed",
        help="head-end ingest while the REST API serves range queries: both rates",
        description="Ingest (one reading per message, decoded, group commit into SQLite) while "
        "the REST API serves one-week range queries from a client process, in one event loop "
        "as the head-end runs them. Phases of --duration seconds each: ingest_alone, "
        "api_alone, both_on_loop (commits on the event loop, queries through the writer's "
        "connection: the head-end before issue 12) and both_off_loop (commits on the writer "
        "thread, queries on reader connections: now). Per phase ingest_readings_per_s, "
        "api_queries_per_s, api_p50_ms/api_p99_ms and loop_lag_max_ms/loop_lag_p99_ms (how "
        "late a 5 ms ticker on the loop woke); *_kept: the share of each alone-rate kept when "
        "both run.",
    )
    mx.add_argument("--duration", type=float, default=3.0, help="seconds per phase (default 3)")
    mx.add_argument("--api-clients", type=int, default=4, help="queries in flight (default 4)")
    mx.add_argument("--meters", type=int, default=200, help="meters with 30 days of readings")
    mx.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    mx.add_argument("--json", action="store_true", help="print only the JSON document")
    mx.set_defaults(handler=_mixed)

    el = bsub.add_parser(
        "echonet",
        help="ECHONET Lite: codec frames/s against pychonet's, Get round trips/s to our meter",
        description="ECHONET Lite. (a) Codec: frames per second on the same realistic frames "
        "(Get, Get_Res with E7/E0/E2 history, INF of D5, SetGet), measured alternately in one "
        "run. Per frame: decode, read every field (tid, seoj, deoj, esv, epc + edt of every "
        "property), encode: codec_per_s (encode() of the decoded frame, which returns the "
        "datagram it came from), codec_built_per_s (a Frame constructed anew from the fields "
        "and encoded from them), pychonet_codec_per_s, codec_ratio_vs_pychonet and "
        "codec_built_ratio_vs_pychonet (null, with pychonet_reason, without pychonet); "
        "codec_compiled says whether the mypyc-compiled codec is loaded. "
        "(b) Get round trips per second against our smart-meter node over loopback UDP 3610 "
        "(127.0.40.1; the controller runs in a separate process on 127.0.40.2:3610): "
        "get_rtt_per_s, with udp_echo_per_s (raw UDP echo at the same concurrency and payload "
        "size) as the baseline. Targets: ratio >= 5, get_rtt_per_s >= 20000.",
    )
    el.add_argument(
        "--duration", type=float, default=2.0, help="seconds per measurement (default 2)"
    )
    el.add_argument("--concurrency", type=int, default=32, help="Gets in flight (default 32)")
    el.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="round-trip measurements alternate this many times; the best round counts",
    )
    el.add_argument("--codec-only", action="store_true", help="skip the round-trip part")
    el.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    el.add_argument("--json", action="store_true", help="print only the JSON document")
    el.set_defaults(handler=_echonet)

    ef = bsub.add_parser(
        "echonet-flood",
        help="ECHONET Lite: bytes a smart-meter node answers per byte of a Get flood",
        description="ECHONET Lite amplification, on the virtual clock (no sockets): a flood of "
        "16-byte Gets of E2+E4 (404-byte answers) from one source, then from a new (spoofed) "
        "address per Get, while a controller at 60 requests/min must be answered every time. "
        "Each flood runs with the node's per-source reply budget (after) and without it "
        "(before, the baseline, measured in the same run); out_per_in is the bytes sent to "
        "the flooding source(s) per byte received from them.",
    )
    ef.add_argument("--rate", type=int, default=2000, help="flood Gets per second (default 2000)")
    ef.add_argument(
        "--duration", type=float, default=60.0, help="virtual seconds per flood (default 60)"
    )
    ef.add_argument("--batch", type=int, default=32, help="datagrams per receive batch")
    ef.add_argument("--json", action="store_true", help="print only the JSON document")
    ef.set_defaults(handler=_echonet_flood)
    f = bsub.add_parser(
        "flood",
        help="a meter's authentication latency while one source floods the key server",
        description="A legitimate meter's PANA + EAP-PSK authentication latency, idle and "
        "during a one-source flood of the key server over loopback: 'pci' repeats a PCI from "
        "one socket, 'pry' is a configured PANA relay wrapping PCIs from ever new PaC "
        "addresses. Prints per flood p50_ms/p99_ms, ratio_to_idle_p50 (target <= 2), what the "
        "flooder sent and got back (amplification, target <= 1) and the key server's CPU and "
        "counters. Three processes; loopback only (127.0.0.1-3, meters on 127.0.1.1-250).",
    )
    f.add_argument("--duration", type=float, default=20.0, help="seconds per flood (default 20)")
    f.add_argument(
        "--flood",
        action="append",
        choices=("pci", "pry"),
        help="which flood (repeatable; default both)",
    )
    f.add_argument(
        "--rate", type=float, default=0.0, help="flood datagrams per second (default: max)"
    )
    f.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    f.add_argument("--json", action="store_true", help="print only the JSON document")
    f.set_defaults(handler=_flood)


def _auth(args: argparse.Namespace) -> int:
    from amistack.bench.auth import bench_auth, bench_auth_compared, bench_auth_methods

    if min(args.sessions, args.concurrency, args.processes, args.rounds) < 1:
        print(
            "amistack bench auth: --sessions, --concurrency, --processes and --rounds must be >= 1",
            file=sys.stderr,
        )
        return 2
    if args.profile_dir and (args.server == "both" or args.method == "tls"):
        print(
            "amistack bench auth: --profile-dir needs --server keyserver or paa (and psk)",
            file=sys.stderr,
        )
        return 2
    if not args.json:
        print(
            f"benchmark: {args.sessions} authentications, concurrency {args.concurrency}, "
            f"server={args.server}, method={args.method} ...",
            file=sys.stderr,
            flush=True,
        )
    options: dict[str, Any] = {
        "processes": args.processes,
        "prefer_uvloop": not args.no_uvloop,
        "profile_dir": args.profile_dir,
        "eap_identity": args.eap_identity,
    }
    if args.method == "tls":
        server = "keyserver" if args.server == "both" else args.server
        result = bench_auth_methods(
            args.sessions, args.concurrency, rounds=args.rounds, server=server, **options
        )
    elif args.server == "both":
        result = bench_auth_compared(args.sessions, args.concurrency, rounds=args.rounds, **options)
    else:
        result = bench_auth(args.sessions, args.concurrency, server=args.server, **options)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0 if not result.get("failures") else 1


def _eventlog(args: argparse.Namespace) -> int:
    from amistack.bench.eventlog import bench_eventlog

    if args.entries < 1 or args.big < 1:
        print("amistack bench eventlog: --entries and --big must be >= 1", file=sys.stderr)
        return 2
    if not args.json:
        print(
            f"benchmark: event log, {args.entries} appends, {args.big}-entry verification ...",
            file=sys.stderr,
            flush=True,
        )
    result = bench_eventlog(args.entries, args.big, args.fsync, softhsm=not args.no_softhsm)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from amistack.bench.dashboard import bench_dashboard

    if args.meters < 1 or args.readings < 0 or args.rounds < 1:
        print(
            "amistack bench dashboard: --meters and --rounds must be >= 1, --readings >= 0",
            file=sys.stderr,
        )
        return 2
    result = bench_dashboard(args.meters, args.readings, args.rounds)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _meter(args: argparse.Namespace) -> int:
    from amistack.bench.meter import bench_model

    if args.meters < 1 or args.days < 1:
        print("amistack bench meter: --meters and --days must be >= 1", file=sys.stderr)
        return 2
    result = bench_model(args.meters, args.days)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _mesh(args: argparse.Namespace) -> int:
    from amistack.bench.mesh import METERS_PER_DODAG, bench_mesh

    try:
        sizes = [int(v) for v in args.sizes.split(",")]
    except ValueError:
        sizes = []
    placement = [v for v in (args.meters_per_dodag, args.per_concentrator) if v is not None]
    if not sizes or min(sizes) < 2 or args.max_time <= 0 or min(placement, default=1) < 1:
        print("amistack bench mesh: --sizes are integers >= 2, --max-time > 0, "
              "--meters-per-dodag / --per-concentrator >= 1", file=sys.stderr)  # fmt: skip
        return 2
    try:
        if args.per_concentrator is not None:
            result = bench_mesh(sizes, args.seed, args.max_time, meters_per_dodag=None,
                                per_concentrator=args.per_concentrator)  # fmt: skip
        else:
            per_dodag = args.meters_per_dodag or METERS_PER_DODAG
            result = bench_mesh(sizes, args.seed, args.max_time, meters_per_dodag=per_dodag)
    except ValueError as exc:
        print(f"amistack bench mesh: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from amistack.bench.ingest import bench_ingest

    if args.readings < 1 or args.per_message < 1:
        print("amistack bench ingest: --readings and --per-message must be >= 1", file=sys.stderr)
        return 2
    if args.path == "engine":
        from amistack.bench.ingest import bench_engine

        if args.backend == "postgresql":
            print("amistack bench ingest: --path engine stores into SQLite", file=sys.stderr)
            return 2
        if not args.json:
            print("benchmark: the head-end and meter engines ...", file=sys.stderr, flush=True)
        n = -(-args.readings // args.per_message)
        result = bench_engine(n, intervals_per_message=args.per_message)
        print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
        return 0
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = {}
    for backend in backends:
        if not args.json:
            print(f"benchmark: ingest into {backend} ...", file=sys.stderr, flush=True)
        results[backend] = bench_ingest(
            backend,
            args.readings,
            intervals_per_message=args.per_message,
            dsn=args.dsn,
            path=args.path,
            workers=args.workers,
        )
    print(json.dumps(results, indent=None if args.json else 1, sort_keys=True))
    return 0


def _scale(args: argparse.Namespace) -> int:
    from amistack.bench.scale import bench_scale
    from amistack.cli.common import CliError

    if min(args.sessions, args.concurrency, args.devices, args.readings) < 2:
        raise CliError(
            "amistack bench scale: --sessions, --concurrency, --devices, --readings >= 2"
        )
    if not args.json:
        print("benchmark: key servers and collectors on one PostgreSQL ...", file=sys.stderr)
    result = bench_scale(
        sessions=args.sessions,
        concurrency=args.concurrency,
        devices=args.devices,
        readings=args.readings,
        dsn=args.dsn,
    )
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _echonet(args: argparse.Namespace) -> int:
    from amistack.bench.echonet import bench_echonet
    from amistack.cli.common import CliError

    if args.duration <= 0 or args.concurrency < 1 or args.rounds < 1:
        raise CliError(
            "amistack bench echonet: --duration must be > 0, --concurrency and --rounds >= 1"
        )
    if not args.json:
        print(
            f"benchmark: ECHONET Lite codec and Get round trips, {args.duration} s each ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        result = bench_echonet(
            codec_duration=args.duration,
            rtt_duration=args.duration,
            concurrency=args.concurrency,
            rounds=args.rounds,
            prefer_uvloop=not args.no_uvloop,
            rtt=not args.codec_only,
        )
    except OSError as exc:  # e.g. 127.0.40.1:3610 already taken by a running meter
        raise CliError(f"amistack bench echonet: cannot open UDP 3610 on loopback: {exc}") from exc
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _echonet_flood(args: argparse.Namespace) -> int:
    from amistack.bench.echonet_flood import bench_flood
    from amistack.cli.common import CliError
    from amistack.echonet.objects import SmartMeterObject
    from amistack.meter.model import MeterModel
    from amistack.meter.tables import TimeScale

    if args.rate < 1 or args.duration <= 0 or args.batch < 1:
        raise CliError(
            "amistack bench echonet-flood: --rate and --batch must be >= 1, --duration > 0"
        )
    meter = SmartMeterObject(MeterModel(7), TimeScale(origin_now=0.0, origin_model=1.7e9))
    result = bench_flood(meter, rate=args.rate, duration=args.duration, batch=args.batch)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _flood(args: argparse.Namespace) -> int:
    from amistack.bench.flood import FLOODS, bench_flood
    from amistack.cli.common import CliError

    if args.duration <= 0 or args.rate < 0:
        raise CliError("amistack bench flood: --duration must be > 0 and --rate >= 0")
    floods = tuple(dict.fromkeys(args.flood)) if args.flood else FLOODS
    if not args.json:
        print(
            f"benchmark: auth latency idle and during {args.duration:g} s floods "
            f"({', '.join(floods)}) ...",
            file=sys.stderr,
            flush=True,
        )
    result = bench_flood(args.duration, floods, args.rate, prefer_uvloop=not args.no_uvloop)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _group_keys(args: argparse.Namespace) -> int:
    from amistack.bench.group_keys import bench_group_keys

    if args.meters < 2 or args.cells < 1 or not args.push_rate > 0:
        print(
            "amistack bench group-keys: --meters >= 2, --cells >= 1, --push-rate > 0",
            file=sys.stderr,
        )
        return 2
    result = bench_group_keys(
        args.meters, cells=args.cells, cell_pps=args.cell_pps, push_rate=args.push_rate
    )
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True, default=str))
    return 0


def _mixed(args: argparse.Namespace) -> int:
    from amistack.bench.mixed import bench_mixed

    if args.duration <= 0 or args.api_clients < 1 or args.meters < 1:
        print(
            "amistack bench mixed: --duration must be > 0, --api-clients and --meters >= 1",
            file=sys.stderr,
        )
        return 2
    if not args.json:
        print(
            f"benchmark: ingest with API range queries, 4 phases of {args.duration} s ...",
            file=sys.stderr,
            flush=True,
        )
    result = bench_mixed(
        args.duration,
        meters=args.meters,
        api_clients=args.api_clients,
        prefer_uvloop=not args.no_uvloop,
    )
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True))
    return 0


def _collection(args: argparse.Namespace) -> int:
    from amistack.bench.collection import bench_collection
    from amistack.sim.fleet import CellConfig

    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or args.cells < 1:
        print(
            "amistack bench collection: --sizes needs positive integers, --cells >= 1",
            file=sys.stderr,
        )
        return 2
    cell = CellConfig(rate_pps=args.cell_pps) if args.cell_pps else None
    result = bench_collection(sizes, cells=args.cells, cell=cell)
    print(json.dumps(result, indent=None if args.json else 1, sort_keys=True, default=str))
    return 0
