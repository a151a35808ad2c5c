"""Ledger postings and stock queries, beside raw inserts of the same rows in the same run.

(a) movements posted per second through ``hub.stock.ledger.post`` (movements, the balance
    projection in key order, the exception rules, the late-event check), one transaction
    per batch of 1 and of 100 legs, against the raw baseline: the same rows inserted into
    ``movements`` alone with the ledger's own ``INSERT … unnest`` and with COPY binary, one
    commit per batch of the same size. Legs are receipt → putaway → pick → ship flows over
    many SKUs and locations, as device events (gateway and seq set).
(b) p50/p99 of the stock queries on a database of ``--movements`` (1M) movements: the SQL
    of ``GET /api/v1/sites/{site}/stock`` (``hub.stock.balances.site_stock``), ``analyst.stock`` for
    a site and for one SKU of a site. Loaded fast: COPY binary of generated movements
    (foreign-key triggers off for the load), then ``hub.stock.ledger.repair`` (the drift check
    and the rebuild of balances from the ledger), then VACUUM ANALYZE.

The database (``wl_bench_<random>``) is the run's own and is dropped at the end.

    .venv/bin/python bench/ledger.py [--part a b] [--movements 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

import psycopg
from psycopg import AsyncConnection, sql

from warelink.hub.migrate import migrate
from warelink.hub.reports import analytics
from warelink.hub.stock import balances as queries
from warelink.hub.stock import ledger
from warelink.hub.stock.ledger import Leg

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


# ------------------------------------------------------------------ data


async def master_data(
    conn: AsyncConnection, sites: int, locations: int, skus: int
) -> tuple[list[str], list[str], list[str]]:
    site_ids = [f"s{i}" for i in range(sites)]
    codes = [f"A-{i // 100:02d}-{i % 100:02d}" for i in range(locations)]
    sku_codes = [f"SKU-{i:05d}" for i in range(skus)]
    await conn.execute("INSERT INTO sites (id) SELECT unnest(%s::text[])", (site_ids,))
    await conn.execute(
        "INSERT INTO locations (site, code, kind, usable)"
        " SELECT s, c, 'internal', c NOT IN ('DOCK', 'STAGE')"
        " FROM unnest(%s::text[]) s, unnest(%s::text[]) c",
        (site_ids, [*codes, "DOCK", "STAGE"]),
    )
    await conn.execute("INSERT INTO skus (code) SELECT unnest(%s::text[])", (sku_codes,))
    return site_ids, codes, sku_codes


def flows(
    site: str, places: Sequence[tuple[str, str, str]], n: int, rng: random.Random, seq0: int
) -> list[Leg]:
    """``n`` legs of receipt → putaway → pick → ship flows at the given (location, sku, lot)s."""
    legs: list[Leg] = []
    i = 0
    while len(legs) < n:
        location, sku, lot = rng.choice(places)
        at = NOW - dt.timedelta(seconds=rng.randrange(60 * 86400))
        for src, dst, kind, qty, hours in (
            ("SUPPLIER", "DOCK", "receipt", 12, 0),
            ("DOCK", location, "putaway", 12, 2),
            (location, "STAGE", "pick", 5, 30),
            ("STAGE", "CUSTOMER", "ship", 5, 32),
        ):
            i += 1
            legs.append(
                Leg(
                    site=site, sku=sku, quantity=Decimal(qty), from_location=src,
                    to_location=dst, kind=kind, occurred_at=at + dt.timedelta(hours=hours),
                    actor="gateway:gw-bench", lot=lot, source_gateway=f"gw-{site}",
                    source_seq=seq0 + i,
                )
            )  # fmt: skip
    return legs[:n]


def places_of(
    codes: Sequence[str], skus: Sequence[str], per_location: int, rng: random.Random
) -> list[tuple[str, str, str]]:
    """Each location holds ``per_location`` SKU/lots: the shape of a real storage area."""
    return [
        (code, rng.choice(skus), f"L{rng.randrange(3)}") for code in codes
        for _ in range(per_location)
    ]  # fmt: skip


def batches(legs: Sequence[Leg], size: int) -> list[Sequence[Leg]]:
    return [legs[i : i + size] for i in range(0, len(legs), size)]


async def reset(conn: AsyncConnection) -> None:
    await conn.execute("TRUNCATE movements, balances, exceptions, audit_log CASCADE")
    await conn.execute("CHECKPOINT")


# ------------------------------------------------------------------ (a)


async def post_rate(conn: AsyncConnection, groups: list[Sequence[Leg]]) -> float:
    total = sum(len(g) for g in groups)
    start = time.perf_counter()
    for group in groups:
        async with conn.transaction():
            await ledger.post(group, conn=conn)
    return total / (time.perf_counter() - start)


async def insert_rate(conn: AsyncConnection, groups: list[Sequence[Leg]]) -> float:
    """The ledger's own INSERT … unnest of the same rows, movements only."""
    rows = [[list(c) for c in zip(*(ledger._row(leg) for leg in g), strict=True)] for g in groups]
    total = sum(len(g) for g in groups)
    start = time.perf_counter()
    for columns in rows:
        async with conn.transaction():
            await conn.execute(ledger._INSERT, columns)
    return total / (time.perf_counter() - start)


async def copy_rate(conn: AsyncConnection, groups: list[Sequence[Leg]]) -> float:
    rows = [[ledger._row(leg) for leg in g] for g in groups]
    total = sum(len(g) for g in groups)
    start = time.perf_counter()
    for group in rows:
        await copy_rows(conn, group)
    return total / (time.perf_counter() - start)


async def copy_rows(conn: AsyncConnection, rows: Sequence[tuple[object, ...]]) -> None:
    async with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            f"COPY movements ({', '.join(ledger._COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(list(ledger._TYPES))
        for row in rows:
            await copy.write_row(row)


async def part_a(url: str, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(1)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        _, codes, skus = await master_data(conn, 1, args.locations, args.skus)
        places = places_of(codes, skus, 5, rng)
        cases = {1: flows("s0", places, args.legs_single, rng, 0),
                 100: flows("s0", places, args.legs_batched, rng, 10**9)}  # fmt: skip
        figures: dict[str, float] = {}
        print(
            f"(a) ledger.post vs raw, 1 site, {args.locations:,} locations, {args.skus:,} SKUs,"
            f" receipt → putaway → pick → ship legs as device events"
        )
        header = f"  {'case':<34}{'legs':>9}{'movements/s':>14}{'× raw INSERT':>14}"
        print(header + "\n  " + "-" * (len(header) - 2))
        for size, legs in cases.items():
            groups = batches(legs, size)
            await reset(conn)
            raw = await insert_rate(conn, groups)
            await reset(conn)
            copied = await copy_rate(conn, groups)
            await reset(conn)
            posted = await post_rate(conn, groups)
            drift = await ledger.check(conn=conn)
            assert not drift, drift[:3]
            cur = await conn.execute("SELECT count(*) FROM movements")
            assert (await cur.fetchone()) == (len(legs),)
            for name, rate in (
                (f"raw INSERT … unnest, {size}/commit", raw),
                (f"raw COPY binary, {size}/commit", copied),
                (f"ledger.post, {size} legs/commit", posted),
            ):
                print(f"  {name:<34}{len(legs):>9,}{rate:>14,.0f}{rate / raw:>13.2f}×")
            figures[f"post{size}"], figures[f"raw{size}"] = posted, raw
            figures[f"copy{size}"] = copied
    return figures


# ------------------------------------------------------------------ (b)


def percentile(samples: Sequence[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q * 100) - 1]


async def load(conn: AsyncConnection, args: argparse.Namespace) -> tuple[list[str], float]:
    rng = random.Random(2)
    sites, codes, skus = await master_data(conn, args.sites, args.locations, args.skus)
    per_site = args.movements // len(sites)
    start = time.perf_counter()
    await conn.execute("SET session_replication_role = replica")  # FK triggers off: bulk load
    for k, site in enumerate(sites):
        legs = flows(site, places_of(codes, skus, 5, rng), per_site, rng, k * 10**9)
        for group in batches(legs, 50_000):
            await copy_rows(conn, [ledger._row(leg) for leg in group])
    await conn.execute("SET session_replication_role = DEFAULT")
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    async with conn.transaction():
        fixed = await ledger.repair(conn=conn)
    rebuilt = time.perf_counter() - start
    await conn.execute("VACUUM ANALYZE")  # what autovacuum would do after such a load
    cur = await conn.execute("SELECT count(*) FROM movements")
    count = (await cur.fetchone() or (0,))[0]
    cur = await conn.execute("SELECT count(*) FROM balances")
    balances = (await cur.fetchone() or (0,))[0]
    print(
        f"(b) {count:,} movements on {len(sites)} sites loaded in {loaded:.1f} s"
        f" ({count / loaded:,.0f}/s, COPY binary); ledger.repair rebuilt {balances:,} balance"
        f" rows ({fixed:,} drifted) in {rebuilt:.1f} s"
    )
    return sites, rebuilt


async def timed(runs: int, query: Callable[[], Awaitable[int]]) -> tuple[list[float], int]:
    samples, rows = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = await query()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, rows


async def part_b(url: str, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(3)
    figures: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        sites, figures["rebuild_s"] = await load(conn, args)
        cur = await conn.execute("SELECT site, sku FROM balances WHERE quantity > 0 LIMIT 1000")
        items = await cur.fetchall()

        async def site_stock() -> int:
            return len(await queries.site_stock(rng.choice(sites), conn=conn))

        async def analyst_site() -> int:
            cur = await conn.execute(
                "SELECT * FROM analyst.stock WHERE site = %s", (rng.choice(sites),)
            )
            return len(await cur.fetchall())

        async def analyst_sku() -> int:
            cur = await conn.execute(
                "SELECT * FROM analyst.stock WHERE site = %s AND sku = %s", rng.choice(items)
            )
            return len(await cur.fetchall())

        header = f"  {'query':<44}{'rows':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        print(f"  {args.queries} runs each, random site (or site and SKU)")
        print(header + "\n  " + "-" * (len(header) - 2))
        for name, query in (
            ("GET /sites/{site}/stock SQL (site_stock)", site_stock),
            ("analyst.stock WHERE site", analyst_site),
            ("analyst.stock WHERE site AND sku", analyst_sku),
        ):
            await timed(5, query)  # warm the cache
            samples, rows = await timed(args.queries, query)
            p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
            print(f"  {name:<44}{rows:>8,}{p50:>10.1f}{p99:>10.1f}{max(samples):>10.1f}")
            figures[name] = p99
        today = NOW.date()
        start = time.perf_counter()
        await analytics.site_kpis([sites[0]], today - dt.timedelta(days=30), today, conn=conn)
        figures["kpis_s"] = time.perf_counter() - start
        print(
            f"  every KPI of one site over 30 days (analytics.site_kpis): {figures['kpis_s']:.2f} s"
        )
    return figures


# ------------------------------------------------------------------ main


async def with_database(admin: str, body: Callable[[str], Awaitable[None]]) -> None:
    name = f"wl_bench_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    await asyncio.to_thread(migrate, url)
    try:
        await body(url)
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--part", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--legs-single", type=int, default=5_000, help="(a) legs posted 1 by 1")
    parser.add_argument("--legs-batched", type=int, default=100_000, help="(a) legs by 100")
    parser.add_argument("--locations", type=int, default=2_000, help="storage locations a site")
    parser.add_argument("--skus", type=int, default=5_000)
    parser.add_argument("--sites", type=int, default=4, help="(b) sites sharing the movements")
    parser.add_argument("--movements", type=int, default=1_000_000, help="(b) movements loaded")
    parser.add_argument("--queries", type=int, default=200, help="(b) runs per stock query")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    summary: list[str] = []

    async def body(url: str) -> None:
        if "a" in args.part:
            a = await part_a(url, args)
            summary.append(
                f"ledger.post {a['post100']:,.0f} mv/s by 100 = {a['post100'] / a['raw100']:.2f}×"
                f" raw INSERT ({a['post1']:,.0f} mv/s one by one = "
                f"{a['post1'] / a['raw1']:.2f}×) — target ≥ 20k mv/s"
            )
        if "b" in args.part:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await reset(conn)
                await conn.execute("TRUNCATE locations, skus, sites CASCADE")
            b = await part_b(url, args)
            summary.append(
                f"stock query p99 at {args.movements:,} movements: site_stock"
                f" {b['GET /sites/{site}/stock SQL (site_stock)']:.1f} ms, analyst.stock"
                f" {b['analyst.stock WHERE site']:.1f} ms (one SKU"
                f" {b['analyst.stock WHERE site AND sku']:.1f} ms)"
            )

    asyncio.run(with_database(args.pg, body))
    print("SUMMARY " + "; ".join(summary))


if __name__ == "__main__":
    main()
