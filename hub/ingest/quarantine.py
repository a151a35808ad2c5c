"""Quarantine: what ingest could not use, kept with its reason, so nothing else waits for it.

An *event* is quarantined when it does not decode, breaks a bound (its time, its
gateway, its seq), or its ledger effect fails with a data error; its seq stays covered,
so the gateway's watermark moves on and its later events flow. A *message* is
quarantined when its envelope is unusable (not a batch, a birth with impossible values);
per gateway at most ``MESSAGES_KEPT`` open ones are kept, the rest only counted, so a
flood cannot fill the database. A supervisor releases an event (decoded again with
today's code and applied as if it had just arrived) or dismisses either; both leave an
audit row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import Conflict, NotFound
from warelink.hub.ingest import device_rules, store
from warelink.hub.stock import audit
from warelink.protocol import limits, wire
from warelink.protocol.errors import DecodeError
from warelink.protocol.wire import BadEvent

MESSAGES_KEPT = 1000  # open quarantined messages per gateway; beyond: counted only
MESSAGE_BYTES_KEPT = 64 * 1024


def clean_reason(reason: str) -> str:
    """A reason fit for a text column and a log line (no NUL, bounded)."""
    return reason.replace("\x00", "\\0")[: limits.TEXT_MAX]


async def keep_events(
    site: str, gateway: str, events: list[BadEvent], *, conn: AsyncConnection
) -> int:
    """Keep events set aside (a resent one is kept once); returns how many are new.

    An event's bytes are kept up to ``MESSAGE_BYTES_KEPT`` (no sound event is that large:
    a longer one is kept truncated, for reading, not for release). One whose seq cannot
    be read is kept once per flush by its bytes (the caller keeps it only from a batch
    that reaches past the watermark, so a resent batch does not add it again).
    """
    unique = list({(e.seq, e.raw): e for e in events}.values())
    if not unique:
        return 0
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO quarantine (kind, site, gateway, seq, payload, truncated, reason)"
            " VALUES ('event', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(site, gateway, e.seq, e.raw[:MESSAGE_BYTES_KEPT], len(e.raw) > MESSAGE_BYTES_KEPT,
              clean_reason(e.reason)) for e in unique],
        )  # fmt: skip
        return max(cur.rowcount, 0)


async def held_seqs(gateway: str, seqs: Sequence[int], *, conn: AsyncConnection) -> set[int]:
    """Which of these seqs of the gateway the quarantine holds an event of."""
    cur = await conn.execute(
        "SELECT seq FROM quarantine WHERE kind = 'event' AND gateway = %s AND seq = ANY(%s)",
        (gateway, list(seqs)),
    )
    return {row[0] for row in await cur.fetchall()}


async def keep_message(
    site: str, gateway: str, topic: str, payload: bytes, reason: str, *, conn: AsyncConnection
) -> bool:
    """Keep a whole message set aside, unless the gateway has too many open already."""
    await store.ensure_gateways([(site, gateway)], conn=conn)
    cur = await conn.execute(
        "INSERT INTO quarantine (kind, site, gateway, topic, payload, truncated, reason)"
        " SELECT 'message', %s, %s, %s, %s, %s, %s"
        " WHERE (SELECT count(*) FROM quarantine WHERE gateway = %s AND kind = 'message'"
        "        AND state = 'open') < %s",
        (site, gateway, topic[:1024], payload[:MESSAGE_BYTES_KEPT],
         len(payload) > MESSAGE_BYTES_KEPT, clean_reason(reason), gateway, MESSAGES_KEPT),
    )  # fmt: skip
    if cur.rowcount == 1:
        return True
    await conn.execute(
        "UPDATE gateways SET quarantine_overflow = quarantine_overflow + 1 WHERE id = %s",
        (gateway,),
    )
    return False


_COLUMNS = (
    "id, kind, site, gateway, topic, seq, length(payload) AS size, truncated, reason, state,"
    " received_at, decided_at, decided_by, note"
)


async def listing(
    *,
    sites: frozenset[str] | None,
    site: str | None,
    gateway: str | None,
    state: str | None,
    limit: int,
    before: int | None,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    """Newest first; ``sites`` (None: all) is what the caller may see."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_COLUMNS} FROM quarantine"
        " WHERE (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))"
        " AND (%(site)s::text IS NULL OR site = %(site)s)"
        " AND (%(gateway)s::text IS NULL OR gateway = %(gateway)s)"
        " AND (%(state)s::text IS NULL OR state = %(state)s)"
        " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"sites": None if sites is None else sorted(sites), "site": site, "gateway": gateway,
         "state": state, "before": before, "limit": limit},
    )  # fmt: skip
    return await cur.fetchall()


async def get(entry: int, *, conn: AsyncConnection) -> dict[str, Any]:
    """One entry with its payload (hex), or NotFound."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_COLUMNS}, encode(payload, 'hex') AS payload_hex FROM quarantine WHERE id = %s",
        (entry,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no quarantine entry {entry}")
    return row


async def _lock_open(entry: int, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, kind, site, gateway, seq, payload, truncated, state FROM quarantine"
        " WHERE id = %s FOR UPDATE",
        (entry,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no quarantine entry {entry}")
    if row["state"] != "open":
        raise Conflict(f"quarantine entry {entry} is already {row['state']}")
    return row


async def _decide(
    entry: dict[str, Any], state: str, actor: str, note: str, *, conn: AsyncConnection
) -> None:
    await conn.execute(
        "UPDATE quarantine SET state = %s, decided_at = now(), decided_by = %s, note = %s"
        " WHERE id = %s",
        (state, actor, note, entry["id"]),
    )
    await audit.record(
        actor, f"quarantine.{'release' if state == 'released' else 'dismiss'}",
        site=entry["site"], subject=str(entry["id"]),
        detail={"kind": entry["kind"], "gateway": entry["gateway"], "seq": entry["seq"],
                "note": note},
        conn=conn,
    )  # fmt: skip


async def release(
    entry_id: int, *, actor: str, note: str, sites: frozenset[str] | None, conn: AsyncConnection
) -> dict[str, Any]:
    """Apply a quarantined event now, as if it had just arrived (the caller's transaction).

    It is decoded again with today's code: if it still fails, Conflict says why and the
    entry stays open. Its time is not held to the window again: an event dated far from
    the hub's clock is released because a supervisor judged the date right (a gateway
    that was cut off longer than the window). Only events can be released; a message is
    read and dismissed.
    """
    entry = await _lock_open(entry_id, conn=conn)
    _covers(entry, sites)
    if entry["truncated"]:
        raise Conflict("the event was too large to keep whole: it can only be dismissed")
    if entry["kind"] != "event":
        raise Conflict("only an event can be released; dismiss a message once it is read")
    try:
        event = wire.decode_event(bytes(entry["payload"]))
    except DecodeError as exc:
        raise Conflict(f"the event still does not decode: {exc}") from None
    if event.gateway != entry["gateway"]:
        raise Conflict(f"the event names gateway {event.gateway!r}, not {entry['gateway']!r}")
    # The body as plain data: this connection is the API's, without ingest's msgspec dumps.
    now = dt.datetime.now(dt.UTC)
    rows = [(*row[:-1], msgspec.to_builtins(row[-1])) for row in store.event_rows(
        entry["site"], [event], now)]  # fmt: skip
    inserted = await store.insert_events_dedup(rows, conn=conn)
    if not inserted:
        raise Conflict(f"seq {event.seq} of gateway {event.gateway!r} is stored already")
    await device_rules.apply([(entry["site"], [event])], conn=conn)
    await _decide(entry, "released", actor, note, conn=conn)
    return await get(entry_id, conn=conn)


async def dismiss(
    entry_id: int, *, actor: str, note: str, sites: frozenset[str] | None, conn: AsyncConnection
) -> dict[str, Any]:
    entry = await _lock_open(entry_id, conn=conn)
    _covers(entry, sites)
    await _decide(entry, "dismissed", actor, note, conn=conn)
    return await get(entry_id, conn=conn)


def _covers(entry: dict[str, Any], sites: frozenset[str] | None) -> None:
    if sites is not None and entry["site"] not in sites:
        raise NotFound(f"no quarantine entry {entry['id']}")
