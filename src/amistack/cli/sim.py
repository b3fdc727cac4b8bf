"""`amistack sim fleet`: a utility's fleet on the virtual clock with the real engines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amistack.cli.common import CliError

if TYPE_CHECKING:
    from amistack.sim.mesh import MeshSim

PCAP_EPOCH = 1_700_000_000.0  # the capture's time 0 (simulated time is added): a fixed date

_SCENARIO_HELP = """scenarios:
  day         DAYS x 48 half-hour slots: completeness per slot (backfill counted), packets per
              reading, p99 lateness after the slot boundary
  blackout    every meter loses power at once after the first slot and returns within
              --return-window s: time until 50/95/100 % hold keys again and the first complete
              slot, against the key server's capacity; run twice, with and without back-off
              (mesh: the meters reboot, rejoin their DODAGs and authenticate through relays;
              the concentrators keep power; also the times until relay-ready again)
  rollover    session lifetime --rollover-lifetime: every meter re-authenticates (new keys)
              several times a day; readings refused though sent under a valid key must be 0
  revocation  --revoke-fraction of the meters revoked at midday: time to shut-out, readings
              accepted from them afterwards (must be 0); mesh: shut out when the session has
              ended at the meter and the group key rotation has cut the key it holds, and its
              packets that still reached the WAN, before the cut and after (must be 0)
  concentrator-loss
              (--topology mesh) concentrator 0 of cell 0 dies ten minutes into the middle
              slot: its meters re-parent into neighbouring DODAGs, move their PANA session to
              the new relay (AUTH-protected ping) or authenticate afresh through it, and the
              head-end reads them at their new address: time to re-home, collection resumed,
              readings lost (must be 0, backfill counted); plot of meters per concentrator
  all         each scenario of the topology in turn (star: day, blackout, rollover,
              revocation; mesh: those and concentrator-loss), one report directory each

Topology: star (default) puts each cell's meters one hop from its concentrator on a shared
channel of --cell-rate packets/s. mesh makes each cell a radio area (unit disk 100 m, 5 %
frame loss, no collisions; docs/simulator.md) with k x k concentrators, k = round(sqrt(meters
per cell / --per-concentrator)), each the root of an RPL DODAG: 802.15.4 frames under CCM*,
PANA relayed hop by hop (RFC 6345) to the key server engine, C12.22 polled or pushed over the
mesh; packets per reading count every link frame (acks, RPL, retransmissions). A mesh runs
every scenario; each cell is its own simulation with its own key server engine (1/cells of
--keyserver-rate and of its queue), so --shards splits by cell and never changes the result.

Scale: a day of 10,000 meters takes about 1.5 minutes of CPU, of 100,000 about 14 minutes:
7 minutes of wall on 2 cores (docs/simulator.md, "What it costs"); --shards K runs K shards
by cell in parallel on Dask (a local cluster of --workers processes, or --cluster ADDR), each
shard with its own key server and head-end; any scenario runs in shards. The default, auto,
is one shard per 12,500 meters.

Every meter runs PANA + EAP-PSK with the key server engine (UKMF keys, an in-memory store) and
ANSI C12.22 with the head-end's collector, which ingests into SQLite: nothing is made up. The
same --seed gives the same 'simulated' results; 'wall' figures are this machine's.
"""


# what the parser offers (amistack.sim.scenarios, without importing the engines at start-up)
SCENARIOS = ("day", "blackout", "rollover", "revocation", "concentrator-loss")
TOPOLOGIES = ("star", "mesh")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate a fleet on the virtual clock with the real engines",
        description="Simulations on the virtual clock (no sockets, no sleeping).",
    )
    ssub = p.add_subparsers(dest="sim", metavar="WHAT", required=True)
    f = ssub.add_parser(
        "fleet",
        help="a utility's fleet: collection day, blackout, key rollover, revocation, "
        "concentrator loss",
        description="A fleet of meters in cells, one key server, one head-end. Star (default): "
        "each cell a concentrator's shared channel (--cell-rate packets/s, FIFO, bounded "
        "queue), the key server of finite capacity. Mesh (--topology mesh): each cell an RPL "
        "radio mesh under several concentrators. Prints the report JSON; --report DIR also "
        "writes report.json and report.png (plots).",
        epilog=_SCENARIO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--meters", type=int, default=1000, help="meters (default 1000)")
    f.add_argument("--cells", type=int, default=10, help="cells the meters share (default 10)")
    f.add_argument(
        "--scenario",
        choices=(*SCENARIOS, "all"),
        default="day",
        help="what to run (see below; default day)",
    )
    f.add_argument("--seed", type=int, default=1, help="the simulation's seed (default 1)")
    f.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="star",
        help="star: one hop to the concentrator; mesh: RPL meshes, several concentrators per "
        "cell (default star)",
    )
    f.add_argument(
        "--per-concentrator",
        type=int,
        default=50,
        help="mesh: meters per concentrator, k x k concentrators per cell with k = "
        "round(sqrt(meters per cell / this)) (default 50)",
    )
    f.add_argument("--days", type=float, default=1.0, help="day: days of slots (default 1)")
    f.add_argument(
        "--mode", choices=("polled", "pushed"), default="polled", help="collection (polled)"
    )
    f.add_argument(
        "--cell-rate", type=float, default=50.0, help="packets/s each cell carries (default 50)"
    )
    f.add_argument(
        "--keyserver-rate",
        type=float,
        default=3000.0,
        help="full authentications/s the key server serves (default 3000)",
    )
    f.add_argument(
        "--return-window", type=float, default=60.0, help="blackout: power returns within (s)"
    )
    f.add_argument(
        "--rollover-lifetime", type=float, default=7200.0, help="rollover: key lifetime (s)"
    )
    f.add_argument(
        "--revoke-fraction", type=float, default=0.01, help="revocation: share revoked (0.01)"
    )
    f.add_argument(
        "--shards",
        type=_shards,
        default="auto",
        help="split the fleet by cell into this many independent shards, each with its "
        "own key server (1/shards of the capacity) and head-end, run on Dask (1: in this "
        "process); default auto: one per 12,500 meters (1 up to 12,500), smaller processes "
        "cost less CPU per meter; any scenario; the results depend on the seed and the "
        "shards, not on the workers",
    )
    f.add_argument(
        "--workers",
        type=int,
        default=2,
        help="with --shards: worker processes of the local Dask cluster (default 2)",
    )
    f.add_argument(
        "--cluster",
        metavar="ADDR",
        help="with --shards: run on this Dask scheduler (tcp://scheduler:8786) instead",
    )
    f.add_argument("--report", type=Path, help="directory for report.json and report.png")
    f.add_argument("--json", action="store_true", help="print only the JSON (no progress bar)")
    f.set_defaults(handler=_fleet)

    m = ssub.add_parser(
        "mesh",
        help="an RPL mesh forming: every meter joins through PANA relays",
        description="N meters placed at random (seeded) around concentrators on a virtual "
        "radio (unit disk, per-frame loss, stated in the output) form an RPL DODAG; each meter "
        "authenticates with PANA + EAP-PSK against the real key-server engine through its "
        "parent (RFC 6345 relay) before it may send anything else. Prints the DODAG (parent, "
        "rank, hops per node), the simulated times at which 50/95/100 % of the meters were "
        "authenticated and relay-ready, and link frames per node.",
    )
    m.add_argument("--nodes", type=int, default=100, help="meters (default 100)")
    m.add_argument("--seed", type=int, default=1, help="placement and engines' seed (default 1)")
    m.add_argument(
        "--per-concentrator",
        type=int,
        default=400,
        help="meters per concentrator: a k x k grid of DODAG roots, k = round(sqrt(N / this)) "
        "(default 400)",
    )
    m.add_argument("--max-time", type=float, default=3600.0, help="simulated s (3600)")
    m.add_argument(
        "--c1222",
        action="store_true",
        help="meters run the C12.22 endpoint and, once the mesh has formed, a head-end on the "
        "WAN reads every meter over it (keys from the key server); the report gains c1222 "
        "(delivery ratio, simulated latency) and the pcap the C12.22 frames",
    )
    m.add_argument("--json", action="store_true", help="print the whole report as JSON")
    m.add_argument("--png", type=Path, metavar="FILE", help="draw the DODAG (matplotlib)")
    m.add_argument("--graphml", type=Path, metavar="FILE", help="write the DODAG as GraphML")
    m.add_argument(
        "--pcap",
        type=Path,
        metavar="FILE",
        help="write the radio frames as IEEE 802.15.4 with FCS (link type 195); the tshark "
        "options with the group keys and the IPHC context are printed (and in the JSON as "
        "wireshark_keys and wireshark_contexts)",
    )
    m.add_argument(
        "--pcap-limit", type=int, default=200_000, help="frames written at most (200000)"
    )
    m.set_defaults(handler=_mesh)


def _mesh(args: argparse.Namespace) -> int:
    from amistack.gctune import service_gc, settle_gc
    from amistack.sim.mesh import MeshConfig, build_mesh

    if args.max_time <= 0 or args.pcap_limit < 1:
        raise CliError("--max-time must be > 0 and --pcap-limit >= 1")
    try:
        config = MeshConfig(
            nodes=args.nodes, seed=args.seed, per_concentrator=args.per_concentrator,
            c1222=args.c1222,
        )  # fmt: skip
    except ValueError as exc:
        raise CliError(f"{exc} (--nodes and --per-concentrator must be >= 1)") from None
    started = time.perf_counter()
    with service_gc():  # the built mesh is long-lived: frozen, never walked again (gctune)
        sim = build_mesh(config)
        settle_gc()
        return _run_mesh(args, sim, started)


def _run_mesh(args: argparse.Namespace, sim: MeshSim, started: float) -> int:
    """`sim mesh` once the mesh is built: run it, read it, write what was asked for."""
    from amistack.runtime.pcap import LINKTYPE_IEEE802_15_4_WITHFCS, PcapWriter
    from amistack.sim.mesh_export import write_graphml, write_png

    writer = None
    if args.pcap is not None:
        try:
            writer = PcapWriter(args.pcap, linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
        except OSError as exc:
            raise CliError(f"cannot write: {exc}") from None
        sim.on_radio_frame(lambda t, frame: writer.write_frame(frame, PCAP_EPOCH + t),
                           args.pcap_limit)  # fmt: skip
    formed = sim.run(args.max_time)
    read = sim.read_all(args.max_time) if args.c1222 else None
    report = sim.report()
    report["formed"] = formed
    if read is not None:
        report["c1222"] = read
    if writer is not None:
        writer.close()
        report["pcap"] = {"file": str(args.pcap), "frames": writer.count,
                          "wireshark_keys": sim.wireshark_keys(),
                          "wireshark_contexts": sim.wireshark_contexts()}  # fmt: skip
    report["wall_s"] = round(time.perf_counter() - started, 2)
    try:
        if args.png is not None:
            title = f"{args.nodes} meters, seed {args.seed}: DODAG at {report['simulated_s']} s"
            write_png(report["dodag"], args.png, title)
        if args.graphml is not None:
            write_graphml(report["dodag"], args.graphml)
    except OSError as exc:
        raise CliError(f"cannot write: {exc}") from None
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"radio: {json.dumps(report['radio'])}")
    if writer is not None:
        pcap = report["pcap"]
        keys = " ".join(f"-o '{k}'" for k in pcap["wireshark_keys"] + pcap["wireshark_contexts"])
        print(f"pcap: {writer.count} frames; tshark -r {args.pcap} {keys}")
    print("node  eui64                    parent                   rank   hops")
    for d in report["dodag"]:
        print(f"{d['node']:>4}  {d['eui64']:<23}  {d['parent'] or '-':<23}  "
              f"{d['rank'] if d['rank'] is not None else '-':>5}  "
              f"{d['hops'] if d['hops'] is not None else '-':>5}")  # fmt: skip
    summary = {k: v for k, v in report.items() if k not in ("dodag", "radio")}
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0 if formed else 1


def _shards(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def _fleet(args: argparse.Namespace) -> int:
    from amistack.headend.collector import Mode
    from amistack.sim.scenarios import ScenarioConfig, scenarios_for
    from amistack.sim.shard import auto_shards

    names = scenarios_for(args.topology) if args.scenario == "all" else (args.scenario,)
    if args.shards == "auto":
        args.shards = auto_shards(args.meters, args.cells)
    if args.shards > 1:
        import distributed  # noqa: F401  (it sets its loggers up on import)

        # Dask's scheduler and nannies log every step at INFO: only their warnings here
        logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.root.level))
    results = []
    for name in names:
        try:
            sc = ScenarioConfig(
                scenario=name,
                meters=args.meters,
                cells=args.cells,
                seed=args.seed,
                days=args.days,
                mode=Mode(args.mode),
                cell_rate_pps=args.cell_rate,
                keyserver_auth_rate=args.keyserver_rate,
                return_window=args.return_window,
                rollover_lifetime=args.rollover_lifetime,
                revoke_fraction=args.revoke_fraction,
                shards=args.shards,
                workers=args.workers,
                cluster=args.cluster,
                topology=args.topology,
                per_concentrator=args.per_concentrator,
            )
        except ValueError as exc:
            raise CliError(str(exc)) from None
        result = _run_with_progress(sc, quiet=args.json)
        if args.report is not None:
            out = args.report / name if len(names) > 1 else args.report
            written = _write(result, out)
            if not args.json:
                print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
        results.append(result)
    doc: Any = results[0] if len(results) == 1 else results
    print(json.dumps(doc, indent=None if args.json else 1, sort_keys=True))
    return 0


def _write(result: dict[str, Any], out: Path) -> list[Path]:
    from amistack.sim.report import write_report

    try:
        return write_report(result, out)
    except OSError as exc:
        raise CliError(f"--report {out}: {exc.strerror or exc}") from None


def _run_with_progress(sc: Any, quiet: bool) -> dict[str, Any]:
    from amistack.sim.scenarios import run_scenario

    if quiet or not sys.stderr.isatty():
        return run_scenario(sc)
    from tqdm import tqdm

    bar = tqdm(
        total=100.0,
        desc=f"{sc.scenario} ({sc.meters} meters)",
        unit="%",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]",
        file=sys.stderr,
    )
    last = [time.perf_counter(), 0]

    def progress(done: float, total: float, events: int) -> None:
        now = time.perf_counter()
        rate = (events - last[1]) / max(now - last[0], 1e-9)
        last[0], last[1] = now, events
        bar.set_postfix_str(f"sim {done / 3600:.1f}/{total / 3600:.1f} h, {rate:,.0f} events/s")
        bar.n = 100.0 * done / max(total, 1e-9)
        bar.refresh()

    try:
        return run_scenario(sc, progress)
    finally:
        bar.close()
