"""The chaos suite: every fault alone, then all mixed, under load; nothing lost or doubled.

The seed comes from WARELINK_CHAOS_SEED (default 1), so a failure replays exactly:
    WARELINK_CHAOS_SEED=7 .venv/bin/pytest tests/chaos
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import FAULTS, run_chaos

SEED = int(os.environ.get("WARELINK_CHAOS_SEED", "1"))

# One of two hubs gone for good: every gateway keeps delivering through the other.
HUB_GONE_WORST_UNACKED_S = 10.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS)
async def test_each_fault_alone_loses_and_doubles_nothing(fault: str) -> None:
    result = await run_chaos(SEED, duration_s=6, faults=(fault,))
    print(result.table())
    assert result.faults[fault].injected >= 1
    assert result.generated > 0
    assert result.caught_up, result.table()
    assert (result.lost, result.doubled, result.balances_wrong) == (0, 0, 0), result.table()
    if fault == "hub_gone":
        worst = result.faults[fault].worst_unacked_s
        assert worst <= HUB_GONE_WORST_UNACKED_S, result.table()
    if fault == "outbox_returns":  # the hub refused the older box, which kept everything
        assert result.restored_kept > 0, result.table()
        assert (result.restored_missing, result.refused_stored) == (0, 0), result.table()
    assert result.ok, result.table()


@pytest.mark.timeout(400)
async def test_all_faults_mixed_lose_and_double_nothing() -> None:
    result = await run_chaos(SEED, duration_s=150, max_faults=12)
    print(result.table())
    assert sum(r.injected for r in result.faults.values()) == 12
    assert result.caught_up, result.table()
    assert (result.lost, result.doubled, result.balances_wrong) == (0, 0, 0), result.table()
    assert (result.restored_missing, result.refused_stored) == (0, 0), result.table()
