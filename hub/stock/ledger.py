"""The stock ledger: insert-only double-entry movements and the balance projection.

Every change of stock, from a device event or a person's operation, is a ``Leg`` posted
here and nowhere else. ``post`` inserts the movements and updates the balances in the
caller's transaction, balance rows in key order (so concurrent writers lock them in the
same order and never deadlock), and opens the exceptions the ledger rules call for:

- a balance at a real location going negative (device events are facts: posted anyway);
- stock moved into a held location;
- a serial seen twice: a serial is in one place at most, so a serial leg always leaves
  from where the ledger has it (the latest observation wins); a receipt of a serial that
  is in stock moves it from where it was and opens ``serial_conflict``, and one naming the
  place it already is posts nothing;
- a device event dated before an approved count of its location gets a linked
  compensating movement, so the count's result stands.

Corrections are reversals (``reverse``), never UPDATE or DELETE: a trigger forbids both.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from warelink.hub.stock import exceptions
from warelink.hub.stock.balances import BalanceChange, quantity_text

SUPPLIER, CUSTOMER, ADJUSTMENT, SCRAP, TRANSIT = (
    "SUPPLIER", "CUSTOMER", "ADJUSTMENT", "SCRAP", "TRANSIT",
)  # fmt: skip
VIRTUAL = {
    SUPPLIER: "supplier", CUSTOMER: "customer", ADJUSTMENT: "adjustment", SCRAP: "scrap",
    TRANSIT: "transit",
}  # fmt: skip
STATUSES = ("available", "qc_hold", "damaged")
KINDS = (
    "receipt", "putaway", "move", "pick", "ship", "return", "qc_release", "qc_reject",
    "transfer_out", "transfer_in", "count", "adjustment", "compensation", "reversal",
)  # fmt: skip

# site, location, sku, lot, serial, lpn, status
BalanceKey = tuple[str, str, str, str, str, str, str]


@dataclass(frozen=True)
class Leg:
    """One movement to post: ``quantity`` of an item from a place to a place."""

    site: str
    sku: str
    quantity: Decimal
    from_location: str
    to_location: str
    kind: str
    occurred_at: dt.datetime
    actor: str
    lot: str = ""
    serial: str = ""
    lpn: str = ""
    from_status: str = "available"
    to_status: str = "available"
    to_site: str = ""  # "" means the same site (a transfer sets it)
    reason: str | None = None
    document: str | None = None
    source_gateway: str | None = None  # a device event's identity, for its legs
    source_seq: int | None = None
    leg: int = 0
    reverses: int | None = None
    compensates: int | None = None

    @property
    def target_site(self) -> str:
        return self.to_site or self.site

    def source_key(self) -> BalanceKey:
        return (self.site, self.from_location, self.sku, self.lot, self.serial, self.lpn,
                self.from_status)  # fmt: skip

    def target_key(self) -> BalanceKey:
        return (self.target_site, self.to_location, self.sku, self.lot, self.serial, self.lpn,
                self.to_status)  # fmt: skip


@dataclass
class Posted:
    """What one ``post`` did."""

    movements: list[int] = field(default_factory=list)  # ids, in the order of the legs posted
    balances: list[BalanceChange] = field(default_factory=list)
    exceptions: list[int] = field(default_factory=list)
    skipped: int = 0  # legs that moved nothing (a serial received twice, say)

    def extend(self, other: Posted) -> None:
        self.movements += other.movements
        self.balances += other.balances
        self.exceptions += other.exceptions
        self.skipped += other.skipped


_COLUMNS = (
    "site", "to_site", "sku", "lot", "serial", "lpn", "from_location", "to_location",
    "from_status", "to_status", "quantity", "kind", "reason", "document", "occurred_at",
    "actor", "source_gateway", "source_seq", "leg", "reverses", "compensates",
)  # fmt: skip
_TYPES = (
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text", "numeric",
    "text", "text", "text", "timestamptz", "text", "text", "int8", "int2", "int8", "int8",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO movements ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in _TYPES)
    + ") RETURNING id"
)


def _row(leg: Leg) -> tuple[object, ...]:
    return (
        leg.site, leg.target_site, leg.sku, leg.lot, leg.serial, leg.lpn, leg.from_location,
        leg.to_location, leg.from_status, leg.to_status, leg.quantity, leg.kind, leg.reason,
        leg.document, leg.occurred_at, leg.actor, leg.source_gateway, leg.source_seq, leg.leg,
        leg.reverses, leg.compensates,
    )  # fmt: skip


async def post(legs: Sequence[Leg], *, conn: AsyncConnection) -> Posted:
    """Post the legs in order, with their balances and the exceptions they open.

    The caller owns the transaction. Locations a device names that master data does not
    know are created as internal locations (a device event is a fact).
    """
    posted = Posted()
    legs = [leg for leg in legs if leg.quantity > 0]
    if not legs:
        return posted
    legs, conflicts = await _place_serials(legs, conn=conn)
    posted.skipped = sum(dropped for _, _, dropped in conflicts)
    for leg, where, _ in conflicts:
        posted.exceptions += await exceptions.open_many(
            [exceptions.Raised(leg.site, "serial_conflict", f"{leg.sku}/{leg.serial}",
                               {"already_at": where, "event_location": leg.to_location,
                                "source_gateway": leg.source_gateway,
                                "source_seq": leg.source_seq}, leg.actor)],
            conn=conn,
        )  # fmt: skip
    if not legs:
        return posted
    # One round trip for the references, the movements, the balances and the rules' lookups.
    async with conn.pipeline():
        await conn.execute(*_references_query(legs))
        inserted = await conn.execute(*_insert_query(legs))
        counts_query = _counts_query(legs)
        counted_cur = await conn.execute(*counts_query) if counts_query else None
        held_cur = await conn.execute(*_held_query(legs))
        applied = await conn.execute(*_apply_query(legs))
        ids = [row[0] for row in await inserted.fetchall()]
        counted = {tuple(r[:4]): (r[4], r[5]) for r in await counted_cur.fetchall()} if (
            counted_cur) else {}  # fmt: skip
        held = {(site, code) for site, code in await held_cur.fetchall()}
        balances = {_key(b): b for b in _balances(await applied.fetchall())}
    posted.movements += ids
    compensations = _compensations(legs, ids, counted)
    if compensations:
        posted.movements += await _insert(compensations, conn=conn)
        cur = await conn.execute(*_apply_query(compensations))
        balances.update((_key(b), b) for b in _balances(await cur.fetchall()))
    posted.balances = list(balances.values())
    posted.exceptions += await exceptions.open_many(
        _rule_exceptions(legs, ids, posted.balances, held), conn=conn
    )
    return posted


def _key(change: BalanceChange) -> BalanceKey:
    return (change.site, change.location, change.sku, change.lot, change.serial, change.lpn,
            change.status)  # fmt: skip


def _balances(rows: Sequence[Sequence[Any]]) -> list[BalanceChange]:
    return [BalanceChange(*row) for row in rows]


def _insert_query(legs: Sequence[Leg]) -> tuple[str, list[list[object]]]:
    return _INSERT, [list(c) for c in zip(*(_row(leg) for leg in legs), strict=True)]


async def _insert(legs: Sequence[Leg], *, conn: AsyncConnection) -> list[int]:
    cur = await conn.execute(*_insert_query(legs))
    return [row[0] for row in await cur.fetchall()]


async def ensure_location(site: str, code: str, *, conn: AsyncConnection) -> None:
    """A location a device names exists from then on (internal unless a virtual name)."""
    await conn.execute(
        "INSERT INTO locations (site, code, kind) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (site, code, VIRTUAL.get(code, "internal")),
    )


def _references_query(legs: Sequence[Leg]) -> tuple[str, tuple[list[str], ...]]:
    """Every location and SKU a leg names exists (movements have no foreign keys: 005)."""
    skus = sorted({leg.sku for leg in legs})
    places = sorted(
        {(leg.site, leg.from_location) for leg in legs}
        | {(leg.target_site, leg.to_location) for leg in legs}
    )
    return (
        "WITH new_skus AS (INSERT INTO skus (code, verified) SELECT s, false"
        " FROM unnest(%b::text[]) AS s WHERE NOT EXISTS (SELECT 1 FROM skus k WHERE k.code = s)"
        " ORDER BY s ON CONFLICT DO NOTHING)"
        " INSERT INTO locations (site, code, kind)"
        " SELECT s, c, coalesce(v.kind, 'internal') FROM unnest(%b::text[], %b::text[]) AS p (s, c)"
        " LEFT JOIN (SELECT unnest(%b::text[]) AS code, unnest(%b::text[]) AS kind) v"
        " ON v.code = p.c WHERE NOT EXISTS (SELECT 1 FROM locations l"
        " WHERE l.site = p.s AND l.code = p.c) ORDER BY 1, 2 ON CONFLICT DO NOTHING",
        (skus, [p[0] for p in places], [p[1] for p in places], list(VIRTUAL),
         list(VIRTUAL.values())),
    )  # fmt: skip


@dataclass(frozen=True)
class _Place:
    """Where a serial is: the balance key it has, but for the item itself."""

    site: str
    location: str
    lot: str
    lpn: str
    status: str

    def __str__(self) -> str:
        return f"{self.site}/{self.location}"


async def _place_serials(
    legs: list[Leg], *, conn: AsyncConnection
) -> tuple[list[Leg], list[tuple[Leg, str, bool]]]:
    """Serial legs leave from where the ledger has the serial.

    Returns the legs to post and the conflicts: (leg, where the serial was, dropped).
    """
    serials = sorted({(leg.sku, leg.serial) for leg in legs if leg.serial})
    if not serials:
        return legs, []
    # Two writers placing the same serial at once must not both find it nowhere.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
        " FROM (SELECT k FROM unnest(%b::text[]) AS k ORDER BY k) AS sorted",
        ([f"serial/{sku}/{serial}" for sku, serial in serials],),
    )
    cur = await conn.execute(
        "SELECT b.sku, b.serial, b.site, b.location, b.lot, b.lpn, b.status FROM balances b"
        " JOIN locations l ON l.site = b.site AND l.code = b.location AND l.kind = 'internal'"
        " JOIN unnest(%b::text[], %b::text[]) AS s (sku, serial)"
        " ON s.sku = b.sku AND s.serial = b.serial WHERE b.quantity > 0"
        " ORDER BY b.site, b.location FOR UPDATE OF b",
        ([s[0] for s in serials], [s[1] for s in serials]),
    )
    where: dict[tuple[str, str], _Place] = {}
    for sku, serial, *place in await cur.fetchall():
        where.setdefault((sku, serial), _Place(*place))
    placed: list[Leg] = []
    conflicts: list[tuple[Leg, str, bool]] = []
    for leg in legs:
        if not leg.serial:
            placed.append(leg)
            continue
        at = where.get((leg.sku, leg.serial))
        if at is not None and at != _Place(leg.site, leg.from_location, leg.lot, leg.lpn,
                                           leg.from_status):  # fmt: skip
            if (at.site, at.location, at.status) == (leg.target_site, leg.to_location,
                                                     leg.to_status):  # fmt: skip
                conflicts.append((leg, str(at), True))  # already where it goes
                continue
            if leg.from_location == SUPPLIER or leg.lot != at.lot:
                conflicts.append((leg, str(at), False))  # received again, or another lot
            # A movement keeps its lot and licence plate: those of the unit as it is.
            leg = replace(leg, site=at.site, from_location=at.location, lot=at.lot, lpn=at.lpn,
                          from_status=at.status, to_site=leg.target_site)  # fmt: skip
        placed.append(leg)
        if leg.to_location in VIRTUAL:
            where.pop((leg.sku, leg.serial), None)
        else:
            where[(leg.sku, leg.serial)] = _Place(leg.target_site, leg.to_location, leg.lot,
                                                  leg.lpn, leg.to_status)  # fmt: skip
    return placed, conflicts


def _touched(legs: Sequence[Leg]) -> list[tuple[int, str]]:
    """(leg, side) of device legs at real locations: what an approved count may cover."""
    return [
        (i, side) for i, leg in enumerate(legs) if leg.source_gateway is not None
        for side in ("from", "to")
        if (leg.from_location if side == "from" else leg.to_location) not in VIRTUAL
    ]  # fmt: skip


def _counts_query(legs: Sequence[Leg]) -> tuple[str, list[list[str]]] | None:
    """The latest approved count of each SKU/lot at each real place device legs touch."""
    items = sorted({(*_place(legs[i], side), legs[i].sku, legs[i].lot)
                    for i, side in _touched(legs)})  # fmt: skip
    if not items:
        return None
    return (
        "SELECT DISTINCT ON (c.site, c.location, l.sku, l.lot) c.site, c.location, l.sku, l.lot,"
        " c.counted_at, c.id FROM counts c JOIN count_lines l ON l.count_id = c.id"
        " JOIN unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS p (site, location,"
        " sku, lot) ON (p.site, p.location, p.sku, p.lot) = (c.site, c.location, l.sku, l.lot)"
        " WHERE c.state = 'approved'"
        " ORDER BY c.site, c.location, l.sku, l.lot, c.counted_at DESC",
        [list(column) for column in zip(*items, strict=True)],
    )


def _compensations(
    legs: Sequence[Leg],
    ids: Sequence[int],
    counted: dict[tuple[Any, ...], tuple[dt.datetime, int]],
) -> list[Leg]:
    """Device legs dated before an approved count of what they touch: undo it there.

    A count covers the SKU/lots on its lines at its location, as of ``counted_at``
    (inclusive, as its baseline is); the latest approved one is the one that stands.
    """
    touched = _touched(legs)
    undo: list[Leg] = []
    for i, side in touched:
        leg = legs[i]
        last = counted.get((*_place(leg, side), leg.sku, leg.lot))
        if last is None or leg.occurred_at > last[0]:
            continue
        site, location = _place(leg, side)
        status = leg.from_status if side == "from" else leg.to_status
        inward = side == "to"  # the late leg put stock here: take it out again
        undo.append(
            Leg(
                site=site,
                sku=leg.sku,
                quantity=leg.quantity,
                from_location=location if inward else ADJUSTMENT,
                to_location=ADJUSTMENT if inward else location,
                from_status=status if inward else "available",
                to_status="available" if inward else status,
                kind="compensation",
                occurred_at=leg.occurred_at,
                actor=leg.actor,
                lot=leg.lot,
                serial=leg.serial,
                lpn=leg.lpn,
                reason="LATE_BEFORE_COUNT",
                document=f"count:{last[1]}",
                compensates=ids[i],
            )
        )
    return undo


def _place(leg: Leg, side: str) -> tuple[str, str]:
    return (leg.site, leg.from_location) if side == "from" else (leg.target_site, leg.to_location)


def _apply_query(legs: Sequence[Leg]) -> tuple[str, list[list[Any]]]:
    """Add the legs to the balances, rows in key order; it returns the new balances."""
    deltas: dict[BalanceKey, Decimal] = defaultdict(Decimal)
    for leg in legs:
        deltas[leg.source_key()] -= leg.quantity
        deltas[leg.target_key()] += leg.quantity
    keys = sorted(deltas)
    columns = [list(c) for c in zip(*keys, strict=True)]
    return (
        "INSERT INTO balances (site, location, sku, lot, serial, lpn, status, quantity)"
        " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
        " %b::text[], %b::text[], %b::numeric[]) ORDER BY 1, 2, 3, 4, 5, 6, 7"
        " ON CONFLICT (site, location, sku, lot, serial, lpn, status) DO UPDATE"
        " SET quantity = balances.quantity + excluded.quantity, updated_at = now()"
        " RETURNING site, location, sku, lot, quantity, serial, lpn, status",
        [*columns, [deltas[k] for k in keys]],
    )


def _held_query(legs: Sequence[Leg]) -> tuple[str, list[list[str]]]:
    targets = sorted({(leg.target_site, leg.to_location) for leg in legs})
    return (
        "SELECT l.site, l.code FROM locations l JOIN unnest(%b::text[], %b::text[]) AS p (s, c)"
        " ON l.site = p.s AND l.code = p.c WHERE l.held",
        [[t[0] for t in targets], [t[1] for t in targets]],
    )


def _rule_exceptions(
    legs: Sequence[Leg],
    ids: Sequence[int],
    balances: Sequence[BalanceChange],
    held: set[tuple[str, str]],
) -> list[exceptions.Raised]:
    """Negative balances at real locations, and stock moved into a held location."""
    raised: list[exceptions.Raised] = []
    first_leg: dict[tuple[str, str], int] = {}
    for i, leg in enumerate(legs):
        first_leg.setdefault((leg.site, leg.from_location), i)
    for change in balances:
        if change.quantity < 0 and change.location not in VIRTUAL:
            cause = first_leg.get((change.site, change.location))
            raised.append(
                exceptions.Raised(
                    change.site, "negative_balance",
                    f"{change.location}/{change.sku}/{change.lot}/{change.serial}/"
                    f"{change.lpn}/{change.status}",
                    {"location": change.location, "sku": change.sku, "lot": change.lot,
                     "serial": change.serial, "lpn": change.lpn, "status": change.status,
                     "quantity": quantity_text(change.quantity)},
                    legs[cause].actor if cause is not None else "ledger",
                    movement=ids[cause] if cause is not None else None,
                )
            )  # fmt: skip
    for i, leg in enumerate(legs):
        if (leg.target_site, leg.to_location) in held:
            raised.append(
                exceptions.Raised(
                    leg.target_site, "held_location", f"{leg.to_location}/{ids[i]}",
                    {"location": leg.to_location, "sku": leg.sku, "lot": leg.lot,
                     "quantity": quantity_text(leg.quantity), "kind": leg.kind},
                    leg.actor, movement=ids[i],
                )
            )  # fmt: skip
    return raised


async def reverse(movement: int, *, actor: str, reason: str, conn: AsyncConnection) -> Posted:
    """Post the exact opposite of a movement, linked to it (a movement is reversed once)."""
    cur = await conn.execute(
        "SELECT site, to_site, sku, lot, serial, lpn, from_location, to_location, from_status,"
        " to_status, quantity, document FROM movements WHERE id = %s",
        (movement,),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no movement {movement}")
    site, to_site, sku, lot, serial, lpn, source, target, from_status, to_status, qty, doc = row
    return await post(
        [
            Leg(
                site=to_site, to_site=site, sku=sku, lot=lot, serial=serial, lpn=lpn,
                from_location=target, to_location=source, from_status=to_status,
                to_status=from_status, quantity=qty, kind="reversal",
                occurred_at=dt.datetime.now(dt.UTC), actor=actor, reason=reason,
                document=doc, reverses=movement,
            )
        ],
        conn=conn,
    )  # fmt: skip


# ------------------------------------------------------------------ drift check


@dataclass(frozen=True)
class Drift:
    """A balance row that differs from the rebuild of the ledger."""

    key: BalanceKey
    stored: Decimal | None
    rebuilt: Decimal | None


_REBUILD = (
    "SELECT site, location, sku, lot, serial, lpn, status, sum(quantity) AS quantity FROM ("
    " SELECT site, from_location AS location, sku, lot, serial, lpn, from_status AS status,"
    " -quantity AS quantity FROM movements"
    " UNION ALL SELECT to_site, to_location, sku, lot, serial, lpn, to_status, quantity"
    " FROM movements) legs GROUP BY 1, 2, 3, 4, 5, 6, 7"
)


async def check(*, site: str | None = None, conn: AsyncConnection) -> list[Drift]:
    """Rebuild every balance (of a site, or all) from the movements and compare."""
    rebuild = (
        _REBUILD
        if site is None
        else (f"SELECT * FROM ({_REBUILD}) all_sites WHERE site = %(site)s")
    )
    mine = "" if site is None else " AND coalesce(b.site, r.site) = %(site)s"
    cur = await conn.execute(
        "SELECT coalesce(b.site, r.site), coalesce(b.location, r.location),"
        " coalesce(b.sku, r.sku), coalesce(b.lot, r.lot), coalesce(b.serial, r.serial),"
        " coalesce(b.lpn, r.lpn), coalesce(b.status, r.status), b.quantity, r.quantity"
        f" FROM (SELECT * FROM balances WHERE %(site)s::text IS NULL OR site = %(site)s) b"
        f" FULL JOIN ({rebuild}) r"
        " ON (b.site, b.location, b.sku, b.lot, b.serial, b.lpn, b.status)"
        " = (r.site, r.location, r.sku, r.lot, r.serial, r.lpn, r.status)"
        " WHERE b.quantity IS DISTINCT FROM r.quantity"
        " AND NOT (coalesce(b.quantity, 0) = 0 AND coalesce(r.quantity, 0) = 0)"
        f"{mine} ORDER BY 1, 2, 3, 4, 5, 6, 7",
        {"site": site},
    )
    return [Drift(tuple(row[:7]), row[7], row[8]) for row in await cur.fetchall()]


async def orphans(*, conn: AsyncConnection) -> list[str]:
    """Movements naming a SKU or location that does not exist (should never happen)."""
    cur = await conn.execute(
        "SELECT 'movement ' || m.id || ': ' || CASE"
        " WHEN NOT EXISTS (SELECT 1 FROM skus k WHERE k.code = m.sku) THEN 'no SKU ' || m.sku"
        " WHEN NOT EXISTS (SELECT 1 FROM locations l WHERE (l.site, l.code)"
        " = (m.site, m.from_location)) THEN 'no location ' || m.site || '/' || m.from_location"
        " ELSE 'no location ' || m.to_site || '/' || m.to_location END FROM movements m"
        " WHERE NOT EXISTS (SELECT 1 FROM skus k WHERE k.code = m.sku)"
        " OR NOT EXISTS (SELECT 1 FROM locations l WHERE (l.site, l.code)"
        " = (m.site, m.from_location))"
        " OR NOT EXISTS (SELECT 1 FROM locations l WHERE (l.site, l.code)"
        " = (m.to_site, m.to_location)) ORDER BY m.id LIMIT 1000"
    )
    return [row[0] for row in await cur.fetchall()]


async def repair(*, conn: AsyncConnection) -> int:
    """Make the projection equal the rebuild (the ledger is the truth); returns rows fixed."""
    await conn.execute("LOCK TABLE movements, balances IN SHARE ROW EXCLUSIVE MODE")
    drift = await check(conn=conn)
    if drift:
        await conn.execute("DELETE FROM balances")
        await conn.execute(
            "INSERT INTO balances (site, location, sku, lot, serial, lpn, status, quantity)"
            f" {_REBUILD}"
        )
    return len(drift)
