"""The hub's REST API in process, on a real database, with a key per role.

No ingest worker runs (no MQTT): for tests of the API and the ledger behind it. The
routes, auth, database and SQL are the real ones; only the HTTP socket is skipped
(httpx's ASGI transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpx

from warelink.hub.access import Role
from warelink.hub.api.state import Hub
from warelink.hub.app import create_app
from warelink.hub.identity import auth
from warelink.hub.settings import HubSettings


class Api:
    def __init__(self, hub: Hub, transport: httpx.ASGITransport) -> None:
        self.hub = hub
        self.transport = transport
        self._clients: list[httpx.AsyncClient] = []

    async def key(
        self, identity: str, roles: Iterable[Role], sites: Iterable[str] | None = None
    ) -> str:
        """A new service identity with these roles and sites, and an API key for it."""
        async with self.hub.pool.connection() as conn, conn.transaction():
            await auth.create_identity(
                identity, kind="service", roles=roles, sites=sites, created_by="test", conn=conn
            )
            return await auth.create_credential(
                identity, kind="api_key", authenticator=self.hub.authenticator,
                created_by="test", conn=conn,
            )  # fmt: skip

    async def client(
        self, identity: str, *roles: Role, sites: Iterable[str] | None = None
    ) -> httpx.AsyncClient:
        """A client acting as a new identity (roles default to admin, every site)."""
        key = await self.key(identity, roles or (Role.ADMIN,), sites)
        return self.anonymous(headers={"X-API-Key": key})

    def anonymous(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=self.transport, base_url="http://hub", headers=headers, timeout=30
        )
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@asynccontextmanager
async def running_api(settings: HubSettings) -> AsyncIterator[Api]:
    app = create_app(settings)
    hub: Hub = app.state.hub
    await hub.pool.open()
    api = Api(hub, httpx.ASGITransport(app=app))
    try:
        await hub.bootstrap()
        yield api
    finally:
        await api.close()
        await hub.pool.close()
