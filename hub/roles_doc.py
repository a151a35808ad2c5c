"""The role matrix of ``docs/roles.md``, generated from the app's routes.

Each route states its permission through ``Allow(...)`` (the dependency carries
``.permission``); a route that asks only for a valid credential depends on
``current_principal`` directly; a route with neither is public. ``access.ROLE_PERMISSIONS``
then says which role may call which route. Run ``python -m warelink.hub.roles_doc`` after
adding routes: it rewrites the table between the markers and leaves the prose alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from warelink.hub.access import ROLE_PERMISSIONS, Permission, Role
from warelink.hub.api.deps import current_principal

BEGIN = "<!-- role-matrix:begin (generated: python -m warelink.hub.roles_doc) -->"
END = "<!-- role-matrix:end -->"
PUBLIC = "public"
AUTHENTICATED = "authenticated"
YES, NO = "✓", "✗"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    access: str  # a permission's value, PUBLIC or AUTHENTICATED

    def allows(self, role: Role) -> bool:
        if self.access in (PUBLIC, AUTHENTICATED):
            return True
        return Permission(self.access) in ROLE_PERMISSIONS[role]


def _calls(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def access_of(route: APIRoute) -> str:
    calls = list(_calls(route.dependant))
    permissions = {call.permission for call in calls if hasattr(call, "permission")}
    if len(permissions) > 1:
        raise ValueError(f"{route.name} asks for several permissions: {sorted(permissions)}")
    if permissions:
        return Permission(permissions.pop()).value
    return AUTHENTICATED if current_principal in calls else PUBLIC


def _routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every HTTP route, through included routers.

    FastAPI ≥ 0.16x includes routers lazily: ``app.routes`` then holds the routers, and
    ``iter_route_contexts`` gives each route with its prefixed path.
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # older FastAPI: included routes are copied into app.routes
        yield from ((r.path, r) for r in app.routes if isinstance(r, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context.path, context.original_route


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every HTTP route of the app with what it asks for (websockets are described apart)."""
    found = {
        Endpoint(method, path, access_of(route))
        for path, route in _routes(app)
        for method in route.methods or ()
    }
    return sorted(found, key=lambda e: (e.path, e.method))


def table(rows: list[Endpoint]) -> str:
    roles = list(Role)
    lines = [
        "| method | path | needs | " + " | ".join(r.value for r in roles) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in roles) + " |",
    ]
    for e in rows:
        cells = " | ".join(YES if e.allows(r) else NO for r in roles)
        lines.append(f"| {e.method} | `{e.path}` | {e.access} | {cells} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class DocRow:
    method: str
    path: str
    access: str
    allowed: dict[Role, bool]


def parse(text: str) -> list[DocRow]:
    """The matrix as the document states it (what the role-matrix test holds the app to)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    lines = [line.strip() for line in text[start:end].strip().splitlines()]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    roles = [Role(name) for name in header[3:]]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        allowed = {role: cells[3 + i] == YES for i, role in enumerate(roles)}
        rows.append(DocRow(cells[0], cells[1].strip("`"), cells[2], allowed))
    return rows


def rewrite(doc: Path, app: FastAPI) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + table(endpoints(app)) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    from warelink.hub.app import create_app
    from warelink.hub.settings import HubSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", type=Path, default=Path("docs/roles.md"))
    args = parser.parse_args(argv)
    app = create_app(HubSettings())
    rewrite(args.doc, app)
    print(f"{args.doc}: {len(endpoints(app))} endpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
