"""A bad site config gets an error naming the file, the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from warelink.edge.config import ConfigError, load_site_config
from warelink.edge.device_config import LineScannerConfig, MtSicsScaleConfig

GOOD = """
[gateway]
id = "gw-a"
site = "site-1"
data_dir = "state"

[[devices]]
id = "scale-1"
kind = "mtsics_scale"
port = "/dev/ttyUSB0"

[[devices]]
id = "dock-scanner"
kind = "line_scanner"
port = "/dev/ttyUSB1"
purpose = "receive"
location = "DOCK-1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_good_config_loads_with_data_dir_beside_the_file(tmp_path: Path) -> None:
    config = load_site_config(write(tmp_path, GOOD))
    assert config.gateway.data_dir == (tmp_path / "state").resolve()
    assert isinstance(config.devices[0], MtSicsScaleConfig)
    assert isinstance(config.devices[1], LineScannerConfig)
    assert config.devices[1].location == "DOCK-1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('port = "/dev/ttyUSB0"\n', ""), r"devices\[0\]\.port: Field required"),
        (('kind = "mtsics_scale"', 'kind = "toaster"'), r"devices\[0\]: Input tag 'toaster'"),
        (('site = "site-1"', 'site = "site/1"'), r"gateway\.site: Value error, name 'site/1'"),
        (
            ('location = "DOCK-1"\n', ""),
            r"devices\[1\]: Value error, device 'dock-scanner': purpose",
        ),
        (('id = "dock-scanner"', 'id = "scale-1"'), r"device id 'scale-1' is declared twice"),
        (("[gateway]", "[gateway]\nbogus = 1"), r"gateway\.bogus: Extra inputs are not permitted"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=expected) as raised:
        load_site_config(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site.toml: not valid TOML"):
        load_site_config(write(tmp_path, "[gateway\n"))
    with pytest.raises(ConfigError, match=r"nope.toml: no such file"):
        load_site_config(tmp_path / "nope.toml")


def test_cli_reports_bad_config_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('port = "/dev/ttyUSB0"\n', "", 1))
    result = subprocess.run(
        [sys.executable, "-m", "warelink.edge.cli", "edge", "status", "--config", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"bad config: {path}: devices[0].port: Field required" in result.stderr
