"""SQL of the ingest path: events, gateway watermarks, and the ledger effect of receipts.

Small functions taking the connection as a keyword argument; the caller owns the
transaction. Everything here for one flush commits together, so an event, its ledger
effect and the ack watermark that covers it are never apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from warelink.protocol.messages import BODY_TYPES, CommandReport, Event, EventBody, TrafficClass

EVENT_COLUMNS = "gateway, seq, event_id, site, device, type, cls, occurred_at, received_at, body"
EVENT_TYPES = [
    "text", "int8", "uuid", "text", "text", "text", "int2", "timestamptz", "timestamptz", "jsonb",
]  # fmt: skip

Row = tuple[object, ...]
_json = msgspec.json.Encoder().encode


@dataclass
class GatewayMark:
    id: str
    site: str
    acked_seq: int
    max_seq: int
    early_ranges: list[list[int]]
    outbox: str | None  # the current outbox's identity (hub.ingest.outboxes)
    refused_outbox: str | None = None
    refused_at_session: int | None = None

    @property
    def refused_session(self) -> tuple[str | None, int | None]:
        """The (outbox, session) last refused under this id: refused until it changes."""
        return self.refused_outbox, self.refused_at_session


def event_rows(site: str, events: Iterable[Event], received_at: dt.datetime) -> list[Row]:
    """COPY rows of events (one list comprehension: this is the hot path of ingest)."""
    types = BODY_TYPES
    return [
        (e.gateway, e.seq, e.id, site, e.device, types[type(e.body)], e.cls, e.occurred_at,
         received_at, e.body)
        for e in events
    ]  # fmt: skip


async def ensure_gateways(pairs: Iterable[tuple[str, str]], *, conn: AsyncConnection) -> None:
    """Register sites and gateways seen for the first time (site, gateway)."""
    pairs = sorted(set(pairs))
    sites = sorted({site for site, _ in pairs})
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO sites (id) SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING", (sites,)
        )
        await cur.execute(
            "INSERT INTO gateways (site, id) SELECT * FROM unnest(%b::text[], %b::text[])"
            " ON CONFLICT DO NOTHING",
            ([s for s, _ in pairs], [g for _, g in pairs]),
        )


async def lock_gateways(ids: Sequence[str], *, conn: AsyncConnection) -> dict[str, GatewayMark]:
    """Lock the gateways' rows in a fixed order (so concurrent hubs never deadlock)."""
    cur = await conn.execute(
        "SELECT id, site, acked_seq, max_seq, early_ranges, outbox, refused_outbox,"
        " refused_session FROM gateways"
        " WHERE id = ANY(%s)"
        " ORDER BY id FOR UPDATE",
        (sorted(ids),),
    )
    return {row[0]: GatewayMark(*row) for row in await cur.fetchall()}


async def copy_events(rows: Sequence[Row], *, conn: AsyncConnection) -> None:
    """COPY rows that cannot conflict (all past the gateway's max_seq) into events."""
    async with (
        conn.cursor() as cur,
        cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(EVENT_TYPES)
        for row in rows:
            await copy.write_row(row)


async def not_held(
    gateway: str, events: Sequence[Event], *, conn: AsyncConnection
) -> list[tuple[int, object]]:
    """Of these events, those the hub does not hold as they are: (seq, the event id
    stored under it, or None when nothing is). Usually none: one round trip, no rows."""
    cur = await conn.execute(
        "SELECT x.seq, e.event_id FROM unnest(%b::int8[], %b::uuid[]) AS x (seq, id)"
        " LEFT JOIN events e ON e.gateway = %b AND e.seq = x.seq"
        " WHERE e.event_id IS DISTINCT FROM x.id ORDER BY x.seq LIMIT 1000",
        ([e.seq for e in events], [e.id for e in events], gateway),
    )
    return [(seq, held) for seq, held in await cur.fetchall()]


async def insert_events_dedup(
    rows: Sequence[Row], *, conn: AsyncConnection
) -> set[tuple[str, int]]:
    """Insert rows that may already be stored; returns the (gateway, seq) actually new."""
    async with conn.cursor() as cur:
        await cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_stage"
            " (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        async with cur.copy(
            f"COPY ingest_stage ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(EVENT_TYPES)
            for row in rows:
                await copy.write_row(row)
        await cur.execute(
            f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM ingest_stage"
            " ORDER BY gateway, seq ON CONFLICT DO NOTHING RETURNING gateway, seq"
        )
        return {(g, s) for g, s in await cur.fetchall()}


async def update_gateway(
    mark: GatewayMark,
    *,
    received: int,
    duplicates: int,
    gaps_detected: int,
    gaps_filled: int,
    skew_ms: float,
    conn: AsyncConnection,
) -> None:
    await conn.execute(
        "UPDATE gateways SET acked_seq = %s, max_seq = %s, early_ranges = %s,"
        " events_received = events_received + %s,"
        " duplicates_dropped = duplicates_dropped + %s,"
        " gaps_detected = gaps_detected + %s, gaps_filled = gaps_filled + %s,"
        " clock_skew_ms = %s, last_seen_at = now() WHERE id = %s",
        (mark.acked_seq, mark.max_seq, Jsonb(mark.early_ranges), received, duplicates,
         gaps_detected, gaps_filled, skew_ms, mark.id),
    )  # fmt: skip


async def record_readings(site: str, events: Sequence[Event], *, conn: AsyncConnection) -> None:
    """Each device's latest reading among ``events`` (for the live snapshot and feed); a
    reading older than the one kept (events that arrived late) does not replace it."""
    latest = {event.device: event for event in events}  # in seq order: the last one wins
    if not latest:
        return
    types = BODY_TYPES
    chosen = list(latest.values())
    await conn.execute(
        "INSERT INTO device_readings (site, device, gateway, type, seq, occurred_at, body)"
        " SELECT %s, d, g, t, s, o, b::jsonb FROM unnest(%s::text[], %s::text[], %s::text[],"
        " %s::int8[], %s::timestamptz[], %s::text[]) AS r (d, g, t, s, o, b)"
        " ON CONFLICT (site, device) DO UPDATE SET gateway = excluded.gateway,"
        " type = excluded.type, seq = excluded.seq, occurred_at = excluded.occurred_at,"
        " body = excluded.body WHERE device_readings.occurred_at <= excluded.occurred_at",
        (site, [e.device for e in chosen], [e.gateway for e in chosen],
         [types[type(e.body)] for e in chosen], [e.seq for e in chosen],
         [e.occurred_at for e in chosen], [_json(e.body).decode() for e in chosen]),
    )  # fmt: skip


async def record_birth(
    site: str,
    gateway: str,
    session: int,
    last_seq: int,
    devices: Sequence[str],
    *,
    conn: AsyncConnection,
) -> int:
    """Mark the gateway online in its new session; returns its ack watermark."""
    await ensure_gateways([(site, gateway)], conn=conn)
    await conn.execute(
        "INSERT INTO devices (site, gateway, id) SELECT %s, %s, unnest(%b::text[])"
        " ON CONFLICT (site, id) DO UPDATE SET gateway = excluded.gateway",
        (site, gateway, list(devices)),
    )
    cur = await conn.execute(
        "UPDATE gateways SET session = %s, online = true, birth_last_seq = %s,"
        " last_seen_at = now() WHERE id = %s AND site = %s AND session <= %s"
        " RETURNING acked_seq",
        (session, last_seq, gateway, site, session),
    )
    row = await cur.fetchone()
    if row is None:  # an older session, or the id under another site: only report
        cur = await conn.execute("SELECT acked_seq FROM gateways WHERE id = %s", (gateway,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def record_death(gateway: str, session: int, *, conn: AsyncConnection) -> bool:
    """Mark the gateway offline unless the death is from an older session."""
    cur = await conn.execute(
        "UPDATE gateways SET online = false WHERE id = %s AND session = %s", (gateway, session)
    )
    return cur.rowcount > 0


async def record_edge_counters(
    gateway: str, counters: dict[str, float], *, conn: AsyncConnection
) -> None:
    await conn.execute(
        "UPDATE gateways SET edge_counters = %s, edge_counters_at = now() WHERE id = %s",
        (Jsonb(counters), gateway),
    )


async def count_replay_request(gateway: str, *, conn: AsyncConnection) -> None:
    await conn.execute(
        "UPDATE gateways SET replays_requested = replays_requested + 1 WHERE id = %s", (gateway,)
    )


async def record_command_reports(
    reports: Sequence[tuple[str, CommandReport]], *, conn: AsyncConnection
) -> None:
    """Outcomes of hub commands, as the edge reported them (first report wins)."""
    if reports:
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE commands SET outcome = %s, detail = %s, finished_at = now()"
                " WHERE key = %s AND gateway = %s AND outcome IS NULL",
                [(r.outcome.value, r.detail, r.key, gateway) for gateway, r in reports],
            )


_body = msgspec.json.Decoder(EventBody)


async def stored_effects(
    gateway: str, after: int, upto: int, types: Sequence[str], *, conn: AsyncConnection
) -> list[Event]:
    """Stored events of ``types`` (those with a ledger effect) in ``(after, upto]``, in
    seq order.

    For a watermark that jumped over events which arrived early: their effects wait
    until everything before them is there.
    """
    cur = await conn.execute(
        "SELECT seq, event_id, device, cls, occurred_at, body::text FROM events"
        " WHERE gateway = %s AND seq > %s AND seq <= %s AND type = ANY(%s) ORDER BY seq",
        (gateway, after, upto, list(types)),
    )
    return [
        Event(gateway=gateway, seq=seq, id=event_id, device=device, cls=TrafficClass(cls),
              occurred_at=occurred_at, body=_body.decode(body))
        for seq, event_id, device, cls, occurred_at, body in await cur.fetchall()
    ]  # fmt: skip
