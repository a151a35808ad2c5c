"""The site config file (TOML): the gateway and the devices it talks to.

Validated once at start; a bad file gets an error naming the file, the key and the
problem, e.g. ``site.toml: devices[1].port: field required``. The device kinds, and
the config model of each, come from the driver registry (``edge/drivers/registry.py``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from warelink.edge.device_config import StrictModel
from warelink.edge.drivers.ble import BleAdapterConfig
from warelink.edge.drivers.registry import KINDS, DeviceConfig
from warelink.protocol.topics import check_name


class ConfigError(Exception):
    """A site config that cannot be used; the message says where and why."""


class GatewayConfig(StrictModel):
    id: str
    site: str
    data_dir: Path = Field(description="Where the outbox lives; relative to the config file.")
    batch_max_events: int = Field(500, ge=1, le=10_000)
    batch_max_wait_ms: int = Field(10, ge=0, le=5_000)
    window_events: int = Field(20_000, ge=1, description="Unacked events in flight at most.")
    ack_timeout_s: float = Field(5.0, gt=0, description="Resend from the ack watermark after this.")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite: NORMAL survives SIGKILL, FULL also a power cut."
    )
    retention_s: float = Field(600.0, ge=0, description="Keep acked events this long (replay).")
    telemetry_budget: int = Field(200_000, ge=0, description="Unacked telemetry rows at most.")
    disk_budget_mb: float = Field(1024.0, gt=0, description="Outbox file size at most.")
    stats_interval_s: float = Field(10.0, gt=0, description="Counters to the hub this often.")
    metrics: str | None = Field(None, description="host:port for Prometheus /metrics.")
    handheld_api: str | None = Field(
        None, description="host:port of the local HTTP API for handhelds (works offline)."
    )
    ble: BleAdapterConfig = Field(
        default_factory=BleAdapterConfig, description="The BLE adapter (default: the system's)."
    )

    @field_validator("id", "site")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return check_name(value, "name")


class SiteConfig(StrictModel):
    gateway: GatewayConfig
    devices: list[DeviceConfig] = Field(default_factory=list)

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is declared twice")
            seen.add(device.id)
        return devices


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in KINDS:
            continue  # the discriminator's branch, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_site_config(path: str | Path) -> SiteConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    here = path.parent
    gateway = config.gateway.model_copy(update=_paths_from(here, config.gateway))
    devices = [device.model_copy(update=_paths_from(here, device)) for device in config.devices]
    return config.model_copy(update={"gateway": gateway, "devices": devices})


def _paths_from(here: Path, model: BaseModel) -> dict[str, Path]:
    """Relative paths in a config (data_dir, graph_file, …) are relative to its file."""
    return {
        name: (here / value).resolve()
        for name, value in model
        if isinstance(value, Path) and not value.is_absolute()
    }
