"""KPIs over a period and CSV exports, read from the ``analyst`` views (migration 010).

The views hold the one definition of every KPI; this module only sums their rows over a
period ``[since, until)`` of UTC days, as docs/analyst.md states, so the API, a BI tool and
a spreadsheet get the same figures. Exports stream the rows of ``COPY … TO STDOUT`` in
chunks, never the whole result in memory, written as CSV by ``csvio.row`` (so a SKU name or
lot that looks like a formula reaches a spreadsheet as text).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel

from warelink.hub import csvio
from warelink.hub.errors import Invalid

MAX_PERIOD_DAYS = 3660
DEFAULT_PERIOD_DAYS = 30
CHUNK_BYTES = 64 * 1024


# ------------------------------------------------------------------ the figures


class Accuracy(BaseModel):
    value: float | None  # correct / total; null when nothing was counted (picked) in the period
    total: int  # locations counted, or orders picked
    correct: int  # counted right, or picked without an error found


class UnitAccuracy(BaseModel):
    value: float | None
    system_units: float
    abs_variance_units: float


class Durations(BaseModel):
    """Hours, over the rows of the period that have both ends."""

    count: int
    median_hours: float | None
    p90_hours: float | None
    mean_hours: float | None


class DockToStock(Durations):
    awaiting_putaway: int  # receipt lines of the period not put away yet


class Turnover(BaseModel):
    units_shipped: float
    average_on_hand: float | None
    days: int
    turnover: float | None
    days_on_hand: float | None


class Utilisation(BaseModel):
    usable_locations: int
    average: float | None
    peak: float | None


class StockoutRate(BaseModel):
    value: float | None
    sku_location_days: int
    stockout_days: int


class Throughput(BaseModel):
    lines_picked: int
    units_picked: float
    lines_shipped: int
    units_shipped: float
    working_hours: int  # UTC hours with at least one pick or shipment
    lines_picked_per_hour: float | None
    units_picked_per_hour: float | None
    lines_shipped_per_hour: float | None
    units_shipped_per_hour: float | None


class DeviceUptime(BaseModel):
    device: str
    online_hours: float
    observed_hours: float
    uptime: float | None


class Uptime(BaseModel):
    value: float | None
    online_hours: float
    observed_hours: float
    devices: list[DeviceUptime]


class SiteKpis(BaseModel):
    site: str
    since: dt.date
    until: dt.date
    inventory_accuracy: Accuracy
    unit_accuracy: UnitAccuracy
    order_picking_accuracy: Accuracy
    dock_to_stock: DockToStock
    turnover: Turnover
    order_cycle_time: Durations
    location_utilisation: Utilisation
    stockout_rate: StockoutRate
    throughput: Throughput
    device_uptime: Uptime


class KpiComparison(BaseModel):
    since: dt.date
    until: dt.date
    sites: list[SiteKpis]


# ------------------------------------------------------------------ period


def period(
    since: dt.date | None, until: dt.date | None, *, today: dt.date
) -> tuple[dt.date, dt.date]:
    """The half-open period of days: by default the last 30 days up to and including today."""
    try:
        end = until or today + dt.timedelta(days=1)
        start = since or end - dt.timedelta(days=DEFAULT_PERIOD_DAYS)
    except OverflowError:
        raise Invalid(f"until ({until}) leaves no room for a default since; give both") from None
    if start >= end:
        raise Invalid(f"since ({start}) must be before until ({end})")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise Invalid(f"a period is at most {MAX_PERIOD_DAYS} days; ask for a shorter one")
    return start, end


def _ratio(part: Decimal | int | None, whole: Decimal | int | None) -> float | None:
    if part is None or not whole:
        return None
    return float(Decimal(part) / Decimal(whole))


def _float(value: Decimal | float | int | None) -> float | None:
    return None if value is None else float(value)


# ------------------------------------------------------------------ KPI queries

Rows = dict[str, dict[str, Any]]


async def _by_site(query: str, params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return {row["site"]: row for row in await cur.fetchall()}


_WINDOW = "site = ANY(%(sites)s) AND day >= %(since)s AND day < %(until)s"


async def count_accuracy(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT a.site, a.counted, a.correct, u.system_units, u.abs_variance_units FROM"
        " (SELECT site, count(*) AS counted, count(*) FILTER (WHERE accurate) AS correct"
        f"  FROM analyst.kpi_inventory_accuracy WHERE {_WINDOW} GROUP BY site) a"
        " JOIN (SELECT site, sum(system_units) AS system_units,"
        "  sum(abs_variance_units) AS abs_variance_units"
        f"  FROM analyst.kpi_unit_accuracy WHERE {_WINDOW} GROUP BY site) u USING (site)",
        params,
        conn=conn,
    )


async def picking_accuracy(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT site, count(*) AS counted, count(*) FILTER (WHERE NOT error_found) AS correct"
        f" FROM analyst.kpi_order_picking_accuracy WHERE {_WINDOW} GROUP BY site",
        params,
        conn=conn,
    )


_DURATIONS = (
    "count(hours) AS count,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median_hours,"
    " percentile_cont(0.9) WITHIN GROUP (ORDER BY hours) AS p90_hours,"
    " avg(hours) AS mean_hours"
)


async def dock_to_stock(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        f"SELECT site, {_DURATIONS},"
        " count(*) FILTER (WHERE put_away_at IS NULL) AS awaiting_putaway"
        f" FROM analyst.kpi_dock_to_stock WHERE {_WINDOW} GROUP BY site",
        params,
        conn=conn,
    )


async def order_cycle_time(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        f"SELECT site, {_DURATIONS} FROM analyst.kpi_order_cycle_time WHERE {_WINDOW}"
        " GROUP BY site",
        params,
        conn=conn,
    )


async def turnover(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT site, sum(units_shipped) AS units_shipped, avg(on_hand_units) AS average,"
        f" count(*) AS days FROM analyst.kpi_turnover WHERE {_WINDOW} GROUP BY site",
        params,
        conn=conn,
    )


async def utilisation(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT site, max(usable_locations) AS usable, avg(utilisation) AS average,"
        " max(utilisation) AS peak"
        f" FROM analyst.kpi_location_utilisation WHERE {_WINDOW} GROUP BY site",
        params,
        conn=conn,
    )


async def usable_locations(sites: Sequence[str], *, conn: AsyncConnection) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT site, count(*) FROM locations WHERE site = ANY(%s) AND kind = 'internal'"
        " AND usable GROUP BY site",
        (list(sites),),
    )
    return {site: n for site, n in await cur.fetchall()}


async def stockout_rate(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT site, sum(sku_location_days) AS tracked, sum(stockout_days) AS out"
        f" FROM analyst.kpi_stockout_rate WHERE {_WINDOW} GROUP BY site",
        params,
        conn=conn,
    )


async def throughput(params: dict[str, Any], *, conn: AsyncConnection) -> Rows:
    return await _by_site(
        "SELECT site, sum(lines_picked) AS lines_picked, sum(units_picked) AS units_picked,"
        " sum(lines_shipped) AS lines_shipped, sum(units_shipped) AS units_shipped,"
        " count(*) AS hours FROM analyst.kpi_throughput"
        " WHERE site = ANY(%(sites)s) AND hour >= %(start)s AND hour < %(end)s GROUP BY site",
        params,
        conn=conn,
    )


async def device_uptime(
    params: dict[str, Any], *, conn: AsyncConnection
) -> dict[str, list[dict[str, Any]]]:
    cur = conn.cursor(row_factory=dict_row)
    clipped = (
        "greatest(0, extract(epoch FROM least(ended_at, %(end)s)"
        " - greatest(started_at, %(start)s)) / 3600)"
    )
    await cur.execute(
        f"SELECT site, device, coalesce(sum({clipped}) FILTER (WHERE state = 'online'), 0)"
        f" AS online, sum({clipped}) AS observed FROM analyst.kpi_device_uptime"
        " WHERE site = ANY(%(sites)s) AND started_at < %(end)s AND ended_at > %(start)s"
        " GROUP BY site, device ORDER BY site, device",
        params,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["site"], []).append(row)
    return out


def _durations(row: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    return {
        "count": row.get("count") or 0,
        "median_hours": _float(row.get("median_hours")),
        "p90_hours": _float(row.get("p90_hours")),
        "mean_hours": _float(row.get("mean_hours")),
    }


def _per_hour(total: Decimal | int, hours: int) -> float | None:
    return float(total) / hours if hours else None


async def site_kpis(
    sites: Sequence[str], since: dt.date, until: dt.date, *, conn: AsyncConnection
) -> list[SiteKpis]:
    """Every KPI of each site over ``[since, until)``, by the definitions of the views."""
    start = dt.datetime.combine(since, dt.time(), dt.UTC)
    end = dt.datetime.combine(until, dt.time(), dt.UTC)
    params = {"sites": list(sites), "since": since, "until": until, "start": start, "end": end}
    counts = await count_accuracy(params, conn=conn)
    picks = await picking_accuracy(params, conn=conn)
    docks = await dock_to_stock(params, conn=conn)
    cycles = await order_cycle_time(params, conn=conn)
    turns = await turnover(params, conn=conn)
    usage = await utilisation(params, conn=conn)
    usable = await usable_locations(sites, conn=conn)
    outs = await stockout_rate(params, conn=conn)
    flows = await throughput(params, conn=conn)
    devices = await device_uptime(params, conn=conn)
    result = []
    for site in sites:
        count = counts.get(site, {})
        pick = picks.get(site, {})
        turn = turns.get(site, {})
        shipped = turn.get("units_shipped") or Decimal(0)
        average = turn.get("average")
        rate = _ratio(shipped, average)
        days = turn.get("days") or 0
        use = usage.get(site, {})
        out = outs.get(site, {})
        flow = flows.get(site, {})
        hours = flow.get("hours") or 0
        device_rows = devices.get(site, [])
        online = sum((r["online"] for r in device_rows), Decimal(0))
        observed = sum((r["observed"] for r in device_rows), Decimal(0))
        result.append(
            SiteKpis(
                site=site,
                since=since,
                until=until,
                inventory_accuracy=Accuracy(
                    value=_ratio(count.get("correct"), count.get("counted")),
                    total=count.get("counted") or 0,
                    correct=count.get("correct") or 0,
                ),
                unit_accuracy=UnitAccuracy(
                    value=(
                        None
                        if not count.get("system_units")
                        else 1 - float(count["abs_variance_units"] / count["system_units"])
                    ),
                    system_units=float(count.get("system_units") or 0),
                    abs_variance_units=float(count.get("abs_variance_units") or 0),
                ),
                order_picking_accuracy=Accuracy(
                    value=_ratio(pick.get("correct"), pick.get("counted")),
                    total=pick.get("counted") or 0,
                    correct=pick.get("correct") or 0,
                ),
                dock_to_stock=DockToStock(
                    **_durations(docks.get(site)),
                    awaiting_putaway=docks.get(site, {}).get("awaiting_putaway") or 0,
                ),
                turnover=Turnover(
                    units_shipped=float(shipped),
                    average_on_hand=_float(average),
                    days=days,
                    turnover=rate,
                    days_on_hand=days / rate if rate else None,
                ),
                order_cycle_time=Durations(**_durations(cycles.get(site))),
                location_utilisation=Utilisation(
                    usable_locations=usable.get(site, 0),
                    average=_float(use.get("average")),
                    peak=_float(use.get("peak")),
                ),
                stockout_rate=StockoutRate(
                    value=_ratio(out.get("out"), out.get("tracked")),
                    sku_location_days=out.get("tracked") or 0,
                    stockout_days=out.get("out") or 0,
                ),
                throughput=Throughput(
                    lines_picked=flow.get("lines_picked") or 0,
                    units_picked=float(flow.get("units_picked") or 0),
                    lines_shipped=flow.get("lines_shipped") or 0,
                    units_shipped=float(flow.get("units_shipped") or 0),
                    working_hours=hours,
                    lines_picked_per_hour=_per_hour(flow.get("lines_picked") or 0, hours),
                    units_picked_per_hour=_per_hour(flow.get("units_picked") or 0, hours),
                    lines_shipped_per_hour=_per_hour(flow.get("lines_shipped") or 0, hours),
                    units_shipped_per_hour=_per_hour(flow.get("units_shipped") or 0, hours),
                ),
                device_uptime=Uptime(
                    value=_ratio(online, observed),
                    online_hours=float(online),
                    observed_hours=float(observed),
                    devices=[
                        DeviceUptime(
                            device=r["device"],
                            online_hours=float(r["online"]),
                            observed_hours=float(r["observed"]),
                            uptime=_ratio(r["online"], r["observed"]),
                        )
                        for r in device_rows
                    ],
                ),
            )
        )
    return result


async def covered_sites(
    wanted: Sequence[str] | None, allowed: frozenset[str] | None, *, conn: AsyncConnection
) -> list[str]:
    """The existing sites a caller asked for (all by default), within the sites it covers."""
    cur = await conn.execute("SELECT id FROM sites ORDER BY id")
    sites = [row[0] for row in await cur.fetchall()]
    visible = [s for s in sites if allowed is None or s in allowed]
    if not wanted:
        return visible
    return [s for s in visible if s in set(wanted)]


# ------------------------------------------------------------------ CSV exports

_MOVEMENTS_CSV = (
    "COPY (SELECT * FROM analyst.movements WHERE (site = %(site)s OR to_site = %(site)s)"
    " AND occurred_at >= %(since)s AND occurred_at < %(until)s ORDER BY movement)"
    " TO STDOUT (FORMAT text, HEADER)"
)
_BALANCES_CSV = (
    "COPY (SELECT b.site, b.location, l.kind AS location_kind, b.sku, s.gtin, b.lot,"
    " lo.expiry, b.serial, b.lpn, b.status, b.quantity, b.updated_at FROM balances b"
    " JOIN locations l ON l.site = b.site AND l.code = b.location"
    " LEFT JOIN skus s ON s.code = b.sku LEFT JOIN lots lo ON lo.sku = b.sku AND lo.lot = b.lot"
    " WHERE b.site = %(site)s AND b.quantity <> 0"
    " ORDER BY b.location, b.sku, b.lot, b.serial, b.lpn, b.status)"
    " TO STDOUT (FORMAT text, HEADER)"
)
FAR_PAST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


async def _copy_csv(
    statement: str, params: dict[str, Any], *, conn: AsyncConnection
) -> AsyncIterator[bytes]:
    """Rows arrive as PostgreSQL produces them (the header first, every value as its text,
    NULL as None) and leave as CSV lines in 64 KiB chunks."""
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        async with conn.cursor().copy(statement, params) as copy:
            lines: list[str] = []
            size = 0
            async for record in copy.rows():
                lines.append(line := csvio.row(record))
                size += len(line)
                if size >= CHUNK_BYTES:
                    yield "".join(lines).encode()
                    lines, size = [], 0
            if lines:
                yield "".join(lines).encode()


def movements_csv(
    site: str, since: dt.datetime | None, until: dt.datetime | None, *, conn: AsyncConnection
) -> AsyncIterator[bytes]:
    """The site's movements (out of or into it) in ``[since, until)`` of ``occurred_at``."""
    params = {"site": site, "since": since or FAR_PAST, "until": until or FAR_FUTURE}
    return _copy_csv(_MOVEMENTS_CSV, params, conn=conn)


def balances_csv(site: str, *, conn: AsyncConnection) -> AsyncIterator[bytes]:
    """The site's non-zero balance rows, virtual locations included (location_kind says)."""
    return _copy_csv(_BALANCES_CSV, {"site": site}, conn=conn)
