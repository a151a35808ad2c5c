"""The LLRP reader driver against the simulated reader over real TCP."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.drivers.base import Backoff
from warelink.edge.drivers.llrp_reader import LlrpReaderConfig, LlrpReaderDriver, PortalConfig
from warelink.protocol.epc import Sgtin96, decode_epc
from warelink.protocol.llrp import (
    AddRoSpec,
    DeleteRoSpec,
    EnableRoSpec,
    GetReaderCapabilities,
    KeepaliveAck,
    StartRoSpec,
)
from warelink.protocol.messages import (
    DeviceState,
    DeviceStatus,
    Receipt,
    Shipment,
    TagRead,
    TrafficClass,
    ZoneChange,
    ZoneTransition,
)
from warelink.sim.llrp_reader import SimulatedLlrpReader, make_sgtin_epc, make_sscc_epc

WAIT_S = 5.0
ANTENNAS = {1: "DOCK-1-IN", 2: "DOCK-1-OUT"}
PORTAL = PortalConfig(receive_zone="DOCK-1-IN", ship_zone="DOCK-1-OUT", location="DOCK-1")


class Collector(EmitCollector):
    """The shared collector, with a tag's zone changes."""

    def changes(self, epc: str) -> list[tuple[ZoneChange, str]]:
        return [(t.change, t.zone) for t in self.bodies(ZoneTransition) if t.epc == epc]


def _config(port: int, **overrides: Any) -> LlrpReaderConfig:
    values: dict[str, Any] = {
        "kind": "llrp_reader",
        "id": "dock-1-portal",
        "host": "127.0.0.1",
        "port": port,
        "antennas": ANTENNAS,
        "portal": PORTAL,
        "departed_after_s": 0.6,
        **overrides,
    }
    return LlrpReaderConfig.model_validate(values)


def _driver(config: LlrpReaderConfig, collector: Collector) -> LlrpReaderDriver:
    return LlrpReaderDriver(config, collector, backoff=Backoff(initial=0.02, cap=0.1))


async def test_setup_then_reports_become_downsampled_tag_reads() -> None:
    rng = random.Random(1)
    epc = make_sgtin_epc(rng)
    collector = Collector()
    async with SimulatedLlrpReader(seed=1, report_interval_s=0.05) as sim:
        config = _config(sim.port, portal=None, tag_read_interval_s=1.5)
        async with running(_driver(config, collector)):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
            requests = [m for m in sim.received if not isinstance(m, KeepaliveAck)]
            assert [type(m) for m in requests] == [
                GetReaderCapabilities,
                DeleteRoSpec,
                AddRoSpec,
                EnableRoSpec,
                StartRoSpec,
            ]
            assert isinstance(requests[1], DeleteRoSpec) and requests[1].rospec_id == 0
            assert isinstance(requests[2], AddRoSpec)
            assert requests[2].rospec.antenna_ids == (1, 2)
            assert sim.inventory_running
            sim.place(epc, 1, rssi=-52.0)
            await collector.wait_for(lambda: len(collector.bodies(TagRead)) == 1)
            reports_at_first = sim.reports_sent
            await sim.wait_for(lambda: sim.reports_sent >= reports_at_first + 10)
            assert len(collector.bodies(TagRead)) == 1  # 10+ reports in 0.5 s: still one read
            await collector.wait_for(lambda: len(collector.bodies(TagRead)) == 2)
    first, second = collector.bodies(TagRead)
    sgtin = decode_epc(epc)
    assert isinstance(sgtin, Sgtin96)
    assert first.epc == epc and first.antenna == 1 and first.zone == "DOCK-1-IN"
    assert first.decoded == {"scheme": "sgtin-96", "gtin": sgtin.gtin, "serial": str(sgtin.serial)}
    assert first.rssi is not None and -62 <= first.rssi <= -42
    assert second.count > 10  # the held-back reads are counted
    reads = [(cls, at) for _, cls, body, at in collector.emitted if isinstance(body, TagRead)]
    assert all(cls is TrafficClass.TELEMETRY and at is not None for cls, at in reads)
    assert collector.bodies(Receipt) == []  # not a portal


async def test_a_tag_walking_through_the_portal_is_one_receipt_and_one_shipment() -> None:
    rng = random.Random(7)
    item = make_sgtin_epc(rng)
    pallet = make_sscc_epc(rng)
    collector = Collector()
    async with (
        SimulatedLlrpReader(seed=7, report_interval_s=0.05) as sim,
        running(_driver(_config(sim.port), collector)),
    ):
        await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
        sim.place(item, 1, rssi=-50.0)
        sim.place(pallet, 1, rssi=-60.0)
        await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 1)
        sim.move(item, 2, rssi=-45.0)
        sim.also_seen(item, 1, -70.0)  # the inner antenna still sees it, weakly
        await collector.wait_for(lambda: len(collector.changes(item)) == 2)
        sim.remove(item)
        await collector.wait_for(lambda: len(collector.bodies(Shipment)) == 1)
        sim.remove(pallet)
        await collector.wait_for(lambda: len(collector.changes(pallet)) == 2)
    sgtin = decode_epc(item)
    assert isinstance(sgtin, Sgtin96)
    serial = str(sgtin.serial)
    assert collector.bodies(Receipt) == [
        Receipt(location="DOCK-1", gtin=sgtin.gtin, quantity=1, serial=serial)
    ]
    assert collector.bodies(Shipment) == [
        Shipment(location="DOCK-1", gtin=sgtin.gtin, quantity=1, serial=serial)
    ]
    assert collector.changes(item) == [
        (ZoneChange.ARRIVED, "DOCK-1-IN"),
        (ZoneChange.MOVED, "DOCK-1-OUT"),
        (ZoneChange.DEPARTED, "DOCK-1-OUT"),
    ]
    assert collector.changes(pallet) == [
        (ZoneChange.ARRIVED, "DOCK-1-IN"),
        (ZoneChange.DEPARTED, "DOCK-1-IN"),
    ]
    ledger = [type(b) for _, cls, b, _ in collector.emitted if cls is TrafficClass.LEDGER]
    assert ledger == [Receipt, Shipment]  # the SSCC pallet makes no ledger event
    transitions = [t for t in collector.bodies(ZoneTransition) if t.epc == pallet]
    assert transitions[0].decoded["scheme"] == "sscc-96"


async def test_keepalives_are_acked() -> None:
    collector = Collector()
    async with (
        SimulatedLlrpReader(keepalive_interval_s=0.05, keepalive_misses=2) as sim,
        running(_driver(_config(sim.port), collector)),
    ):
        await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
        await sim.wait_for(lambda: sim.keepalive_acks >= 10)
        assert sim.violations == []
        assert sim.connections == 1
    assert collector.states() == [DeviceState.ONLINE]


async def test_garbage_breaks_the_session_once_and_it_reconnects() -> None:
    rng = random.Random(3)
    collector = Collector()
    with capture_logs() as logs:
        async with (
            SimulatedLlrpReader(seed=3, report_interval_s=0.05) as sim,
            running(_driver(_config(sim.port), collector)),
        ):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
            await sim.inject_garbage(200)
            await collector.wait_for(lambda: len(collector.states()) == 3)
            epc = make_sgtin_epc(rng)
            sim.place(epc, 1)
            await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 1)
    assert collector.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    offline = collector.bodies(DeviceStatus)[1]
    assert "malformed" in offline.detail and "framing" in offline.detail
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["device"] == "dock-1-portal"
    assert sim.connections == 2


async def test_dropped_connection_is_offline_once_then_online_again() -> None:
    rng = random.Random(4)
    collector = Collector()
    with capture_logs() as logs:
        async with (
            SimulatedLlrpReader(seed=4, report_interval_s=0.05) as sim,
            running(_driver(_config(sim.port), collector)),
        ):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
            sim.drop_connections(refuse_for_s=0.6)
            await collector.wait_for(lambda: len(collector.states()) == 2)
            await sim.wait_for(lambda: sim.refused >= 3)  # several failed reconnects
            assert collector.states() == [DeviceState.ONLINE, DeviceState.OFFLINE]
            await collector.wait_for(lambda: len(collector.states()) == 3)
            sim.place(make_sgtin_epc(rng), 1)
            await collector.wait_for(lambda: len(collector.bodies(Receipt)) == 1)
    assert collector.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    events = [
        (e["log_level"], e["event"])
        for e in logs
        if e.get("device") == "dock-1-portal" and e["log_level"] != "debug"
    ]
    assert events == [
        ("info", "reader.online"),
        ("warning", "reader.offline"),
        ("info", "reader.online"),
    ]


async def test_slow_answers_still_set_up_and_no_reader_is_offline() -> None:
    collector = Collector()
    async with SimulatedLlrpReader(answer_delay_s=0.15) as sim:
        port = sim.port
        async with running(_driver(_config(port), collector)):
            await collector.wait_for(lambda: collector.states() == [DeviceState.ONLINE])
    assert sim.connections == 1
    collector = Collector()
    async with running(_driver(_config(port), collector)):  # nothing listens there now
        await collector.wait_for(lambda: collector.states() == [DeviceState.OFFLINE])
    assert "cannot connect" in collector.bodies(DeviceStatus)[0].detail


def test_config_validation() -> None:
    config = _config(5084)
    assert config.antennas == ANTENNAS and config.portal == PORTAL
    from_toml = LlrpReaderConfig.model_validate(
        {"kind": "llrp_reader", "id": "r1", "host": "10.0.0.5", "antennas": {"1": "A"}}
    )
    assert from_toml.port == 5084 and from_toml.antennas == {1: "A"}
    with pytest.raises(ValidationError, match="not the zone of any antenna"):
        _config(5084, portal={"receive_zone": "X", "ship_zone": "DOCK-1-OUT", "location": "D"})
    with pytest.raises(ValidationError):
        _config(5084, antennas={})
    with pytest.raises(ValidationError, match="antenna ids"):
        _config(5084, antennas={0: "DOCK-1-IN", 2: "DOCK-1-OUT"})
