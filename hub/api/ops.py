"""Routes for operators: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, HubDep, json_response
from warelink.hub.api.problems import errors
from warelink.hub.ingest import gateways as gateway_queries
from warelink.hub.ingest.worker import Ingest
from warelink.hub.migrate import unapplied

router = APIRouter(tags=["ops"])
AUTH_ERRORS = errors(401, 403)


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class IngestCollector:
    """Prometheus view of the ingest worker's counters (no module-level metrics)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.ingest.stats
        for name, value, text in (
            ("warelink_hub_messages", stats.messages, "MQTT messages received"),
            ("warelink_hub_events_committed", stats.events_committed, "events stored"),
            ("warelink_hub_duplicates_dropped", stats.duplicates_dropped, "duplicates dropped"),
            (
                "warelink_hub_malformed_dropped",
                stats.malformed_dropped,
                "malformed messages no gateway could be named for, dropped",
            ),
            ("warelink_hub_quarantined_events", stats.quarantined_events, "events quarantined"),
            (
                "warelink_hub_quarantined_messages",
                stats.quarantined_messages,
                "whole messages quarantined (or counted past the per-gateway cap)",
            ),
            (
                "warelink_hub_gap_anomalies",
                stats.gap_anomalies,
                "gaps wider than any outbox could hold (reported, not asked for)",
            ),
            ("warelink_hub_flushes", stats.flushes, "ingest transactions committed"),
            ("warelink_hub_gaps_detected", stats.gaps_detected, "sequence gaps detected"),
            ("warelink_hub_gaps_filled", stats.gaps_filled, "sequence gaps filled"),
            ("warelink_hub_replays_requested", stats.replays_requested, "replay requests"),
            (
                "warelink_hub_outboxes_refused",
                stats.outboxes_refused,
                "outboxes refused under a gateway id that another outbox speaks for",
            ),
            (
                "warelink_hub_refused_messages",
                stats.refused_messages,
                "births and batches of refused outboxes (neither stored nor acked)",
            ),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "warelink_hub_gateways_held",
            "gateways whose events the hub cannot commit now (held back, not acked)",
            value=stats.gateways_held,
        )
        yield GaugeMetricFamily(
            "warelink_hub_mqtt_connected", "1 if connected", value=int(self.ingest.mqtt_connected)
        )


class GatewaysCollector:
    """Per-gateway figures from the database, labelled by gateway and site."""

    NUMBERS = (
        "acked_seq", "last_seq_received", "events_received", "duplicates_dropped",
        "gaps_detected", "gaps_filled", "replays_requested", "clock_skew_ms",
        "refused_messages",
    )  # fmt: skip

    def __init__(self, gateways: list[dict[str, Any]]) -> None:
        self.gateways = gateways

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["gateway", "site"]
        families = {
            name: GaugeMetricFamily(f"warelink_gateway_{name}", name.replace("_", " "),
                                    labels=labels)
            for name in (*self.NUMBERS, "online", "pending_ranges")
        }  # fmt: skip
        edge = GaugeMetricFamily(
            "warelink_gateway_edge", "the gateway's own counters", labels=[*labels, "counter"]
        )
        for row in self.gateways:
            key = [row["id"], row["site"]]
            for name in self.NUMBERS:
                if row[name] is not None:
                    families[name].add_metric(key, float(row[name]))
            families["online"].add_metric(key, float(row["online"]))
            families["pending_ranges"].add_metric(key, float(len(row["pending_ranges"])))
            for counter, value in row["edge_counters"].items():
                edge.add_metric([*key, counter], float(value))
        yield from families.values()
        yield edge


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok", "checks": {}})


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "not ready"}},
)
async def readyz(hub: HubDep) -> Response:
    """Ready to ingest: database reachable and migrated, broker connected."""
    checks: dict[str, str] = {}
    try:
        async with hub.pool.connection(timeout=2) as conn:
            cur = await conn.execute("SELECT version FROM schema_migrations")
            todo = unapplied({row[0] for row in await cur.fetchall()})
        checks["database"] = "ok" if not todo else f"migrations pending: {todo}"
    except (psycopg.Error, TimeoutError) as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    checks["mqtt"] = "ok" if hub.ingest.mqtt_connected else "disconnected"
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response, responses=AUTH_ERRORS)
async def metrics(
    hub: HubDep, who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)]
) -> Response:
    """Prometheus text: the ingest worker's counters, and each gateway's (of the
    caller's sites), by label. Scrape with a key: ``authorization: {credentials: wlk_…}``.
    """
    async with hub.pool.connection() as conn:
        gateways = await gateway_queries.list_gateways(conn=conn)
    scrape = CollectorRegistry()
    scrape.register(GatewaysCollector([g for g in gateways if who.covers(g["site"])]))
    body = generate_latest(ingest_registry(hub.ingest)) + generate_latest(scrape)
    return Response(body, media_type="text/plain; version=0.0.4")


def ingest_registry(ingest: Ingest) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingest))
    return registry
