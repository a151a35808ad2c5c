"""Settings of an edge gateway process, from the environment (built once at start)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyUrl, UrlConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

MqttUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["mqtt"], default_port=1883)]


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARELINK_", frozen=True)

    mqtt_url: MqttUrl = AnyUrl("mqtt://127.0.0.1:1883")
    mqtt_prefix: str = "warelink"

    @property
    def mqtt_host(self) -> str:
        return self.mqtt_url.host or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_url.port or 1883
