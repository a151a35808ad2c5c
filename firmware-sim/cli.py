"""``warelink sim run``: the simulated devices of a site config, driven by a seed."""

from __future__ import annotations

import argparse

from warelink.edge.cli import run_until_signal
from warelink.edge.config import load_site_config
from warelink.sim.scenario import DockScenario


def run(args: argparse.Namespace) -> int:
    config = load_site_config(args.config)
    scenario = DockScenario(
        config, seed=args.seed, interval_s=args.interval, garbage_rate=args.garbage_rate
    )
    return run_until_signal(scenario.run())
