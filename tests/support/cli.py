"""Run the ``warelink`` command as a user would, from async tests."""

from __future__ import annotations

import asyncio
import sys


async def warelink(*args: str) -> str:
    """Run ``warelink ARGS``; returns its stdout, raises with its stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"warelink {' '.join(args)} exited {process.returncode}: {err!r}")
    return out.decode()
