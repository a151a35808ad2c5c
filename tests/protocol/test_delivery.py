from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.delivery import Coverage


def test_in_order_ranges_move_the_watermark() -> None:
    coverage = Coverage()
    assert coverage.cover(1, 10).watermark == 10
    change = coverage.cover(11, 11)
    assert (change.watermark, change.gap, change.filled) == (11, None, False)


def test_an_early_range_reveals_the_gap_and_filling_it_jumps_the_watermark() -> None:
    coverage = Coverage(watermark=10)
    change = coverage.cover(21, 30)
    assert (change.watermark, change.gap, change.filled) == (10, (11, 20), False)
    change = coverage.cover(15, 20)
    assert (change.watermark, change.gap) == (10, (11, 14))
    change = coverage.cover(11, 14)
    assert (change.watermark, change.gap, change.filled) == (30, None, True)


def test_old_and_overlapping_ranges_change_nothing_wrong() -> None:
    coverage = Coverage(watermark=50)
    assert coverage.cover(1, 50).watermark == 50
    assert coverage.cover(40, 60).watermark == 60


@pytest.mark.parametrize(("first", "last"), [(0, 3), (5, 4), (-1, 2)])
def test_not_a_range(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="not a range"):
        Coverage().cover(first, last)


@st.composite
def chopped(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """1..n cut into ranges, delivered in any order, some twice, some held back."""
    n = draw(st.integers(1, 200))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=30))) if n > 1 else []
    bounds = [0, *cuts, n]
    ranges = [(lo + 1, hi) for lo, hi in itertools.pairwise(bounds)]
    extra = draw(st.lists(st.sampled_from(ranges), max_size=10))
    return n, draw(st.permutations(ranges + extra))


@given(chopped())
def test_any_delivery_order_ends_fully_acked_and_never_goes_back(
    case: tuple[int, list[tuple[int, int]]],
) -> None:
    n, deliveries = case
    coverage = Coverage()
    seen: set[int] = set()
    for first, last in deliveries:
        before = coverage.watermark
        change = coverage.cover(first, last)
        seen.update(range(first, last + 1))
        assert change.watermark >= before
        expected = 0
        while expected + 1 in seen:
            expected += 1
        assert change.watermark == expected  # exactly the gap-free prefix
        if change.gap is not None:
            lo, hi = change.gap
            assert lo == expected + 1 and not seen & set(range(lo, hi + 1))
    assert coverage.watermark == n and coverage.early == []
