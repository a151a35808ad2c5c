"""What device events do to the ledger: the floor's reports, posted as facts.

Receipts move stock supplier → location (into QC hold when the SKU needs QC), shipments
location → customer, movements location → location. A GTIN the hub does not know becomes
an unverified SKU and opens an ``unknown_sku`` exception: the stock is still booked, and
fixing the master data later keeps the history. An RFID arrival the hub cannot tie to a
SKU or licence plate opens ``unknown_epc``. Lots (with expiry), serials and licence
plates a receipt names are registered as it is posted, and a receipt fills the oldest
open advance-notice line of its SKU and lot.

A device ``Count`` becomes a counted cycle count awaiting a supervisor's approval, a
``Verification`` (a scan with the pack scale's weight) is checked against the SKU's
weight and tolerance, and a ``Movement`` naming a pick task confirms that task (its
reservation is consumed; the goods go to the task's staging location). Whatever the
hub's rules refuse of a device fact is never lost and never stops ingest: the event is
stored, and a ``floor_report`` exception says what was refused and why; a refused pick
is still posted as the move it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from warelink.hub.errors import RequestError
from warelink.hub.operations import counts, inbound, outbound, verification
from warelink.hub.stock import exceptions, ledger
from warelink.hub.stock.ledger import CUSTOMER, SUPPLIER, Leg, Posted
from warelink.protocol.messages import (
    BODY_TYPES,
    CommandReport,
    Count,
    Event,
    Movement,
    Receipt,
    Shipment,
    Verification,
    ZoneChange,
    ZoneTransition,
)

STOCK_BODIES = (Receipt, Shipment, Movement, Count, Verification)
# Every event with a ledger effect, defined here once: its effect waits until the
# gateway's watermark covers it (events take the ledger in seq order).
EFFECT_BODIES = (*STOCK_BODIES, ZoneTransition, CommandReport)
EFFECT_TYPES = [BODY_TYPES[body] for body in EFFECT_BODIES]

log = structlog.get_logger(__name__)
REFUSALS = (psycopg.IntegrityError, psycopg.DataError)  # the schema's rules, not an outage


@dataclass(frozen=True)
class SkuRef:
    code: str
    requires_qc: bool
    verified: bool


def actor_of(event: Event) -> str:
    return f"gateway:{event.gateway}"


async def resolve_gtins(gtins: set[str], *, conn: AsyncConnection) -> dict[str, SkuRef]:
    """The SKU of each GTIN (or SKU code, as a clerk's app may send); an unknown one
    becomes an unverified SKU coded by it."""
    if not gtins:
        return {}
    wanted = sorted(gtins)
    await conn.execute(
        "INSERT INTO skus (code, gtin, verified)"
        " SELECT g, CASE WHEN g ~ '^[0-9]{14}$' THEN g END, false FROM unnest(%b::text[]) AS g"
        " WHERE NOT EXISTS (SELECT 1 FROM skus s WHERE s.gtin = g OR s.code = g)"
        " ORDER BY g ON CONFLICT DO NOTHING",
        (wanted,),
    )
    cur = await conn.execute(
        "SELECT DISTINCT ON (g) g, s.code, s.requires_qc, s.verified"
        " FROM unnest(%b::text[]) AS g JOIN skus s ON s.gtin = g OR s.code = g"
        " ORDER BY g, s.gtin = g DESC",  # a GTIN match first; a SKU code is taken too
        (wanted,),
    )
    return {g: SkuRef(code, qc, verified) for g, code, qc, verified in await cur.fetchall()}


async def apply(batches: Sequence[tuple[str, list[Event]]], *, conn: AsyncConnection) -> Posted:
    """Post the ledger effects of new events, per site in seq order; the caller's transaction."""
    gtins = {
        e.body.gtin for _, events in batches for e in events if isinstance(e.body, STOCK_BODIES)
    }
    skus = await resolve_gtins(gtins, conn=conn)
    legs: list[Leg] = []
    raised: list[exceptions.Raised] = []
    lots: dict[tuple[str, str], dt.date | None] = {}
    serials: set[tuple[str, str]] = set()
    lpns: set[tuple[str, str]] = set()
    epcs: list[tuple[str, ZoneTransition, Event]] = []
    checks: list[tuple[str, SkuRef, Event]] = []  # counts and verifications, in order
    for site, events in batches:
        for event in events:
            body = event.body
            if isinstance(body, ZoneTransition):
                if body.change is ZoneChange.ARRIVED:
                    epcs.append((site, body, event))
                continue
            if not isinstance(body, STOCK_BODIES):
                continue
            sku = skus[body.gtin]
            if isinstance(body, (Count, Verification)) or (
                isinstance(body, Movement) and body.task is not None
            ):
                checks.append((site, sku, event))
                continue
            if not sku.verified:
                raised.append(
                    exceptions.Raised(site, "unknown_sku", body.gtin,
                                      {"gtin": body.gtin, "device": event.device},
                                      actor_of(event))
                )  # fmt: skip
            leg = _leg(site, sku, event)
            if leg is None:
                continue
            legs.append(leg)
            if leg.lot:
                expiry = body.expiry if isinstance(body, Receipt) else None
                lots[(sku.code, leg.lot)] = lots.get((sku.code, leg.lot)) or expiry
            if leg.serial:
                serials.add((sku.code, leg.serial))
            if leg.lpn:
                lpns.add((leg.lpn, site))
    await _register(lots, serials, lpns, conn=conn)
    raised += await _unknown_epcs(epcs, conn=conn)
    legs = await inbound.match_notices(legs, conn=conn)
    posted = await _post(legs, raised, conn=conn)
    for site, sku, event in checks:
        raised += await _check(site, sku, event, conn=conn)
    posted.exceptions += await exceptions.open_many(raised, conn=conn)
    return posted


async def _post(
    legs: list[Leg], raised: list[exceptions.Raised], *, conn: AsyncConnection
) -> Posted:
    """Post the legs; if the database refuses one (a serial of five units, say), post the
    others one by one and report each refused one, so one bad fact never blocks ingest."""
    try:
        async with conn.transaction():
            return await ledger.post(legs, conn=conn)
    except REFUSALS:
        pass
    posted = Posted()
    for leg in legs:
        try:
            async with conn.transaction():
                posted.extend(await ledger.post([leg], conn=conn))
        except REFUSALS as exc:
            log.warning("device_rules.refused", gateway=leg.source_gateway, seq=leg.source_seq,
                        kind=leg.kind, reason=str(exc))  # fmt: skip
            raised.append(
                exceptions.Raised(leg.site, "floor_report",
                                  f"refused:{leg.source_gateway}:{leg.source_seq}",
                                  {"event": leg.kind, "refused": str(exc).splitlines()[0]},
                                  leg.actor)
            )  # fmt: skip
    return posted


async def _check(
    site: str, sku: SkuRef, event: Event, *, conn: AsyncConnection
) -> list[exceptions.Raised]:
    """A device count or verification, in a savepoint: a refusal is reported, not raised."""
    body = event.body
    at = min(event.occurred_at, dt.datetime.now(dt.UTC))  # an edge clock ahead: not future
    try:
        async with conn.transaction():
            if isinstance(body, Movement) and body.task is not None:
                await outbound.pick(
                    site, body.task, location=body.from_location, lot=body.lot,
                    quantity=Decimal(body.quantity), serials=None, actor=actor_of(event),
                    at=at, conn=conn,
                )  # fmt: skip
            elif isinstance(body, Count):
                await ledger.ensure_location(site, body.location, conn=conn)
                await counts.record_counted(
                    site, body.location,
                    [counts.CountedLine(sku.code, body.lot or "", Decimal(body.counted))],
                    actor=actor_of(event), counted_at=at, conn=conn,
                )  # fmt: skip
            elif isinstance(body, Verification):
                weight = None if body.weight is None else Decimal(str(body.weight))
                await verification.record_verification(
                    site, sku=sku.code, lot=body.lot or "", quantity=Decimal(body.quantity),
                    weight_kg=weight, epcs=None, order_ref=body.order, actor=actor_of(event),
                    at=at, source_gateway=event.gateway, source_seq=event.seq, conn=conn,
                )  # fmt: skip
    except (RequestError, *REFUSALS) as exc:
        log.warning("device_rules.refused", gateway=event.gateway, seq=event.seq,
                    type=type(body).__name__, reason=str(exc))  # fmt: skip
        report = [
            exceptions.Raised(site, "floor_report", f"refused:{event.gateway}:{event.seq}",
                              {"device": event.device, "event": type(body).__name__.lower(),
                               "refused": str(exc)}, actor_of(event))
        ]  # fmt: skip
        fallback = _leg(site, sku, event) if isinstance(body, Movement) else None
        if fallback is not None:  # the goods moved all the same: a fact, posted as such
            await _post([fallback], report, conn=conn)
        return report
    return []


def _leg(site: str, sku: SkuRef, event: Event) -> Leg | None:
    body = event.body

    def make(**fields: Any) -> Leg:
        return Leg(
            site=site, sku=sku.code, occurred_at=event.occurred_at, actor=actor_of(event),
            source_gateway=event.gateway, source_seq=event.seq, **fields,
        )  # fmt: skip

    if isinstance(body, Receipt):
        return make(
            quantity=Decimal(body.quantity), from_location=SUPPLIER,
            to_location=body.location, kind="receipt", lot=body.lot or "",
            serial=body.serial or "", lpn=body.sscc or "",
            to_status="qc_hold" if sku.requires_qc else "available",
        )  # fmt: skip
    if isinstance(body, Shipment):
        return make(
            quantity=Decimal(body.quantity), from_location=body.location,
            to_location=CUSTOMER, kind="ship", lot=body.lot or "", serial=body.serial or "",
            lpn=body.sscc or "",
        )  # fmt: skip
    if isinstance(body, Movement):
        if body.from_location == body.to_location:
            return None
        return make(
            quantity=Decimal(body.quantity), from_location=body.from_location,
            to_location=body.to_location, kind="move", lot=body.lot or "", lpn=body.lpn or "",
        )  # fmt: skip
    return None


async def _register(
    lots: dict[tuple[str, str], dt.date | None],
    serials: set[tuple[str, str]],
    lpns: set[tuple[str, str]],
    *,
    conn: AsyncConnection,
) -> None:
    if lots:
        rows = sorted((sku, lot, expiry) for (sku, lot), expiry in lots.items())
        await conn.execute(
            "INSERT INTO lots (sku, lot, expiry)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::date[]) ORDER BY 1, 2"
            " ON CONFLICT (sku, lot) DO UPDATE SET expiry = coalesce(lots.expiry, excluded.expiry)"
            " WHERE lots.expiry IS NULL AND excluded.expiry IS NOT NULL",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )
    if serials:
        rows2 = sorted(serials)
        await conn.execute(
            "INSERT INTO serials (sku, serial) SELECT * FROM unnest(%b::text[], %b::text[])"
            " ORDER BY 1, 2 ON CONFLICT DO NOTHING",
            ([r[0] for r in rows2], [r[1] for r in rows2]),
        )
    if lpns:
        rows3 = sorted(lpns)
        await conn.execute(
            "INSERT INTO lpns (code, site) SELECT * FROM unnest(%b::text[], %b::text[])"
            " ORDER BY 1 ON CONFLICT DO NOTHING",
            ([r[0] for r in rows3], [r[1] for r in rows3]),
        )


async def _unknown_epcs(
    arrivals: Sequence[tuple[str, ZoneTransition, Event]], *, conn: AsyncConnection
) -> list[exceptions.Raised]:
    """Arrivals of tags that are neither a known SKU's SGTIN nor an SSCC."""
    if not arrivals:
        return []
    gtins = sorted({t.decoded["gtin"] for _, t, _ in arrivals if "gtin" in t.decoded})
    cur = await conn.execute("SELECT gtin FROM skus WHERE gtin = ANY(%s) AND verified", (gtins,))
    known = {row[0] for row in await cur.fetchall()}
    raised = []
    for site, tag, event in arrivals:
        if "sscc" in tag.decoded or tag.decoded.get("gtin") in known:
            continue
        raised.append(
            exceptions.Raised(site, "unknown_epc", tag.epc,
                              {"epc": tag.epc, "zone": tag.zone, "decoded": tag.decoded,
                               "device": event.device}, actor_of(event))
        )  # fmt: skip
    return raised
