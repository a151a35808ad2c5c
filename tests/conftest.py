"""Fixtures over the real services: every test owns its database and its MQTT prefix.

A test that needs PostgreSQL or Mosquitto asks for it (``db_url``, ``mqtt_prefix``,
``hub_settings`` or the session fixtures ``postgres_admin_url`` and ``mqtt_url`` under
them; one that uses ``MQTT_HOST`` or ``PG_ADMIN_URL`` is given them); the first such test
of a session (of an xdist worker) starts the machine's service if it is down, with
``deploy/services.sh``. A test that needs neither never touches them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.support import services
from tests.support.api import Api, running_api
from tests.support.hub import HubProcess
from tests.support.services import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL, free_port
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings

__all__ = ["MQTT_HOST", "MQTT_PORT", "PG_ADMIN_URL"]  # (some test modules import them here)

# Tests whose verdict depends on the time things take on this machine (a bound, a ratio,
# a fair share of a bus, who answers first): marked `serial`, so that `make test` runs
# them after the parallel run, alone, where other tests' load cannot decide them. (A
# new test says so itself, with ``@pytest.mark.serial``.)
SERIAL = (
    "tests/hub/test_csv_import.py::test_ten_thousand_lines_import_in_well_under_a_few_seconds",
    "tests/hub/test_front_door.py::test_an_unknown_user_costs_as_much_as_a_known_one",
    "tests/edge/test_modbus_drivers.py::test_rtu_eight_slaves_one_bus_never_overlaps",
    "tests/edge/test_modbus_drivers.py::test_rtu_silent_slave_offline_once_others_keep_working",
    "tests/sim/test_modbus_sim.py::test_rtu_line_counts_requests_that_step_on_an_answer",
    # It stops at the first ack seen after every duplicate is counted: when the hub
    # outruns the test, that is the first ack, not the last.
    "tests/e2e/test_delivery.py::test_batches_delivered_twice_are_stored_once",
)
# The longest tests (each half a minute or more): marked `slow` and started first, so
# that the parallel run does not end waiting on one of them started last.
SLOW = (
    "tests/chaos/",
    "tests/hub/test_ledger_stateful.py::test_the_ledger_keeps_its_invariants_under_any_sequence",
    "tests/e2e/test_demo.py::test_the_demo_runs_two_sites_with_live_data_and_no_error",
    "tests/e2e/test_delivery.py::test_hub_killed_for_20s_loses_and_doubles_nothing",
    "tests/edge/test_outbox_disk.py::test_edge_run_and_status_refuse_a_lost_outbox_until_the_loss",
    "tests/hub/test_ledger.py::test_the_drift_check_finds_and_repairs_a_tampered_projection",
    "tests/edge/test_ble_hci_transport.py::test_drivers_in_this_process_reach_peripherals_in",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[", 1)[0] in SERIAL:
            item.add_marker(pytest.mark.serial)
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
        if isinstance(item, pytest.Function):
            _ask_for_the_services_it_names(item)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


# A test that reaches a service by its address (``MQTT_HOST``, ``PG_ADMIN_URL``), itself
# or through its fixtures or the helpers of tests they call, not through the fixtures
# below, is given them too: first, so the service is up before any of its fixtures runs.
_SERVICE_FIXTURES = {"postgres": "postgres_admin_url", "mosquitto": "mqtt_url"}


def _ask_for_the_services_it_names(item: pytest.Function) -> None:
    functions = [item.obj] + [
        fixturedef.func
        for fixturedefs in item._fixtureinfo.name2fixturedefs.values()
        for fixturedef in fixturedefs
    ]
    named = frozenset().union(*(services.services_named_by(f) for f in functions))
    for fixture in sorted(_SERVICE_FIXTURES[service] for service in named):
        if fixture not in item.fixturenames:
            item.fixturenames.insert(0, fixture)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The machine's PostgreSQL (started if it is down), as its ``postgres`` database."""
    services.ensure_service("PostgreSQL", *services.postgres_address())
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """The machine's Mosquitto (started if it is down)."""
    services.ensure_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    return f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


@pytest.fixture
def db_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own; dropped afterwards."""
    name = f"wl_test_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(postgres_admin_url, dbname=name)
    migrate(url)
    yield url
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def mqtt_prefix(mqtt_url: str) -> str:
    """A topic prefix of this test's own (a hub clears its own retained presence)."""
    return f"wltest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hub_settings(db_url: str, mqtt_prefix: str, mqtt_url: str) -> HubSettings:
    return HubSettings(
        db_url=db_url,
        mqtt_url=mqtt_url,  # type: ignore[arg-type]
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
