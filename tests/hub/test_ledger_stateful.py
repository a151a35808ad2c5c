"""A Hypothesis state machine over the real ledger: operations, device events, counts.

Each example gets its own site, SKUs and gateway in one test database. Steps mix device
events through the real ingest commit (receipts, shipments and moves, with lots and
serials; delivered at once, held back and delivered late and out of order, or delivered
twice), people's operations through the real REST API, reversals, and cycle counts that a
second supervisor approves. After every step the invariants of docs/ledger.md hold:

- the sum over all locations of each SKU/lot is zero;
- the balances equal a rebuild from the movements;
- reserved quantity is never negative;
- a serial is in at most one place.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections import Counter
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import httpx
import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from psycopg.types.json import set_json_dumps

from tests.support.api import Api, running_api
from warelink.hub.access import Role
from warelink.hub.ingest.commit import IncomingBatch, commit_events
from warelink.hub.settings import HubSettings
from warelink.hub.stock import ledger
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, EventBody, Movement, Receipt, Shipment, TrafficClass

T = TypeVar("T")
LOCATIONS = ["DOCK", "A-1", "A-2", "B-1", "STAGE"]
SHELVES = ["A-1", "A-2", "B-1"]
TRACKING = {"A": "lot", "B": "none"}
LOTS = ["", "L1", "L2"]
SERIALS = ["", "", "S1", "S2", "S3"]  # mostly untracked
T0 = dt.datetime(2026, 11, 25, 6, tzinfo=dt.UTC)
_gtins = itertools.count(10_000_000_000_000)


class LedgerMachine(RuleBasedStateMachine):
    """Drives one site; ``SETTINGS`` is set by the test before the machine runs."""

    SETTINGS: HubSettings
    succeeded: ClassVar[Counter[str]] = Counter()  # over all examples: proof the steps bite

    held = Bundle("held")  # device batches not yet delivered (a gateway offline)
    orders = Bundle("orders")  # released order references
    delivered = Bundle("delivered")  # batches delivered once, to deliver again

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.api_context = running_api(self.SETTINGS)
        self.api: Api = self.run(self.api_context.__aenter__())
        self.conn = self.run(psycopg.AsyncConnection.connect(self.SETTINGS.db_url,
                                                             autocommit=True))  # fmt: skip
        set_json_dumps(msgspec.json.encode, context=self.conn)  # as the ingest worker does
        self.site = f"s{uuid.uuid4().hex[:8]}"
        self.gateway = f"gw-{self.site}"
        self.seq = 0
        self.clock = T0
        self.gtins = {name: f"{next(_gtins):014d}" for name in ("A", "B")}
        self.skus = {name: f"{self.site}-{name}" for name in self.gtins}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.conn.close())
        self.run(self.api_context.__aexit__(None, None, None))
        self.loop.close()

    # ------------------------------------------------------------------ setup

    @initialize()
    def setup_site(self) -> None:
        async def setup() -> None:
            await self.conn.execute("INSERT INTO sites (id) VALUES (%s)", (self.site,))
            for zone, kind in (("IN", "dock"), ("STORE", "storage"), ("OUT", "staging")):
                await self.conn.execute(
                    "INSERT INTO zones (site, code, kind) VALUES (%s, %s, %s)",
                    (self.site, zone, kind),
                )
            for code in LOCATIONS:
                zone = {"DOCK": "IN", "STAGE": "OUT"}.get(code, "STORE")
                await self.conn.execute(
                    "INSERT INTO locations (site, code, kind, zone)"
                    " VALUES (%s, %s, 'internal', %s)",
                    (self.site, code, zone),
                )
            for name, gtin in self.gtins.items():
                await self.conn.execute(
                    "INSERT INTO skus (code, gtin, tracking, pick_policy) VALUES (%s, %s, %s, %s)",
                    (self.skus[name], gtin, TRACKING[name], "fefo" if name == "A" else "fifo"),
                )
            self.supervisors = [
                await self.api.client(f"sup-{n}-{self.site}", Role.SUPERVISOR, sites=[self.site])
                for n in (1, 2)
            ]
            self.clerk = await self.api.client(f"clerk-{self.site}", Role.CLERK,
                                               sites=[self.site])  # fmt: skip

        self.run(setup())

    def tick(self) -> dt.datetime:
        self.clock += dt.timedelta(minutes=1)
        return self.clock

    # ------------------------------------------------------------------ device events

    def device_batch(self, body: EventBody) -> IncomingBatch:
        self.seq += 1
        event = Event(
            gateway=self.gateway, seq=self.seq, id=new_event_id(), device="scanner",
            cls=TrafficClass.LEDGER, occurred_at=self.tick(), body=body,
        )  # fmt: skip
        return IncomingBatch(self.site, self.gateway, self.seq, self.seq, [event], 0.0)

    async def deliver(self, batch: IncomingBatch) -> None:
        async with self.conn.transaction():
            await commit_events([batch], conn=self.conn)

    def device_body(self, kind: str, sku: str, lot: str, serial: str, qty: int,
                    source: str, target: str) -> EventBody:  # fmt: skip
        gtin = self.gtins[sku]
        quantity = 1 if serial else qty
        if kind == "receipt":
            return Receipt(location=target, gtin=gtin, quantity=quantity, lot=lot or None,
                           serial=serial or None)  # fmt: skip
        if kind == "shipment":
            return Shipment(location=source, gtin=gtin, quantity=quantity, lot=lot or None,
                            serial=serial or None)  # fmt: skip
        return Movement(from_location=source, to_location=target, gtin=gtin,
                        quantity=quantity, lot=lot or None)  # fmt: skip

    device_event = st.tuples(
        st.sampled_from(["receipt", "receipt", "shipment", "movement"]),
        st.sampled_from(["A", "B"]),
        st.sampled_from(LOTS),
        st.sampled_from(SERIALS),
        st.integers(1, 20),
        st.sampled_from(LOCATIONS),
        st.sampled_from(LOCATIONS),
    )

    @rule(target=delivered, event=device_event)
    def device_event_arrives(self, event: tuple[Any, ...]) -> IncomingBatch:
        batch = self.device_batch(self.device_body(*event))
        self.run(self.deliver(batch))
        return batch

    @rule(target=held, event=device_event)
    def device_event_is_held_offline(self, event: tuple[Any, ...]) -> IncomingBatch:
        return self.device_batch(self.device_body(*event))

    @rule(target=delivered, batch=consumes(held))
    def held_event_arrives_late(self, batch: IncomingBatch) -> IncomingBatch:
        self.run(self.deliver(batch))
        return batch

    @rule(batch=delivered)
    def event_is_delivered_again(self, batch: IncomingBatch) -> None:
        self.run(self.deliver(batch))

    # ------------------------------------------------------------------ people

    @rule(data=st.data())
    def a_movement_is_reversed(self, data: st.DataObject) -> None:
        async def reverse() -> None:
            cur = await self.conn.execute(
                "SELECT m.id FROM movements m WHERE m.site = %s AND m.reverses IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)"
                " ORDER BY m.id",
                (self.site,),
            )
            ids = [row[0] for row in await cur.fetchall()]
            pick = data.draw(st.integers(0, 10_000))  # drawn always: replays stay the same
            if ids:
                chosen = ids[pick % len(ids)]
                async with self.conn.transaction():
                    await ledger.reverse(chosen, actor="sup", reason="test", conn=self.conn)

        self.run(reverse())

    # ------------------------------------------------------------------ people, via REST

    def call(self, client: httpx.AsyncClient, method: str, path: str,
             body: dict[str, Any] | None = None) -> httpx.Response:  # fmt: skip
        """A request as a person makes it: refusals (4xx) are fine, a 500 never is."""
        response = self.run(client.request(method, f"/api/v1/sites/{self.site}{path}", json=body))
        assert response.status_code < 500, (method, path, body, response.text)
        if response.is_success and method == "POST":
            self.succeeded[path.strip("/").split("/")[0] + path.rpartition("/")[2]] += 1
        return response

    def lot_fields(self, sku: str, lot: str) -> dict[str, Any]:
        if TRACKING[sku] != "lot":
            return {}
        chosen = lot or "L1"
        return {"lot": chosen, "expiry": "2027-03-31" if chosen == "L1" else "2027-01-31"}

    @rule(sku=st.sampled_from(["A", "B"]), lot=st.sampled_from(LOTS), qty=st.integers(1, 30))
    def clerk_receives_at_the_dock(self, sku: str, lot: str, qty: int) -> None:
        body = {"location": "DOCK", "sku": self.skus[sku], "quantity": qty,
                **self.lot_fields(sku, lot)}  # fmt: skip
        self.call(self.clerk, "POST", "/receipts", body)

    @rule(sku=st.sampled_from(["A", "B"]), lot=st.sampled_from(LOTS), qty=st.integers(1, 10),
          shelf=st.sampled_from(SHELVES))  # fmt: skip
    def clerk_puts_away(self, sku: str, lot: str, qty: int, shelf: str) -> None:
        fields = self.lot_fields(sku, lot)
        body = {"from_location": "DOCK", "to_location": shelf, "sku": self.skus[sku],
                "quantity": qty, "lot": fields.get("lot", "")}  # fmt: skip
        self.call(self.clerk, "POST", "/putaways", body)

    @rule(target=orders, sku=st.sampled_from(["A", "B"]), qty=st.integers(1, 8))
    def supervisor_releases_an_order(self, sku: str, qty: int) -> str:
        reference = f"o-{uuid.uuid4().hex[:8]}"
        body = {"reference": reference, "lines": [{"sku": self.skus[sku], "quantity": qty}],
                "staging": "STAGE", "partial": True}  # fmt: skip
        self.call(self.supervisors[0], "POST", "/orders", body)
        return reference

    @rule(reference=orders, short=st.booleans())
    def clerk_picks_an_order(self, reference: str, short: bool) -> None:
        order = self.call(self.clerk, "GET", f"/orders/{reference}")
        if order.status_code != 200:
            return
        for task in order.json()["tasks"]:
            if task["state"] == "open":
                quantity = Decimal(task["quantity"])
                if short and quantity > 1:
                    quantity -= 1
                self.call(self.clerk, "POST", f"/pick-tasks/{task['id']}/pick",
                          {"location": task["location"], "quantity": str(quantity)})  # fmt: skip

    @rule(reference=orders, pick_first=st.booleans())
    def clerk_ships_an_order(self, reference: str, pick_first: bool) -> None:
        if pick_first:
            self.clerk_picks_an_order(reference, short=False)
        self.call(self.clerk, "POST", f"/orders/{reference}/ship", {})

    @rule(sku=st.sampled_from(["A", "B"]), qty=st.integers(1, 8), shelf=st.sampled_from(SHELVES))
    def an_order_goes_through_the_floor(self, sku: str, qty: int, shelf: str) -> None:
        """Receive, put away, release, pick and ship in a row: the whole happy path."""
        fields = self.lot_fields(sku, "L1")
        self.call(
            self.clerk,
            "POST",
            "/receipts",
            {"location": "DOCK", "sku": self.skus[sku], "quantity": qty, **fields},
        )
        self.call(self.clerk, "POST", "/putaways",
                  {"from_location": "DOCK", "to_location": shelf, "sku": self.skus[sku],
                   "quantity": qty, "lot": fields.get("lot", "")})  # fmt: skip
        reference = self.supervisor_releases_an_order(sku, qty)
        self.clerk_ships_an_order(reference, pick_first=True)

    @rule(reference=consumes(orders))
    def supervisor_cancels_an_order(self, reference: str) -> None:
        self.call(self.supervisors[0], "POST", f"/orders/{reference}/cancel", {"reason": "test"})

    @rule(sku=st.sampled_from(["A", "B"]), lot=st.sampled_from(LOTS),
          change=st.integers(-30, 30).filter(bool), shelf=st.sampled_from(SHELVES),
          approve=st.booleans())  # fmt: skip
    def an_adjustment_is_requested(
        self, sku: str, lot: str, change: int, shelf: str, approve: bool
    ) -> None:
        body = {"location": shelf, "sku": self.skus[sku], "quantity": change,
                "reason": "FOUND" if change > 0 else "LOST",
                "lot": self.lot_fields(sku, lot).get("lot", "")}  # fmt: skip
        made = self.call(self.clerk, "POST", "/adjustments", body)
        if made.status_code == 201 and made.json()["state"] == "pending":
            verdict = "approve" if approve else "reject"
            self.call(self.supervisors[0], "POST", f"/adjustments/{made.json()['id']}/{verdict}")

    @rule(shelf=st.sampled_from(LOCATIONS), data=st.data(), approve=st.booleans())
    def a_shelf_is_counted(self, shelf: str, data: st.DataObject, approve: bool) -> None:
        opened = self.call(self.supervisors[0], "POST", "/counts", {"location": shelf})
        if opened.status_code != 201:
            return
        count = opened.json()["id"]
        lines = [
            {"sku": self.skus[sku], "lot": lot, "counted": data.draw(st.integers(0, 40))}
            for sku, lot in (("A", "L1"), ("A", "L2"), ("B", ""))
            if data.draw(st.booleans())
        ]
        if lines:
            self.call(self.clerk, "POST", f"/counts/{count}/lines", {"lines": lines})
            # Approval by a supervisor who did not count it (the clerk counted).
            verdict = "approve" if approve else "reject"
            self.call(self.supervisors[1], "POST", f"/counts/{count}/{verdict}")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def every_item_sums_to_zero(self) -> None:
        async def check() -> list[tuple[Any, ...]]:
            cur = await self.conn.execute(
                "SELECT sku, lot, sum(quantity) FROM balances WHERE sku = ANY(%s)"
                " GROUP BY 1, 2 HAVING sum(quantity) <> 0",
                (list(self.skus.values()),),
            )
            return list(await cur.fetchall())

        assert self.run(check()) == []

    @invariant()
    def balances_equal_a_rebuild(self) -> None:
        assert self.run(ledger.check(site=self.site, conn=self.conn)) == []

    @invariant()
    def reserved_is_never_negative(self) -> None:
        async def check() -> list[tuple[Any, ...]]:
            cur = await self.conn.execute(
                "SELECT location, sku, lot, sum(quantity) FROM reservations"
                " WHERE site = %s AND state = 'open' GROUP BY 1, 2, 3 HAVING sum(quantity) < 0",
                (self.site,),
            )
            return list(await cur.fetchall())

        assert self.run(check()) == []

    @invariant()
    def a_serial_is_in_one_place_at_most(self) -> None:
        async def check() -> list[tuple[Any, ...]]:
            cur = await self.conn.execute(
                "SELECT b.sku, b.serial, count(*), max(b.quantity) FROM balances b"
                " JOIN locations l ON l.site = b.site AND l.code = b.location"
                " AND l.kind = 'internal' WHERE b.site = %s AND b.serial <> ''"
                " AND b.quantity > 0 GROUP BY 1, 2 HAVING count(*) > 1 OR max(b.quantity) > 1",
                (self.site,),
            )
            return list(await cur.fetchall())

        assert self.run(check()) == []


@pytest.mark.timeout(900)
def test_the_ledger_keeps_its_invariants_under_any_sequence(db_url: str) -> None:
    LedgerMachine.SETTINGS = HubSettings(db_url=db_url)
    run = LedgerMachine.TestCase
    run.settings = settings(
        max_examples=25, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )  # fmt: skip
    LedgerMachine.succeeded.clear()
    run().runTest()
    done = LedgerMachine.succeeded
    for step in ("receiptsreceipts", "putawaysputaways", "ordersorders", "pick-taskspick",
                 "ordersship", "adjustmentsadjustments", "adjustmentsapprove", "countscounts",
                 "countslines", "countsapprove"):  # fmt: skip
        assert done[step] > 0, f"no {step} ever succeeded: {dict(done)}"
