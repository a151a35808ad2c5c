from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.topics import GatewayTopic, Kind, TopicError, Topics, check_name

NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")


def test_topic_names() -> None:
    topics = Topics("warelink")
    assert topics.gateway("site-1", "gw-a", Kind.EVENTS) == "warelink/v1/site-1/gw-a/events"
    assert topics.hub_presence("a1b2") == "warelink/v1/$hub/presence/a1b2"
    assert topics.all_hub_presence() == "warelink/v1/$hub/presence/+"
    assert topics.presence_instance("warelink/v1/$hub/presence/a1b2") == "a1b2"
    assert topics.presence_instance("warelink/v1/$hub/presence/a/b") is None
    assert topics.presence_instance("warelink/v1/site/gw/ack") is None
    assert topics.all_gateways(Kind.BIRTH) == "warelink/v1/+/+/birth"
    assert topics.shared("hubs", "warelink/v1/+/+/events") == "$share/hubs/warelink/v1/+/+/events"


@given(NAMES, NAMES, st.sampled_from(list(Kind)))
def test_build_then_parse(site: str, gateway: str, kind: Kind) -> None:
    topics = Topics("t-1")
    assert topics.parse(topics.gateway(site, gateway, kind)) == GatewayTopic(site, gateway, kind)


@pytest.mark.parametrize(
    "topic",
    ["other/v1/s/g/events", "t/v2/s/g/events", "t/v1/s/g", "t/v1/s/g/events/x", "t/v1/s/g/nope"],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics("t").parse(topic)


@pytest.mark.parametrize("name", ["", "a/b", "+", "#", "a b", "-lead", "x" * 65])
def test_names_that_cannot_be_topic_levels(name: str) -> None:
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        check_name(name, "site")
