"""An older outbox comes back under the same gateway id: nothing is acked that is not stored.

What was seen: a replaced box powered on again (or a restored disk image) sent events
whose seqs fell below the hub's watermark for the id; the hub acked them as duplicates,
the box trimmed them, and they were never stored (209 events of one gateway, receipts
and AGV transports among them).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.hub import HubProcess
from tests.support.sites import site_config
from warelink.edge.gateway import Gateway, running
from warelink.edge.outbox import Outbox
from warelink.edge.settings import EdgeSettings
from warelink.hub.ingest.outboxes import Verdict, judge
from warelink.protocol.messages import Receipt, TrafficClass

SITE, GATEWAY = "north", "gw-1"


def box(root: Path, prefix: str, name: str) -> Gateway:
    """A gateway box with the id every box here shares, its data under ``root/name``."""
    directory = root / name
    directory.mkdir(exist_ok=True)
    settings = EdgeSettings(mqtt_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}", mqtt_prefix=prefix)  # type: ignore[arg-type]
    return Gateway(site_config(directory, site=SITE, gateway=GATEWAY, ack_timeout_s=1.0), settings)


@asynccontextmanager
async def powered(gateway: Gateway) -> AsyncIterator[Gateway]:
    async with running(gateway):
        yield gateway


async def receive(gateway: Gateway, count: int, lot: str) -> None:
    """``count`` one-unit receipts of lot ``lot``, as the box's scanner would report them."""
    for _ in range(count):
        await gateway.outbox.add(
            "scanner-1", TrafficClass.LEDGER,
            Receipt(location="DOCK-1", gtin="09506000134352", quantity=1, lot=lot),
        )  # fmt: skip


async def all_acked(gateway: Gateway, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while gateway.outbox.acked_seq() < gateway.outbox.last_seq:
            await asyncio.sleep(0.05)


def unacked(gateway: Gateway) -> list[tuple[int, bytes]]:
    """The events the (stopped) box still holds unacked, read from its outbox file."""
    with Outbox(gateway.outbox.path, GATEWAY) as outbox:
        rows, _ = outbox.read_batch(outbox.acked_seq(), 10_000, None)
    return rows


def stored(db_url: str, lot: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE gateway = %s AND body->>'lot' = %s",
            (GATEWAY, lot),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def gateway_row(hub: HubProcess) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {r["id"]: r for r in await hub.get("/api/v1/gateways")}
    return rows[GATEWAY]


async def test_a_replaced_box_powered_on_again_is_refused_and_keeps_its_events(
    hub: HubProcess, db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    old = box(tmp_path, mqtt_prefix, "old")
    async with powered(old):
        await receive(old, 20, "OLD-1")
        await all_acked(old)
    replacement = box(tmp_path, mqtt_prefix, "new")  # a new box, a new outbox, the same id
    async with powered(replacement):
        await receive(replacement, 20, "NEW-1")
        await all_acked(replacement)
        # The old box is powered on again, and both run side by side for a while.
        async with powered(old):
            await receive(old, 25, "OLD-2")
            await receive(replacement, 20, "NEW-2")
            await all_acked(replacement)
            await asyncio.sleep(3)  # the old box's birth and resends have been answered
            assert old.outbox.acked_seq() < old.outbox.last_seq  # nothing of OLD-2 acked
            row = await gateway_row(hub)
            assert row["outbox"] == replacement.outbox.outbox_id
            assert row["refused_outbox"] == old.outbox.outbox_id
            assert row["refused_messages"] >= 1
    assert (stored(db_url, "OLD-1"), stored(db_url, "NEW-1"), stored(db_url, "NEW-2")) == (
        20, 20, 20,
    )  # fmt: skip
    assert stored(db_url, "OLD-2") == 0  # refused, and still in the old box:
    assert len(unacked(old)) == 25
    with psycopg.connect(db_url) as conn:
        conflict = conn.execute(
            "SELECT state, detail->>'outbox' FROM exceptions WHERE kind = 'outbox_conflict'"
        ).fetchall()
    assert conflict == [("open", old.outbox.outbox_id)]
    async with hub.client() as client:
        metrics = (await client.get("/metrics")).text
    refused = re.search(r"^warelink_hub_outboxes_refused_total (\S+)$", metrics, re.M)
    assert refused is not None and float(refused[1]) >= 1, metrics[-2000:]


async def test_a_restored_disk_image_is_refused_and_keeps_its_events(
    hub: HubProcess, db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    original = box(tmp_path, mqtt_prefix, "box")
    async with powered(original):
        await receive(original, 10, "BEFORE")
        await all_acked(original)
    shutil.copytree(tmp_path / "box", tmp_path / "image")  # the disk image, taken now
    async with powered(original):
        await receive(original, 30, "AFTER")
        await all_acked(original)
    shutil.rmtree(tmp_path / "box")
    shutil.copytree(tmp_path / "image", tmp_path / "box")  # restored: the same outbox id
    restored = box(tmp_path, mqtt_prefix, "box")
    async with powered(restored):
        await receive(restored, 40, "RESTORED")  # seqs the hub already holds, other events
        await asyncio.sleep(4)
        assert restored.outbox.acked_seq() < restored.outbox.last_seq
    assert (stored(db_url, "BEFORE"), stored(db_url, "AFTER")) == (10, 30)
    assert stored(db_url, "RESTORED") == 0
    assert len(unacked(restored)) == 40  # every one of them still in the box
    row = await gateway_row(hub)
    assert row["refused_outbox"] == restored.outbox.outbox_id


def test_the_rule_for_an_outbox_under_a_known_gateway_id() -> None:
    def verdict(**kw: Any) -> Verdict:
        args: dict[str, Any] = {"current": "A", "claimed": "A", "known_state": "current",
                                "oldest_claimed": 101, "max_seq": 100} | kw  # fmt: skip
        return judge(**args).verdict

    assert verdict() is Verdict.ACCEPT
    assert verdict(claimed="") is Verdict.ACCEPT  # an edge from before outbox identities
    assert verdict(current=None, claimed="B", known_state=None) is Verdict.ADOPT
    assert verdict(claimed="B", known_state=None, oldest_claimed=101) is Verdict.ADOPT
    assert verdict(claimed="B", known_state=None, oldest_claimed=100) is Verdict.REFUSE
    assert verdict(claimed="B", known_state="retired", oldest_claimed=10**9) is Verdict.REFUSE
    assert verdict(claimed="B", known_state="refused", oldest_claimed=10**9) is Verdict.REFUSE
    assert verdict(newest_claimed=99, oldest_claimed=99) is Verdict.REFUSE  # rolled back
    assert verdict(newest_claimed=100, oldest_claimed=1) is Verdict.ACCEPT  # resends
