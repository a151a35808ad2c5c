"""The app grants exactly the access that the matrix in docs/roles.md states.

The matrix is read from the document, not from the code: for every endpoint and every
role a real request (one identity per role) must be refused with the permission's 403
exactly where the document says ✗. Dummy parameters are fine: a 404 or 422 still shows
that the request got past the access check.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.api import Api
from warelink.hub import roles_doc
from warelink.hub.access import Role
from warelink.hub.app import create_app
from warelink.hub.settings import HubSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "roles.md"
DENIED = "is not allowed for roles"  # the permission check's 403, not a domain rule's


def url(path: str, site: str = "north") -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: site if m[1] == "site" else "1", path)


async def call(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    if method in ("POST", "PUT", "PATCH"):
        return await client.request(method, path, json={})
    return await client.request(method, path)


def detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return ""


def test_the_matrix_has_a_row_for_every_route_of_the_app() -> None:
    documented = {(r.method, r.path): r.access for r in roles_doc.parse(DOC.read_text())}
    app = {(e.method, e.path): e.access for e in roles_doc.endpoints(create_app(HubSettings()))}
    missing = sorted(set(app) - set(documented))
    assert not missing, f"routes without a row (run python -m warelink.hub.roles_doc): {missing}"
    assert not sorted(set(documented) - set(app)), "rows for routes that do not exist"
    changed = {k: (documented[k], v) for k, v in app.items() if documented[k] != v}
    assert not changed, f"permissions changed since the doc was generated: {changed}"
    assert len(app) > 9  # the document is not empty


async def test_every_endpoint_answers_every_role_as_the_matrix_says(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
    clients = {role: await api.client(f"as-{role.value}".replace("_", "-"), role) for role in Role}
    anonymous = api.anonymous()
    rows = roles_doc.parse(DOC.read_text())
    wrong: list[str] = []
    for row in rows:
        target = url(row.path)
        for role, client in clients.items():
            response = await call(client, row.method, target)
            denied = response.status_code == 403 and DENIED in detail(response)
            if response.status_code == 401:
                wrong.append(f"{row.method} {row.path} {role}: 401 with a valid key")
            elif denied == row.allowed[role]:
                expected = "allowed" if row.allowed[role] else "403"
                wrong.append(
                    f"{row.method} {row.path} {role}: doc says {expected},"
                    f" got {response.status_code} {detail(response)[:80]}"
                )
        response = await call(anonymous, row.method, target)
        public = row.access == roles_doc.PUBLIC
        if public and response.status_code in (401, 403):
            wrong.append(f"{row.method} {row.path}: public, yet {response.status_code}")
        if not public and response.status_code != 401:
            wrong.append(f"{row.method} {row.path}: anonymous got {response.status_code}")
    assert not wrong, "\n".join(wrong)


async def test_a_site_scoped_identity_is_refused_other_sites(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
    north = await api.client("north-admin", Role.ADMIN, sites=["north"])
    scoped = [r for r in roles_doc.parse(DOC.read_text()) if "{site}" in r.path]
    assert scoped, "no {site} routes in the matrix"
    for row in scoped:
        other = await call(north, row.method, url(row.path, site="south"))
        assert other.status_code == 403, (row.method, row.path, other.text)
        assert "no access to site 'south'" in detail(other)
        own = await call(north, row.method, url(row.path, site="north"))
        assert own.status_code != 403 or "no access to site" not in detail(own), row.path
