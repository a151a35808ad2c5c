"""What a barcode scan stands for, the same for every kind of scanner (serial, BLE)."""

from __future__ import annotations

from warelink.protocol.gs1 import Gs1Scan
from warelink.protocol.messages import Receipt, Scan


def scan_to_event(scan: Gs1Scan, *, purpose: str, location: str | None) -> Receipt | Scan:
    """The event a scan stands for: on a receiving dock a GS1 label naming a trade item
    (GTIN in AI 01 or 02) with a count other than 0 is a ``Receipt`` of that count (1 if
    none) at ``location``; anything else is a ``Scan``. The serial line scanner's rule."""
    gtin = scan.gtin or scan.content_gtin
    if purpose == "receive" and gtin and scan.count != 0:
        if location is None:
            raise ValueError("a receiving scanner needs a location")
        return Receipt(
            location=location,
            gtin=gtin,
            quantity=1 if scan.count is None else scan.count,
            lot=scan.lot,
            expiry=scan.expiry,
            sscc=scan.sscc,
            serial=scan.serial,
        )
    return Scan(raw=scan.raw, symbology=scan.symbology, elements=dict(scan.elements))
