"""Test files outside packages are imported by their basename (pytest's default "prepend"
import mode), so two of them with one name collide as soon as one xdist worker collects both
(`import file mismatch`) - a failure that depends on how `--dist loadfile` happens to share the
files out. Every such basename must be unique."""

from __future__ import annotations

from collections import defaultdict

from tests.conftest import REPO


def test_test_modules_outside_packages_have_unique_basenames() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in (REPO / "tests").rglob("test_*.py"):
        if not (path.parent / "__init__.py").exists():
            by_name[path.name].append(str(path.relative_to(REPO)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
