"""Every device kind a gateway can drive, listed once.

Each driver module declares what it drives as a ``DriverSpec`` (kind, config model,
factory); ``DRIVERS`` below lists them. The site config's union of device configs, the
set of kinds and the factory the gateway calls are all derived from this one list, so
adding a driver is: its module with its ``SPEC``, and one entry (and its import) here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import Field

from warelink.edge.device_config import DeviceBase
from warelink.edge.drivers import (
    ble,
    line_scanner,
    llrp_reader,
    modbus,
    mtsics_scale,
    vda5050_agv,
    zpl_printer,
)
from warelink.edge.drivers.base import Driver, DriverContext, DriverSpec

DRIVERS: tuple[DriverSpec[Any], ...] = (
    mtsics_scale.SPEC,
    line_scanner.SPEC,
    zpl_printer.SPEC,
    modbus.SCALE_SPEC,
    modbus.DEVICE_SPEC,
    llrp_reader.SPEC,
    vda5050_agv.SPEC,
    ble.SCALE_SPEC,
    ble.SCANNER_SPEC,
)


def _by_config(specs: tuple[DriverSpec[Any], ...]) -> dict[type[DeviceBase], DriverSpec[Any]]:
    by_config: dict[type[DeviceBase], DriverSpec[Any]] = {}
    for spec in specs:
        if any(spec.kind == other.kind for other in by_config.values()):
            raise TypeError(f"device kind {spec.kind!r} is registered twice")
        if not issubclass(spec.config, DeviceBase):  # what DeviceConfig promises mypy
            raise TypeError(f"{spec.config.__name__} must derive from DeviceBase")
        by_config[spec.config] = spec
    return by_config


_BY_CONFIG = _by_config(DRIVERS)
KINDS: frozenset[str] = frozenset(spec.kind for spec in DRIVERS)

# One declared device, whichever its kind. Pydantic validates the discriminated union of
# every registered config model (built here, once, from DRIVERS); a Union built at run
# time is no type to mypy, which sees the base all of them share instead: sound, and
# ``isinstance`` narrows it to a kind where code needs one.
if TYPE_CHECKING:
    DeviceConfig: TypeAlias = DeviceBase
else:
    DeviceConfig = Annotated[
        Union[tuple(spec.config for spec in DRIVERS)],  # noqa: UP007 - a Union of a tuple
        Field(discriminator="kind"),
    ]


def build_driver(device: DeviceBase, context: DriverContext) -> Driver:
    """The driver of one declared device, by the kind of its config.

    Raises ``DeviceConflict`` when it cannot run beside the devices built before it with
    the same ``context`` (two Modbus devices that disagree about their shared bus).
    """
    spec = _BY_CONFIG.get(type(device))
    if spec is None:
        raise LookupError(f"no driver registered for {type(device).__name__}")
    return spec.build(device, context)
