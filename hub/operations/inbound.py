"""Inbound: advance shipping notices, receipts, QC decisions and customer returns.

What was received against a notice line is a sum over its movements (document
``asn:<notice>/<line>``), never a stored figure. A person's operation is checked before it
stands: unlike a device event (a fact, posted whatever the stock), a request to take stock
that is not there gets a 409 and nothing is posted (``post_from_stock``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from warelink.hub.errors import Conflict, Invalid, NotFound
from warelink.hub.stock import audit, ledger
from warelink.hub.stock.balances import quantity_text
from warelink.hub.stock.ledger import CUSTOMER, SCRAP, SUPPLIER, VIRTUAL, BalanceKey, Leg, Posted
from warelink.hub.stock.sites import require_location, require_site
from warelink.protocol.gs1 import is_valid_check_digit


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------ what is named


@dataclass(frozen=True)
class Sku:
    code: str
    tracking: str  # none, lot, serial
    requires_qc: bool
    sku_class: str | None


def as_gtin14(ref: str) -> str | None:
    """GTIN-8/12/13/14 as the 14 digits the master data keeps; None if not a GTIN."""
    if ref.isascii() and ref.isdigit() and len(ref) in (8, 12, 13, 14):
        return ref.zfill(14)
    return None


async def find_sku(ref: str, *, conn: AsyncConnection) -> Sku:
    """A SKU by its code or by its GTIN (a code match wins)."""
    cur = await conn.execute(
        "SELECT code, tracking, requires_qc, sku_class FROM skus WHERE code = %s OR gtin = %s"
        " ORDER BY code = %s DESC LIMIT 1",
        (ref, as_gtin14(ref), ref),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no SKU with code or GTIN {ref!r}")
    return Sku(*row)


def check_tracking(sku: Sku, *, lot: str, serial: str, quantity: Decimal) -> None:
    """A lot for lot-tracked SKUs, one serial per unit for serial-tracked ones."""
    if sku.tracking == "lot" and not lot:
        raise Invalid(f"SKU {sku.code} is tracked by lot: give the lot")
    if sku.tracking == "serial":
        if not serial:
            raise Invalid(f"SKU {sku.code} is tracked by serial: give the serial")
        if quantity != 1:
            raise Invalid(f"SKU {sku.code} is tracked by serial: one serial is quantity 1")
    elif serial:
        raise Invalid(f"SKU {sku.code} is not tracked by serial: leave the serial out")


def check_lpn(lpn: str) -> None:
    """An all-digit licence plate of 18 digits is an SSCC: its check digit must hold."""
    if len(lpn) == 18 and lpn.isascii() and lpn.isdigit() and not is_valid_check_digit(lpn):
        raise Invalid(f"SSCC {lpn} has a wrong check digit")


# ------------------------------------------------------------------ registering items


async def register_lot(
    sku: str, lot: str, expiry: dt.date | None, *, conn: AsyncConnection
) -> dt.date | None:
    """Register a lot (or complete its missing expiry); returns the lot's expiry.

    A lot keeps one expiry: a different one on the label is a 409, not an overwrite.
    """
    cur = await conn.execute(
        "INSERT INTO lots (sku, lot, expiry) VALUES (%s, %s, %s) ON CONFLICT (sku, lot)"
        " DO UPDATE SET expiry = coalesce(lots.expiry, excluded.expiry) RETURNING expiry",
        (sku, lot, expiry),
    )
    row = await cur.fetchone()
    assert row is not None
    stored: dt.date | None = row[0]
    if expiry is not None and stored != expiry:
        raise Conflict(f"lot {lot} of {sku} expires {stored}, not {expiry}")
    return stored


async def register_serial(sku: str, serial: str, *, conn: AsyncConnection) -> None:
    await conn.execute(
        "INSERT INTO serials (sku, serial) VALUES (%s, %s) ON CONFLICT DO NOTHING", (sku, serial)
    )


async def register_lpn(lpn: str, site: str, *, conn: AsyncConnection) -> None:
    await conn.execute(
        "INSERT INTO lpns (code, site) VALUES (%s, %s) ON CONFLICT DO NOTHING", (lpn, site)
    )


async def serial_in_stock(sku: str, serial: str, *, conn: AsyncConnection) -> str | None:
    """Where a serial is in stock ("site/location"), or None."""
    cur = await conn.execute(
        "SELECT b.site || '/' || b.location FROM balances b JOIN locations l"
        " ON l.site = b.site AND l.code = b.location AND l.kind = 'internal'"
        " WHERE b.sku = %s AND b.serial = %s AND b.quantity > 0 LIMIT 1",
        (sku, serial),
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


# ------------------------------------------------------------------ posting people's legs


async def reserved(key: BalanceKey, *, conn: AsyncConnection) -> Decimal:
    """Open reservations on a balance (reservations are the one source of reserved)."""
    site, location, sku, lot, serial, lpn, _ = key
    cur = await conn.execute(
        "SELECT coalesce(sum(quantity), 0) FROM reservations WHERE state = 'open'"
        " AND site = %s AND location = %s AND sku = %s AND lot = %s AND serial = %s"
        " AND lpn = %s",
        (site, location, sku, lot, serial, lpn),
    )
    row = await cur.fetchone()
    assert row is not None
    return Decimal(row[0])


def describe(key: BalanceKey) -> str:
    site, location, sku, lot, serial, lpn, status = key
    item = sku + (f" lot {lot}" if lot else "") + (f" serial {serial}" if serial else "")
    return f"{item}{f' on {lpn}' if lpn else ''} at {site}/{location} ({status})"


async def post_from_stock(legs: Sequence[Leg], *, conn: AsyncConnection) -> Posted:
    """Post a person's legs only if what they take is there, free of reservations.

    Posting first and checking the balances it returns keeps the ledger's lock order; a
    shortfall raises ``Conflict`` and the caller's transaction undoes the posting.
    """
    posted = await ledger.post(legs, conn=conn)
    if posted.skipped:
        raise Conflict("a serial in the request is already where it would go")
    after = {
        (b.site, b.location, b.sku, b.lot, b.serial, b.lpn, b.status): b.quantity
        for b in posted.balances
    }
    taken: dict[BalanceKey, Decimal] = defaultdict(Decimal)
    for leg in legs:
        taken[leg.source_key()] += leg.quantity
    for key, quantity in taken.items():
        elsewhere = key not in after  # the ledger took a serial from where it really is
        if elsewhere or (key[4] and key[1] not in VIRTUAL and after[key] < 0):
            where = await serial_in_stock(key[2], key[4], conn=conn)
            raise Conflict(f"{describe(key)} is not there: it is at {where or 'no location'}")
        if key[1] in VIRTUAL:
            continue
        held = await reserved(key, conn=conn) if key[6] == "available" else Decimal(0)
        if after[key] < held:
            free = after[key] + quantity - held
            raise Conflict(
                f"{describe(key)}: {free} free (on hand less reserved), {quantity} asked"
            )
    return posted


# ------------------------------------------------------------------ advance notices


@dataclass(frozen=True)
class NoticeLineIn:
    sku: str  # code or GTIN
    quantity: Decimal
    lot: str = ""
    expiry: dt.date | None = None


@dataclass(frozen=True)
class NoticeLine:
    line: int
    sku: str
    lot: str
    expiry: dt.date | None
    expected: Decimal
    received: Decimal


@dataclass(frozen=True)
class Notice:
    id: int
    site: str
    reference: str
    supplier: str
    expected_at: dt.datetime | None
    state: str
    created_by: str
    created_at: dt.datetime
    lines: list[NoticeLine]


# Received per notice line: into the site from SUPPLIER, less what went back (reversals).
_RECEIVED = (
    "coalesce(sum(CASE WHEN m.from_location = 'SUPPLIER' THEN m.quantity"
    " WHEN m.to_location = 'SUPPLIER' THEN -m.quantity ELSE 0 END), 0)"
)


async def create_notice(
    site: str,
    reference: str,
    supplier: str,
    expected_at: dt.datetime | None,
    lines: Sequence[NoticeLineIn],
    *,
    actor: str,
    conn: AsyncConnection,
) -> Notice:
    await require_site(site, conn=conn)
    skus = [await find_sku(line.sku, conn=conn) for line in lines]
    for sku, line in zip(skus, lines, strict=True):
        if line.lot and sku.tracking == "none":
            raise Invalid(f"SKU {sku.code} is not tracked by lot: leave the lot out")
    cur = await conn.execute(
        "INSERT INTO advance_notices (site, reference, supplier, expected_at, created_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site, reference) DO NOTHING RETURNING id",
        (site, reference, supplier, expected_at, actor),
    )
    row = await cur.fetchone()
    if row is None:
        raise Conflict(f"site {site} already has a notice {reference!r}")
    notice = int(row[0])
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO advance_notice_lines (notice, line, sku, lot, expiry, quantity)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (notice, number, sku.code, line.lot, line.expiry, line.quantity)
                for number, (sku, line) in enumerate(zip(skus, lines, strict=True), start=1)
            ],
        )
    await audit.record(
        actor, "notice.create", site=site, subject=f"asn:{notice}",
        detail={"reference": reference, "lines": len(lines)}, conn=conn,
    )  # fmt: skip
    return await get_notice(site, notice, conn=conn)


async def get_notice(site: str, notice: int, *, conn: AsyncConnection) -> Notice:
    cur = await conn.execute(
        "SELECT id, site, reference, supplier, expected_at, state, created_by, created_at"
        " FROM advance_notices WHERE site = %s AND id = %s",
        (site, notice),
    )
    head = await cur.fetchone()
    if head is None:
        raise NotFound(f"no notice {notice} at site {site!r}")
    cur = await conn.execute(
        f"SELECT l.line, l.sku, l.lot, l.expiry, l.quantity, {_RECEIVED}"
        " FROM advance_notice_lines l LEFT JOIN movements m"
        " ON m.document = 'asn:' || l.notice || '/' || l.line"
        " WHERE l.notice = %s GROUP BY l.notice, l.line ORDER BY l.line",
        (notice,),
    )
    lines = [NoticeLine(*row) for row in await cur.fetchall()]
    number, at_site, reference, supplier, expected_at, state, created_by, created_at = head
    return Notice(
        number, at_site, reference, supplier, expected_at, state, created_by, created_at, lines
    )


@dataclass(frozen=True)
class NoticeSummary:
    id: int
    reference: str
    supplier: str
    expected_at: dt.datetime | None
    state: str
    created_at: dt.datetime
    lines: int
    expected: Decimal
    received: Decimal


async def list_notices(
    site: str, state: str | None, limit: int, offset: int, *, conn: AsyncConnection
) -> list[NoticeSummary]:
    await require_site(site, conn=conn)
    cur = await conn.execute(
        "SELECT n.id, n.reference, n.supplier, n.expected_at, n.state, n.created_at,"
        " (SELECT count(*) FROM advance_notice_lines l WHERE l.notice = n.id),"
        " (SELECT coalesce(sum(quantity), 0) FROM advance_notice_lines l"
        "  WHERE l.notice = n.id),"
        f" (SELECT {_RECEIVED} FROM movements m WHERE m.document LIKE 'asn:' || n.id || '/%%')"
        " FROM advance_notices n WHERE n.site = %s AND (%s::text IS NULL OR n.state = %s)"
        " ORDER BY n.id DESC LIMIT %s OFFSET %s",
        (site, state, state, limit, offset),
    )
    return [NoticeSummary(*row) for row in await cur.fetchall()]


async def _lock_notice(site: str, notice: int, *, share: bool, conn: AsyncConnection) -> str:
    """The notice's state, its row locked (shared by receipts, exclusive to close/cancel)."""
    mode = "SHARE" if share else "UPDATE"
    cur = await conn.execute(
        f"SELECT state FROM advance_notices WHERE site = %s AND id = %s FOR {mode}",
        (site, notice),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no notice {notice} at site {site!r}")
    return str(row[0])


async def finish_notice(
    site: str, notice: int, to_state: str, *, actor: str, conn: AsyncConnection
) -> Notice:
    """Close (receiving is done) or cancel (nothing came, nothing will) an open notice."""
    state = await _lock_notice(site, notice, share=False, conn=conn)
    if state != "open":
        raise Conflict(f"notice {notice} is {state}: only an open notice can be {to_state}")
    before = await get_notice(site, notice, conn=conn)
    if to_state == "cancelled" and any(line.received for line in before.lines):
        raise Conflict(f"notice {notice} has receipts: close it instead of cancelling")
    await conn.execute("UPDATE advance_notices SET state = %s WHERE id = %s", (to_state, notice))
    short = {
        str(line.line): quantity_text(line.expected - line.received)
        for line in before.lines
        if line.received < line.expected
    }
    await audit.record(
        actor, f"notice.{'close' if to_state == 'closed' else 'cancel'}", site=site,
        subject=f"asn:{notice}", detail={"short": short}, conn=conn,
    )  # fmt: skip
    return await get_notice(site, notice, conn=conn)


# ------------------------------------------------------------------ receipts


@dataclass(frozen=True)
class ReceiptIn:
    location: str
    quantity: Decimal
    sku: str = ""  # code or GTIN; may be left out when a notice line names it
    notice: int | None = None
    line: int | None = None
    lot: str = ""
    expiry: dt.date | None = None
    serial: str = ""
    lpn: str = ""
    qc: bool = False  # put on QC hold even if the SKU does not require it


@dataclass(frozen=True)
class Received:
    movement: int
    sku: str
    lot: str
    expiry: dt.date | None
    serial: str
    lpn: str
    location: str
    status: str
    quantity: Decimal
    notice: int | None
    line: int | None
    expected: Decimal | None  # on the notice line
    received: Decimal | None  # on the notice line, this receipt included
    over_received: Decimal  # the notice line's receipts beyond its quantity (0 without one)
    exceptions: list[int]


async def _notice_line(
    site: str, notice: int, line: int, *, conn: AsyncConnection
) -> tuple[str, str, dt.date | None, Decimal]:
    state = await _lock_notice(site, notice, share=True, conn=conn)
    if state != "open":
        raise Conflict(f"notice {notice} is {state}: receive without it or open a new one")
    cur = await conn.execute(
        "SELECT sku, lot, expiry, quantity FROM advance_notice_lines"
        " WHERE notice = %s AND line = %s",
        (notice, line),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"notice {notice} has no line {line}")
    return row[0], row[1], row[2], row[3]


async def match_notices(legs: Sequence[Leg], *, conn: AsyncConnection) -> list[Leg]:
    """Device receipts, each linked to the oldest open notice line it fits (``asn:N/L``).

    A scanner's receipt names no notice, so it fills the open lines of its site, SKU and lot
    (or a line with no lot) oldest first, up to what each still expects; a receipt that
    fits no line stays a receipt without a notice. One query for the whole flush.
    """
    wanted = sorted({(leg.site, leg.sku) for leg in legs
                     if leg.kind == "receipt" and leg.document is None})  # fmt: skip
    if not wanted:
        return list(legs)
    cur = await conn.execute(
        f"SELECT n.site, l.sku, l.lot, l.notice, l.line, l.quantity - {_RECEIVED}"
        " FROM advance_notices n JOIN advance_notice_lines l ON l.notice = n.id"
        " JOIN unnest(%b::text[], %b::text[]) AS k (site, sku)"
        " ON k.site = n.site AND k.sku = l.sku"
        " LEFT JOIN movements m ON m.document = 'asn:' || l.notice || '/' || l.line"
        " WHERE n.state = 'open' GROUP BY n.site, n.created_at, l.notice, l.line"
        " ORDER BY n.created_at, l.notice, l.line",
        ([w[0] for w in wanted], [w[1] for w in wanted]),
    )
    open_lines = [
        [site, sku, lot, f"asn:{notice}/{line}", left]
        for site, sku, lot, notice, line, left in await cur.fetchall()
        if left > 0
    ]
    matched: list[Leg] = []
    for leg in legs:
        fits = next(
            (line for line in open_lines
             if leg.kind == "receipt" and leg.document is None and line[4] > 0
             and (line[0], line[1]) == (leg.site, leg.sku) and line[2] in ("", leg.lot)),
            None,
        )  # fmt: skip
        if fits is not None:
            fits[4] -= leg.quantity
            leg = replace(leg, document=fits[3])
        matched.append(leg)
    return matched


async def _line_received(notice: int, line: int, *, conn: AsyncConnection) -> Decimal:
    cur = await conn.execute(
        f"SELECT {_RECEIVED} FROM movements m WHERE m.document = %s", (f"asn:{notice}/{line}",)
    )
    row = await cur.fetchone()
    assert row is not None
    return Decimal(row[0])


async def receive(site: str, r: ReceiptIn, *, actor: str, conn: AsyncConnection) -> Received:
    """Book goods from the supplier into a dock location, against a notice line or not."""
    await require_site(site, conn=conn)
    await require_location(site, r.location, zone_kinds=("dock",), conn=conn)
    lot, expiry, expected, document = r.lot, r.expiry, None, None
    if (r.notice is None) != (r.line is None):
        raise Invalid("give both notice and line, or neither")
    if r.notice is not None and r.line is not None:
        line_sku, line_lot, line_expiry, expected = await _notice_line(
            site, r.notice, r.line, conn=conn
        )
        sku = await find_sku(r.sku or line_sku, conn=conn)
        if sku.code != line_sku:
            raise Invalid(f"notice {r.notice} line {r.line} is for {line_sku}, not {sku.code}")
        if line_lot and lot and lot != line_lot:
            raise Invalid(f"notice {r.notice} line {r.line} is for lot {line_lot}, not {lot}")
        if line_lot and not lot:
            lot, expiry = line_lot, expiry or line_expiry
        document = f"asn:{r.notice}/{r.line}"
    elif r.sku:
        sku = await find_sku(r.sku, conn=conn)
    else:
        raise Invalid("name the SKU (code or GTIN) or a notice line")
    check_tracking(sku, lot=lot, serial=r.serial, quantity=r.quantity)
    if sku.tracking == "none" and lot:
        raise Invalid(f"SKU {sku.code} is not tracked by lot: leave the lot out")
    check_lpn(r.lpn)
    if lot:
        expiry = await register_lot(sku.code, lot, expiry, conn=conn)
        if expiry is None and sku.tracking == "lot":
            raise Invalid(f"SKU {sku.code} is tracked by lot: give the expiry of lot {lot}")
    if r.serial:
        where = await serial_in_stock(sku.code, r.serial, conn=conn)
        if where is not None:
            raise Conflict(f"serial {r.serial} of {sku.code} is already in stock at {where}")
        await register_serial(sku.code, r.serial, conn=conn)
    if r.lpn:
        await register_lpn(r.lpn, site, conn=conn)
    status = "qc_hold" if sku.requires_qc or r.qc else "available"
    leg = Leg(
        site=site, sku=sku.code, quantity=r.quantity, from_location=SUPPLIER,
        to_location=r.location, to_status=status, kind="receipt", occurred_at=now(),
        actor=actor, lot=lot, serial=r.serial, lpn=r.lpn, document=document,
    )  # fmt: skip
    posted = await post_from_stock([leg], conn=conn)
    received = over = None
    if r.notice is not None and r.line is not None and expected is not None:
        received = await _line_received(r.notice, r.line, conn=conn)
        over = max(Decimal(0), received - expected)
    answer = Received(
        movement=posted.movements[0], sku=sku.code, lot=lot, expiry=expiry, serial=r.serial,
        lpn=r.lpn, location=r.location, status=status, quantity=r.quantity, notice=r.notice,
        line=r.line, expected=expected, received=received, over_received=over or Decimal(0),
        exceptions=posted.exceptions,
    )  # fmt: skip
    await audit.record(
        actor, "receive", site=site, subject=document or f"movement:{answer.movement}",
        detail=jsonable(answer), conn=conn,
    )  # fmt: skip
    return answer


def jsonable(obj: Any) -> dict[str, Any]:
    """An answer as audit detail: its set fields, Decimals and dates as text."""
    return {k: _as_text(v) for k, v in vars(obj).items() if v not in (None, "", [])}


def _as_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return quantity_text(value)
    return str(value) if isinstance(value, dt.date) else value


# ------------------------------------------------------------------ QC


@dataclass(frozen=True)
class QcIn:
    decision: str  # release, reject
    location: str
    sku: str
    quantity: Decimal
    reason: str
    disposition: str = "scrap"  # for a reject: scrap, or damaged (kept in place)
    lot: str = ""
    serial: str = ""
    lpn: str = ""


@dataclass(frozen=True)
class Decided:
    movement: int
    kind: str
    sku: str
    lot: str
    serial: str
    lpn: str
    from_location: str
    to_location: str
    to_status: str
    quantity: Decimal
    reason: str
    exceptions: list[int]


async def decide_qc(site: str, q: QcIn, *, actor: str, conn: AsyncConnection) -> Decided:
    """Release stock on QC hold (available in place) or reject it (to SCRAP, or damaged)."""
    await require_site(site, conn=conn)
    await require_location(site, q.location, conn=conn)
    sku = await find_sku(q.sku, conn=conn)
    check_tracking(sku, lot=q.lot, serial=q.serial, quantity=q.quantity)
    if q.decision == "release":
        kind, target, status = "qc_release", q.location, "available"
    elif q.disposition == "damaged":
        kind, target, status = "qc_reject", q.location, "damaged"
    else:
        kind, target, status = "qc_reject", SCRAP, "damaged"
    leg = Leg(
        site=site, sku=sku.code, quantity=q.quantity, from_location=q.location,
        to_location=target, from_status="qc_hold", to_status=status, kind=kind,
        occurred_at=now(), actor=actor, lot=q.lot, serial=q.serial, lpn=q.lpn, reason=q.reason,
    )  # fmt: skip
    posted = await post_from_stock([leg], conn=conn)
    answer = Decided(
        movement=posted.movements[0], kind=kind, sku=sku.code, lot=q.lot, serial=q.serial,
        lpn=q.lpn, from_location=q.location, to_location=target, to_status=status,
        quantity=q.quantity, reason=q.reason, exceptions=posted.exceptions,
    )  # fmt: skip
    await audit.record(
        actor, f"qc.{q.decision}", site=site, subject=f"movement:{answer.movement}",
        detail=jsonable(answer), conn=conn,
    )  # fmt: skip
    return answer


# ------------------------------------------------------------------ returns


@dataclass(frozen=True)
class ReturnIn:
    reference: str  # the customer's return (RMA) reference
    location: str
    sku: str
    quantity: Decimal
    reason: str = ""
    lot: str = ""
    expiry: dt.date | None = None
    serial: str = ""
    lpn: str = ""


async def receive_return(site: str, r: ReturnIn, *, actor: str, conn: AsyncConnection) -> Received:
    """Take goods back from the customer: always onto QC hold, whatever the SKU."""
    await require_site(site, conn=conn)
    await require_location(site, r.location, conn=conn)
    sku = await find_sku(r.sku, conn=conn)
    check_tracking(sku, lot=r.lot, serial=r.serial, quantity=r.quantity)
    check_lpn(r.lpn)
    expiry = await register_lot(sku.code, r.lot, r.expiry, conn=conn) if r.lot else None
    if r.serial:
        where = await serial_in_stock(sku.code, r.serial, conn=conn)
        if where is not None:
            raise Conflict(f"serial {r.serial} of {sku.code} is in stock at {where}, not out")
        await register_serial(sku.code, r.serial, conn=conn)
    if r.lpn:
        await register_lpn(r.lpn, site, conn=conn)
    document = f"return:{r.reference}"
    leg = Leg(
        site=site, sku=sku.code, quantity=r.quantity, from_location=CUSTOMER,
        to_location=r.location, to_status="qc_hold", kind="return", occurred_at=now(),
        actor=actor, lot=r.lot, serial=r.serial, lpn=r.lpn, reason=r.reason or None,
        document=document,
    )  # fmt: skip
    posted = await post_from_stock([leg], conn=conn)
    answer = Received(
        movement=posted.movements[0], sku=sku.code, lot=r.lot, expiry=expiry, serial=r.serial,
        lpn=r.lpn, location=r.location, status="qc_hold", quantity=r.quantity, notice=None,
        line=None, expected=None, received=None, over_received=Decimal(0),
        exceptions=posted.exceptions,
    )  # fmt: skip
    await audit.record(
        actor, "return", site=site, subject=document, detail=jsonable(answer), conn=conn
    )
    return answer
