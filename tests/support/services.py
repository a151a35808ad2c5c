"""The machine's PostgreSQL and Mosquitto, and private instances a test may crash.

The machine's own services are shared by every test (each owns a database and a topic
prefix on them) and started, if they are down, by the first test that needs one. A chaos
test restarts its own, on free ports, from the system binaries, in a temporary directory
it removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType

import psycopg

PG_ADMIN_URL = os.environ.get("WARELINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("WARELINK_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("WARELINK_TEST_MQTT_PORT", "1883"))
SERVICES_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "services.sh"
# Machine-wide: test workers, and test runs side by side, start the services once.
SERVICES_LOCK = Path(tempfile.gettempdir()) / "warelink-services.lock"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def postgres_address() -> tuple[str, int]:
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


def ensure_service(name: str, host: str, port: int) -> None:
    """Return once ``name`` answers at ``host:port``, started if needed.

    The machine's own (127.0.0.1, standard port) is started by ``deploy/services.sh``,
    one caller at a time under a file lock; anything else is only checked.
    """
    if reachable(host, port):
        return
    if (host, port) not in (("127.0.0.1", 5432), ("127.0.0.1", 1883)):
        raise RuntimeError(f"{name} is not running on {host}:{port}")
    # Python's descriptors are not inherited: the daemons the script starts do not hold it.
    with open(SERVICES_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if reachable(host, port):  # another worker started it meanwhile
                return
            started = subprocess.run(
                ["bash", str(SERVICES_SCRIPT)], capture_output=True, text=True, timeout=600
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if started.returncode != 0 or not reachable(host, port):
        raise RuntimeError(
            f"{name} is not running on {host}:{port} and {SERVICES_SCRIPT.name} could not"
            f" start it (exit {started.returncode}): {started.stderr.strip()[-2000:]}"
        )


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


# The names by which code reaches the machine's services without a fixture.
SERVICE_NAMES = {"PG_ADMIN_URL": "postgres", "MQTT_HOST": "mosquitto", "MQTT_PORT": "mosquitto"}
_reached: dict[CodeType, frozenset[str]] = {}


def services_named_by(function: Callable[..., object]) -> frozenset[str]:
    """The machine's services (``postgres``, ``mosquitto``) that ``function`` names, or a
    function or class of the tests that it calls does, and so on: for the tests that reach
    a service by its address rather than through a fixture."""
    function = inspect.unwrap(function)
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", None)
    if inner is not None:  # (@given)
        function = inspect.unwrap(inner)
    code = getattr(function, "__code__", None)
    if code is None:
        return frozenset()
    if code not in _reached:
        _reached[code] = frozenset()  # (a cycle counts for nothing more)
        found: set[str] = set()
        namespace = getattr(function, "__globals__", {})
        for name in _names(code):
            if name in SERVICE_NAMES:
                found.add(SERVICE_NAMES[name])
            elif _ours(value := namespace.get(name)):
                found |= _services_named_by_value(value)
        _reached[code] = frozenset(found)
    return _reached[code]


def _names(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):  # lambdas, nested functions, comprehensions
            yield from _names(const)


def _ours(value: object) -> bool:
    return str(getattr(value, "__module__", "")).startswith("tests.")


def _services_named_by_value(value: object) -> frozenset[str]:
    if not isinstance(value, type):
        return services_named_by(value) if callable(value) else frozenset()
    found: frozenset[str] = frozenset()
    for member in vars(value).values():
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        elif isinstance(member, property) and member.fget is not None:
            member = member.fget
        if inspect.isfunction(member):
            found |= services_named_by(member)
    return found
