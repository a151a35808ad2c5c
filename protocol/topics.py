"""MQTT topic names of the edge ↔ hub session.

``{prefix}/v1/{site}/{gateway}/{kind}`` for a gateway's traffic and
``{prefix}/v1/$hub/presence/{instance}`` for each hub instance's: retained while the
instance is up, cleared (an empty retained message, its Will too) when it stops, so a
gateway sees the hub as present while any instance is. The prefix (default ``warelink``) lets
several deployments, or test runs, share one broker.
"""

from __future__ import annotations

import enum
import re

import msgspec

from warelink.protocol.errors import DecodeError
from warelink.protocol.limits import ID_PATTERN

VERSION = "v1"
HUB_SEGMENT = "$hub"
_NAME = re.compile(ID_PATTERN)


class Kind(enum.StrEnum):
    EVENTS = "events"  # edge → hub: EventBatch
    ACK = "ack"  # hub → edge: Ack
    BIRTH = "birth"  # edge → hub: Birth
    DEATH = "death"  # edge → hub: Death (also the MQTT Will)
    REPLAY = "replay"  # hub → edge: ReplayRequest
    STATS = "stats"  # edge → hub: GatewayStats
    COMMAND = "command"  # hub → edge: Command (its result comes back as an event)


class TopicError(DecodeError):
    """A topic that is not one of warelink's."""


def check_name(name: str, what: str) -> str:
    """Site and gateway ids become topic levels: no wildcards, no slashes, no spaces."""
    if not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} must be 1-64 characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return name


class GatewayTopic(msgspec.Struct, frozen=True):
    site: str
    gateway: str
    kind: Kind


class Topics(msgspec.Struct, frozen=True):
    """Topic builder and parser for one prefix."""

    prefix: str = "warelink"

    def gateway(self, site: str, gateway: str, kind: Kind) -> str:
        return f"{self.prefix}/{VERSION}/{site}/{gateway}/{kind.value}"

    def hub_presence(self, instance: str) -> str:
        """One hub instance's presence (an instance id is a topic level: check_name)."""
        return f"{self.prefix}/{VERSION}/{HUB_SEGMENT}/presence/{instance}"

    def all_hub_presence(self) -> str:
        """Subscription filter for the presence of every hub instance."""
        return f"{self.prefix}/{VERSION}/{HUB_SEGMENT}/presence/+"

    def presence_instance(self, topic: str) -> str | None:
        """The instance a presence topic speaks for; None if it is not one."""
        head = f"{self.prefix}/{VERSION}/{HUB_SEGMENT}/presence/"
        if not topic.startswith(head):
            return None
        instance = topic[len(head) :]
        return instance if _NAME.match(instance) else None

    def all_gateways(self, kind: Kind) -> str:
        """Subscription filter for one kind of every gateway of every site."""
        return f"{self.prefix}/{VERSION}/+/+/{kind.value}"

    def shared(self, group: str, topic_filter: str) -> str:
        """An MQTT 5 shared subscription: the group's members share the messages."""
        return f"$share/{group}/{topic_filter}"

    def parse(self, topic: str) -> GatewayTopic:
        head = f"{self.prefix}/{VERSION}/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is not under {head!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 3:
            raise TopicError(f"topic {topic!r} is not {head}<site>/<gateway>/<kind>")
        site, gateway, kind = parts
        if not (_NAME.match(site) and _NAME.match(gateway)):
            raise TopicError(f"topic {topic[:200]!r} names no valid site and gateway")
        try:
            return GatewayTopic(site, gateway, Kind(kind))
        except ValueError:
            raise TopicError(f"topic {topic!r} has unknown kind {kind!r}") from None
