"""Pictures and graphs of a formed mesh: the DODAG as PNG (matplotlib) and GraphML.

Both take the `dodag` list of `MeshSim.report()` (node, role, eui64, x, y, parent, rank, hops,
authenticated); the concentrators are drawn as black squares.
GraphML (the format Gephi, yEd, networkx and igraph read) has one node per mesh node with its
position, rank and hops, and one directed edge child -> preferred parent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

__all__ = ["write_graphml", "write_png"]

_GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
_KEYS = (("x", "double"), ("y", "double"), ("rank", "int"), ("hops", "int"),
         ("authenticated", "boolean"))  # fmt: skip


def write_graphml(dodag: list[dict[str, Any]], path: Path) -> None:
    root = ET.Element("graphml", xmlns=_GRAPHML_NS)
    for name, kind in _KEYS:
        ET.SubElement(root, "key", {"id": name, "for": "node", "attr.name": name,
                                    "attr.type": kind})  # fmt: skip
    graph = ET.SubElement(root, "graph", id="dodag", edgedefault="directed")
    for d in dodag:
        node = ET.SubElement(graph, "node", id=d["eui64"])
        for name, _ in _KEYS:
            if d[name] is not None:
                value = str(d[name]).lower() if isinstance(d[name], bool) else str(d[name])
                ET.SubElement(node, "data", key=name).text = value
    for d in dodag:
        if d["parent"] is not None:
            ET.SubElement(graph, "edge", source=d["eui64"], target=d["parent"])
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_png(dodag: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where = {d["eui64"]: (d["x"], d["y"]) for d in dodag}
    fig, ax = plt.subplots(figsize=(8, 8))
    for d in dodag:
        if d["parent"] is not None:
            px, py = where[d["parent"]]
            ax.plot([d["x"], px], [d["y"], py], color="0.6", linewidth=0.6, zorder=1)
    joined = [d for d in dodag if d["hops"] is not None]
    lost = [d for d in dodag if d["hops"] is None]
    points = ax.scatter([d["x"] for d in joined], [d["y"] for d in joined],
                        c=[d["hops"] for d in joined], cmap="viridis", s=14, zorder=2)  # fmt: skip
    if lost:
        ax.scatter([d["x"] for d in lost], [d["y"] for d in lost], marker="x", color="red",
                   s=18, label="not joined", zorder=2)  # fmt: skip
        ax.legend(loc="upper right")
    roots = [d for d in dodag if d.get("role") == "concentrator"] or dodag[:1]
    ax.scatter([d["x"] for d in roots], [d["y"] for d in roots], marker="s", color="black",
               s=50, zorder=3)  # fmt: skip
    fig.colorbar(points, ax=ax, label="hops to a concentrator")
    ax.set_title(title)
    ax.set_xlabel("m")
    ax.set_ylabel("m")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
