"""RFID read smoothing: raw reads in, Arrived / Moved / Departed per zone out.

Reads are observations, not movements: a tag in a portal is seen tens of times a second,
by more than one antenna, with noisy RSSI. Each antenna belongs to a zone. For each tag:

- **Arrived** at the zone of its first read, or of its first read after it departed.
- **Moved** to another zone once that zone has at least ``min_reads`` recent reads of the
  tag and their moving-average RSSI is above the current zone's by more than
  ``rssi_offset_db`` (when the current zone has no recent read, the count alone decides;
  reads without an RSSI count but do not average).
- **Departed** from its zone when it has not been read for ``departed_after_s``; found by
  ``tick(now)``, or by the next read if no tick came in between.

"Recent" means within ``departed_after_s``, at most the last ``window`` reads per zone.
Pure: the caller passes the time (seconds, any monotonic origin) on every call. Reads
from antennas no zone lists are ignored.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from warelink.protocol.messages import ZoneChange, ZoneTransition


@dataclass
class _Track:
    zone: str
    last_seen: float
    decoded: dict[str, str]
    reads: dict[str, deque[tuple[float, float | None]]] = field(default_factory=dict)


class ZoneSmoother:
    def __init__(
        self,
        antennas: Mapping[int, str],
        *,
        min_reads: int = 2,
        rssi_offset_db: float = 3.0,
        departed_after_s: float = 5.0,
        window: int = 5,
    ) -> None:
        if min_reads < 1 or window < min_reads:
            raise ValueError("need 1 <= min_reads <= window")
        if departed_after_s <= 0:
            raise ValueError("departed_after_s must be positive")
        self.antennas = dict(antennas)
        self.min_reads = min_reads
        self.rssi_offset_db = rssi_offset_db
        self.departed_after_s = departed_after_s
        self.window = window
        self._tracks: dict[str, _Track] = {}

    def zone_of(self, antenna: int) -> str | None:
        return self.antennas.get(antenna)

    def where(self, epc: str) -> str | None:
        """The zone a tag is in now, ``None`` if it is not present."""
        track = self._tracks.get(epc)
        return None if track is None else track.zone

    @property
    def present(self) -> int:
        return len(self._tracks)

    def read(
        self,
        epc: str,
        antenna: int,
        rssi: float | None,
        now: float,
        decoded: Mapping[str, str] | None = None,
    ) -> list[ZoneTransition]:
        """One read of ``epc`` at ``antenna``; the transitions it causes."""
        zone = self.antennas.get(antenna)
        if zone is None:
            return []
        out: list[ZoneTransition] = []
        track = self._tracks.get(epc)
        if track is not None and now - track.last_seen >= self.departed_after_s:
            out.append(self._depart(epc, track))
            track = None
        if track is None:
            track = _Track(zone=zone, last_seen=now, decoded=dict(decoded or {}))
            self._tracks[epc] = track
            out.append(ZoneTransition(epc, ZoneChange.ARRIVED, zone, decoded=track.decoded))
        track.last_seen = max(track.last_seen, now)
        reads = track.reads.setdefault(zone, deque(maxlen=self.window))
        reads.append((now, rssi))
        if zone != track.zone and self._wins(track, zone, now):
            previous, track.zone = track.zone, zone
            out.append(
                ZoneTransition(
                    epc, ZoneChange.MOVED, zone, previous_zone=previous, decoded=track.decoded
                )
            )
        return out

    def tick(self, now: float) -> list[ZoneTransition]:
        """Departures of tags not read for ``departed_after_s`` up to ``now``."""
        gone = [
            epc
            for epc, track in self._tracks.items()
            if now - track.last_seen >= self.departed_after_s
        ]
        return [self._depart(epc, self._tracks[epc]) for epc in gone]

    def _depart(self, epc: str, track: _Track) -> ZoneTransition:
        del self._tracks[epc]
        return ZoneTransition(epc, ZoneChange.DEPARTED, track.zone, decoded=track.decoded)

    def _recent(self, track: _Track, zone: str, now: float) -> list[float | None]:
        reads = track.reads.get(zone)
        if not reads:
            return []
        horizon = now - self.departed_after_s
        while reads and reads[0][0] <= horizon:
            reads.popleft()
        return [rssi for _, rssi in reads]

    def _wins(self, track: _Track, zone: str, now: float) -> bool:
        candidate = self._recent(track, zone, now)
        if len(candidate) < self.min_reads:
            return False
        current = self._recent(track, track.zone, now)
        if not current:
            return True
        return _average(candidate) > _average(current) + self.rssi_offset_db


def _average(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else -math.inf
