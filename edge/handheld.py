"""The gateway's local HTTP API for handheld and PDA apps: the floor keeps working offline.

Clerks receive, put away, pick, verify, ship and count through the gateway in their
building; each request becomes an event in the outbox, like a device's, and reaches the
hub whenever the link is up. Every request carries an ``Idempotency-Key`` header: the
key is stored in the same commit as its event, so a retry (a flaky Wi-Fi, a double tap)
returns the stored result instead of storing twice; the same key with another payload is
refused (422).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from warelink.edge.outbox import Draft, Outbox, StoreTimeout, Unencodable
from warelink.protocol import limits
from warelink.protocol.messages import (
    Count,
    EventBody,
    Movement,
    Receipt,
    Shipment,
    TrafficClass,
    Verification,
    WeightReading,
)

log = structlog.get_logger(__name__)

MAX_KEY = limits.KEY_MAX
# A request that cannot be stored this fast (a full disk) is answered 503, not held.
STORE_TIMEOUT_S = 3.0
RETRY_AFTER_S = 5

# The bounds of protocol/limits.py, as the wire decoders enforce them at the hub: a
# request the hub would refuse is refused here, before it is stored.
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=limits.ID_MAX,
                                            pattern=limits.ID_PATTERN)]  # fmt: skip
Code = Annotated[str, StringConstraints(min_length=1, max_length=limits.CODE_MAX,
                                        pattern=limits.CODE_PATTERN)]  # fmt: skip
Gtin = Annotated[str, StringConstraints(pattern=limits.GTIN_PATTERN)]
Sscc = Annotated[str, StringConstraints(pattern=limits.SSCC_PATTERN)]
Quantity = Annotated[int, Field(ge=1, le=limits.QUANTITY_MAX)]
Counted = Annotated[int, Field(ge=0, le=limits.QUANTITY_MAX)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceId = Field("handheld", description="Which handheld.")


class ReceiveRequest(_Request):
    location: Code
    gtin: Gtin
    quantity: Quantity
    lot: Code | None = None
    expiry: dt.date | None = None
    sscc: Sscc | None = None
    serial: Code | None = None


class MoveRequest(_Request):
    """Putaway (dock → shelf) and pick (shelf → staging) are movements."""

    from_location: Code
    to_location: Code
    gtin: Gtin
    quantity: Quantity
    lot: Code | None = None
    lpn: Code | None = None


class PickRequest(MoveRequest):
    """A pick (shelf → staging), against the hub's pick task when the clerk has one."""

    task: int | None = Field(None, ge=1, le=limits.REFERENCE_MAX,
                             description="the hub's pick task id")  # fmt: skip


class VerifyRequest(_Request):
    gtin: Gtin
    quantity: Quantity
    lot: Code | None = None
    order: Code | None = None
    scale: DeviceId | None = Field(None, description="A scale of this gateway to weigh with.")


class ShipRequest(_Request):
    location: Code
    gtin: Gtin
    quantity: Quantity
    lot: Code | None = None
    sscc: Sscc | None = None


class CountRequest(_Request):
    location: Code
    gtin: Gtin
    counted: Counted
    lot: Code | None = None


class LatestWeights:
    """The newest stable weight of each scale of the gateway, for verify."""

    def __init__(self) -> None:
        self.kg: dict[str, float] = {}

    def wrap(self, emit: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def record(
            device: str, cls: TrafficClass, body: EventBody, occurred_at: Any = None
        ) -> None:
            if isinstance(body, WeightReading) and body.stable:
                self.kg[device] = body.weight if body.unit == "kg" else body.weight * 0.45359237
            await emit(device, cls, body, occurred_at)

        return record


class HandheldApi:
    def __init__(
        self,
        outbox: Outbox,
        weights: LatestWeights,
        gateway: str,
        *,
        store_timeout_s: float = STORE_TIMEOUT_S,
    ) -> None:
        self.store_timeout_s = store_timeout_s
        self.outbox = outbox
        self.weights = weights
        self.gateway = gateway
        self._in_flight: set[str] = set()
        self.app = web.Application()
        operations: dict[str, tuple[type[_Request], Callable[[Any], EventBody]]] = {
            "receive": (ReceiveRequest, self._receipt),
            "putaway": (MoveRequest, self._movement),
            "pick": (PickRequest, self._pick),
            "verify": (VerifyRequest, self._verification),
            "ship": (ShipRequest, self._shipment),
            "count": (CountRequest, self._count),
        }
        for name, (model, body) in operations.items():
            self.app.router.add_post(f"/api/v1/{name}", self._handler(name, model, body))
        self.app.router.add_get("/api/v1/status", self._status)

    # ------------------------------------------------------------------ bodies

    @staticmethod
    def _receipt(r: ReceiveRequest) -> EventBody:
        return Receipt(location=r.location, gtin=r.gtin, quantity=r.quantity, lot=r.lot,
                       expiry=r.expiry, sscc=r.sscc, serial=r.serial)  # fmt: skip

    @staticmethod
    def _movement(r: MoveRequest) -> EventBody:
        return Movement(from_location=r.from_location, to_location=r.to_location,
                        gtin=r.gtin, quantity=r.quantity, lot=r.lot, lpn=r.lpn)  # fmt: skip

    @staticmethod
    def _pick(r: PickRequest) -> EventBody:
        return Movement(from_location=r.from_location, to_location=r.to_location,
                        gtin=r.gtin, quantity=r.quantity, lot=r.lot, lpn=r.lpn,
                        task=r.task)  # fmt: skip

    def _verification(self, r: VerifyRequest) -> EventBody:
        if r.scale is not None and r.scale not in self.weights.kg:
            raise _Refused(409, f"scale {r.scale!r} has no stable weight yet: weigh first")
        weight = None if r.scale is None else self.weights.kg[r.scale]
        return Verification(gtin=r.gtin, quantity=r.quantity, lot=r.lot, weight=weight,
                            scale=r.scale, order=r.order)  # fmt: skip

    @staticmethod
    def _shipment(r: ShipRequest) -> EventBody:
        return Shipment(location=r.location, gtin=r.gtin, quantity=r.quantity, lot=r.lot,
                        sscc=r.sscc)  # fmt: skip

    @staticmethod
    def _count(r: CountRequest) -> EventBody:
        return Count(location=r.location, gtin=r.gtin, counted=r.counted, lot=r.lot)

    # ------------------------------------------------------------------ handling

    def _handler(
        self, operation: str, model: type[_Request], make: Callable[[Any], EventBody]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            key = request.headers.get("Idempotency-Key", "")
            if not 0 < len(key) <= MAX_KEY:
                return _problem(400, f"an Idempotency-Key header (1-{MAX_KEY} chars) is needed")
            raw = await request.read()
            try:
                parsed = model.model_validate_json(raw)
            except ValidationError as exc:
                return _problem(422, _validation_detail(exc))
            fingerprint = hashlib.sha256(f"{operation}\0".encode() + raw).hexdigest()
            if key in self._in_flight:
                return _problem(409, f"a request with key {key!r} is being stored: retry")
            self._in_flight.add(key)
            try:
                known = await asyncio.to_thread(self.outbox.find_request, key)
                if known is not None:
                    if known[0] != fingerprint:
                        return _problem(422, f"key {key!r} was used for another request")
                    return _stored(key, operation, known[1], replayed=True)
                body = make(parsed)
                draft = Draft(parsed.device, TrafficClass.LEDGER, body, dt.datetime.now(dt.UTC),
                              request=(key, fingerprint))  # fmt: skip
                seq = await self.outbox.append([draft], timeout=self.store_timeout_s)
            except _Refused as refused:
                return _problem(refused.status, refused.detail)
            except StoreTimeout as exc:  # not stored at all: the same key may come again
                log.warning("handheld.not_stored", operation=operation, key=key, reason=str(exc))
                refusal = _problem(503, f"{exc}; retry later with the same Idempotency-Key")
                refusal.headers["Retry-After"] = str(RETRY_AFTER_S)
                return refusal
            except Unencodable as exc:
                return _problem(422, str(exc))
            finally:
                self._in_flight.discard(key)
            log.info("handheld.stored", operation=operation, key=key, seq=seq,
                     device=parsed.device)  # fmt: skip
            return _stored(key, operation, seq, replayed=False, status=201)

        return handle

    async def _status(self, request: web.Request) -> web.Response:
        status = await asyncio.to_thread(self.outbox.status)
        return _json(200, {
            "gateway": self.gateway, "last_seq": status.last_seq, "acked_seq": status.acked_seq,
            "waiting_for_hub": status.depth, "scales": self.weights.kg,
        })  # fmt: skip


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def _validation_detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )


def _json(status: int, data: Any) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(data), content_type="application/json"
    )


def _problem(status: int, detail: str) -> web.Response:
    return _json(status, {"status": status, "detail": detail})


def _stored(
    key: str, operation: str, seq: int, *, replayed: bool, status: int = 200
) -> web.Response:
    return _json(status, {"key": key, "operation": operation, "seq": seq, "replayed": replayed})


async def serve_handheld_api(address: str, api: HandheldApi) -> None:
    """Serve until cancelled; ``address`` is host:port."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(api.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    log.info("handheld.serving", address=address)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
