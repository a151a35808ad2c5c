"""What the routes share, built once per app: settings, pool, ingest, live state, auth."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from warelink.hub.identity import auth
from warelink.hub.ingest.worker import Ingest
from warelink.hub.live.feed import ChangeFeed
from warelink.hub.settings import HubSettings


class Hub:
    """What the routes need, built once per app."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.ingest = Ingest(settings)
        self.live = ChangeFeed(settings.db_url, retain_s=settings.live_retain_s)
        self.pool = AsyncConnectionPool(settings.db_url, min_size=1, max_size=8, open=False)
        self.authenticator = auth.Authenticator(concurrency=settings.argon2_concurrency)
        # Failures in this process's memory (bounded): see auth.Throttle.
        window = settings.auth_window_s
        self.account_failures = auth.Throttle(settings.login_failures_per_account, window)
        self.address_failures = auth.Throttle(settings.auth_failures_per_address, window)

    async def bootstrap(self) -> None:
        """The configured bootstrap key works, an earlier one no longer does."""
        async with self.pool.connection() as conn, conn.transaction():
            await auth.ensure_bootstrap(
                self.settings.bootstrap_api_key, authenticator=self.authenticator, conn=conn
            )
        await self.authenticator.dummy_hash()  # made now, not during someone's login
