"""The simulated line scanner, read through a real pty by plain pyserial and os.read."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
from pathlib import Path

import serial

from warelink.protocol.gs1 import GS, Gs1Scan, LineDecoder, Malformed, is_valid_check_digit
from warelink.sim.scanner import CATALOG, SimulatedLineScanner, make_receipt_label

TODAY = dt.date(2026, 3, 14)


def _read_line(port: serial.Serial) -> bytes:
    return bytes(port.read_until(b"\r\n"))


async def test_scan_arrives_as_one_crlf_terminated_line(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with SimulatedLineScanner(link) as scanner:
        with serial.Serial(str(link), timeout=2) as port:
            text = await scanner.scan([("01", "09506000134352"), ("10", "L2611A"), ("37", "12")])
            line = await asyncio.to_thread(_read_line, port)
    assert text == f"]C1010950600013435210L2611A{GS}3712"
    assert line == text.encode() + b"\r\n"
    assert not link.exists() and not link.is_symlink()


async def test_scan_raw_and_symbology_override(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with SimulatedLineScanner(link, symbology="]d2", terminator=b"\n") as scanner:
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        try:
            await scanner.scan_raw("PLAIN-42")
            await scanner.scan({"00": "106141411234567897"})
            await scanner.scan({"01": "09506000134352"}, symbology="]Q3")
            data = b""
            while data.count(b"\n") < 3:
                data += await asyncio.to_thread(os.read, fd, 1024)
        finally:
            os.close(fd)
    assert data == b"PLAIN-42\n]d200106141411234567897\n]Q30109506000134352\n"


def test_receipt_labels_are_deterministic_and_valid() -> None:
    first = [make_receipt_label(random.Random(7), today=TODAY) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng = random.Random(7)
    labels = [make_receipt_label(rng, today=TODAY) for _ in range(200)]
    assert labels[0] == first[0]
    assert any(label.expiry_day_zero for label in labels)
    for label in labels:
        assert label.gtin in CATALOG
        assert is_valid_check_digit(label.gtin) and len(label.gtin) == 14
        assert is_valid_check_digit(label.sscc) and len(label.sscc) == 18
        assert label.lot.startswith("L26") and len(label.lot) == 6
        assert TODAY < label.expiry <= TODAY + dt.timedelta(days=761)
        assert label.count >= 1


async def test_labels_and_garbage_through_the_pty(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with SimulatedLineScanner(link, seed=3) as scanner:
        with serial.Serial(str(link), timeout=0.2) as port:
            label = await scanner.scan_receipt(today=TODAY)
            garbage = await scanner.inject_garbage(300)
            second = await scanner.scan_receipt(today=TODAY)
            data = b""
            while True:
                chunk = await asyncio.to_thread(port.read, 4096)
                if not chunk:
                    break
                data += chunk
    assert garbage in data
    items = LineDecoder(reference_year=2026).feed(data)
    scans = [item for item in items if isinstance(item, Gs1Scan)]
    assert len(scans) == 2
    assert all(isinstance(item, Malformed) for item in items[1:-1])
    for scan, lbl in zip(scans, (label, second), strict=True):
        assert scan.content_gtin == lbl.gtin
        assert scan.sscc == lbl.sscc
        assert scan.lot == lbl.lot
        assert scan.expiry == lbl.expiry
        assert scan.count == lbl.count


async def test_unterminated_garbage_swallows_the_next_scan(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with SimulatedLineScanner(link, seed=5) as scanner:
        with serial.Serial(str(link), timeout=0.2) as port:
            await scanner.inject_garbage(50, terminate=False)
            await scanner.scan_receipt(today=TODAY)
            await scanner.scan_raw("AFTER")
            data = b""
            while chunk := await asyncio.to_thread(port.read, 4096):
                data += chunk
    items = LineDecoder().feed(data)
    assert isinstance(items[-1], Gs1Scan) and items[-1].raw == "AFTER"
    assert not any(isinstance(item, Gs1Scan) and item.is_gs1 for item in items)


async def test_reopen_at_the_same_path(tmp_path: Path) -> None:
    link = tmp_path / "scanner"
    async with SimulatedLineScanner(link):
        assert os.readlink(link).startswith("/dev/pts/")
    assert not link.is_symlink()
    async with SimulatedLineScanner(link) as scanner:
        assert link.is_symlink()
        with serial.Serial(str(link), timeout=2) as port:
            await scanner.scan_raw("X")
            assert await asyncio.to_thread(_read_line, port) == b"X\r\n"
