"""Write a fleet scenario's report: `report.json` (the whole result) and `report.png` (plots).

The plots are what an evaluator looks at first: authenticated meters over time, the key
server's queue and drops, per-slot collection completeness and lateness, and, per scenario,
the blackout recovery with and without back-off or the revoked meters' shut-out; for
`concentrator-loss` the meters in each concentrator's DODAG around the loss (in place of the
key server's queue), for a mesh `revocation` the revocation and the group key cut. matplotlib
runs headless (Agg); nothing is shown on screen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write the JSON and the PNG into `directory` (created 0755); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    png_path = directory / "report.png"
    _plot(result, png_path)
    return [json_path, png_path]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = result["simulated"]
    runs = (
        [("with back-off", sim["with_backoff"]), ("without back-off", sim["without_backoff"])]
        if result["scenario"] == "blackout"
        else [("", sim)]
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    p = result["parameters"]
    where = (
        f"mesh of {p['per_concentrator']} meters per concentrator"
        if p.get("topology") == "mesh"
        else f"key server {p['keyserver_auth_rate']:g} auth/s"
    )
    fig.suptitle(
        f"amistack sim fleet: {result['scenario']}, {p['meters']} meters in {p['cells']} cells, "
        f"seed {p['seed']}, {where}"
    )
    ax_auth, ax_ks, ax_slots, ax_late = axes.flat
    blackout = result["scenario"] == "blackout"
    for label, run in runs:
        series = run.get("series", [])
        if blackout:  # seconds after the blackout, where the recovery happens
            t = [r["t"] - run["blackout_at_s"] for r in series]
        else:
            t = [r["t"] / 3600 for r in series]
        ax_auth.plot(t, [r["authenticated"] for r in series], label=label or "authenticated")
        ax_ks.plot(t, [r["keyserver_queue"] for r in series], label=f"queue {label}".strip())
        ax_ks.plot(
            t,
            [r["keyserver_dropped"] for r in series],
            linestyle="--",
            label=f"dropped (cumulative) {label}".strip(),
        )
        slots = run.get("slots") or run.get("slots_others") or {}
        comp = slots.get("completeness", [])
        ax_slots.plot(
            range(1, len(comp) + 1), [100 * c for c in comp], marker=".", label=label or None
        )
        late = slots.get("lateness_p99_s_by_slot", [])
        ax_late.plot(range(1, len(late) + 1), late, marker=".", label=label or None)
    xlabel = "seconds after the blackout" if blackout else "simulated hours"
    ax_auth.set(title="meters holding keys", xlabel=xlabel, ylabel="meters")
    ax_ks.set(title="key server: queue depth and drops", xlabel=xlabel)
    loss = sim.get("concentrator_loss")
    if loss is not None:
        _plot_dodags(ax_ks, loss)
    if sim.get("group_key_cut_max_s") is not None:  # a mesh revocation
        _mark_revocation(ax_auth, sim)
    ax_slots.set(title="collection completeness per slot", xlabel="slot", ylabel="%")
    ax_slots.set_ylim(0, 105)
    ax_late.set(title="p99 lateness per slot", xlabel="slot", ylabel="seconds after boundary")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mark_revocation(ax: Any, sim: dict[str, Any]) -> None:
    """A mesh revocation's moments (simulated hours): the revocation, the group key cut."""
    at = sim["revoked_at_s"]
    ax.axvline(at / 3600, color="red", linewidth=0.8, label="revoked")
    ax.axvline((at + sim["group_key_cut_max_s"]) / 3600, color="red", linestyle="--",
               linewidth=0.8, label="revoked meters shut out (group key cut)")  # fmt: skip


def _plot_dodags(ax: Any, loss: dict[str, Any]) -> None:
    """Meters in each concentrator's DODAG (and in none) around the concentrator's loss."""
    ax.clear()
    rows = loss["joined_per_concentrator"]
    t = [r["t"] for r in rows]
    for key in [k for k in (rows[0] if rows else {}) if k != "t"]:
        dead = key == f"c{loss['concentrator']}"
        label = "in no DODAG" if key == "unjoined" else f"concentrator {key[1:]}"
        ax.plot(t, [r[key] for r in rows], label=label + (" (dies)" if dead else ""),
                linestyle=":" if key == "unjoined" else "-")  # fmt: skip
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set(
        title=f"meters per concentrator, cell {loss['cell']}",
        xlabel="seconds after the concentrator's loss",
        ylabel="meters",
    )


__all__ = ["write_report"]
