"""The gateway's own disk: a lost or corrupt outbox file is refused, a full disk is survived.

A full disk is a real one: a small tmpfs mounted for the test and filled with a ballast
file until SQLite itself answers "database or disk is full" (the tests run as root in
the sandbox; where mounting is not permitted they skip and say why).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.hub import HubProcess
from tests.support.services import free_port
from tests.support.sites import write_site_config
from warelink.edge.gateway import OUTBOX_FILE
from warelink.edge.handheld import HandheldApi, LatestWeights, serve_handheld_api
from warelink.edge.outbox import (
    Draft,
    Outbox,
    OutboxPolicy,
    Pressure,
    StoreTimeout,
    Unencodable,
)
from warelink.edge.outbox_file import (
    OutboxCorrupt,
    OutboxDiskFull,
    OutboxLost,
    read_state,
    reserve_path,
    state_path,
)
from warelink.protocol import wire
from warelink.protocol.messages import Receipt, TrafficClass, WeightReading

GTIN = "09506000134352"
FROM_ZERO = OutboxPolicy(seq_origin=0, reserve_bytes=0)  # readable seqs, no reserve file
SMALL_RESERVE = OutboxPolicy(seq_origin=0, reserve_bytes=1 << 20)


def receipt(n: int, lot: str | None = None) -> Draft:
    body = Receipt(location="DOCK-1", gtin=GTIN, quantity=1, lot=lot or f"L{n}")
    return Draft("scanner", TrafficClass.LEDGER, body, dt.datetime.now(dt.UTC))


def weight(n: int) -> Draft:
    return Draft("scale", TrafficClass.TELEMETRY, WeightReading(float(n), "kg", False),
                 dt.datetime.now(dt.UTC))  # fmt: skip


async def fill_outbox(path: Path, *, events: int, acked: int) -> tuple[int, int]:
    """An outbox of ``events`` receipts, ``acked`` of them acked; closed cleanly."""
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        await outbox.append([receipt(i) for i in range(events)])
        outbox.mark_acked(acked)
    return events, acked


def files_of(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


# ------------------------------------------------------------- the state file


async def test_a_new_outbox_keeps_a_state_file_that_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / "o.db"
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        state = read_state(path)
        assert state is not None
        assert (state.outbox_id, state.last_seq, state.acked_seq) == (outbox.outbox_id, 0, 0)
        await outbox.append([receipt(i) for i in range(5)])
        outbox.mark_acked(2)
        assert read_state(path) == state  # on a cadence, not on every append
        outbox.housekeeping()
        checkpointed = read_state(path)
        assert checkpointed is not None
        assert (checkpointed.last_seq, checkpointed.acked_seq) == (5, 2)
        await outbox.append([receipt(5)])
    closed = read_state(path)
    assert closed is not None and (closed.last_seq, closed.acked_seq) == (6, 2)  # a clean stop
    assert closed.gateway == "gw-d" and json.loads(state_path(path).read_text())["format"] == 1


async def test_an_outbox_from_before_state_files_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    await fill_outbox(path, events=10, acked=4)
    conn = sqlite3.connect(path)  # back to the layout of an outbox made before this change
    conn.execute("DROP TABLE identity")
    conn.close()
    state_path(path).unlink()
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        assert (outbox.last_seq, outbox.acked_seq()) == (10, 4)
        assert await outbox.append([receipt(10)]) == 11
        rows, _ = outbox.read_batch(0, 100)
        assert [seq for seq, _ in rows] == list(range(1, 12))
        adopted = outbox.outbox_id
    state = read_state(path)
    assert state is not None and (state.outbox_id, state.last_seq) == (adopted, 11)


async def test_a_torn_state_file_beside_a_sound_outbox_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    await fill_outbox(path, events=3, acked=0)
    state_path(path).write_text('{"format": 1, "outbox_')
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        assert outbox.last_seq == 3
    state = read_state(path)
    assert state is not None and state.last_seq == 3


def _delete(path: Path) -> None:
    for file in files_of(path):
        file.unlink(missing_ok=True)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"this is not a database at all")


def _torn_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for page in (3, len(data) // 4096 - 2):
        data[page * 4096 + 100 : page * 4096 + 4000] = os.urandom(3900)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "error", "now"),
    [
        (_delete, OutboxLost, "the file is now missing"),
        (_empty, OutboxLost, "the file is now empty (0 bytes)"),
        (_garbage, OutboxCorrupt, "corrupt: not a SQLite database"),
        (_torn_pages, OutboxCorrupt, "the file is now corrupt: "),
    ],
    ids=["deleted", "truncated", "garbage", "torn-pages"],
)
async def test_a_lost_or_corrupt_outbox_file_is_refused_not_replaced(
    tmp_path: Path, damage: Callable[[Path], None], error: type[Exception], now: str
) -> None:
    path = tmp_path / "o.db"
    await fill_outbox(path, events=3000, acked=1000)
    state_before = state_path(path).read_bytes()
    damage(path)
    size_before = path.stat().st_size if path.exists() else None
    with pytest.raises(error) as refused:
        async with Outbox(path, "gw-d", FROM_ZERO):
            pytest.fail("opened")
    message = str(refused.value)
    assert message.startswith(f"{path}: the outbox ")
    assert "held seqs up to 3000, 2000 unacked" in message and now in message
    assert "Restore the file" in message and "warelink edge reset-outbox --config" in message
    assert "\n" not in message
    # Refusing changes nothing: no new empty outbox, the state file as it was.
    assert (path.stat().st_size if path.exists() else None) == size_before
    assert state_path(path).read_bytes() == state_before


async def test_another_outbox_in_its_place_is_refused(tmp_path: Path) -> None:
    path, other = tmp_path / "o.db", tmp_path / "other" / "o.db"
    await fill_outbox(path, events=5, acked=0)
    await fill_outbox(other, events=50, acked=50)
    shutil.copyfile(other, path)
    with pytest.raises(OutboxLost, match="the file now holds another outbox"):
        async with Outbox(path, "gw-d", FROM_ZERO):
            pytest.fail("opened")


async def test_an_older_copy_is_refused_if_it_lacks_unacked_events(tmp_path: Path) -> None:
    path, copy = tmp_path / "o.db", tmp_path / "copy.db"
    await fill_outbox(path, events=10, acked=10)
    shutil.copyfile(path, copy)
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        await outbox.append([receipt(i) for i in range(5)])  # 11-15, never acked
    shutil.copyfile(copy, path)
    with pytest.raises(OutboxLost, match="the file now ends at seq 10: 5 unacked seqs are gone"):
        async with Outbox(path, "gw-d", FROM_ZERO):
            pytest.fail("opened")


async def test_an_older_copy_without_unacked_loss_continues_past_every_seq(
    tmp_path: Path,
) -> None:
    path, copy = tmp_path / "o.db", tmp_path / "copy.db"
    await fill_outbox(path, events=10, acked=10)
    shutil.copyfile(path, copy)
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        await outbox.append([receipt(i) for i in range(5)])
        outbox.mark_acked(15)  # the hub has everything
    shutil.copyfile(copy, path)
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        assert (outbox.last_seq, outbox.acked_seq()) == (15, 15)
        assert await outbox.append([receipt(16)]) == 16  # never a seq the hub has seen


# ------------------------------------------------------------ the CLI, for real


def warelink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warelink.edge.cli", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


async def test_edge_run_and_status_refuse_a_lost_outbox_until_the_loss_is_accepted(
    tmp_path: Path,
) -> None:
    config = write_site_config(tmp_path, site="site-d", gateway="gw-d")
    path = tmp_path / "gw-d" / OUTBOX_FILE
    async with Outbox(path, "gw-d") as outbox:  # the clock's seqs, as a gateway has them
        await outbox.append([receipt(i) for i in range(7)])
        last, old_id = outbox.last_seq, outbox.outbox_id
    path.write_bytes(b"")  # emptied while the gateway was stopped

    run = await asyncio.to_thread(warelink, "edge", "run", "--config", str(config))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"warelink: outbox refused: {path}: the outbox {old_id}")
    assert f"held seqs up to {last}, 7 unacked" in line and "empty (0 bytes)" in line
    assert line.endswith(f"warelink edge reset-outbox --config {config}")

    status = await asyncio.to_thread(warelink, "edge", "status", "--config", str(config))
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert re.search(r"^state +lost$", status.stdout, re.M) and "(0 bytes)" in status.stdout
    as_json = await asyncio.to_thread(warelink, "edge", "status", "--json", "--config", str(config))
    assert as_json.returncode == 2
    report = json.loads(as_json.stdout)
    assert report["state"] == "lost" and f"held seqs up to {last}" in report["why"]

    reset = await asyncio.to_thread(warelink, "edge", "reset-outbox", "--config", str(config))
    assert reset.returncode == 0, reset.stderr
    assert "set aside" in reset.stdout
    assert path.with_name(path.name + ".state.json").exists()
    set_aside = sorted(p.name for p in path.parent.glob(f"{path.name}.lost-*"))
    assert any(name.endswith(".state.json") for name in set_aside)

    after = await asyncio.to_thread(warelink, "edge", "status", "--json", "--config", str(config))
    assert after.returncode == 0, after.stderr
    report = json.loads(after.stdout)
    assert report["state"] == "ok" and report["outbox_id"] != old_id
    assert report["last_seq"] >= last  # a new identity, past every seq the old one had
    again = await asyncio.to_thread(warelink, "edge", "reset-outbox", "--config", str(config))
    assert again.returncode == 1 and "nothing to reset" in again.stderr


# ----------------------------------------------------------- one caller's event


async def test_an_unencodable_event_fails_its_own_caller_only(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", "gw-d", FROM_ZERO) as outbox:
        first = asyncio.create_task(outbox.append([receipt(i) for i in range(999)]))
        await asyncio.sleep(0)  # the writer is busy with it while the others queue up
        good = [outbox.append([receipt(i)]) for i in range(20)]
        bad_text = outbox.append([receipt(0, lot="lot\udcff")])
        bad_device = outbox.append([Draft("pda\udcff", TrafficClass.LEDGER,
                                          Receipt(location="D", gtin=GTIN, quantity=1),
                                          dt.datetime.now(dt.UTC))])  # fmt: skip
        results = await asyncio.gather(*good, bad_text, bad_device, return_exceptions=True)
        assert await first == 999
        seqs = [result for result in results[:20] if isinstance(result, int)]
        assert sorted(seqs) == list(range(1000, 1020))
        for failed in results[20:]:
            assert isinstance(failed, Unencodable) and "surrogates not allowed" in str(failed)
        rows, covered = outbox.read_batch(0, 10_000)
    assert covered == 1019 and [seq for seq, _ in rows] == list(range(1, 1020))  # no seq spent
    assert all("\udcff" not in wire.decode_event(payload).device for _, payload in rows)


# ---------------------------------------------------------------- a full disk


class SmallDisk:
    """A tmpfs of its own, and a ballast file that takes every free byte of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    continue
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize


def mounted(root: Path, size: str) -> Iterator[SmallDisk]:
    root.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(
            "a full disk is tested on a small tmpfs, and mounting one is not permitted here"
            f" ({mount.stderr.strip() or mount.returncode}): run the tests as root"
        )
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    yield from mounted(tmp_path / "disk", "16m")


async def until_sqlite_is_full(outbox: Outbox, disk: SmallDisk) -> int:
    """Fill the disk, again after the outbox gives its reserve back, until SQLite refuses.

    Returns the events stored meanwhile (into the reserve's room).
    """
    stored = 0
    for _ in range(100):
        disk.fill()
        try:
            await outbox.append([receipt(i) for i in range(100)], timeout=0.3)
        except StoreTimeout as exc:
            assert "the disk is full" in str(exc)
            return stored
        stored += 100
    raise AssertionError("SQLite never ran out of room")


async def test_a_full_disk_is_a_state_the_outbox_survives_and_leaves(
    small_disk: SmallDisk,
) -> None:
    path = small_disk.root / "data" / "o.db"
    async with Outbox(path, "gw-d", SMALL_RESERVE) as outbox:
        await outbox.append([receipt(i) for i in range(1000)])
        outbox.housekeeping()
        assert reserve_path(path).exists() and outbox.pressure is Pressure.OK
        await until_sqlite_is_full(outbox, small_disk)
        assert outbox.disk_full and not reserve_path(path).exists()  # given back
        last = outbox.last_seq

        assert await outbox.append([weight(1), weight(2)]) == last  # refused, counted
        assert outbox.status().dropped_telemetry == 2
        waiting = asyncio.create_task(outbox.append([receipt(-1), weight(3)]))
        await asyncio.sleep(0.5)
        assert not waiting.done() and outbox.waiting == 1  # the ledger event waits
        # Every write of the gateway meets the full disk and carries on.
        assert outbox.mark_acked(600) == 600
        session = outbox.next_session()
        assert session > 0
        assert outbox.claim_command("c-1") is False  # not durable: not run now
        outbox.command_reported("c-0")
        outbox.save_counters({"events_sent": 1.0})
        assert outbox.housekeeping() is Pressure.DISK_FULL
        assert outbox.status().acked_seq == 600

        small_disk.free()
        assert outbox.housekeeping() is Pressure.OK  # room for the reserve and more
        assert reserve_path(path).exists()
        assert await asyncio.wait_for(waiting, 5) == last + 1
        assert await outbox.append([weight(4)]) == last + 2  # telemetry welcome again
        assert outbox.claim_command("c-1") is True
    async with Outbox(path, "gw-d", SMALL_RESERVE) as outbox:
        status = outbox.status()
        assert (status.last_seq, status.acked_seq, status.dropped_telemetry) == (last + 2, 600, 3)
        assert outbox.next_session() == session + 1  # written once there was room
        rows, _ = outbox.read_batch(last, 10)
    assert [seq for seq, _ in rows] == [last + 1, last + 2]


async def test_an_outbox_opens_on_a_full_disk_and_drains(small_disk: SmallDisk) -> None:
    path = small_disk.root / "data" / "o.db"
    async with Outbox(path, "gw-d", SMALL_RESERVE) as outbox:
        await outbox.append([receipt(i) for i in range(2000)])
    small_disk.fill()  # a clean stop, then the disk fills to the last byte
    assert small_disk.free_bytes() == 0
    async with Outbox(path, "gw-d", SMALL_RESERVE) as outbox:
        assert outbox.pressure is Pressure.DISK_FULL  # opened on the reserve's room
        rows, covered = outbox.read_batch(0, 5000)
        assert (len(rows), covered) == (2000, 2000)
        assert outbox.mark_acked(covered) == 2000
        assert outbox.status().depth == 0
    small_disk.free()
    async with Outbox(path, "gw-d", SMALL_RESERVE) as outbox:
        assert outbox.acked_seq() == 2000


async def test_without_a_reserve_a_full_disk_refuses_the_open_and_says_so(
    small_disk: SmallDisk,
) -> None:
    path = small_disk.root / "data" / "o.db"
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:  # reserve_bytes=0
        await outbox.append([receipt(i) for i in range(10)])
    small_disk.fill()
    with pytest.raises(OutboxDiskFull) as refused:
        async with Outbox(path, "gw-d", FROM_ZERO):
            pytest.fail("opened")
    assert refused.value.advice() == (
        f"{path}: the disk is full: cannot open the outbox. Free some space on that disk,"
        " then start again"
    )
    small_disk.free()
    async with Outbox(path, "gw-d", FROM_ZERO) as outbox:
        assert outbox.last_seq == 10


async def test_the_handheld_api_answers_503_on_a_full_disk_and_422_for_bad_text(
    small_disk: SmallDisk,
) -> None:
    port = free_port()
    body = {"location": "DOCK-1", "gtin": GTIN, "quantity": 1}
    async with (
        Outbox(small_disk.root / "data" / "o.db", "gw-d", SMALL_RESERVE) as outbox,
        asyncio.TaskGroup() as tasks,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        api = HandheldApi(outbox, LatestWeights(), "gw-d", store_timeout_s=0.5)
        server = tasks.create_task(serve_handheld_api(f"127.0.0.1:{port}", api), name="api")

        async def post(key: str, content: bytes | None = None) -> httpx.Response:
            return await http.post("/api/v1/receive", headers={"Idempotency-Key": key},
                                   content=content or json.dumps(body).encode())  # fmt: skip

        async with asyncio.timeout(10):
            while True:
                try:
                    first = await post("r-0")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert first.status_code == 201
        surrogate = await post("r-x", b'{"location": "DOCK-\\udcff", "gtin": "%s", "quantity": 1}'
                               % GTIN.encode())  # fmt: skip
        assert surrogate.status_code == 422

        await until_sqlite_is_full(outbox, small_disk)
        refused = await post("r-1")
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        assert "the disk is full" in refused.json()["detail"]
        assert outbox.find_request("r-1") is None  # not stored at all

        small_disk.free()
        outbox.set_pressure(outbox.housekeeping())
        retried = await post("r-1")  # the clerk's app retries with the same key
        assert retried.status_code == 201, retried.text
        assert (await post("r-1")).json()["replayed"] is True
        server.cancel()


# ------------------------------------------------- a gateway process, for real


@pytest.fixture
def bigger_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    yield from mounted(tmp_path / "disk", "32m")  # the gateway's reserve is 8 MiB


@pytest.fixture
async def stopped_at_the_end(
    bigger_disk: SmallDisk,
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()


async def test_a_gateway_keeps_running_through_a_full_disk_and_drains_after(
    hub: HubProcess,
    mqtt_prefix: str,
    bigger_disk: SmallDisk,
    stopped_at_the_end: list[asyncio.subprocess.Process],
) -> None:
    api_port, metrics_port = free_port(), free_port()
    config = write_site_config(
        bigger_disk.root, site="site-f", gateway="gw-f", handheld_api=f"127.0.0.1:{api_port}",
        metrics=f"127.0.0.1:{metrics_port}", stats_interval_s=1.0,
    )  # fmt: skip
    env = os.environ | {
        "WARELINK_MQTT_URL": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "WARELINK_MQTT_PREFIX": mqtt_prefix,
    }
    log_path = bigger_disk.root.parent / "gateway.log"  # not on the disk that fills up
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - opened once, before start
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelink.edge.cli", "edge", "run", "--config", str(config),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    stopped_at_the_end.append(gateway)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
    stored: set[str] = set()

    async def receive(key: str) -> httpx.Response:
        response = await http.post(
            "/api/v1/receive", headers={"Idempotency-Key": key},
            json={"location": "DOCK-1", "gtin": GTIN, "quantity": 1, "device": "pda-1"},
        )  # fmt: skip
        if response.status_code in (200, 201):
            stored.add(key)
        return response

    async def metric(name: str) -> float:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        prefix = f'warelink_edge_{name}{{gateway="gw-f"}} '
        (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(line.removeprefix(prefix))

    async def drained() -> None:
        async with asyncio.timeout(30):
            while True:
                status = (await http.get("/api/v1/status")).json()
                rows = {row["id"]: row for row in await hub.get("/api/v1/gateways")}
                hub_acked = rows.get("gw-f", {}).get("acked_seq")
                if status["acked_seq"] == status["last_seq"] == hub_acked:
                    return
                await asyncio.sleep(0.2)

    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    first = await receive("r-0")
                    break
                except httpx.TransportError:
                    assert gateway.returncode is None, log_path.read_text()
                    await asyncio.sleep(0.1)
        assert first.status_code == 201
        for n in range(1, 5):
            assert (await receive(f"r-{n}")).status_code == 201
        await drained()

        # The disk fills up (another process's logs, say) and stays full.
        refused = None
        for n in range(5, 40):
            bigger_disk.fill()
            response = await receive(f"r-{n}")
            if response.status_code == 503:
                refused = f"r-{n}"
                assert response.headers["Retry-After"] == "5"
                break
            assert response.status_code == 201, response.text
        assert refused is not None, "the disk never filled up"
        assert await metric("disk_full") == 1.0
        assert await metric("outbox_pressure") == 3.0
        status = await asyncio.to_thread(
            warelink, "edge", "status", "--json", "--config", str(config)
        )
        assert status.returncode == 0 and json.loads(status.stdout)["disk_free_mb"] < 1
        await asyncio.sleep(1.5)  # housekeeping, stats, acks: all on a full disk
        assert gateway.returncode is None, log_path.read_text()

        bigger_disk.free()
        async with asyncio.timeout(15):
            while (response := await receive(refused)).status_code == 503:
                await asyncio.sleep(0.5)
        assert response.status_code == 201, response.text
        assert (await receive("r-after")).status_code == 201
        await drained()
        async with asyncio.timeout(5):  # the next housekeeping ticks see the room
            while await metric("disk_full") != 0.0:
                await asyncio.sleep(0.2)
        assert await metric("outbox_pressure") == 0.0
        stock = await hub.get("/api/v1/sites/site-f/stock")
    finally:
        await http.aclose()
    assert sum(Decimal(line["quantity"]) for line in stock["lines"]) == len(stored)  # each once
    gateway.terminate()
    assert await asyncio.wait_for(gateway.wait(), 15) == 0
    log_text = log_path.read_text()
    assert "outbox.disk_full" in log_text and "outbox.disk_recovered" in log_text
    assert "Traceback" not in log_text
