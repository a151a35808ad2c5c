"""The hostile soak, short: honest traffic through bad input at every entrance (issue 9).

``make hostile DURATION=10m`` runs it long; here 30 s keep the harness itself tested.
The seed comes from WARELINK_CHAOS_SEED (default 1), as for the rest of the chaos suite.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.hostile import run_hostile

SEED = int(os.environ.get("WARELINK_CHAOS_SEED", "1"))


@pytest.mark.timeout(300)
async def test_honest_traffic_survives_bad_input_at_every_entrance() -> None:
    result = await run_hostile(SEED, duration=30)
    print(result.table())
    assert result.canary_answered > 200 and result.evil_good > 0 and result.evil_bad > 0
    assert result.ok, result.table()
