"""The driver registry is the one list of device kinds: the site config, the gateway and
the driver modules agree with it, and no other part of the edge names a kind."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import warelink.edge
import warelink.edge.drivers
from warelink.edge.config import ConfigError, load_site_config
from warelink.edge.device_config import MtSicsScaleConfig
from warelink.edge.drivers.base import DriverContext, DriverSpec
from warelink.edge.drivers.modbus import ModbusBuses
from warelink.edge.drivers.registry import DRIVERS, KINDS, build_driver
from warelink.edge.gateway import Gateway
from warelink.edge.settings import EdgeSettings
from warelink.protocol.messages import EventBody, TrafficClass

DOCS = Path(__file__).parents[2] / "docs"

GATEWAY = """
[gateway]
id = "gw-a"
site = "site-1"
data_dir = "state"
"""


def declaration(spec: DriverSpec[Any], device_id: str) -> str:
    return f'\n[[devices]]\nid = "{device_id}"\nkind = "{spec.kind}"\n{spec.example}\n'


async def discard(
    device: str, cls: TrafficClass, body: EventBody, occurred_at: dt.datetime | None = None
) -> None:
    pass


def driver_modules() -> list[ModuleType]:
    package = warelink.edge.drivers
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


@pytest.mark.parametrize("spec", DRIVERS, ids=lambda spec: spec.kind)
def test_every_kind_parses_from_a_site_config_and_builds_its_driver(
    tmp_path: Path, spec: DriverSpec[Any]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(GATEWAY + declaration(spec, "dev-1"))
    (device,) = load_site_config(path).devices
    assert type(device) is spec.config
    context = DriverContext(emit=discard, data_dir=tmp_path, modbus_buses=ModbusBuses())
    driver = build_driver(device, context)
    assert driver.device_id == "dev-1"


def test_the_gateway_builds_a_driver_for_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(GATEWAY + "".join(declaration(spec, f"{spec.kind}-1") for spec in DRIVERS))
    gateway = Gateway(load_site_config(path), EdgeSettings())
    assert set(gateway.drivers) == {f"{kind}-1" for kind in KINDS}


def test_devices_that_cannot_run_together_are_a_config_error(tmp_path: Path) -> None:
    modbus = next(spec for spec in DRIVERS if spec.kind == "modbus_device")
    path = tmp_path / "site.toml"
    path.write_text(
        GATEWAY + declaration(modbus, "a") + declaration(modbus, "b") + "timeout_s = 2.0\n"
    )
    with pytest.raises(ConfigError, match=r"^devices: device 'b' on tcp://10\.0\.3\.40:502"):
        Gateway(load_site_config(path), EdgeSettings())


def test_every_spec_a_driver_module_declares_is_registered_once() -> None:
    declared = [
        value
        for module in driver_modules()
        for value in vars(module).values()
        if isinstance(value, DriverSpec)
    ]
    assert sorted(spec.kind for spec in declared) == sorted(spec.kind for spec in DRIVERS)
    assert all(any(spec is registered for registered in DRIVERS) for spec in declared)
    assert len(KINDS) == len(DRIVERS)


def test_no_kind_is_named_in_the_edge_outside_its_driver_and_config_model() -> None:
    """No switch over kinds anywhere: a kind string appears only in its config model's
    ``Literal`` and in its driver module's ``SPEC``."""
    allowed: dict[str, set[Path]] = {kind: set() for kind in KINDS}
    for module in driver_modules():
        for value in vars(module).values():
            if isinstance(value, DriverSpec):
                allowed.setdefault(value.kind, set()).add(Path(str(module.__file__)))
    for spec in DRIVERS:
        model_module = importlib.import_module(spec.config.__module__)
        allowed[spec.kind].add(Path(str(model_module.__file__)))
    edge = Path(str(warelink.edge.__file__)).parent
    misplaced = [
        f"{path.relative_to(edge)}:{node.lineno}: {node.value!r}"
        for path in sorted(edge.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and node.value in KINDS
        and path.resolve() not in {p.resolve() for p in allowed[node.value]}
    ]
    assert not misplaced, "device kinds named outside the registry:\n" + "\n".join(misplaced)


def test_the_docs_declare_only_registered_kinds() -> None:
    documented = {
        kind
        for page in DOCS.glob("*.md")
        for kind in re.findall(r'^kind = "(\w+)"', page.read_text(), re.MULTILINE)
    }
    assert documented, "no device declarations found in docs/"
    assert documented <= KINDS, f"documented but not registered: {documented - KINDS}"


def test_a_spec_must_match_its_config_models_kind() -> None:
    with pytest.raises(TypeError, match=r"MtSicsScaleConfig\.kind must be Literal\['scale'\]"):
        DriverSpec(
            kind="scale",
            config=MtSicsScaleConfig,
            build=lambda config, context: build_driver(config, context),
            example="",
        )
