"""Private PostgreSQL and Mosquitto instances that a test may stop, crash and restart.

The machine's own services are shared by every test; a chaos test restarts its own,
on free ports, from the system binaries, in a temporary directory it removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_port(port: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway cluster (trust auth) on a free port; root runs it as ``postgres``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="warelink-pg-"))
        self.port = free_port()
        self.bin = _pg_bin()

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        data = self.dir / "data"
        if not data.exists():
            await asyncio.to_thread(
                self._run, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
            )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        await asyncio.to_thread(
            self._run, "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "log"),
            "-w", "start",
        )  # fmt: skip

    async def stop(self, mode: str = "fast") -> None:
        """``fast`` is a clean stop; ``immediate`` is a crash (recovery at the next start)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(
                self._run, "pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"
            )

    async def close(self) -> None:
        await self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMosquitto:
    """A broker of its own on a free port, without persistence (a restart forgets all)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="warelink-mqtt-"))
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.dir / "log", "ab") as log:  # noqa: ASYNC230 - opened once, before start
            self.process = await asyncio.create_subprocess_exec(
                binary, "-c", str(self.dir / "mosquitto.conf"), stdout=log, stderr=log
            )
        await wait_port(self.port)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
