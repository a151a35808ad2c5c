"""Settings of a hub process, from the environment (built once at start)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyUrl, UrlConstraints, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MqttUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["mqtt"], default_port=1883)]


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARELINK_", frozen=True)

    db_url: str = "postgresql://postgres@127.0.0.1:5432/warelink"
    mqtt_url: MqttUrl = AnyUrl("mqtt://127.0.0.1:1883")
    mqtt_prefix: str = "warelink"
    http: str = "127.0.0.1:8000"
    share_group: str = "warelink-hub"
    ingest_max_events: int = 5000  # per transaction at most
    ingest_max_wait_ms: int = 10  # gather this long for a fuller transaction
    # An admin API key (wlk_<id>_<secret>) made to work at start: for the first setup, the
    # demo and tests. Unset it once real users exist.
    bootstrap_api_key: str | None = None
    # Adjustments moving more units than this need a supervisor's approval.
    adjustment_approval_threshold: int = 10
    # The front door. A request body over this is refused (413) before it is parsed; the
    # CSV import has a larger limit of its own.
    max_body_bytes: int = 8 * 2**20
    # Failed logins per account, and failed logins or credentials per client address,
    # within the window: beyond them, 429 until the window has passed (per hub process).
    auth_window_s: float = 300.0
    login_failures_per_account: int = 5
    auth_failures_per_address: int = 20
    # argon2 verifications run at once at most (each takes a core and 64 MiB for ~0.1 s).
    argon2_concurrency: int = 2
    # How often an open live websocket checks that its credential is still good.
    live_recheck_s: float = 5.0
    # How long the change feed keeps a site's changes for clients that reconnect with
    # their version; older than this, they get a snapshot.
    live_retain_s: float = 900.0

    @field_validator("http")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"WARELINK_HTTP must be host:port, got {value!r}")
        return value

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def mqtt_host(self) -> str:
        return self.mqtt_url.host or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_url.port or 1883
