"""Run a ``warelink`` command that ends with its parent: ``python -m warelink.sim.tether
PARENT_PID ARGS…`` is ``warelink ARGS…``, except that when PARENT_PID dies (even by
SIGKILL, which leaves it no time to stop anything) this process stops too.

``warelink demo`` starts its hub, simulators and gateways through it. On Linux the
kernel tells the child at once (``PR_SET_PDEATHSIG``); elsewhere a thread notices
within ``POLL_S``. Either way the child silences its output (it went to the parent,
which is gone: writes would fail), stops cleanly on its own SIGTERM, and is killed
with its process group if it has not ended ``GRACE_S`` later.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from types import FrameType

GRACE_S = 3.0
POLL_S = 0.25
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_GONE = signal.SIGHUP  # nothing else in warelink handles it; a hung-up parent, indeed
_gone = False


def tether(parent: int) -> None:
    """From now on, this process ends when ``parent`` does."""
    signal.signal(PARENT_GONE, _parent_gone)
    if sys.platform == "linux":
        # The signal comes when the *thread* that forked us ends: the demo forks from its
        # main thread (asyncio starts subprocesses on the loop's thread), so at its exit.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_GONE), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, args=(parent,), name="tether", daemon=True).start()
    if os.getppid() != parent:  # it was gone before we asked to be told
        _parent_gone()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), PARENT_GONE)


def _parent_gone(signum: int | None = None, frame: FrameType | None = None) -> None:
    # Once: the kernel may signal twice, as the child passes from the dying parent's main
    # thread to another of its threads, then to its new parent (init or a subreaper).
    global _gone
    if _gone:
        return
    _gone = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # our output went to the parent, through a pipe with no reader now
        os.dup2(devnull, fd)
    os.close(devnull)
    timer = threading.Timer(GRACE_S, _kill_group)
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)  # the command's own clean stop, or the default: exit


def _kill_group() -> None:
    if os.getpgrp() == os.getpid():  # a group of our own (the demo starts a session each)
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        print("usage: python -m warelink.sim.tether PARENT_PID WARELINK_ARGS…", file=sys.stderr)
        return 2
    tether(int(sys.argv[1]))
    from warelink.edge.cli import main as warelink

    return warelink(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
