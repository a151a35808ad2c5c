"""One gateway: its outbox, drivers, command router and uplink, in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog

from warelink.edge.commands import CommandRouter
from warelink.edge.config import ConfigError, SiteConfig
from warelink.edge.drivers.base import DeviceConflict, DriverContext
from warelink.edge.drivers.ble import hci_backend
from warelink.edge.drivers.modbus import ModbusBuses
from warelink.edge.drivers.registry import build_driver
from warelink.edge.handheld import HandheldApi, LatestWeights, serve_handheld_api
from warelink.edge.metrics import serve_metrics
from warelink.edge.outbox import Outbox, OutboxPolicy, Pressure
from warelink.edge.settings import EdgeSettings
from warelink.edge.uplink import Uplink

log = structlog.get_logger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
HOUSEKEEPING_S = 1.0


class Gateway:
    """Runs until cancelled."""

    def __init__(self, config: SiteConfig, settings: EdgeSettings) -> None:
        self.config = config
        self.settings = settings
        gw = config.gateway
        self.log = log.bind(gateway=gw.id, site=gw.site)
        self.outbox = Outbox(
            gw.data_dir / OUTBOX_FILE,
            gw.id,
            OutboxPolicy(
                retention_s=gw.retention_s,
                telemetry_budget=gw.telemetry_budget,
                disk_budget_bytes=int(gw.disk_budget_mb * 1024 * 1024),
                synchronous=gw.synchronous,
            ),
        )
        self.weights = LatestWeights()  # for the handhelds' verify
        try:
            self.ble = hci_backend(gw.ble)  # opened on first use, by the BLE drivers
        except ModuleNotFoundError as exc:
            raise ConfigError(f"gateway.ble: {exc}") from None
        # What every driver gets: where to emit, where to keep files, the shared buses.
        context = DriverContext(
            emit=self.weights.wrap(self.outbox.add),
            data_dir=gw.data_dir,
            modbus_buses=ModbusBuses(),
            ble=self.ble,
        )
        try:
            self.drivers = {device.id: build_driver(device, context) for device in config.devices}
        except DeviceConflict as exc:  # e.g. two devices disagree about one bus's settings
            raise ConfigError(f"devices: {exc}") from None
        self.router = CommandRouter(self.outbox, self.drivers)
        self.uplink = Uplink(
            gw,
            settings,
            self.outbox,
            devices=list(self.drivers),
            on_command=self.router.submit,
            counters=lambda: asyncio.to_thread(self.counters),
        )

    async def run(self) -> None:
        gw = self.config.gateway
        async with (
            self.outbox,
            self.router.running(),
            contextlib.AsyncExitStack() as stack,
            asyncio.TaskGroup() as tasks,
        ):
            if self.ble is not None:
                stack.push_async_callback(self.ble.aclose)
            self.log.info(
                "gateway.started", devices=len(self.drivers), last_seq=self.outbox.last_seq
            )
            tasks.create_task(self.uplink.run(), name=f"uplink-{gw.id}")
            tasks.create_task(self._housekeeping(), name=f"housekeeping-{gw.id}")
            if gw.handheld_api:
                api = HandheldApi(self.outbox, self.weights, gw.id)
                tasks.create_task(
                    serve_handheld_api(gw.handheld_api, api), name=f"handheld-{gw.id}"
                )
            if gw.metrics:
                tasks.create_task(
                    serve_metrics(gw.metrics, gw.id, self.counters), name=f"metrics-{gw.id}"
                )
            for device_id, driver in self.drivers.items():
                tasks.create_task(driver.run(), name=f"driver-{device_id}")

    async def _housekeeping(self) -> None:
        """Retention, budgets, the disk alarm and the state file: logged when the state changes.

        Every step survives a full disk (the outbox keeps what it cannot write in memory).
        """
        pressure = Pressure.OK
        while True:
            now = await asyncio.to_thread(self.outbox.housekeeping)
            self.outbox.set_pressure(now)
            counters = await asyncio.to_thread(self.counters)
            await asyncio.to_thread(self.outbox.save_counters, counters)
            if now is not pressure:
                level = self.log.warning if now is not Pressure.OK else self.log.info
                level(
                    "outbox.pressure",
                    pressure=now.value,
                    used_bytes=counters["outbox_used_bytes"],
                    budget_bytes=self.outbox.policy.disk_budget_bytes,
                    disk_free_mb=counters["disk_free_mb"],
                    depth=counters["outbox_depth"],
                    ledger_waiting=counters["ledger_waiting"],
                )
                pressure = now
            await asyncio.sleep(HOUSEKEEPING_S)

    def counters(self) -> dict[str, float]:
        """Every counter of this gateway, flat: for the hub and /metrics (blocking read)."""
        status = self.outbox.status()
        uplink, router = self.uplink.stats, self.router.stats
        oldest = status.oldest_unacked_at
        return {
            "last_seq": status.last_seq,
            "acked_seq": status.acked_seq,
            "outbox_depth": status.depth,
            "outbox_depth_ledger": status.depth_ledger,
            "outbox_depth_telemetry": status.depth_telemetry,
            "outbox_retained": status.retained,
            "oldest_unacked_age_s": 0.0 if oldest is None else round(time.time() - oldest, 3),
            "dropped_ledger": 0,  # by design: ledger events wait, they are never dropped
            "dropped_telemetry": status.dropped_telemetry,
            "outbox_used_bytes": status.used_bytes,
            "outbox_budget_bytes": self.outbox.policy.disk_budget_bytes,
            # 0 ok, 1 alarm (80 % of the budget), 2 full (the budget), 3 disk_full (the disk)
            "outbox_pressure": list(Pressure).index(self.outbox.pressure),
            "disk_full": int(self.outbox.disk_full),
            "disk_free_mb": round(self.outbox.disk_free_bytes() / (1 << 20), 1),
            "ledger_waiting": self.outbox.waiting,  # held for lack of disk space
            "connected": int(uplink.connected),
            "hub_online": int(uplink.hub_online),
            "batches_sent": uplink.batches_sent,
            "events_sent": uplink.events_sent,
            "events_resent": uplink.events_resent,
            "acks_received": uplink.acks_received,
            "ack_timeouts": uplink.ack_timeouts,
            "replays_answered": uplink.replays_answered,
            "bad_messages": uplink.bad_messages,
            "commands_received": router.received,
            "commands_duplicate": router.duplicates,
            "commands_expired": router.expired,
            "commands_done": router.done,
            "commands_failed": router.failed,
            "commands_rejected": router.rejected,
        }


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[Gateway]:
    """Run a gateway in the background of a block (for tests and the demo)."""
    task = asyncio.create_task(gateway.run(), name=f"gateway-{gateway.config.gateway.id}")
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
