"""The REST API under /api/v1, one router per area; ``deps`` holds what routes share."""

from __future__ import annotations

from fastapi import APIRouter

from warelink.hub.api import (
    analytics,
    exceptions,
    identities,
    inbound,
    masterdata,
    outbound,
    quarantine,
    stock_control,
)

ROUTERS: list[APIRouter] = [
    identities.router,
    masterdata.router,
    inbound.router,
    outbound.router,
    stock_control.router,
    exceptions.router,
    analytics.router,
    quarantine.router,
]
