"""Site config files for tests, written as a user would write them (TOML, via tomli-w as
the demo writes its sites)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from warelink.edge.config import SiteConfig, load_site_config


def write_site_config(
    directory: Path,
    *,
    site: str,
    gateway: str,
    devices: list[dict[str, Any]] | None = None,
    **gateway_options: Any,
) -> Path:
    document = {
        "gateway": {"id": gateway, "site": site, "data_dir": str(directory / gateway)}
        | gateway_options,
        "devices": devices or [],
    }
    path = directory / f"{gateway}.toml"
    path.write_text(tomli_w.dumps(document))
    return path


def site_config(directory: Path, **kwargs: Any) -> SiteConfig:
    return load_site_config(write_site_config(directory, **kwargs))
