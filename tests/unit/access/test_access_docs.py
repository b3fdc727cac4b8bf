"""docs/access-control.md states the role -> rights table and the route table; they must say what
the code does (`ROLE_RIGHTS`, the rights the API's routes declare)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.headend.conftest import make_access

from amistack.access import ROLE_RIGHTS, Role
from amistack.headend.api import create_app
from amistack.headend.storage import SqliteRepository

DOC = (Path(__file__).parents[3] / "docs" / "access-control.md").read_text()


def _table(marker: str) -> list[list[str]]:
    block = DOC.split(f"<!-- {marker}")[1].split("\n\n")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ")][1:]  # no header
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def test_role_rights_table_matches_the_code() -> None:
    got = {
        Role[name]: ({r.strip() for r in rights.split(",")}, int(rid))
        for name, rid, rights in _table("role-rights table")
    }
    assert {
        role: ({r.value for r in rights}, role.value) for role, rights in ROLE_RIGHTS.items()
    } == got


def test_route_table_matches_the_code(tmp_path: Path) -> None:
    access = make_access(tmp_path, lambda: 0.0)
    create_app(SqliteRepository(tmp_path), access)
    documented: dict[tuple[str, str], str | None] = {}
    for method, path, right in _table("route table"):
        if right.startswith("(none"):  # the public routes: the logins (PUBLIC_ROUTES)
            continue
        any_user = right.startswith("any signed-in user")
        documented[(method, path.strip("`"))] = None if any_user else right.split(" ")[0]
    declared = {k: (v.value if v is not None else None) for k, v in access.route_rights.items()}
    assert documented == declared
