"""Every change reaches every screen: two hub processes on one database, a live client on
each, people's work through REST on either and device events ingested by either.

What was seen before the change feed: a REST receipt produced no delta at all, and each
replica's clients saw only what that process ingested, with per-process versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support import forge
from tests.support.hub import HubProcess
from tests.support.services import free_port
from warelink.hub.access import Role
from warelink.hub.identity import auth
from warelink.hub.settings import HubSettings
from warelink.protocol.messages import WeightReading
from warelink.protocol.topics import Kind, Topics

SITE = "north"


async def floor(db_url: str) -> None:
    """A site with a dock and a store, one SKU (master data, not under test)."""
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await conn.execute("INSERT INTO sites (id) VALUES (%s)", (SITE,))
        await conn.execute(
            "INSERT INTO zones (site, code, kind) VALUES (%s, 'DOCK', 'dock'),"
            " (%s, 'STORE', 'storage')",
            (SITE, SITE),
        )
        await conn.execute(
            "INSERT INTO locations (site, code, kind, zone) VALUES"
            " (%s, 'D1', 'internal', 'DOCK'), (%s, 'A1', 'internal', 'STORE'),"
            " (%s, 'DOCK-1', 'internal', 'DOCK')",
            (SITE, SITE, SITE),
        )
        await conn.execute("INSERT INTO skus (code, gtin) VALUES ('PLAIN', %s)", (forge.GTIN,))


async def second_supervisor(db_url: str) -> str:
    """Another supervisor's key: a count is approved by someone who did not count it."""
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await auth.create_identity(
            "sue", kind="service", roles=[Role.SUPERVISOR], sites=None, created_by="test",
            conn=conn,
        )  # fmt: skip
        return await auth.create_credential(
            "sue", kind="api_key", authenticator=auth.Authenticator(), created_by="test",
            conn=conn,
        )  # fmt: skip


@pytest.fixture
async def hubs(hub_settings: HubSettings, tmp_path: Path) -> AsyncIterator[list[HubProcess]]:
    """Two hub processes on one database and one broker prefix (a shared subscription)."""
    processes: list[HubProcess] = []
    async with contextlib.AsyncExitStack() as stack:
        for n in range(2):
            settings = hub_settings.model_copy(update={"http": f"127.0.0.1:{free_port()}"})
            process = HubProcess(settings, log_path=os.path.join(tmp_path, f"hub-{n}.log"))
            if processes:  # one bootstrap key for both: a new one would revoke the first
                process.key, process.headers = processes[0].key, processes[0].headers
            await process.start()
            stack.push_async_callback(process.stop)
            processes.append(process)
        yield processes


class LiveClient:
    """A websocket client that keeps every frame and checks the versions as it goes."""

    def __init__(self, hub: HubProcess, *, since: int | None = None, epoch: str = "") -> None:
        query = f"site={SITE}&access_token={hub.key}"
        if since is not None:
            query += f"&since={since}&epoch={epoch}"
        self.url = f"ws://{hub.settings.http}/api/v1/live?{query}"
        self.frames: list[dict[str, Any]] = []
        self.version = -1
        self.epoch = ""
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveClient:
        self._socket = await connect(self.url)
        self._reader = asyncio.create_task(self._read(), name="live-client")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._socket is not None and self._reader is not None
        await self._socket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        assert self._socket is not None
        async for text in self._socket:
            frame = json.loads(text)
            if frame["kind"] == "snapshot":
                self.epoch = frame["epoch"]
            else:
                assert frame["epoch"] == self.epoch or not self.epoch
                assert frame["version"] == self.version + 1, (self.version, frame["version"])
            self.version = frame["version"]
            self.frames.append(frame)

    def deltas(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["kind"] == "delta"]

    async def wait_for(self, what: str, test: Any, timeout: float = 10) -> dict[str, Any]:
        """The first delta that ``test`` accepts; fails after ``timeout`` naming ``what``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for frame in self.deltas():
                        if test(frame):
                            return frame
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"no delta with {what} on {self.url[:40]}") from None

    async def wait_snapshot(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while not self.frames:
                await asyncio.sleep(0.02)
        return self.frames[0]


def balance_is(location: str, quantity: int) -> Any:
    def test(frame: dict[str, Any]) -> bool:
        return any(
            b["location"] == location and b["sku"] == "PLAIN"
            and Decimal(str(b["quantity"])) == quantity
            for b in frame["balances"]
        )  # fmt: skip

    return test


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = await client.post(f"/api/v1/sites/{SITE}{path}", json=body)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


async def test_every_change_on_either_hub_reaches_clients_of_both(
    hubs: list[HubProcess], db_url: str, mqtt_prefix: str
) -> None:
    await floor(db_url)
    sue = await second_supervisor(db_url)
    one, two = hubs
    async with LiveClient(one) as left, LiveClient(two) as right:
        assert (await left.wait_snapshot())["version"] == (await right.wait_snapshot())["version"]
        async with (
            one.client() as on_one,
            two.client() as on_two,
            httpx.AsyncClient(
                base_url=two.url, headers={"X-API-Key": sue}, timeout=10
            ) as sue_on_two,
        ):
            # People's work, through either replica.
            await post(on_one, "/receipts", {"location": "D1", "sku": "PLAIN", "quantity": 10})
            for client in (left, right):
                await client.wait_for("the receipt at D1", balance_is("D1", 10))
            await post(on_two, "/putaways", {"from_location": "D1", "to_location": "A1",
                                             "sku": "PLAIN", "quantity": 6})  # fmt: skip
            for client in (left, right):
                await client.wait_for("the putaway to A1", balance_is("A1", 6))
            await post(on_one, "/adjustments", {"location": "A1", "sku": "PLAIN",
                                                "quantity": -1, "reason": "LOST"})  # fmt: skip
            for client in (left, right):
                await client.wait_for("the adjustment at A1", balance_is("A1", 5))
            count = await post(on_two, "/counts", {"location": "A1"})
            await post(on_two, f"/counts/{count['id']}/lines",
                       {"lines": [{"sku": "PLAIN", "counted": 4}]})  # fmt: skip
            await post(sue_on_two, f"/counts/{count['id']}/approve")
            for client in (left, right):
                await client.wait_for("the approved count at A1", balance_is("A1", 4))
        # Devices' work, ingested by whichever replica the broker hands each message to.
        topics = Topics(mqtt_prefix)
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
            for n in range(1, 21):
                body = WeightReading(weight=float(n), unit="kg", stable=True)
                event = forge.event("gw-1", n, body, device=f"scale-{n % 3}")
                await mq.publish(topics.gateway(SITE, "gw-1", Kind.EVENTS),
                                 forge.batch("gw-1", n, n, [event]), qos=1)  # fmt: skip
        for client in (left, right):
            await client.wait_for(
                "the last weight", lambda f: any(d["seq"] == 20 for d in f["devices"])
            )
        await asyncio.sleep(0.5)  # anything still on its way
        # Both saw the same versions, consecutive (checked frame by frame as they came).
        assert [f["version"] for f in left.deltas()] == [f["version"] for f in right.deltas()]
        assert left.version == right.version
    with psycopg.connect(db_url) as conn:
        ingested_by = conn.execute("SELECT count(*) FROM events WHERE gateway = 'gw-1'").fetchone()
        assert ingested_by == (20,)


async def test_a_client_resumes_on_the_other_replica_with_what_it_missed(
    hubs: list[HubProcess], db_url: str
) -> None:
    await floor(db_url)
    one, two = hubs
    async with one.client() as on_one:
        async with LiveClient(one) as first:
            await post(on_one, "/receipts", {"location": "D1", "sku": "PLAIN", "quantity": 1})
            await first.wait_for("the first receipt", balance_is("D1", 1))
            seen, epoch = first.version, first.epoch
        for _ in range(3):  # three more receipts while nobody watches
            await post(on_one, "/receipts", {"location": "D1", "sku": "PLAIN", "quantity": 1})
        async with LiveClient(two, since=seen, epoch=epoch) as resumed:
            resumed.version, resumed.epoch = seen, epoch  # it continues from there
            await resumed.wait_for("the missed receipts", balance_is("D1", 4))
            assert [f["kind"] for f in resumed.frames] == ["delta"] * len(resumed.frames)
            assert resumed.frames[0]["version"] == seen + 1
            assert len(resumed.deltas()) == 3
        # Versions this old are no longer kept: a snapshot, not a partial history.
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM changes WHERE site = %s AND version <= %s", (SITE, seen + 1))
        async with LiveClient(two, since=seen, epoch=epoch) as late:
            snapshot = await late.wait_snapshot()
            assert snapshot["kind"] == "snapshot" and snapshot["version"] == seen + 3
            assert balance_is("D1", 4)(snapshot)
        # Another database's epoch: a snapshot too.
        async with LiveClient(two, since=seen + 3, epoch="not-this-one") as stranger:
            assert (await stranger.wait_snapshot())["kind"] == "snapshot"
