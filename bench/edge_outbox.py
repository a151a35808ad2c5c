"""Durable appends/s into the edge outbox, beside raw sqlite3 executemany in the same run.

Cases, each on a fresh database file in a temporary directory (removed at the end):

* raw 100/commit   -- one thread: BEGIN; executemany 100 pre-encoded rows; COMMIT
                      (the outbox's table, WAL, the same synchronous setting)
* raw 1/commit     -- the same, one row per commit (what 1-event appends would cost
                      without group commit)
* outbox 1×100     -- one appender awaiting ``Outbox.append`` of 100 drafts at a time
                      (exactly 100 events per commit)
* outbox N×100     -- N concurrent appenders doing the same; the writer may merge
                      their lists into one commit of up to MAX_GROUP events
* outbox 1-event   -- C concurrent callers of ``Outbox.add`` (one event per call),
                      so group commit decides how many events share a commit

The outbox figures include what the outbox does per event and raw does not: building
the ``Event`` (UUIDv7 id), msgpack encoding it, and waking the awaiting coroutine.

    .venv/bin/python bench/edge_outbox.py [--events 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from warelink.edge import outbox_file
from warelink.edge.outbox import Draft, Outbox, OutboxPolicy
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, Receipt, TrafficClass, WeightReading

Sync = Literal["NORMAL", "FULL"]
BATCH = 100
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def make_drafts(count: int) -> list[Draft]:
    """Receipts and weight readings, half and half (about 150 bytes encoded)."""
    drafts = []
    for i in range(count):
        when = T0 + dt.timedelta(milliseconds=i)
        if i % 2:
            body: Receipt | WeightReading = Receipt(
                location=f"A-{i % 97:02d}-{i % 7}",
                gtin=f"0950600013{i % 1000:04d}",
                quantity=1 + i % 24,
                lot=f"L{i % 50}",
            )
            drafts.append(Draft(f"rfid-{i % 8}", TrafficClass.LEDGER, body, when))
        else:
            body = WeightReading(weight=12.5 + (i % 400) / 10, unit="kg", stable=True)
            drafts.append(Draft(f"scale-{i % 8}", TrafficClass.LEDGER, body, when))
    return drafts


def encode_rows(drafts: Sequence[Draft], gateway: str) -> list[tuple[int, int, float, bytes]]:
    """The rows the outbox would store, encoded once up front (raw does no encoding)."""
    now = time.time()
    rows = []
    for seq, d in enumerate(drafts, start=1):
        event = Event(
            gateway=gateway,
            seq=seq,
            id=new_event_id(),
            device=d.device,
            cls=d.cls,
            occurred_at=d.occurred_at,
            body=d.body,
        )
        rows.append((seq, int(d.cls), now, wire.encode_event(event)))
    return rows


# ------------------------------------------------------------------------- raw


def raw_executemany(path: Path, sync: Sync, rows: list[tuple[int, int, float, bytes]], per: int):
    conn = outbox_file.connect(path, synchronous=sync)  # the same schema and PRAGMAs
    sql = "INSERT INTO outbox (seq, cls, created_at, payload) VALUES (?, ?, ?, ?)"
    start = time.perf_counter()
    for i in range(0, len(rows), per):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i : i + per])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed, len(rows) / per


# ---------------------------------------------------------------------- outbox


class CountingOutbox(Outbox):
    """The real Outbox, counting its commits (to show how group commit merged)."""

    commits = 0

    def _commit(self, conn: sqlite3.Connection, group: list) -> None:  # type: ignore[override]
        self.commits += 1
        super()._commit(conn, group)


async def outbox_lists(path: Path, sync: Sync, drafts: list[Draft], appenders: int):
    lists = [drafts[i : i + BATCH] for i in range(0, len(drafts), BATCH)]
    async with CountingOutbox(path, "gw-bench", OutboxPolicy(synchronous=sync)) as ob:

        async def appender(k: int) -> None:
            for chunk in lists[k::appenders]:
                await ob.append(chunk)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for k in range(appenders):
                tasks.create_task(appender(k), name=f"appender-{k}")
        elapsed = time.perf_counter() - start
        assert ob.last_seq == len(drafts), (ob.last_seq, len(drafts))
        return len(drafts) / elapsed, ob.commits


async def outbox_singles(path: Path, sync: Sync, drafts: list[Draft], callers: int):
    async with CountingOutbox(path, "gw-bench", OutboxPolicy(synchronous=sync)) as ob:

        async def caller(k: int) -> None:
            for d in drafts[k::callers]:
                await ob.add(d.device, d.cls, d.body, d.occurred_at)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for k in range(callers):
                tasks.create_task(caller(k), name=f"caller-{k}")
        elapsed = time.perf_counter() - start
        assert ob.last_seq == len(drafts), (ob.last_seq, len(drafts))
        return len(drafts) / elapsed, ob.commits


# ------------------------------------------------------------------------ main


def median_run(repeat: int, run: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    results = [run() for _ in range(repeat)]
    rate = statistics.median(r[0] for r in results)
    commits = statistics.median(r[1] for r in results)
    return rate, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per 100/commit case")
    parser.add_argument(
        "--single-events",
        type=int,
        default=30_000,
        help="events per 1-event case (and per raw 1/commit case)",
    )
    parser.add_argument("--appenders", type=int, default=4, help="concurrent list appenders")
    parser.add_argument("--callers", type=int, default=200, help="concurrent 1-event callers")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median reported")
    parser.add_argument("--sync", nargs="+", default=["NORMAL", "FULL"], choices=["NORMAL", "FULL"])
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    args = parser.parse_args()

    drafts = make_drafts(args.events)
    singles = drafts[: args.single_events]
    rows = encode_rows(drafts, "gw-bench")
    work = Path(tempfile.mkdtemp(prefix="wl-bench-outbox-", dir=args.dir))
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        return work / f"case-{next(counter)}.sqlite3"

    print(
        f"sqlite {sqlite3.sqlite_version}, {args.events} events (100/commit cases), "
        f"{len(singles)} events (1-event cases), median of {args.repeat}, files in {work}"
    )
    header = f"{'sync':<7}{'case':<34}{'events/s':>12}{'ev/commit':>11}{'× raw 100':>11}"
    print(header)
    print("-" * len(header))
    summary = []
    try:
        for sync in args.sync:
            raw100, c100 = median_run(
                args.repeat, lambda s=sync: raw_executemany(fresh(), s, rows, BATCH)
            )
            raw1, c1 = median_run(
                args.repeat, lambda s=sync: raw_executemany(fresh(), s, rows[: len(singles)], 1)
            )
            one, one_c = median_run(
                args.repeat,
                lambda s=sync: asyncio.run(outbox_lists(fresh(), s, drafts, 1)),
            )
            many, many_c = median_run(
                args.repeat,
                lambda s=sync: asyncio.run(outbox_lists(fresh(), s, drafts, args.appenders)),
            )
            single, single_c = median_run(
                args.repeat,
                lambda s=sync: asyncio.run(outbox_singles(fresh(), s, singles, args.callers)),
            )
            table = [
                ("raw executemany 100/commit", raw100, args.events / c100),
                ("raw executemany 1/commit", raw1, len(singles) / c1),
                ("outbox 1 appender × 100", one, args.events / one_c),
                (f"outbox {args.appenders} appenders × 100", many, args.events / many_c),
                (f"outbox add() × {args.callers} callers", single, len(singles) / single_c),
            ]
            for name, rate, per_commit in table:
                print(
                    f"{sync:<7}{name:<34}{rate:>12,.0f}{per_commit:>11,.0f}{rate / raw100:>10.2f}×"
                )
            print(
                f"{'':<7}{'  1-event appends vs raw 1/commit':<34}{'':>12}{'':>11}"
                f"{single / raw1:>10.1f}×"
            )
            summary.append(f"{sync} {one / raw100:.2f}×/{many / raw100:.2f}× raw ({one:,.0f} ev/s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"SUMMARY outbox 100/commit (1 / {args.appenders} appenders): "
        + "; ".join(summary)
        + " — target ≥ 0.6× raw"
    )


if __name__ == "__main__":
    main()
