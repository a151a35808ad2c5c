"""``warelink hub …`` commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Callable, Iterator

import psycopg
import structlog
import uvicorn
from starlette.types import ASGIApp

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


GRACE_S = 3
"""How long a stopping hub lets requests and live sockets still open finish, after it has
closed every connection (uvicorn closes live sockets with 1012, "service restart");
what still runs then is cancelled."""


def serve(args: argparse.Namespace) -> int:
    settings = HubSettings()
    if not args.no_migrate:
        apply_migrations(settings.db_url)
    app = create_app(settings)
    log.info("hub.serving", url=f"http://{settings.http}/")
    return run_server(
        app, settings.http_host, settings.http_port, before_stop=app.state.hub.live.close
    )


def run_server(
    app: ASGIApp, host: str, port: int, *, before_stop: Callable[[], None] | None = None
) -> int:
    """Serve ``app`` until SIGINT or SIGTERM; 0 when it stopped, 3 when it did not start.

    ``before_stop`` runs when the stop begins, before uvicorn closes the connections: the
    live sockets end themselves with 1001 ("going away": reconnect to another replica).
    """
    server = HubServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=GRACE_S,
        ),
        before_stop=before_stop,
    )
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        return 130
    return 0 if server.started else 3  # its log says why


class HubServer(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT or SIGTERM alike: a graceful shutdown, then exit 0.

    uvicorn alone raises the signal again once it has shut down, so that SIGINT ends as
    KeyboardInterrupt (a traceback out of ``asyncio.run``) and SIGTERM kills the process
    (status -15): here the shutdown it has just done is the whole stop. A second Ctrl-C
    skips the wait for open connections, as in uvicorn.
    """

    def __init__(
        self, config: uvicorn.Config, *, before_stop: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.before_stop = before_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.before_stop is not None:
            self.before_stop()
            await asyncio.sleep(0.2)  # the live sockets send their close frames
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        stops = (signal.SIGINT, signal.SIGTERM)
        for sig in stops:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        cancelled = CancelledAtStop(self)
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(cancelled)
        try:
            yield
        finally:
            uvicorn_log.removeFilter(cancelled)
            for sig in stops:
                loop.remove_signal_handler(sig)


class CancelledAtStop(logging.Filter):
    """One line, not a traceback, for a request cancelled at the end of the grace period.

    When a request or a live socket is still running ``GRACE_S`` after the hub closed
    its connections, uvicorn cancels it and logs the CancelledError as "Exception in
    ASGI application" with its traceback. That cancellation is the stop working as
    meant (the connection is already closed: the client gets no answer, and a transaction
    not yet committed rolls back), so it is told in one line. uvicorn's own error line
    ("Cancel N running task(s), timeout graceful shutdown exceeded") stays: it says that
    a handler did not end by itself when its connection was closed, which is a bug.
    """

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if self.server.should_exit and isinstance(exc, asyncio.CancelledError):
            record.msg = "a request still running at the end of the grace period was cancelled"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


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
