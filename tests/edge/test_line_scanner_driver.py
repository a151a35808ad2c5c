"""The line scanner driver against a simulated scanner on a real pty."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, Literal

from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.device_config import LineScannerConfig
from warelink.edge.drivers.base import Backoff
from warelink.edge.drivers.line_scanner import LineScannerDriver
from warelink.protocol.gs1 import LineDecoder, Malformed
from warelink.protocol.messages import (
    DeviceState,
    DeviceStatus,
    Receipt,
    Scan,
    TrafficClass,
)
from warelink.sim.scanner import SimulatedLineScanner

TODAY = dt.date(2026, 3, 14)
WAIT_S = 5.0


def _config(port: Path, purpose: Literal["scan", "receive"] = "receive") -> LineScannerConfig:
    return LineScannerConfig(
        kind="line_scanner",
        id="dock-1-scanner",
        port=str(port),
        purpose=purpose,
        location="DOCK-1" if purpose == "receive" else None,
    )


def _driver(link: Path, collector: EmitCollector, **kwargs: Any) -> LineScannerDriver:
    return LineScannerDriver(
        _config(link, **kwargs),
        collector,
        backoff=Backoff(initial=0.02, cap=0.1),
        garbage_quiet_s=0.3,
    )


async def test_receive_scanner_turns_a_gs1_128_label_into_a_receipt(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    async with SimulatedLineScanner(link, seed=11) as scanner, running(_driver(link, collector)):
        await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
        label = await scanner.scan_receipt(today=TODAY)
        await scanner.scan({"01": "09506000134352", "10": "L2611A", "17": "270500", "21": "SN1"})
        await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 2)
    first, second = collector.bodies(Receipt)
    assert first == Receipt(
        location="DOCK-1",
        gtin=label.gtin,
        quantity=label.count,
        lot=label.lot,
        expiry=label.expiry,
        sscc=label.sscc,
    )
    assert second == Receipt(
        location="DOCK-1",
        gtin="09506000134352",
        quantity=1,
        lot="L2611A",
        expiry=dt.date(2027, 5, 31),
        serial="SN1",
    )
    receipts = [(d, c) for d, c, b in collector.events if isinstance(b, Receipt)]
    assert receipts == [("dock-1-scanner", TrafficClass.LEDGER)] * 2
    statuses = [(d, c) for d, c, b in collector.events if isinstance(b, DeviceStatus)]
    assert statuses == [("dock-1-scanner", TrafficClass.TELEMETRY)]


async def test_scan_scanner_emits_scans(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    driver = _driver(link, collector, purpose="scan")
    async with SimulatedLineScanner(link, symbology="]d2") as scanner, running(driver):
        await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
        text = await scanner.scan({"00": "106141411234567897"})
        await scanner.scan_raw("]E05901234123457")
        await collector.wait_for(lambda: len(collector.bodies(Scan)) == 2)
    assert collector.bodies(Scan) == [
        Scan(raw=text, symbology="gs1-datamatrix", elements={"00": "106141411234567897"}),
        Scan(raw="]E05901234123457", symbology="ean-upc", elements={}),
    ]
    assert collector.bodies(Receipt) == []


async def test_garbage_mid_stream_is_logged_once_and_scanning_goes_on(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    with capture_logs() as logs:
        driver = _driver(link, collector)
        async with SimulatedLineScanner(link, seed=2) as scanner, running(driver):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
            await scanner.scan_receipt(today=TODAY)
            garbage = await scanner.inject_garbage(400)
            label = await scanner.scan_receipt(today=TODAY)
            await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 2)
    bad_lines = LineDecoder().feed(garbage)
    assert bad_lines and all(isinstance(item, Malformed) for item in bad_lines)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["count"] == len(bad_lines)
    assert warnings[0]["device"] == "dock-1-scanner"
    assert collector.bodies(Receipt)[1].sscc == label.sscc
    assert collector.bodies(Scan) == []


async def test_garbage_at_the_end_is_logged_after_a_quiet_spell(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    warned = asyncio.Event()

    def watch(logger: Any, method: str, event_dict: Any) -> Any:
        if method == "warning":
            warned.set()
        return event_dict

    with capture_logs(processors=[watch]) as logs:
        driver = _driver(link, collector)
        async with SimulatedLineScanner(link, seed=4) as scanner, running(driver):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
            await scanner.inject_garbage(100)
            await scanner.scan_raw("NOT-GS1")  # not usable on a receiving dock either
            async with asyncio.timeout(WAIT_S):
                await warned.wait()
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["count"] >= 2
    assert collector.bodies(Scan) == [Scan(raw="NOT-GS1", symbology="unknown")]


async def test_offline_once_then_online_again_at_the_same_path(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    with capture_logs() as logs:
        driver = _driver(link, collector)
        async with running(driver):
            async with SimulatedLineScanner(link, seed=1) as scanner:
                await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
                await scanner.scan_receipt(today=TODAY)
                await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 1)
            await collector.wait_for(lambda: len(collector.states()) == 2)
            await asyncio.sleep(0.5)  # several failed reconnects: still one OFFLINE
            assert collector.states() == [DeviceState.ONLINE, DeviceState.OFFLINE]
            async with SimulatedLineScanner(link, seed=9) as scanner:
                await collector.wait_for(lambda: len(collector.states()) == 3)
                label = await scanner.scan_receipt(today=TODAY)
                await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 2)
    assert collector.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    assert collector.bodies(Receipt)[1].sscc == label.sscc
    events = [(entry["log_level"], entry["event"]) for entry in logs]
    assert events == [
        ("info", "scanner.online"),
        ("warning", "scanner.offline"),
        ("info", "scanner.online"),
    ]


async def test_port_missing_at_start(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    collector = EmitCollector()
    async with running(_driver(link, collector)):
        await collector.wait_for(lambda: collector.states() == [DeviceState.OFFLINE])
        await asyncio.sleep(0.3)
        async with SimulatedLineScanner(link) as scanner:
            await collector.wait_for(lambda: len(collector.states()) == 2)
            await scanner.scan({"01": "09506000134352", "37": "3"})
            await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 1)
    assert collector.states() == [DeviceState.OFFLINE, DeviceState.ONLINE]
    assert collector.bodies(Receipt)[0].quantity == 3
    offline = collector.bodies(DeviceStatus)[0]
    assert "cannot open port" in offline.detail
