"""``warelink hub …`` commands."""

from __future__ import annotations

import argparse
import asyncio

import structlog
import uvicorn

from warelink.hub.app import create_app
from warelink.hub.migrate import migrate as apply_migrations
from warelink.hub.settings import HubSettings

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
