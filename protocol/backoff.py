"""The reconnect policy every part uses: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.2
    cap: float = 10.0
    _attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * 2**self._attempt)
        self._attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset: 0 means the last try succeeded."""
        return self._attempt
