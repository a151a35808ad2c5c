"""The delivery rules of a gateway's event stream, free of I/O.

Every batch *covers* a contiguous range of sequence numbers ``[first_seq, last_seq]``:
the events it carries, plus any seq in the range the edge dropped on purpose (telemetry
over its budget). The hub keeps, per gateway, the ack watermark (everything up to it is
committed or known dropped) and the covered ranges above it that arrived early. A range
that starts past ``watermark + 1`` reveals a gap, which the hub asks the edge to replay.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CoverageChange:
    """What covering one range did."""

    watermark: int  # the ack watermark after it
    gap: tuple[int, int] | None  # a missing range below the covered one, to replay
    filled: bool  # it closed a gap that had been open


@dataclass
class Coverage:
    """One gateway's stream as the hub sees it."""

    watermark: int = 0
    early: list[tuple[int, int]] = field(default_factory=list)  # sorted, disjoint, > wm + 1

    def cover(self, first: int, last: int) -> CoverageChange:
        if first < 1 or last < first:
            raise ValueError(f"not a range of sequence numbers: [{first}, {last}]")
        had_gap = bool(self.early)
        if last > self.watermark:
            self._insert(max(first, self.watermark + 1), last)
        while self.early and self.early[0][0] <= self.watermark + 1:
            self.watermark = max(self.watermark, self.early.pop(0)[1])
        return CoverageChange(self.watermark, self.gap, had_gap and not self.early)

    def _insert(self, first: int, last: int) -> None:
        at = bisect.bisect_left(self.early, (first, last))
        self.early.insert(at, (first, last))
        merged: list[tuple[int, int]] = []
        for lo, hi in self.early:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.early = merged

    @property
    def gap(self) -> tuple[int, int] | None:
        """The lowest missing range, if any arrived early."""
        return (self.watermark + 1, self.early[0][0] - 1) if self.early else None
