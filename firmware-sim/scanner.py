"""A serial line barcode scanner on a pty: one scan per line, ``<symbology id><data>\\r\\n``.

Scans are written when the scenario says so (``scan``, ``scan_raw``, ``scan_label``);
``inject_garbage`` writes line noise for fault injection. ``make_receipt_label`` draws a
realistic, deterministic pallet label (SSCC, GTIN of the contents, lot, expiry, count)
from a seeded ``random.Random``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from warelink.protocol.gs1 import check_digit, encode_element_string
from warelink.sim.pty import PtyEndpoint

# GTIN-14 payloads (indicator 1 = case, GS1 example company prefix 9506000) without their
# check digit; the catalog holds the full GTIN-14s.
_CATALOG_PAYLOADS = (
    "1950600013435",
    "1950600013436",
    "1950600021003",
    "1950600047150",
    "1950600077710",
    "1950600088812",
    "1950600099905",
    "1950600012345",
)
CATALOG: tuple[str, ...] = tuple(p + str(check_digit(p)) for p in _CATALOG_PAYLOADS)


@dataclass(frozen=True, slots=True)
class ReceiptLabel:
    """What a logistic (pallet) label says; ``elements`` is its GS1 element string."""

    sscc: str
    gtin: str
    lot: str
    expiry: dt.date
    count: int
    expiry_day_zero: bool = False  # encoded as YYMM00 (the last day of the month)

    def elements(self) -> list[tuple[str, str]]:
        day = "00" if self.expiry_day_zero else f"{self.expiry.day:02d}"
        return [
            ("00", self.sscc),
            ("02", self.gtin),
            ("37", str(self.count)),
            ("10", self.lot),
            ("17", f"{self.expiry:%y%m}{day}"),
        ]


def make_sscc(rng: random.Random, company_prefix: str = "9506000") -> str:
    """An SSCC: extension digit, company prefix, serial reference, check digit."""
    serial_width = 16 - len(company_prefix)
    data = (
        str(rng.randrange(10))
        + company_prefix
        + f"{rng.randrange(10**serial_width):0{serial_width}d}"
    )
    return data + str(check_digit(data))


def make_receipt_label(rng: random.Random, *, today: dt.date) -> ReceiptLabel:
    """A deterministic label for ``(rng state, today)``: GTIN from ``CATALOG``, a lot like
    ``L2611A``, an expiry 1–24 months ahead (one in five as day 00), a count of 1–480."""
    gtin = rng.choice(CATALOG)
    lot = f"L{today.year % 100:02d}{rng.randint(1, 52):02d}{rng.choice('ABCDEFGH')}"
    expiry = today + dt.timedelta(days=rng.randint(30, 730))
    day_zero = rng.random() < 0.2
    if day_zero:
        expiry = expiry.replace(day=calendar.monthrange(expiry.year, expiry.month)[1])
    return ReceiptLabel(
        sscc=make_sscc(rng),
        gtin=gtin,
        lot=lot,
        expiry=expiry,
        count=rng.choice((1, 6, 12, 24, 48, 96, 120, 240, 480)),
        expiry_day_zero=day_zero,
    )


class SimulatedLineScanner:
    """A line scanner whose serial port is a pty slave symlinked at ``link``.

    ``async with SimulatedLineScanner(path) as scanner: await scanner.scan({...})``. On
    exit the port disappears (symlink removed, pty closed), as when a scanner is unplugged.
    """

    def __init__(
        self,
        link: str | os.PathLike[str],
        *,
        seed: int = 0,
        symbology: str = "]C1",
        terminator: bytes = b"\r\n",
    ) -> None:
        self.link = Path(link)
        self.symbology = symbology
        self.terminator = terminator
        self.rng = random.Random(seed)
        self._pty = PtyEndpoint(self.link)

    async def __aenter__(self) -> Self:
        await self._pty.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pty.__aexit__(exc_type, exc, tb)

    async def scan(
        self,
        elements: Iterable[tuple[str, str]] | Mapping[str, str],
        *,
        symbology: str | None = None,
    ) -> str:
        """Send one GS1 scan (GS only where needed); returns the line's text."""
        text = encode_element_string(
            elements, symbology=self.symbology if symbology is None else symbology
        )
        await self.scan_raw(text)
        return text

    async def scan_label(self, label: ReceiptLabel) -> str:
        return await self.scan(label.elements())

    async def scan_receipt(self, *, today: dt.date | None = None) -> ReceiptLabel:
        """Draw a receipt label from this scanner's seeded generator and scan it."""
        label = make_receipt_label(self.rng, today=today or dt.date.today())
        await self.scan_label(label)
        return label

    async def scan_raw(self, text: str | bytes) -> None:
        """Send ``text`` as it is, followed by the terminator."""
        data = text.encode() if isinstance(text, str) else text
        await self._pty.write(data + self.terminator)

    async def inject_garbage(self, n: int, *, terminate: bool = True) -> bytes:
        """Write about ``n`` bytes of line noise: random bytes with line breaks and cut-off
        scans among them. Every line it makes holds a byte that is never valid UTF-8, so a
        reader sees only malformed lines; with ``terminate`` the noise ends with the
        terminator, else the next scan is glued to it (and lost, as on a real line).
        """
        noise = bytearray(b"\xff")
        while len(noise) < n:
            roll = self.rng.random()
            if roll < 0.05:
                noise += self.rng.choice((b"\r", b"\n", b"\r\n")) + b"\xff"
            elif roll < 0.08:
                label = make_receipt_label(self.rng, today=dt.date(2026, 1, 1))
                line = encode_element_string(label.elements(), symbology=self.symbology)
                noise += line.encode()[: self.rng.randint(1, len(line))] + b"\xff"
            else:
                byte = self.rng.randrange(256)
                noise += bytes([byte]) if byte not in (0x0A, 0x0D) else b"\xfe"
        data = bytes(noise) + (self.terminator if terminate else b"")
        await self._pty.write(data)
        return data
