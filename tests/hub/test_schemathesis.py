"""schemathesis against the hub's OpenAPI schema, in process, as an admin.

Every operation gets generated requests (valid and invalid); none may answer 500, and
every answer must match what the schema documents for it (status code, content type,
body, headers). The app runs with its real lifespan (pool, bootstrap key, ingest) on a
database of this module's own. ``WARELINK_SCHEMATHESIS_EXAMPLES`` raises the examples per
operation for a deeper run.

The schema is read at import from an app that never starts (no I/O); the requests go to
the module's app (``from_fixture`` does not work with pytest 9 in schemathesis 4.32).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from psycopg import sql
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from warelink.hub.app import create_app
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings

PG_ADMIN_URL = os.environ.get("WARELINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("WARELINK_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("WARELINK_TEST_MQTT_PORT", "1883"))
EXAMPLES = int(os.environ.get("WARELINK_SCHEMATHESIS_EXAMPLES", "15"))
KEY = f"wlk_fuzz{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,  # invalid input is refused (4xx), never taken as something else
]


@pytest.fixture(scope="module")
def fuzz_settings() -> Iterator[HubSettings]:
    """A database and MQTT prefix for the whole module: writes pile up, as in real use."""
    name = f"wl_test_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(PG_ADMIN_URL, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
    prefix = f"wltest-{uuid.uuid4().hex[:12]}"
    try:
        yield HubSettings(
            db_url=url,
            mqtt_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",  # type: ignore[arg-type]
            mqtt_prefix=prefix,
            bootstrap_api_key=KEY,
        )
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def hub_app(fuzz_settings: HubSettings) -> FastAPI:
    """An app per operation: schemathesis ends the app's lifespan after each test."""
    return create_app(fuzz_settings)


schema = schemathesis.openapi.from_dict(create_app(HubSettings()).openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # one app for all examples of an operation
    ],
)
def test_every_operation_answers_as_its_schema_says(
    case: schemathesis.Case[Any], hub_app: FastAPI
) -> None:
    case.call_and_validate(app=hub_app, headers={"X-API-Key": KEY}, checks=CHECKS)
