"""Reading the audit log: filtered, newest first, paged by id.

Paging by ``before`` (an id) rather than by offset keeps pages stable while new rows
arrive. A principal scoped to sites sees only rows of those sites; rows about no site
(e.g. a user of every site) are for principals of every site.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.access import Principal
from warelink.hub.errors import Forbidden


async def search(
    *,
    who: Principal,
    site: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    subject: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before: int | None = None,
    limit: int = 100,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    if site is not None and not who.covers(site):
        raise Forbidden(f"no access to site {site!r}")
    scope = None if who.sites is None else sorted(who.sites)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, actor, action, site, subject, detail FROM audit_log"
            " WHERE (%(scope)s::text[] IS NULL OR site = ANY(%(scope)s::text[]))"
            " AND (%(site)s::text IS NULL OR site = %(site)s)"
            " AND (%(actor)s::text IS NULL OR actor = %(actor)s)"
            " AND (%(action)s::text IS NULL OR action = %(action)s)"
            " AND (%(subject)s::text IS NULL OR subject = %(subject)s)"
            " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
            " AND (%(until)s::timestamptz IS NULL OR at < %(until)s)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"scope": scope, "site": site, "actor": actor, "action": action,
             "subject": subject, "since": since, "until": until, "before": before,
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()
