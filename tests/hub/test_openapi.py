"""The OpenAPI document describes every route with its response schema."""

from __future__ import annotations

from warelink.hub.app import create_app
from warelink.hub.settings import HubSettings


def test_openapi_names_every_route_and_its_response_shape() -> None:
    schema = create_app(HubSettings()).openapi()
    paths = schema["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/sites",
                 "/api/v1/sites/{site}/stock", "/api/v1/gateways"):  # fmt: skip
        assert "get" in paths[path], path
        ok = paths[path]["get"]["responses"]["200"]
        assert ok.get("content") or ok.get("description"), path
    gateway = schema["components"]["schemas"]["GatewayInfo"]["properties"]
    assert {"online", "last_seq_received", "acked_seq", "events_received",
            "duplicates_dropped"} <= gateway.keys()  # fmt: skip
    assert "404" in paths["/api/v1/sites/{site}/stock"]["get"]["responses"]
    assert "/api/v1/live" in schema["info"]["description"]  # websockets are not in OpenAPI
