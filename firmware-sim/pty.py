"""A pseudo-terminal a simulated serial device speaks on, reachable at a stable path.

The simulator holds the master side; the code under test opens the slave through a
symlink (``link``), exactly as it would open ``/dev/ttyUSB0``. The master stays open for
the endpoint's whole life, and so does one slave fd of our own: the pty then survives
clients opening and closing the port, and reads on the master never see EIO meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from pathlib import Path
from types import TracebackType
from typing import Self


class PtyEndpoint:
    """Master side of a raw-mode pty whose slave is symlinked at ``link``.

    Use as ``async with PtyEndpoint(path) as pty: data = await pty.read()``. On exit the
    symlink is removed (if it is still ours) and both fds are closed, so clients of the
    slave see the device disappear.
    """

    def __init__(self, link: str | os.PathLike[str]) -> None:
        self.link = Path(link)
        self.slave_name = ""
        self._master = -1
        self._slave = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave, termios.TCSANOW)  # no echo, no line discipline
            os.set_blocking(self._master, False)
            self.slave_name = os.ttyname(self._slave)
            self.link.parent.mkdir(parents=True, exist_ok=True)
            if self.link.is_symlink() or self.link.exists():
                self.link.unlink()  # a stale link from an earlier run
            self.link.symlink_to(self.slave_name)
        except BaseException:
            self._close_fds()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def _require_open(self) -> tuple[asyncio.AbstractEventLoop, int]:
        if self._loop is None or self._master < 0:
            raise RuntimeError("PtyEndpoint is not open; use it as an async context manager")
        return self._loop, self._master

    async def read(self, max_bytes: int = 4096) -> bytes:
        """Bytes the client wrote to the slave; waits until there is at least one."""
        loop, fd = self._require_open()
        while True:
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                pass
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the client; waits while the slave's input queue is full."""
        loop, fd = self._require_open()
        view = memoryview(data)
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
                continue
            view = view[sent:]

    def discard_input(self) -> None:
        """Drop what was written to the slave but not read yet (e.g. between clients)."""
        if self._slave >= 0:
            termios.tcflush(self._slave, termios.TCIOFLUSH)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # the fd can report ready again before the waiter runs
        ready.set_result(None)
