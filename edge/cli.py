"""The ``warelink`` command.

It lives with the edge because a gateway box installs only ``warelink[edge]``: there the
``edge`` commands work and the ``hub``/``sim`` ones say which extra to install. Each part
owns its commands; this module only dispatches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from warelink.edge.config import ConfigError, load_site_config
from warelink.edge.logs import configure_logging


def run_until_signal(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main``; SIGINT/SIGTERM cancel it so every TaskGroup unwinds cleanly."""

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main

    asyncio.run(runner())
    return 0


def _edge_run(args: argparse.Namespace) -> int:
    from warelink.edge.gateway import Gateway
    from warelink.edge.outbox_file import OutboxError
    from warelink.edge.settings import EdgeSettings

    config = load_site_config(args.config)
    try:
        return run_until_signal(Gateway(config, EdgeSettings()).run())
    except OutboxError as exc:  # refused at open: a lost or corrupt outbox, a full disk
        print(f"warelink: outbox refused: {exc.advice(args.config)}", file=sys.stderr)
        return 2


def _edge_status(args: argparse.Namespace) -> int:
    """The outbox's figures; exit 2 with the reason ("why") when it would be refused."""
    import sqlite3

    from warelink.edge.gateway import OUTBOX_FILE
    from warelink.edge.outbox_file import (
        OutboxCorrupt,
        OutboxError,
        OutboxLost,
        disk_free_bytes,
        inspect,
    )
    from warelink.edge.status import format_status, gateway_status

    config = load_site_config(args.config)
    gw = config.gateway
    path = gw.data_dir / OUTBOX_FILE
    code = 0
    try:
        found = inspect(path)
        report = gateway_status(config)
        if found.outbox_id is not None:
            report["outbox_id"] = found.outbox_id
    except (OutboxError, sqlite3.Error) as exc:
        kinds: dict[type[Exception], str] = {OutboxLost: "lost", OutboxCorrupt: "corrupt"}
        state = kinds.get(type(exc), "unreadable")
        why = exc.advice(args.config) if isinstance(exc, OutboxError) else str(exc)
        report = {"gateway": gw.id, "site": gw.site, "outbox": str(path), "state": state,
                  "why": why}  # fmt: skip
        code = 2
    if gw.data_dir.exists():
        report["disk_free_mb"] = round(disk_free_bytes(gw.data_dir) / (1 << 20), 1)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return code


def _edge_reset_outbox(args: argparse.Namespace) -> int:
    """Accept the loss of a refused outbox: set it aside, start a new one (a new identity)."""
    from warelink.edge.gateway import OUTBOX_FILE
    from warelink.edge.outbox import reset_outbox
    from warelink.edge.outbox_file import OutboxCorrupt, OutboxLost, inspect

    config = load_site_config(args.config)
    path = config.gateway.data_dir / OUTBOX_FILE
    try:
        found = inspect(path)
    except (OutboxLost, OutboxCorrupt) as exc:
        print(f"warelink: accepting the loss: {exc.problem}", file=sys.stderr)
    else:
        what = "no outbox yet" if found.last_seq is None else f"last_seq {found.last_seq}"
        print(f"warelink: {path} is sound ({what}): nothing to reset", file=sys.stderr)
        return 1
    reset = reset_outbox(path, config.gateway.id)
    for aside in reset.set_aside:
        print(f"set aside: {aside}")
    print(f"new outbox {reset.outbox_id}: its seqs start after {reset.origin}")
    return 0


def _lazy(module: str, extra: str, func: str) -> Any:
    def call(args: argparse.Namespace) -> int:
        try:
            target = __import__(module, fromlist=[func])
        except ModuleNotFoundError as exc:
            raise SystemExit(
                f"warelink: '{args.command}' needs the {extra} extra (missing {exc.name}):"
                f" pip install 'warelink[{extra}]'"
            ) from None
        result: int = getattr(target, func)(args)
        return result

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warelink", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    parts = parser.add_subparsers(dest="command", required=True)

    hub = parts.add_parser("hub", help="the cloud hub").add_subparsers(dest="action", required=True)
    serve = hub.add_parser("serve", help="serve the API and ingest (WARELINK_HTTP=host:port)")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    serve.set_defaults(func=_lazy("warelink.hub.cli", "hub", "serve"))
    migrate = hub.add_parser("migrate", help="create the database if needed and migrate it")
    migrate.set_defaults(func=_lazy("warelink.hub.cli", "hub", "migrate"))
    ledger = hub.add_parser("ledger", help="the stock ledger").add_subparsers(
        dest="verb", required=True
    )
    check = ledger.add_parser(
        "check", help="rebuild balances from the movements and report any drift (exit 1)"
    )
    check.add_argument("--repair", action="store_true", help="rewrite drifted balances")
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.set_defaults(func=_lazy("warelink.hub.cli", "hub", "ledger_check"))
    users = hub.add_parser("user", help="manage users").add_subparsers(dest="verb", required=True)
    user_add = users.add_parser("add", help="add a user (e.g. the first admin)")
    user_add.add_argument("name", help="user id (lower case: a-z 0-9 . _ @ -)")
    user_add.add_argument("--role", action="append", required=True, help="a role (repeatable)")
    user_add.add_argument("--site", action="append", help="a site (repeatable; none: every site)")
    user_add.add_argument("--display-name", default="", help="the person's name")
    user_add.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    user_add.set_defaults(func=_lazy("warelink.hub.cli", "hub", "user"))

    edge = parts.add_parser("edge", help="an edge gateway").add_subparsers(
        dest="action", required=True
    )
    run = edge.add_parser("run", help="run the gateway of a site config")
    run.add_argument("--config", required=True, type=Path, help="site config (TOML)")
    run.set_defaults(func=_edge_run)
    status = edge.add_parser("status", help="sequence, ack watermark and outbox depth")
    status.add_argument("--config", required=True, type=Path, help="site config (TOML)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_edge_status)
    reset = edge.add_parser(
        "reset-outbox",
        help="accept the loss of a lost or corrupt outbox: set it aside, start a new one",
    )
    reset.add_argument("--config", required=True, type=Path, help="site config (TOML)")
    reset.set_defaults(func=_edge_reset_outbox)

    sim = parts.add_parser("sim", help="simulated floor devices").add_subparsers(
        dest="action", required=True
    )
    sim_run = sim.add_parser("run", help="simulate the devices of a site config")
    sim_run.add_argument("--config", required=True, type=Path, help="site config (TOML)")
    sim_run.add_argument("--seed", type=int, default=1, help="scenario seed (deterministic)")
    sim_run.add_argument(
        "--interval", type=float, default=3.0, help="seconds between arriving pallets"
    )
    sim_run.add_argument("--garbage-rate", type=float, default=0.0, help="faults per second")
    sim_run.set_defaults(func=_lazy("warelink.sim.cli", "sim", "run"))

    demo = parts.add_parser("demo", help="hub + two simulated sites, each with a gateway")
    demo.add_argument("--dir", type=Path, default=Path(".demo"), help="state directory")
    demo.add_argument("--sites", type=int, default=2, help="number of simulated sites")
    demo.add_argument("--duration", type=float, default=0, help="stop after seconds (0: never)")
    demo.set_defaults(func=_lazy("warelink.sim.demo", "hub,sim", "main"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level.upper(), json=args.log_json)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"warelink: bad config: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
