"""Hub → device commands: stored first, sent to the device's gateway, resent on its birth.

The key makes a command idempotent end to end: posting the same key again returns the
stored command (or 409 if its content differs); the edge runs a key at most once and
reports its outcome as an event, which closes the command here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from warelink.protocol.messages import Command

OPEN_FOR = dt.timedelta(hours=24)  # a command without an expiry still ends somewhere


class CommandConflict(Exception):
    """The key is taken by a command with other content."""


async def device_gateway(site: str, device: str, *, conn: AsyncConnection) -> str | None:
    cur = await conn.execute(
        "SELECT gateway FROM devices WHERE site = %s AND id = %s", (site, device)
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def create(
    site: str,
    gateway: str,
    device: str,
    *,
    action: str,
    args: dict[str, Any],
    key: str | None = None,
    expires_in_s: float | None = None,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Store a command (a key made if none given); the stored one if the key is known."""
    key = key or uuid.uuid4().hex
    expires = dt.datetime.now(dt.UTC) + (
        dt.timedelta(seconds=expires_in_s) if expires_in_s else OPEN_FOR
    )
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO commands (key, site, gateway, device, action, args, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING *",
        (key, site, gateway, device, action, Jsonb(args), expires),
    )
    row = await cur.fetchone()
    if row is not None:
        return row
    existing = await get(key, conn=conn)
    assert existing is not None
    same = (existing["site"], existing["device"], existing["action"], existing["args"]) == (
        site, device, action, args,
    )  # fmt: skip
    if not same:
        raise CommandConflict(f"command key {key!r} is taken by another command")
    return existing


async def get(key: str, *, conn: AsyncConnection) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM commands WHERE key = %s", (key,))
    return await cur.fetchone()


async def open_for(gateway: str, *, conn: AsyncConnection) -> list[Command]:
    """Commands of a gateway still without an outcome, counted as sent once more."""
    cur = await conn.execute(
        "UPDATE commands SET sent_count = sent_count + 1"
        " WHERE gateway = %s AND outcome IS NULL"
        " RETURNING key, device, action, args, expires_at",
        (gateway,),
    )
    return [
        Command(key=key, device=device, action=action, args=args, expires_at=expires)
        for key, device, action, args, expires in await cur.fetchall()
    ]


def as_message(row: dict[str, Any]) -> Command:
    return Command(
        key=row["key"],
        device=row["device"],
        action=row["action"],
        args=row["args"],
        expires_at=row["expires_at"],
    )
