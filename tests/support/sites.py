"""Site config files for tests, written as a user would write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warelink.edge.config import SiteConfig, load_site_config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_site_config(
    directory: Path,
    *,
    site: str,
    gateway: str,
    devices: list[dict[str, Any]] | None = None,
    **gateway_options: Any,
) -> Path:
    lines = ["[gateway]", f"id = {_toml_value(gateway)}", f"site = {_toml_value(site)}"]
    lines.append(f"data_dir = {_toml_value(directory / gateway)}")
    lines += [f"{key} = {_toml_value(value)}" for key, value in gateway_options.items()]
    for device in devices or []:
        lines.append("\n[[devices]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in device.items()]
    path = directory / f"{gateway}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def site_config(directory: Path, **kwargs: Any) -> SiteConfig:
    return load_site_config(write_site_config(directory, **kwargs))
