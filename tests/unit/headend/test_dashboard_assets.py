"""The dashboard's vendored front-end files are the ones web/package-lock.json pins: the same
bytes as `npm ci` installs (make setup copies them), at exact versions, with integrity hashes."""

from __future__ import annotations

import json

from tests.conftest import REPO, unavailable

WEB = REPO / "web"
VENDOR = REPO / "src" / "amistack" / "headend" / "dashboard" / "static" / "vendor"
FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "cytoscape.min.js": "cytoscape/dist/cytoscape.min.js",
}


def test_versions_are_pinned_exactly_with_integrity() -> None:
    wanted = json.loads((WEB / "package.json").read_text())["dependencies"]
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"]
    for name, version in wanted.items():
        assert version[0].isdigit(), f"{name} {version}: pin an exact version"
        entry = lock[f"node_modules/{name}"]
        assert entry["version"] == version and entry["integrity"].startswith("sha512-")


def test_vendored_files_are_what_npm_installed() -> None:
    modules = WEB / "node_modules"
    if not modules.is_dir():
        unavailable("web/node_modules is missing: make setup runs npm ci there")
    assert sorted(p.name for p in VENDOR.iterdir()) == sorted(FILES)
    for name, source in FILES.items():
        assert (VENDOR / name).read_bytes() == (modules / source).read_bytes(), name
