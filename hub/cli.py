"""``warelink hub …`` commands."""

from __future__ import annotations

import argparse
import asyncio
import json

import psycopg
import structlog
import uvicorn

from warelink.hub.app import create_app
from warelink.hub.migrate import migrate as apply_migrations
from warelink.hub.settings import HubSettings
from warelink.hub.stock import ledger

log = structlog.get_logger(__name__)


def migrate(args: argparse.Namespace) -> int:
    settings = HubSettings()
    applied = apply_migrations(settings.db_url)
    print(f"migrated: {len(applied)} applied")
    for migration in applied:
        print(f"  {migration.version:03d} {migration.name}")
    return 0


def serve(args: argparse.Namespace) -> int:
    settings = HubSettings()
    if not args.no_migrate:
        apply_migrations(settings.db_url)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=3,
        )
    )
    log.info("hub.serving", url=f"http://{settings.http}/")
    asyncio.run(server.serve())  # uvicorn handles SIGINT/SIGTERM: a graceful shutdown
    return 0


def user(args: argparse.Namespace) -> int:
    """``warelink hub user add NAME --role R [--site S] --password-stdin``: the first admin."""
    import getpass
    import sys

    from warelink.hub.access import Role
    from warelink.hub.errors import RequestError

    unknown = sorted(set(args.role) - {r.value for r in Role})
    if unknown:
        print(
            f"warelink: unknown roles {unknown}; roles: {[r.value for r in Role]}", file=sys.stderr
        )
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("warelink: the passwords differ", file=sys.stderr)
            return 2
    try:
        asyncio.run(_add_user(args, password, HubSettings()))
    except RequestError as exc:
        print(f"warelink: {exc}", file=sys.stderr)
        return 2 if exc.status == 422 else 1
    where = ", ".join(args.site) if args.site else "every site"
    print(f"user {args.name} added: {', '.join(args.role)} at {where}")
    return 0


async def _add_user(args: argparse.Namespace, password: str, settings: HubSettings) -> None:
    from psycopg import AsyncConnection

    from warelink.hub.access import Principal, Role
    from warelink.hub.identity import auth, identities

    # The command line acts with every right: whoever runs it can reach the database anyway.
    operator = Principal(id="cli", kind="service", roles=frozenset({Role.ADMIN}), sites=None)
    async with await AsyncConnection.connect(settings.db_url) as conn, conn.transaction():
        await identities.create(
            args.name, kind="user", roles=[Role(r) for r in args.role],
            sites=args.site or None, display_name=args.display_name, password=password,
            authenticator=auth.Authenticator(), who=operator, conn=conn,
        )  # fmt: skip


def ledger_check(args: argparse.Namespace) -> int:
    """Exit 0 when the balances equal a rebuild from the movements, 1 when they drift."""
    return asyncio.run(_ledger_check(HubSettings().db_url, repair=args.repair, as_json=args.json))


async def _ledger_check(db_url: str, *, repair: bool, as_json: bool) -> int:
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        cur = await conn.execute("SELECT count(*) FROM movements")
        row = await cur.fetchone()
        movements = row[0] if row else 0
        drift = await ledger.check(conn=conn)
        missing = await ledger.orphans(conn=conn)
        repaired = await ledger.repair(conn=conn) if repair and drift else 0
    report = {
        "movements": movements,
        "drifted": [
            {"key": dict(zip(DRIFT_KEY, d.key, strict=True)),
             "stored": None if d.stored is None else str(d.stored),
             "rebuilt": None if d.rebuilt is None else str(d.rebuilt)}
            for d in drift
        ],
        "repaired": repaired,
        "missing_references": missing,
    }  # fmt: skip
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"checked {movements} movements: {len(drift)} balance rows drift")
        for d in drift[:50]:
            print(f"  {'/'.join(d.key)}: stored {d.stored}, rebuilt {d.rebuilt}")
        if len(drift) > 50:
            print(f"  … and {len(drift) - 50} more (--json for all)")
        if repaired:
            print(f"repaired {repaired} rows: balances now equal the rebuild")
        for problem in missing:
            print(f"  {problem}")
    return 1 if (drift and not repaired) or missing else 0


DRIFT_KEY = ("site", "location", "sku", "lot", "serial", "lpn", "status")
