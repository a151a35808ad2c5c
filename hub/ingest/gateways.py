"""Gateways as the hub sees them: sessions, watermarks, counters."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

SKEW_FLAG_MS = 2000.0  # an edge clock this far off the hub's is flagged, never "corrected"


async def list_gateways(*, conn: AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, site, online, session, max_seq AS last_seq_received, acked_seq,"
        " birth_last_seq, events_received, duplicates_dropped, gaps_detected, gaps_filled,"
        " replays_requested, early_ranges AS pending_ranges, clock_skew_ms,"
        " abs(coalesce(clock_skew_ms, 0)) > %s AS clock_skew_flagged,"
        " edge_counters, edge_counters_at, first_seen_at, last_seen_at, gap_anomalies,"
        " outbox, refused_outbox, refused_at, refused_messages,"
        " (SELECT count(*) FROM quarantine q WHERE q.gateway = g.id AND q.state = 'open')"
        "   AS quarantined, quarantine_overflow"
        " FROM gateways g ORDER BY site, id",
        (SKEW_FLAG_MS,),
    )
    return await cur.fetchall()
