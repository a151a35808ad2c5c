"""The ZPL printer driver against the simulated printer over real TCP."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.drivers.base import CommandFailed, CommandRejected
from warelink.edge.drivers.zpl_printer import NO_STATUS, ZplPrinterConfig, ZplPrinterDriver
from warelink.protocol.gs1 import check_digit
from warelink.protocol.messages import (
    DeviceState,
    EventBody,
    PrinterState,
    TrafficClass,
)
from warelink.sim.zpl_printer import SimulatedZplPrinter

DEVICE = "printer-1"


class Collector(EmitCollector):
    """The shared collector for a printer: telemetry only, and its printer states."""

    async def __call__(
        self,
        device: str,
        cls: TrafficClass,
        body: EventBody,
        occurred_at: dt.datetime | None = None,
    ) -> None:
        assert cls is TrafficClass.TELEMETRY
        await super().__call__(device, cls, body, occurred_at)

    def printer(self) -> list[PrinterState]:
        return self.bodies(PrinterState)

    def last_faults(self) -> list[str] | None:
        states = self.printer()
        return states[-1].faults if states else None


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


def config(port: int, tmp_path: Path) -> ZplPrinterConfig:
    return ZplPrinterConfig(
        kind="zpl_printer",
        id=DEVICE,
        host="127.0.0.1",
        port=port,
        status_interval_s=0.1,
        status_timeout_s=0.3,
        print_timeout_s=2.0,
        state_dir=tmp_path / "state",
    )


def sscc(serial: int) -> str:
    body = f"3761234500{serial:07d}"
    return body + str(check_digit(body))


def print_args(key: str, serial: int = 1) -> dict[str, Any]:
    return {
        "key": key,
        "sscc": sscc(serial),
        "gtin": "09506000134352",
        "quantity": 40,
        "lot": "LOT-7",
        "expiry": "2027-03-31",
        "ship_to": "ACME DC\nDock 2",
        "ship_from": "Warelink Nord",
    }


async def test_prints_a_label_once_per_key_across_restarts(tmp_path: Path) -> None:
    out = Collector()
    async with SimulatedZplPrinter(random.Random(1)) as printer:
        driver = ZplPrinterDriver(config(printer.port, tmp_path), out)
        async with running(driver):
            await eventually(
                lambda: out.printer() == [PrinterState(ready=True, labels_remaining=0)]
            )
            assert out.states() == [DeviceState.ONLINE]
            assert await driver.execute("status", {}) == "ready; 0 formats, 0 labels queued"

            detail = await driver.execute("print_sscc_label", print_args("cmd-1"))
            assert detail == f"printed SSCC {sscc(1)}"
            assert [(p.sscc, p.job_key) for p in printer.printed] == [(sscc(1), "cmd-1")]
            content = printer.printed[0].content
            assert content is not None
            assert content.barcodes[0] == "0209506000134352172703313740\x1d10LOT-7"

            # The same key again (the hub resent the command): the earlier result.
            assert await driver.execute("print_sscc_label", print_args("cmd-1")) == detail
            assert printer.print_count == 1
            # The same key with another label is a bug upstream, not a reprint.
            with pytest.raises(CommandRejected, match="different label"):
                await driver.execute("print_sscc_label", print_args("cmd-1", serial=2))

        # A gateway restart: a new driver over the same journal.
        later = Collector()
        restarted = ZplPrinterDriver(config(printer.port, tmp_path), later)
        async with running(restarted):
            # Known keys are answered from the journal, connected or not.
            assert await restarted.execute("print_sscc_label", print_args("cmd-1")) == detail
            await eventually(lambda: later.last_faults() == [])
            assert await restarted.execute("print_sscc_label", print_args("cmd-2", 2)) == (
                f"printed SSCC {sscc(2)}"
            )
        assert printer.print_count == 2
        assert [p.sscc for p in printer.printed] == [sscc(1), sscc(2)]


async def test_connection_dropped_mid_job_never_doubles_it(tmp_path: Path) -> None:
    out = Collector()
    async with SimulatedZplPrinter(random.Random(2)) as printer:
        driver = ZplPrinterDriver(config(printer.port, tmp_path), out)
        async with running(driver):
            await eventually(lambda: out.printer() != [])
            printer.drop_after_next_format = True  # it prints, the answer never comes
            with pytest.raises(CommandFailed, match="not confirmed") as first:
                await driver.execute("print_sscc_label", print_args("cmd-9"))
            await eventually(lambda: printer.print_count == 1)
            await eventually(
                lambda: (
                    out.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
                )
            )
            # The retry after the reconnect does not send it again, and says why.
            with pytest.raises(CommandFailed) as again:
                await driver.execute("print_sscc_label", print_args("cmd-9"))
            assert str(again.value) == str(first.value)
        later = Collector()
        restarted = ZplPrinterDriver(config(printer.port, tmp_path), later)
        async with running(restarted):
            await eventually(lambda: later.last_faults() == [])
            with pytest.raises(CommandFailed, match="not confirmed"):
                await restarted.execute("print_sscc_label", print_args("cmd-9"))
            # A reprint is a new command with a new key.
            await restarted.execute("print_sscc_label", print_args("cmd-10"))
        assert printer.print_count == 2
        assert [p.job_key for p in printer.printed] == ["cmd-9", "cmd-10"]


async def test_paper_out_is_reported_and_refuses_printing(tmp_path: Path) -> None:
    out = Collector()
    async with SimulatedZplPrinter(random.Random(3), quiet_faults=frozenset()) as printer:
        driver = ZplPrinterDriver(config(printer.port, tmp_path), out)
        async with running(driver):
            await eventually(lambda: out.last_faults() == [])
            printer.set_fault("paper_out")
            await eventually(lambda: out.last_faults() == ["paper_out"])
            assert out.printer()[-1].ready is False
            with pytest.raises(CommandFailed, match="not ready: paper_out"):
                await driver.execute("print_sscc_label", print_args("cmd-3"))
            assert printer.formats_received == 0
            assert (await driver.execute("status", {})).startswith("fault: paper_out")

            printer.set_fault("paper_out", False)
            await eventually(lambda: out.last_faults() == [])
            # Refused means never sent: the same command may run once the paper is in.
            await driver.execute("print_sscc_label", print_args("cmd-3"))
            assert printer.print_count == 1
        assert out.states() == [DeviceState.ONLINE]
        assert [s.faults for s in out.printer()] == [[], ["paper_out"], []]


async def test_silent_printer_is_a_fault_not_offline(tmp_path: Path) -> None:
    out = Collector()
    async with SimulatedZplPrinter(random.Random(4)) as printer:  # newer firmware
        driver = ZplPrinterDriver(config(printer.port, tmp_path), out)
        async with running(driver):
            await eventually(lambda: out.last_faults() == [])
            printer.set_fault("head_open")
            await eventually(lambda: out.last_faults() == [NO_STATUS])
            with pytest.raises(CommandFailed, match=NO_STATUS):
                await driver.execute("print_sscc_label", print_args("cmd-4"))
            await asyncio.sleep(0.5)  # several more polls time out: reported once
            assert [s.faults for s in out.printer()] == [[], [NO_STATUS]]
            assert out.states() == [DeviceState.ONLINE]
            printer.set_fault("head_open", False)
            await eventually(lambda: out.last_faults() == [])
        assert out.states() == [DeviceState.ONLINE]
        assert printer.formats_received == 0


async def test_dropped_connection_offline_once_then_online(tmp_path: Path) -> None:
    out = Collector()
    first = SimulatedZplPrinter(random.Random(5))
    await first.__aenter__()
    port = first.port
    with capture_logs() as logs:
        driver = ZplPrinterDriver(config(port, tmp_path), out)
        async with running(driver):
            try:
                await eventually(lambda: out.states() == [DeviceState.ONLINE])
                first.drop_connections()
                await eventually(
                    lambda: (
                        out.states()
                        == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
                    )
                )
                await eventually(lambda: len(out.printer()) == 2)  # state afresh after it
                assert first.connections == 2
            finally:
                await first.__aexit__(None, None, None)

            # Now the printer is gone for a while: one OFFLINE however many retries.
            await eventually(lambda: out.states()[-1] is DeviceState.OFFLINE)
            with pytest.raises(CommandFailed, match="offline"):
                await driver.execute("print_sscc_label", print_args("cmd-5"))
            assert await driver.execute("status", {}) == "offline"
            await asyncio.sleep(0.8)
            async with SimulatedZplPrinter(random.Random(6), port=port) as second:
                await eventually(lambda: out.states()[-1] is DeviceState.ONLINE)
                await driver.execute("print_sscc_label", print_args("cmd-5"))
                assert second.print_count == 1
    assert out.states() == [DeviceState.ONLINE, DeviceState.OFFLINE] * 2 + [DeviceState.ONLINE]
    offline = [e for e in logs if e["event"] == "zpl.offline"]
    assert len(offline) == 2 and all(e["device"] == DEVICE for e in offline)


async def test_bad_commands_are_rejected(tmp_path: Path) -> None:
    driver = ZplPrinterDriver(config(9, tmp_path), Collector())
    with pytest.raises(CommandRejected, match="key"):
        await driver.execute(
            "print_sscc_label", {k: v for k, v in print_args("x").items() if k != "key"}
        )
    with pytest.raises(CommandRejected, match="check digit"):
        await driver.execute("print_sscc_label", {**print_args("x"), "sscc": "376123450000000010"})
    with pytest.raises(CommandRejected, match="unknown arguments"):
        await driver.execute("print_sscc_label", {**print_args("x"), "colour": "red"})
    with pytest.raises(CommandRejected, match="not 'cut'"):
        await driver.execute("cut", {})
    with pytest.raises(ValueError, match="state_dir"):
        ZplPrinterDriver(config(9, tmp_path).model_copy(update={"state_dir": None}), Collector())
