"""``make chaos DURATION=10m``: a long mixed-fault run; prints the summary table per fault.

.venv/bin/python -m tests.chaos.soak --duration 10m [--seed 1] [--rate 40]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from tests.chaos.harness import run_chaos


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"a duration like 90s, 10m or 1h, not {text!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=seconds, default=seconds("10m"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=40.0, help="scans per second in all")
    args = parser.parse_args()
    result = asyncio.run(run_chaos(args.seed, args.duration, rate=args.rate))
    print(result.table())
    print("PASS" if result.ok else "FAIL: see the table above")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
