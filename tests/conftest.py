"""Fixtures over the real services: every test owns its database and its MQTT prefix.

PostgreSQL and Mosquitto must be running (``make test`` starts them, see
``deploy/services.sh``); a test that needs one fails with a clear message if it is not.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.support.api import Api, running_api
from tests.support.hub import HubProcess
from tests.support.services import free_port
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings

PG_ADMIN_URL = os.environ.get("WARELINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("WARELINK_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("WARELINK_TEST_MQTT_PORT", "1883"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _services_up() -> None:
    missing = []
    if not _reachable("127.0.0.1", 5432):
        missing.append("PostgreSQL on 127.0.0.1:5432")
    if not _reachable(MQTT_HOST, MQTT_PORT):
        missing.append(f"Mosquitto on {MQTT_HOST}:{MQTT_PORT}")
    if missing:
        pytest.exit(f"not running: {', '.join(missing)} — run `make services`", returncode=3)


@pytest.fixture
def db_url() -> Iterator[str]:
    """A fresh, migrated database of this test's own; dropped afterwards."""
    name = f"wl_test_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(PG_ADMIN_URL, dbname=name)
    migrate(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def mqtt_prefix() -> str:
    """A topic prefix of this test's own (a hub clears its own retained presence)."""
    return f"wltest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hub_settings(db_url: str, mqtt_prefix: str) -> HubSettings:
    return HubSettings(
        db_url=db_url,
        mqtt_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",  # type: ignore[arg-type]
        mqtt_prefix=mqtt_prefix,
        http=f"127.0.0.1:{free_port()}",
    )


@pytest.fixture
async def hub(hub_settings: HubSettings, tmp_path: object) -> AsyncIterator[HubProcess]:
    """A real hub process (``warelink hub serve``), ready."""
    process = HubProcess(hub_settings, log_path=os.path.join(str(tmp_path), "hub.log"))
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def api(hub_settings: HubSettings) -> AsyncIterator[Api]:
    """The hub's REST API in process on this test's database; ``await api.client(...)``."""
    async with running_api(hub_settings) as running:
        yield running
