"""What every device declaration shares, and the serial devices' own options.

Each device kind's config is a pydantic model with ``kind: Literal[...]``; the kinds of
the newer drivers live beside their driver (``edge/drivers/*.py``) and build on these
bases. Each driver module declares its kind (``SPEC``), and
``edge/drivers/registry.py`` lists them: the site config (``edge/config.py``) takes its
union of device configs from there.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from warelink.protocol.topics import check_name


class StrictModel(BaseModel):
    """Unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceBase(StrictModel):
    """What every device declares; each kind adds its transport and options."""

    id: str
    location: str | None = Field(default=None, description="Where the device stands (ledger code).")

    @field_validator("id")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return check_name(value, "device id")


class SerialDevice(DeviceBase):
    port: str = Field(description="Serial device path, e.g. /dev/ttyUSB0 (or a pty).")
    baudrate: int = 9600


class TcpDevice(DeviceBase):
    host: str
    port: int = Field(ge=1, le=65535)


class MtSicsScaleConfig(SerialDevice):
    """A Mettler Toledo (or compatible) scale speaking MT-SICS."""

    kind: Literal["mtsics_scale"]
    poll_interval_s: float = Field(0.2, gt=0, description="Pause between SI requests.")
    timeout_s: float = Field(2.0, gt=0, description="No answer in this time: the scale is offline.")


class LineScannerConfig(SerialDevice):
    """A serial barcode scanner sending one CR/LF-terminated scan per line."""

    kind: Literal["line_scanner"]
    purpose: Literal["scan", "receive"] = "scan"

    @model_validator(mode="after")
    def _receive_needs_location(self) -> Self:
        if self.purpose == "receive" and not self.location:
            raise ValueError(f"device {self.id!r}: purpose 'receive' needs a location")
        return self
