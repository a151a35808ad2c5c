"""When the hub asks a gateway to replay a gap in its stream, free of I/O.

A gap that two hubs' commits opened, or that a gateway is draining anyway (live events
sent ahead of a backlog), closes on its own; a request then would only make the gateway
send things twice. So a gap is asked for only once its gateway's watermark has not moved
for ``after_s``, then again at doubling intervals (``after_s`` × 2, × 4, …) at most
``again_max_s`` apart, for as long as it stays open; the count starts over whenever the
watermark moves. A closed gap is forgotten.

The caller tells the timer each gateway's watermark and lowest gap after every commit
(``observe``) and asks what is due (``due``), with the time as a number (any monotonic
origin, in seconds); nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

REPLAY_AFTER_S: Final = 2.0  # a gap that has not moved for this long is asked for
REPLAY_AGAIN_MAX_S: Final = 10.0  # asked again with doubling intervals, at most this far apart


@dataclass
class OpenGap:
    """A gateway's lowest missing range, open since its watermark last moved."""

    site: str
    first: int
    last: int
    watermark: int
    since: float  # when the watermark last moved
    asked_at: float = -math.inf
    asks: int = 0  # requests sent for this gap (their interval doubles)


@dataclass(frozen=True, slots=True)
class DueReplay:
    """Ask ``gateway`` (of ``site``) for ``[first, last]`` now; ``ask`` counts from 1."""

    gateway: str
    site: str
    first: int
    last: int
    ask: int


class ReplayTimer:
    """The open gaps of every gateway one hub ingests, and when to ask for each."""

    def __init__(
        self, *, after_s: float = REPLAY_AFTER_S, again_max_s: float = REPLAY_AGAIN_MAX_S
    ) -> None:
        if not 0 < after_s <= again_max_s:
            raise ValueError("need 0 < after_s <= again_max_s")
        self.after_s = after_s
        self.again_max_s = again_max_s
        self._gaps: dict[str, OpenGap] = {}

    @property
    def gaps(self) -> dict[str, OpenGap]:
        """The open gaps by gateway (a copy)."""
        return dict(self._gaps)

    def observe(
        self,
        gateway: str,
        site: str,
        *,
        watermark: int,
        gap: tuple[int, int] | None,
        now: float,
    ) -> OpenGap | None:
        """``gateway``'s watermark and lowest gap after a commit; returns the gap it
        forgets because it closed, if one was open."""
        known = self._gaps.get(gateway)
        if gap is None:
            return self._gaps.pop(gateway, None)
        first, last = gap
        if known is None or known.watermark != watermark:
            self._gaps[gateway] = OpenGap(site, first, last, watermark, since=now)
        else:
            known.first, known.last = first, last
        return None

    def interval(self, asks: int) -> float:
        """How long after an ask the next one is due, ``asks`` having been sent."""
        # The exponent capped: a gap open for hours must not overflow a float.
        return min(self.after_s * 2.0 ** min(asks, 64), self.again_max_s)

    def due(self, now: float) -> list[DueReplay]:
        """The requests to send now, counted as sent."""
        out: list[DueReplay] = []
        for gateway, gap in self._gaps.items():
            if now - gap.since < self.after_s or now - gap.asked_at < self.interval(gap.asks):
                continue
            gap.asked_at = now
            gap.asks += 1
            out.append(DueReplay(gateway, gap.site, gap.first, gap.last, gap.asks))
        return out
