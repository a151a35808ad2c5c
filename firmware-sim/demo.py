"""``warelink demo``: the hub, and per simulated site its devices and its gateway.

Each part runs as its own process, exactly as it would be deployed (``hub serve``,
``sim run``, ``edge run``), with its output prefixed by its name. Ctrl-C stops the
gateways first, then the simulators, then the hub. State lives in ``--dir`` (the
gateways' outboxes and the site configs) and in the hub's database, so a restart picks
up where the last run stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from warelink.edge.config import load_site_config
from warelink.edge.device_config import SerialDevice, TcpDevice
from warelink.edge.drivers.modbus import ModbusLinkConfig
from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig
from warelink.hub.settings import HubSettings
from warelink.protocol.gs1 import check_digit
from warelink.sim import demo_masterdata
from warelink.sim.modbus_devices import make_slaves

SITE_NAMES = ["north", "south", "east", "west", "central", "harbour", "airport", "rail"]


def site_document(site: str, dev: Path, mqtt_url: str) -> dict[str, Any]:
    """A simulated site: docks with scales, scanners and an RFID portal, a parcel dock
    with a BLE scale and a BLE handheld scanner (reached through the simulator's virtual
    controller over TCP), a label printer, a Modbus conveyor (TCP) and an RS-485 bus (a
    floor scale and a legacy tugger), and a VDA 5050 AGV on the site's broker. Ports are
    picked once, when the file is written."""
    registers = {
        kind: slave.register_map()
        for kind, slave in zip(
            ("scale", "conveyor", "agv"),
            make_slaves(random.Random(0), ["scale", "conveyor", "agv"]),
            strict=True,
        )
    }
    scale_map = {r["name"]: r for r in registers["scale"]}
    rs485 = {"transport": "rtu", "serial_port": str(dev / "rs485-1"), "baudrate": 19200,
             "parity": "N", "stopbits": 2}  # fmt: skip
    nodes = [
        ("DOCK-1", 0.0, 0.0), ("DOCK-2", 0.0, 8.0), ("A-01", 12.0, 0.0), ("A-02", 12.0, 8.0),
        ("SHIP", 20.0, 4.0),
    ]  # fmt: skip
    devices: list[dict[str, Any]] = []
    for dock in (1, 2):
        devices += [
            {"id": f"dock-scale-{dock}", "kind": "mtsics_scale",
             "port": str(dev / f"dock-scale-{dock}"), "location": f"DOCK-{dock}"},
            {"id": f"dock-scanner-{dock}", "kind": "line_scanner",
             "port": str(dev / f"dock-scanner-{dock}"), "purpose": "receive",
             "location": f"DOCK-{dock}"},
        ]  # fmt: skip
    devices += [
        {"id": "dock-3-ble-scale", "kind": "ble_scale", "address": "C0:FF:EE:00:03:01",
         "name": "WS-DOCK3", "location": "DOCK-3", "scan_timeout_s": 5.0},
        {"id": "dock-3-ble-scanner", "kind": "ble_scanner", "address": "C0:FF:EE:00:03:02",
         "name": "BS-DOCK3", "purpose": "receive", "location": "DOCK-3",
         "scan_timeout_s": 5.0},
    ]  # fmt: skip
    devices += [
        {"id": "dock-printer-1", "kind": "zpl_printer", "host": "127.0.0.1",
         "port": free_port(), "location": "DOCK-1"},
        {"id": "dock-1-portal", "kind": "llrp_reader", "host": "127.0.0.1", "port": free_port(),
         "antennas": {"1": "DOCK-1-IN", "2": "DOCK-1-OUT"}, "location": "DOCK-1",
         "portal": {"receive_zone": "DOCK-1-IN", "ship_zone": "DOCK-1-OUT",
                    "location": "DOCK-1"}},
        {"id": "conveyor-1", "kind": "modbus_device", "role": "conveyor", "transport": "tcp",
         "host": "127.0.0.1", "port": free_port(), "unit_id": 2, "poll_interval_s": 1.0,
         "registers": registers["conveyor"]},
        {"id": "floor-scale-1", "kind": "modbus_scale", "unit_id": 1, "location": "PACK-1",
         "weight": scale_map["weight"], "stable": scale_map["stable"],
         "zero": scale_map["zero"], **rs485},
        {"id": "tugger-1", "kind": "modbus_device", "role": "agv", "unit_id": 3,
         "poll_interval_s": 1.0, "registers": registers["agv"], **rs485},
        {"id": "agv-1", "kind": "vda5050_agv", "manufacturer": "WARELINK",
         "serial_number": f"{site}-01", "broker_url": mqtt_url, "state_interval_s": 10.0,
         "graph": {"map_id": f"{site}-floor",
                   "nodes": [{"id": f"N-{code}", "x": x, "y": y, "location": code}
                             for code, x, y in nodes],
                   "edges": [{"start": f"N-{a}", "end": f"N-{b}"} for a, b in
                             (("DOCK-1", "A-01"), ("DOCK-2", "A-02"), ("A-01", "A-02"),
                              ("A-01", "SHIP"), ("A-02", "SHIP"))]}},
    ]  # fmt: skip
    return {
        "gateway": {
            "id": f"gw-{site}",
            "site": site,
            "data_dir": f"{site}/gateway",
            "handheld_api": f"127.0.0.1:{free_port()}",
            "ble": {"hci_transport": f"tcp-client:127.0.0.1:{free_port()}"},
        },
        "devices": devices,
    }


def site_configs(directory: Path, count: int, mqtt_url: str) -> list[Path]:
    """The demo's site configs, written on first use and kept (so state persists)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SITE_NAMES[:count]:
        path = directory / f"{name}.toml"
        if not path.exists():
            dev = (directory / name / "dev").resolve()
            header = (
                "# A simulated site for `warelink demo`; `warelink sim run` makes its devices.\n"
            )
            path.write_text(header + tomli_w.dumps(site_document(name, dev, mqtt_url)))
        load_site_config(path)  # fail early, with the file and key, if someone edited it badly
        paths.append(path)
    return paths


DEMO_PORTS = range(20000, 32000)
"""Below Linux's ephemeral range (32768-60999): a port the kernel hands out for outgoing
connections could be taken by any client between writing a site config and the demo
binding it, and the site configs (with their ports) are kept for the next run."""


def free_port() -> int:
    """A port free now, outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(DEMO_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {DEMO_PORTS.start}-{DEMO_PORTS.stop - 1}")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class Child:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelink.edge.cli", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops children in order
        )  # fmt: skip

    async def relay(self) -> int:
        """Copy the child's output, prefixed; returns its exit code when it ends."""
        assert self.process is not None and self.process.stdout is not None
        prefix = f"{self.name:<12}| ".encode()
        async for line in self.process.stdout:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()
        return await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def devices_ready(configs: list[Path], timeout: float = 20) -> None:
    """Until the simulators have made every device the configs declare (ptys, ports)."""
    paths: list[Path] = []
    addresses: list[tuple[str, int]] = []
    for config in (load_site_config(path) for path in configs):
        hci = config.gateway.ble.hci_transport
        if hci is not None and hci.startswith("tcp-client:"):  # the virtual BLE controller
            host, _, port = hci.removeprefix("tcp-client:").rpartition(":")
            addresses.append((host, int(port)))
        for device in config.devices:
            if isinstance(device, SerialDevice):
                paths.append(Path(device.port))
            elif isinstance(device, ModbusLinkConfig):
                if device.serial_port:
                    paths.append(Path(device.serial_port))
                elif device.host and device.port:
                    addresses.append((device.host, device.port))
            elif isinstance(device, TcpDevice):
                addresses.append((device.host, device.port))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not all(path.exists() for path in paths) or not all(
                [await port_open(host, port) for host, port in addresses]
            ):
                await asyncio.sleep(0.2)


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_ready(url: str, hub: Child) -> None:
    async with asyncio.timeout(60), httpx.AsyncClient() as client:
        while True:
            assert hub.process is not None
            if hub.process.returncode is not None:
                raise SystemExit("warelink demo: the hub did not start (see its output above)")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def clerk(url: str, key: str, configs: list[Path], interval_s: float = 15.0) -> None:
    """The floor's office, through the hub's command API: now and then a pallet label for
    the latest receipt at a dock, and a transport order for the site's AGV that puts that
    pallet away into a rack (each pallet once)."""
    rng = random.Random(1)
    sites = [load_site_config(path) for path in configs]
    agvs = {
        config.gateway.site: (device.id, device.floor_graph())
        for config in sites
        for device in config.devices
        if isinstance(device, Vda5050AgvConfig)
    }
    n = 0
    failing = False
    moving: set[tuple[str, str, str]] = set()  # dock pallets already given to an AGV
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as http:
        while True:
            await asyncio.sleep(interval_s)
            site = sites[n % len(sites)].gateway.site
            n += 1
            try:
                stock = await http.get(f"/api/v1/sites/{site}/stock")
                stock.raise_for_status()
                if failing:
                    print("demo clerk: the hub answers again", flush=True)
                    failing = False
            except httpx.HTTPError as exc:  # the hub restarting: said once, tried again later
                if not failing:
                    print(f"demo clerk: the hub did not answer ({exc}); trying again", flush=True)
                    failing = True
                continue
            with contextlib.suppress(httpx.HTTPError):
                lines = stock.json()["lines"]
                dock = [line for line in lines if line["location"] == "DOCK-1"
                        and not line["serial"]  # pallets, not RFID-tagged single items
                        and (line["sku"], line["lot"], line["lpn"]) not in moving]  # fmt: skip
                if not dock:
                    continue
                line = dock[-1]
                await http.post(
                    f"/api/v1/sites/{site}/devices/dock-printer-1/commands",
                    json={"action": "print_sscc_label", "expires_in_s": 120,
                          "args": {"sscc": sscc_for(site, n), "gtin": line["sku"],
                                   "lot": line["lot"], "quantity": int(line["quantity"]) or 1,
                                   "ship_to": f"Customer {n % 7 + 1}"}},
                )  # fmt: skip
                if site in agvs and line["quantity"] >= 1:  # the AGV puts the pallet away
                    agv, graph = agvs[site]
                    racks = sorted(code for code in graph.locations if code.startswith("A-"))
                    args = {"order_id": f"{site}-{n}", "from": "DOCK-1",
                            "to": rng.choice(racks), "gtin": line["sku"],
                            "lot": line["lot"] or None, "lpn": line["lpn"] or None,
                            "quantity": int(line["quantity"])}  # fmt: skip
                    moving.add((line["sku"], line["lot"], line["lpn"]))
                    await http.post(
                        f"/api/v1/sites/{site}/devices/{agv}/commands",
                        json={"action": "transport", "expires_in_s": 300, "args": args},
                    )


def demo_key(directory: Path) -> str:
    """The demo's admin API key, kept in its directory so every run uses the same one."""
    path = directory / "admin.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"wlk_demo{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def sscc_for(site: str, n: int) -> str:
    body = f"0{95060000:08d}{(abs(hash(site)) + n) % 10**8:08d}"[:17]
    return body + str(check_digit(body))


async def run_demo(directory: Path, sites: int, duration: float) -> int:
    settings = HubSettings()
    if port_in_use(settings.http_host, settings.http_port):
        raise SystemExit(
            f"warelink demo: {settings.http} is already in use; "
            "set WARELINK_HTTP=host:port to serve the hub elsewhere"
        )
    url = f"http://{settings.http}"
    configs = site_configs(directory, sites, str(settings.mqtt_url))
    key = settings.bootstrap_api_key or demo_key(directory)
    os.environ["WARELINK_BOOTSTRAP_API_KEY"] = key  # the hub child makes it an admin key
    hub = Child("hub", ["hub", "serve"])
    sims = [Child(f"sim {p.stem}", ["sim", "run", "--config", str(p), "--seed", str(i + 1)])
            for i, p in enumerate(configs)]  # fmt: skip
    edges = [Child(f"edge {p.stem}", ["edge", "run", "--config", str(p)]) for p in configs]
    stopping = False
    failed = False
    try:
        async with asyncio.TaskGroup() as tasks:

            async def watch(child: Child) -> None:
                code = await child.relay()
                if not stopping:
                    raise RuntimeError(f"{child.name} exited with {code}")

            await hub.start()
            tasks.create_task(watch(hub), name="relay-hub")
            await wait_ready(url, hub)
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as office:
                await demo_masterdata.seed(office, [load_site_config(p).gateway.site
                                                    for p in configs])  # fmt: skip
            for child in sims:
                await child.start()
                tasks.create_task(watch(child), name=f"relay-{child.name}")
            await devices_ready(configs)  # gateways find their devices at once, no false alarm
            for child in edges:
                await child.start()
                tasks.create_task(watch(child), name=f"relay-{child.name}")
            clerking = tasks.create_task(clerk(url, key, configs), name="demo-clerk")
            print(
                f"\nwarelink demo is up: {len(configs)} sites, dashboard at {url}/#key={key}"
                f"\n  API: {url}/docs (Authorize with the API key {key})"
                f"\n  Ctrl-C stops everything; state is kept in {directory} and the database.\n",
                flush=True,
            )
            try:
                await asyncio.sleep(duration if duration > 0 else float("inf"))
            finally:
                stopping = True
                clerking.cancel()
                for group in (edges, sims, [hub]):
                    await asyncio.gather(*(child.stop() for child in group))
    except* RuntimeError as failure:
        print(f"warelink demo: {failure.exceptions[0]}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await run_demo(args.dir, args.sites, args.duration)
        except asyncio.CancelledError:
            return 0

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(guarded())
