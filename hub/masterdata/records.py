"""Master data: sites, zones, locations, SKUs, lots, serials and licence plates.

One path for every write, from the REST API or a CSV file: rows are checked against the
database as a whole (so an import reports every bad line, and writes nothing unless all
are good), then planned as creates, updates and unchanged rows, then written in key
order with one audit row. The columns and their value rules are ``csvio.ENTITIES``.

Virtual locations (supplier, customer, …) come with their site and are never written
here. Updating an unverified SKU (one the ledger made from an unknown GTIN) with real
data verifies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, LiteralString

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row

from warelink.hub.csvio import Entity, LineError, Row, row_checks, sgtin_of
from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.stock import audit
from warelink.hub.stock.balances import quantity_text

Mode = Literal["upsert", "create"]
Scope = frozenset[str] | None  # the sites a principal may act on; None: every site

# What reads show beside the importable columns.
EXTRA_COLUMNS = {
    "locations": ("kind",),
    "skus": ("verified", "created_at"),
    "lots": ("first_received_at",),
    "lpns": ("created_at",),
}
# What every row made here gets: a location made by hand is a real (internal) one.
FIXED_ON_CREATE = {"locations": {"kind": "internal"}}
SINGULAR = {"zones": "zone", "locations": "location", "skus": "SKU", "lots": "lot",
            "serials": "serial", "lpns": "licence plate"}  # fmt: skip


def in_scope(site: str | None, scope: Scope) -> bool:
    return site is None or scope is None or site in scope


# ------------------------------------------------------------------ sites


async def create_site(
    site: str, name: str, gln: str | None, *, scope: Scope, actor: str, conn: AsyncConnection
) -> dict[str, Any]:
    if scope is not None:
        raise Forbidden("an identity limited to some sites cannot create sites")
    cur = await conn.execute(
        "INSERT INTO sites (id, name, gln) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (site, name, gln),
    )
    if await cur.fetchone() is None:
        raise Conflict(f"site {site!r} exists already")
    await audit.record(actor, "site.create", site=site, subject=site,
                       detail={"name": name, "gln": gln}, conn=conn)  # fmt: skip
    return await site_detail(site, conn=conn)


async def update_site(
    site: str, changes: dict[str, Any], *, actor: str, conn: AsyncConnection
) -> dict[str, Any]:
    if not changes:
        raise Invalid("nothing to update: give name or gln")
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in changes
    )
    query = sql.SQL("UPDATE sites SET {} WHERE id = %(site)s RETURNING id").format(sets)
    cur = await conn.execute(query, {**changes, "site": site})
    if await cur.fetchone() is None:
        raise NotFound(f"no site {site!r}")
    await audit.record(actor, "site.update", site=site, subject=site, detail=changes, conn=conn)
    return await site_detail(site, conn=conn)


async def site_detail(site: str, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT s.id, s.name, s.gln, s.created_at,"
        " (SELECT count(*) FROM zones z WHERE z.site = s.id) AS zones,"
        " (SELECT count(*) FROM locations l WHERE l.site = s.id AND l.kind = 'internal')"
        "   AS locations,"
        " (SELECT count(*) FROM locations l WHERE l.site = s.id AND l.kind <> 'internal')"
        "   AS virtual_locations,"
        " (SELECT count(*) FROM lpns p WHERE p.site = s.id) AS lpns,"
        " (SELECT count(*) FROM gateways g WHERE g.site = s.id) AS gateways"
        " FROM sites s WHERE s.id = %s",
        (site,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no site {site!r}")
    return row


async def require_sku(sku: str, *, conn: AsyncConnection) -> None:
    cur = await conn.execute("SELECT 1 FROM skus WHERE code = %s", (sku,))
    if await cur.fetchone() is None:
        raise NotFound(f"no SKU {sku!r}")


# ------------------------------------------------------------------ reads


def _select(entity: Entity) -> sql.Composable:
    names = (*entity.names, *EXTRA_COLUMNS.get(entity.name, ()))
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(entity.table)
    )


def _where(
    entity: Entity, filters: dict[str, Any], scope: Scope, internal_only: bool
) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for name, value in filters.items():
        clauses.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        params.append(value)
    if internal_only:
        clauses.append(sql.SQL("kind = 'internal'"))
    if entity.site_column and scope is not None:
        clauses.append(sql.SQL("({0} IS NULL OR {0} = ANY(%s))").format(
            sql.Identifier(entity.site_column)))  # fmt: skip
        params.append(sorted(scope))
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


async def fetch(
    entity: Entity,
    *,
    filters: dict[str, Any] | None = None,
    scope: Scope = None,
    limit: int | None = None,
    offset: int = 0,
    internal_only: bool = False,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    """Rows in key order; ``scope`` hides rows of other sites, ``internal_only`` virtual ones."""
    where, params = _where(entity, filters or {}, scope, internal_only)
    query = sql.SQL("{}{} ORDER BY {}").format(
        _select(entity), where, sql.SQL(", ").join(map(sql.Identifier, entity.keys))
    )
    if limit is not None:
        query += sql.SQL(" LIMIT %s OFFSET %s")
        params += [limit, offset]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


async def get(
    entity: Entity, key: Sequence[Any], *, scope: Scope = None, conn: AsyncConnection
) -> dict[str, Any]:
    rows = await fetch(entity, filters=dict(zip(entity.keys, key, strict=True)), scope=scope,
                       conn=conn)  # fmt: skip
    if not rows:
        raise NotFound(f"no {SINGULAR[entity.name]} {'/'.join(map(str, key))}")
    return rows[0]


# ------------------------------------------------------------------ checking and planning


@dataclass
class Plan:
    """What writing the rows would do."""

    entity: Entity
    columns: tuple[str, ...]
    creates: list[Row] = field(default_factory=list)
    updates: list[Row] = field(default_factory=list)
    unchanged: int = 0
    errors: list[LineError] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"created": len(self.creates), "updated": len(self.updates),
                "unchanged": self.unchanged}  # fmt: skip


async def _existing(
    entity: Entity, rows: Sequence[Row], *, conn: AsyncConnection
) -> dict[tuple[Any, ...], dict[str, Any]]:
    if not rows:
        return {}
    keys = entity.keys
    query = sql.SQL("{} WHERE ({}) IN (SELECT * FROM unnest({}))").format(
        _select(entity),
        sql.SQL(", ").join(map(sql.Identifier, keys)),
        sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in keys),
    )
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, [[row.values[k] for row in rows] for k in keys])
    return {tuple(r[k] for k in keys): r for r in await cur.fetchall()}


async def _column_set(
    query: LiteralString, values: Iterable[Any], *, conn: AsyncConnection
) -> dict[Any, Any]:
    """``{first column: second column}`` of the rows ``query`` finds for ``values``."""
    cur = await conn.execute(query, (sorted({v for v in values if v is not None}),))
    return {row[0]: row[1] for row in await cur.fetchall()}


class _Checker:
    """The database facts one batch of rows is checked against, loaded once per batch."""

    def __init__(self, entity: Entity, rows: Sequence[Row], scope: Scope) -> None:
        self.entity, self.rows, self.scope = entity, rows, scope
        self.sites: dict[str, Any] = {}
        self.zones: set[tuple[str, str]] = set()
        self.units: set[str] = set()
        self.skus: dict[str, str | None] = {}  # code → GTIN
        self.gtins: dict[str, str] = {}  # GTIN → SKU code
        self.epcs: dict[str, Any] = {}  # EPC → key of the row holding it

    async def load(self, *, conn: AsyncConnection) -> None:
        values = [row.values for row in self.rows]
        if self.entity.site_column:
            col = self.entity.site_column
            self.sites = await _column_set(
                "SELECT id, id FROM sites WHERE id = ANY(%s)", (v.get(col) for v in values),
                conn=conn)  # fmt: skip
        if self.entity.name == "locations":
            cur = await conn.execute(
                "SELECT site, code FROM zones WHERE site = ANY(%s)", (sorted(self.sites),)
            )
            self.zones = {(r[0], r[1]) for r in await cur.fetchall()}
        if self.entity.name == "skus":
            cur = await conn.execute("SELECT code FROM units")
            self.units = {r[0] for r in await cur.fetchall()}
            self.gtins = await _column_set(
                "SELECT gtin, code FROM skus WHERE gtin = ANY(%s)", (v.get("gtin") for v in values),
                conn=conn)  # fmt: skip
        if self.entity.name in ("lots", "serials"):
            self.skus = await _column_set(
                "SELECT code, gtin FROM skus WHERE code = ANY(%s)", (v["sku"] for v in values),
                conn=conn)  # fmt: skip
        if self.entity.name == "serials":
            self.epcs = {epc: tuple(k) for epc, k in (await _column_set(
                "SELECT epc, ARRAY[sku, serial] FROM serials WHERE epc = ANY(%s)",
                (v.get("epc") for v in values), conn=conn)).items()}  # fmt: skip
        if self.entity.name == "lpns":
            self.epcs = {epc: (k,) for epc, k in (await _column_set(
                "SELECT epc, code FROM lpns WHERE epc = ANY(%s)",
                (v.get("epc") for v in values), conn=conn)).items()}  # fmt: skip

    def check(self, row: Row, existing: dict[str, Any] | None) -> list[LineError]:
        errors: list[LineError] = []
        v, line, key = row.values, row.line, row.key(self.entity)

        def fail(column: str, message: str) -> None:
            errors.append(LineError(line, column, message))

        site_col = self.entity.site_column
        if site_col and v.get(site_col) is not None:
            if not in_scope(v[site_col], self.scope):
                fail(site_col, f"no access to site {v[site_col]!r}")
            elif v[site_col] not in self.sites:
                fail(site_col, f"unknown site {v[site_col]!r}")
        if existing is not None and site_col and not in_scope(existing[site_col], self.scope):
            fail(site_col, f"no access to site {existing[site_col]!r}")
        if self.entity.name == "locations":
            if existing is not None and existing["kind"] != "internal":
                fail("code", "virtual locations cannot be created or edited")
            zone = v.get("zone")
            if zone is not None and v["site"] in self.sites and (v["site"], zone) not in self.zones:
                fail("zone", f"unknown zone {zone!r} at site {v['site']!r}")
        if self.entity.name == "skus":
            if "unit" in v and v["unit"] not in self.units:
                fail("unit", f"unknown unit {v['unit']!r}; units: {', '.join(sorted(self.units))}")
            holder = self.gtins.get(v.get("gtin"))  # type: ignore[arg-type]
            if holder is not None and holder != v["code"]:
                fail("gtin", f"GTIN {v['gtin']} belongs to SKU {holder!r} already")
            elif v.get("gtin") is not None:
                self.gtins[v["gtin"]] = v["code"]  # a later line with it is a duplicate
        if self.entity.name in ("lots", "serials"):
            if v["sku"] not in self.skus:
                fail("sku", f"unknown SKU {v['sku']!r}")
            elif self.entity.name == "serials" and v.get("epc"):
                sku_gtin, epc_gtin = self.skus[v["sku"]], sgtin_of(v["epc"])
                if sku_gtin is not None and epc_gtin != sku_gtin:
                    fail("epc", f"the EPC encodes GTIN {epc_gtin}, SKU {v['sku']!r} has {sku_gtin}")
        if self.entity.name in ("serials", "lpns") and v.get("epc") is not None:
            holder_key = self.epcs.get(v["epc"])
            if holder_key is not None and holder_key != key:
                fail("epc", f"EPC {v['epc']} is taken by {'/'.join(holder_key)}")
            else:
                self.epcs[v["epc"]] = key
        return errors


def _changed(row: Row, existing: dict[str, Any], columns: Sequence[str]) -> bool:
    return any(row.values[c] != existing[c] for c in columns)


async def plan(
    entity: Entity,
    rows: Sequence[Row],
    columns: Sequence[str],
    *,
    mode: Mode = "upsert",
    scope: Scope = None,
    verify: bool = False,
    conn: AsyncConnection,
) -> Plan:
    """Check every row against the database and sort them into creates and updates.

    ``verify``: an unverified SKU counts as changed even when its values are the same
    (a person confirming it through the API).
    """
    result = Plan(entity, tuple(columns))
    checker = _Checker(entity, rows, scope)
    await checker.load(conn=conn)
    existing = await _existing(entity, rows, conn=conn)
    for row in rows:
        before = existing.get(row.key(entity))
        errors = row_checks(entity, row.values, row.line) or checker.check(row, before)
        if before is not None and mode == "create":
            errors.append(
                LineError(
                    row.line,
                    entity.keys[-1],
                    f"{'/'.join(map(str, row.key(entity)))} exists already",
                )
            )
        if errors:
            result.errors += errors
        elif before is None:
            result.creates.append(row)
        elif _changed(row, before, columns) or (
            entity.name == "skus" and not before["verified"] and verify
        ):
            result.updates.append(row)
        else:
            result.unchanged += 1
    return result


# ------------------------------------------------------------------ writing


def _arrays(entity: Entity, rows: Sequence[Row], names: Sequence[str]) -> list[list[Any]]:
    defaults = {c.name: c.default for c in entity.columns}
    return [[row.values.get(n, defaults[n]) for row in rows] for n in names]


def _unnest(entity: Entity, names: Sequence[str]) -> sql.Composable:
    return sql.SQL("unnest({}) AS v ({})").format(
        sql.SQL(", ").join(
            sql.SQL("%s::{}[]").format(sql.SQL(entity.column(n).sql_type)) for n in names
        ),
        sql.SQL(", ").join(map(sql.Identifier, names)),
    )


async def _copy_in(entity: Entity, rows: Sequence[Row], *, conn: AsyncConnection) -> None:
    """New rows by COPY (several times faster than INSERT for a large file), in key order."""
    fixed = FIXED_ON_CREATE.get(entity.name, {})
    names = (*entity.names, *fixed)
    defaults = [c.default for c in entity.columns]
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(entity.table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    async with conn.cursor().copy(query) as copy:
        for row in sorted(rows, key=lambda r: r.key(entity)):
            values = row.values
            await copy.write_row(
                [values.get(c.name, d) for c, d in zip(entity.columns, defaults, strict=True)]
                + list(fixed.values())
            )


async def write(plan: Plan, *, conn: AsyncConnection) -> None:
    """Insert the new rows, update the changed ones: in key order, all or nothing."""
    entity = plan.entity
    try:
        if plan.creates:
            await _copy_in(entity, plan.creates, conn=conn)
        if plan.updates:
            names = plan.columns
            rows = sorted(plan.updates, key=lambda r: r.key(entity))
            sets: list[sql.Composable] = [
                sql.SQL("{0} = v.{0}").format(sql.Identifier(n))
                for n in names
                if n not in entity.keys
            ]
            if entity.name == "skus":
                sets.append(sql.SQL("verified = true"))
            matches = sql.SQL(" AND ").join(
                sql.SQL("t.{0} = v.{0}").format(sql.Identifier(k)) for k in entity.keys
            )
            if sets:
                await conn.execute(
                    sql.SQL("UPDATE {} AS t SET {} FROM {} WHERE {}").format(
                        sql.Identifier(entity.table), sql.SQL(", ").join(sets),
                        _unnest(entity, names), matches),
                    _arrays(entity, rows, names),
                )  # fmt: skip
    except (errors.UniqueViolation, errors.ForeignKeyViolation) as exc:
        raise Conflict(
            f"{entity.name} changed while this was written ({exc.diag.message_primary}): retry"
        ) from None


def _site_of(plan: Plan) -> str | None:
    column = plan.entity.site_column
    sites = {r.values.get(column) for r in (*plan.creates, *plan.updates)} if column else set()
    return next(iter(sites)) if len(sites) == 1 else None


def _message(errors: Sequence[LineError]) -> str:
    return "; ".join(f"{e.column}: {e.message}" if e.column else e.message for e in errors)


async def create(
    entity: Entity, values: dict[str, Any], *, scope: Scope, actor: str, conn: AsyncConnection
) -> dict[str, Any]:
    """One new row (all columns given); 409 if its key exists."""
    row = Row(0, values)
    result = await plan(entity, [row], entity.names, mode="create", scope=scope, conn=conn)
    if result.errors and all(e.message.endswith("exists already") for e in result.errors):
        raise Conflict(_message(result.errors))
    if result.errors:
        raise Invalid(_message(result.errors))
    await write(result, conn=conn)
    key = row.key(entity)
    await audit.record(actor, f"{entity.name}.create", site=_site_of(result),
                       subject="/".join(map(str, key)), detail=_jsonable(values),
                       conn=conn)  # fmt: skip
    return await get(entity, key, conn=conn)


async def update(
    entity: Entity,
    key: Sequence[Any],
    changes: dict[str, Any],
    *,
    scope: Scope,
    actor: str,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Change some columns of one row; ``None`` for a column resets it to its default."""
    await get(entity, key, scope=scope, conn=conn)
    if not changes:
        raise Invalid("nothing to update: give at least one field")
    defaults = {c.name: c.default for c in entity.columns}
    values = dict(zip(entity.keys, key, strict=True))
    values |= {n: defaults[n] if v is None else v for n, v in changes.items()}
    row = Row(0, values)
    result = await plan(entity, [row], tuple(values), scope=scope, verify=True, conn=conn)
    if result.errors:
        raise Invalid(_message(result.errors))
    await write(result, conn=conn)
    await audit.record(actor, f"{entity.name}.update", site=values.get(entity.site_column or ""),
                       subject="/".join(map(str, key)), detail=_jsonable(changes),
                       conn=conn)  # fmt: skip
    return await get(entity, key, conn=conn)


async def import_rows(
    entity: Entity,
    rows: Sequence[Row],
    columns: Sequence[str],
    *,
    mode: Mode,
    dry_run: bool,
    scope: Scope,
    actor: str,
    conn: AsyncConnection,
) -> Plan:
    """Check a whole file's rows; unless it is a dry run or a row is bad, write them all."""
    result = await plan(entity, rows, columns, mode=mode, scope=scope, conn=conn)
    if result.errors or dry_run:
        return result
    await write(result, conn=conn)
    await audit.record(actor, "masterdata.import", site=_site_of(result), subject=entity.name,
                       detail={"rows": len(rows), "mode": mode, **result.counts()},
                       conn=conn)  # fmt: skip
    return result


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _text(v) for k, v in values.items()}


def _text(value: Any) -> Any:
    """Decimals as the API writes them, dates and times in ISO 8601."""
    if isinstance(value, Decimal):
        return quantity_text(value)
    return str(value) if hasattr(value, "isoformat") else value
