"""The REST API under /api/v1, one router per area; ``deps`` holds what routes share."""

from __future__ import annotations

from fastapi import APIRouter

from warelink.hub.api import (
    analytics,
    commands,
    exceptions,
    identities,
    inbound,
    live,
    masterdata,
    ops,
    outbound,
    quarantine,
    sites,
    stock_control,
)

ROUTERS: list[APIRouter] = [
    sites.router,
    commands.router,
    live.router,
    identities.router,
    masterdata.router,
    inbound.router,
    outbound.router,
    stock_control.router,
    exceptions.router,
    analytics.router,
    quarantine.router,
]
OPS_ROUTERS: list[APIRouter] = [ops.router]  # at the root, not under /api/v1
