"""The hub's replay timer, without a broker: when a gap is asked for, and again."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from warelink.protocol.replay import (
    REPLAY_AFTER_S,
    REPLAY_AGAIN_MAX_S,
    DueReplay,
    ReplayTimer,
)


def test_a_gap_is_asked_for_once_it_stood_still_then_at_doubling_intervals() -> None:
    timer = ReplayTimer()
    timer.observe("gw", "s1", watermark=10, gap=(11, 20), now=100.0)
    assert timer.due(100.0 + REPLAY_AFTER_S - 0.01) == []
    assert timer.due(100.0 + REPLAY_AFTER_S) == [DueReplay("gw", "s1", 11, 20, ask=1)]
    asked = [100.0 + REPLAY_AFTER_S]
    now = asked[0]
    while len(asked) < 6:
        now += 0.5
        asked += [now for _ in timer.due(now)]
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert gaps == [4.0, 8.0, REPLAY_AGAIN_MAX_S, REPLAY_AGAIN_MAX_S, REPLAY_AGAIN_MAX_S]


def test_a_moving_watermark_starts_the_wait_over() -> None:
    timer = ReplayTimer()
    timer.observe("gw", "s1", watermark=10, gap=(11, 20), now=0.0)
    assert len(timer.due(REPLAY_AFTER_S)) == 1
    timer.observe("gw", "s1", watermark=12, gap=(13, 20), now=3.0)  # it is filling
    assert timer.due(3.0 + REPLAY_AFTER_S - 0.01) == []
    assert timer.due(3.0 + REPLAY_AFTER_S) == [DueReplay("gw", "s1", 13, 20, ask=1)]


def test_a_gap_that_changes_shape_but_not_the_watermark_keeps_its_timer() -> None:
    timer = ReplayTimer()
    timer.observe("gw", "s1", watermark=10, gap=(11, 20), now=0.0)
    timer.observe("gw", "s1", watermark=10, gap=(11, 15), now=1.5)  # 16..20 came
    assert timer.due(REPLAY_AFTER_S) == [DueReplay("gw", "s1", 11, 15, ask=1)]


def test_a_closed_gap_is_forgotten_and_returned() -> None:
    timer = ReplayTimer()
    assert timer.observe("gw", "s1", watermark=10, gap=None, now=0.0) is None
    timer.observe("gw", "s1", watermark=10, gap=(11, 20), now=0.0)
    timer.due(REPLAY_AFTER_S)
    closed = timer.observe("gw", "s1", watermark=20, gap=None, now=3.0)
    assert closed is not None and (closed.first, closed.last, closed.asks) == (11, 20, 1)
    assert timer.gaps == {}
    assert timer.due(1000.0) == []


def test_gateways_are_timed_apart() -> None:
    timer = ReplayTimer()
    timer.observe("a", "s1", watermark=1, gap=(2, 3), now=0.0)
    timer.observe("b", "s2", watermark=5, gap=(6, 9), now=1.0)
    assert [d.gateway for d in timer.due(REPLAY_AFTER_S)] == ["a"]
    assert [d.gateway for d in timer.due(1.0 + REPLAY_AFTER_S)] == ["b"]


def test_a_gap_open_for_days_is_still_asked_for_every_so_often() -> None:
    timer = ReplayTimer()
    timer.observe("gw", "s1", watermark=1, gap=(2, 3), now=0.0)
    now, asks = 0.0, 0
    while now < 3 * 24 * 3600:  # thousands of asks: the doubling must not overflow
        now += REPLAY_AGAIN_MAX_S
        asks += len(timer.due(now))
    assert asks > 20_000
    assert timer.interval(10**6) == REPLAY_AGAIN_MAX_S


@pytest.mark.parametrize(("after", "again_max"), [(0.0, 10.0), (5.0, 2.0), (-1.0, 1.0)])
def test_nonsense_timing_is_refused(after: float, again_max: float) -> None:
    with pytest.raises(ValueError, match="after_s"):
        ReplayTimer(after_s=after, again_max_s=again_max)


@given(
    after=st.floats(0.1, 5.0),
    factor=st.floats(1.0, 20.0),
    tick=st.floats(0.01, 1.0),
    opened=st.floats(0.0, 100.0),
)
def test_asks_come_when_due_and_never_before(
    after: float, factor: float, tick: float, opened: float
) -> None:
    """Polled every ``tick``: the k-th ask comes no sooner than ``after`` past the
    opening, then ``min(after × 2^k, again_max)`` after the one before, and no later
    than one tick after that."""
    again_max = after * factor
    timer = ReplayTimer(after_s=after, again_max_s=again_max)
    timer.observe("gw", "s1", watermark=7, gap=(8, 9), now=opened)
    asked: list[float] = []
    now = opened
    while len(asked) < 8:
        now += tick
        for due in timer.due(now):
            assert due.ask == len(asked) + 1
            asked.append(now)
    expected = [opened + after] + [min(after * 2**k, again_max) for k in range(1, 8)]
    previous = 0.0
    for k, at in enumerate(asked):
        wait = at - previous if k else at
        assert expected[k] - 1e-9 <= wait <= expected[k] + tick + 1e-9
        previous = at


@dataclass
class Gateway:
    """What the machine knows of one gateway's stream."""

    watermark: int = 0
    gap: tuple[int, int] | None = None
    still_since: float = 0.0  # when the watermark last moved with a gap open
    asked: list[float] = field(default_factory=list)  # since then


class Replays(RuleBasedStateMachine):
    """Commits (watermarks moving or not, gaps opening, changing, closing), time passing
    and polls, for a few gateways at once."""

    def __init__(self) -> None:
        super().__init__()
        self.timer = ReplayTimer()
        self.now = 0.0
        self.gateways: dict[str, Gateway] = {}

    @initialize(after=st.floats(0.1, 3.0), factor=st.floats(1.0, 10.0))
    def start(self, after: float, factor: float) -> None:
        self.timer = ReplayTimer(after_s=after, again_max_s=after * factor)

    @rule(
        name=st.sampled_from(["a", "b", "c"]),
        moved=st.integers(0, 3),
        gap=st.none() | st.tuples(st.integers(1, 5), st.integers(0, 20)),
    )
    def commit(self, name: str, moved: int, gap: tuple[int, int] | None) -> None:
        known = self.gateways.setdefault(name, Gateway())
        known.watermark += moved
        missing = None if gap is None else (known.watermark + gap[0], known.watermark + sum(gap))
        closed = self.timer.observe(
            name, f"site-{name}", watermark=known.watermark, gap=missing, now=self.now
        )
        if missing is None:
            assert (closed is not None) == (known.gap is not None)
            if closed is not None:
                assert closed.asks == len(known.asked)
            known.gap, known.asked = None, []
            return
        assert closed is None
        if known.gap is None or moved:
            known.still_since, known.asked = self.now, []
        known.gap = missing

    @rule(seconds=st.floats(0.0, 30.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def poll(self) -> None:
        due = {d.gateway: d for d in self.timer.due(self.now)}
        after, again_max = self.timer.after_s, self.timer.again_max_s
        for name, known in self.gateways.items():
            if known.gap is None:
                assert name not in due  # a closed gap is never asked for
                continue
            stood = self.now - known.still_since >= after
            k = len(known.asked)
            rested = k == 0 or self.now - known.asked[-1] >= min(after * 2**k, again_max)
            assert (name in due) == (stood and rested)
            if name in due:
                d = due[name]
                assert (d.site, (d.first, d.last), d.ask) == (f"site-{name}", known.gap, k + 1)
                known.asked.append(self.now)

    @invariant()
    def the_timer_knows_exactly_the_open_gaps(self) -> None:
        open_gaps = {name: k.gap for name, k in self.gateways.items() if k.gap is not None}
        assert {name: (g.first, g.last) for name, g in self.timer.gaps.items()} == open_gaps


TestReplays = Replays.TestCase
TestReplays.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
