"""Run the ``warelink`` command as a user would, from async tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping


async def warelink(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``warelink ARGS``; returns its stdout, raises with its stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"warelink {' '.join(args)} exited {process.returncode}: {err!r}")
    return out.decode()
