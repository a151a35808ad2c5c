"""The audit log: every write, with its actor, in the same transaction as the write."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


async def record(
    actor: str,
    action: str,
    *,
    site: str | None = None,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    conn: AsyncConnection,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, site, subject, detail) VALUES (%s, %s, %s, %s, %s)",
        (actor, action, site, subject, Jsonb(detail or {})),
    )
