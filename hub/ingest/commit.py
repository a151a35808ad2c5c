"""One ingest flush, committed: events exactly once, their ledger effects, the watermarks.

Everything here happens in one transaction, so an event, its ledger effect and the ack
watermark that covers it are never apart. Works per gateway on whole lists: the usual
case (a gateway's new events in order, past everything stored) costs a few list
operations and one COPY, no per-event dictionary.
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from warelink.hub.ingest import device_rules, outboxes, quarantine, store
from warelink.hub.stock.balances import BalanceChange
from warelink.protocol import limits, wire
from warelink.protocol.delivery import Coverage
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import CommandReport, Event
from warelink.protocol.topics import Topics


class Malformed(Exception):
    """An events message whose envelope the hub cannot use: quarantined whole."""


@dataclass(frozen=True)
class IncomingBatch:
    """An events message, decoded and checked, waiting for its flush."""

    site: str
    gateway: str
    first_seq: int
    last_seq: int
    events: list[Event]
    skew_ms: float  # the edge's clock minus the hub's, when it arrived (transit included)
    quarantined: list[wire.BadEvent] = field(default_factory=list)
    outbox: str = ""  # the outbox the events come from ("" from an edge before identities)
    session: int = 0  # the edge's session that sent it


@dataclass
class FlushResult:
    """What one committed flush changed, for acks, replay requests and live deltas."""

    acks: dict[str, tuple[str, int]] = field(default_factory=dict)  # gateway → (site, seq)
    outboxes: dict[str, str] = field(default_factory=dict)  # gateway → the outbox acked
    refused: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # → site, outbox, why
    newly_refused: int = 0  # outboxes refused for the first time
    gaps: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # → (site, from, to)
    events: list[tuple[str, list[Event]]] = field(default_factory=list)  # new, per gateway
    balances: list[BalanceChange] = field(default_factory=list)
    committed: int = 0
    duplicates: int = 0
    rejected: int = 0  # events under a site their gateway does not belong to
    quarantined: int = 0  # events set aside (newly)
    anomalies: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # too-wide gaps
    gaps_detected: int = 0
    gaps_filled: int = 0

    def absorb(self, other: FlushResult) -> None:
        """Add another flush's result (of other gateways) to this one."""
        self.acks.update(other.acks)
        self.outboxes.update(other.outboxes)
        self.refused.update(other.refused)
        self.newly_refused += other.newly_refused
        self.gaps.update(other.gaps)
        self.events += other.events
        self.balances += other.balances
        self.committed += other.committed
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.quarantined += other.quarantined
        self.anomalies.update(other.anomalies)
        self.gaps_detected += other.gaps_detected
        self.gaps_filled += other.gaps_filled


def decode_events(
    topic: str, payload: bytes, topics: Topics, now: dt.datetime | None = None
) -> IncomingBatch:
    """One events message, its bad events set aside; Malformed if the envelope is bad.

    ``now`` is the hub's clock, the one event times are bounded by (limits.event_problem).
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        where = topics.parse(topic)
    except DecodeError as exc:
        raise Malformed(str(exc)) from None
    try:
        batch = wire.decode_batch(payload)  # the usual case: every event sound
        header: wire.DecodedBatch | wire.RawBatch = batch
        events, bad = batch.events, []
    except DecodeError:
        try:  # the slow path: which events are bad?
            split = wire.split_batch(payload)
        except DecodeError as exc:
            raise Malformed(str(exc)) from None
        header, events = split.envelope, split.events
        bad = list(split.bad)
    if header.gateway != where.gateway:
        raise Malformed(f"batch of gateway {header.gateway!r} on the topic of {where.gateway!r}")
    first, last = header.first_seq, header.last_seq
    if first > last:
        raise Malformed(f"batch covers no range: [{first}, {last}]")
    good: list[Event] = []
    oldest, newest = now - limits.EVENT_MAX_AGE, now + limits.EVENT_MAX_AHEAD
    gateway = where.gateway
    for event in events:
        if (
            event.gateway == gateway
            and first <= event.seq <= last
            and oldest <= event.occurred_at <= newest
        ):
            good.append(event)  # the usual case: three comparisons
            continue
        problem = _event_problem(event, gateway, first, last, now)
        seq = event.seq if first <= event.seq <= last else None
        bad.append(wire.BadEvent(wire.encode_event(event), seq, problem))
    skew = (header.sent_at - now).total_seconds() * 1000
    return IncomingBatch(
        where.site, where.gateway, first, last, good, skew, bad, header.outbox, header.session
    )


def _event_problem(event: Event, gateway: str, first: int, last: int, now: dt.datetime) -> str:
    if event.gateway != gateway:
        return f"event of gateway {event.gateway!r} in a batch of {gateway!r}"
    if not first <= event.seq <= last:
        return f"event seq {event.seq} outside the batch's range [{first}, {last}]"
    return limits.event_problem(event.occurred_at, now) or "out of bounds"


async def _own_outbox(
    mark: store.GatewayMark,
    batches: list[IncomingBatch],
    result: FlushResult,
    *,
    conn: AsyncConnection,
) -> list[IncomingBatch]:
    """The batches of the outbox that speaks for the gateway (``hub.ingest.outboxes``);
    any other outbox's are refused, loudly, and neither stored nor acked."""
    refused = [b for b in batches if (b.outbox, b.session) == mark.refused_session]
    if refused:  # a copy of the current outbox, caught sending other events under its seqs
        why = f"outbox {mark.outbox} session {refused[0].session} sent other events before"
        await outboxes.refuse(mark.site, mark.id, refused[0].outbox, why,
                              session=refused[0].session, conn=conn)  # fmt: skip
        result.refused[mark.id] = (mark.site, refused[0].outbox, why)
        batches = [b for b in batches if b not in refused]
    claims = {b.outbox for b in batches}
    if claims <= {"", mark.outbox}:
        return batches  # the usual case: the current outbox
    states = await outboxes.known_states(mark.id, conn=conn)
    taken: list[IncomingBatch] = []
    for claimed in sorted(claims, key=lambda c: c != mark.outbox):  # the current one first
        theirs = [b for b in batches if b.outbox == claimed]
        judgement = outboxes.judge(
            current=mark.outbox, claimed=claimed, known_state=states.get(claimed),
            oldest_claimed=min(b.first_seq for b in theirs), max_seq=mark.max_seq,
        )  # fmt: skip
        if judgement.verdict is outboxes.Verdict.REFUSE:
            first = await outboxes.refuse(mark.site, mark.id, claimed, judgement.reason,
                                          conn=conn)  # fmt: skip
            result.refused[mark.id] = (mark.site, claimed, judgement.reason)
            result.newly_refused += first
            continue
        if judgement.verdict is outboxes.Verdict.ADOPT:
            await outboxes.adopt(mark.id, claimed, conn=conn)
            mark.outbox = claimed
            states[claimed] = "current"
        taken += theirs
    return taken


async def _not_held(
    gateway: str, events: list[Event], mark: store.GatewayMark, *, conn: AsyncConnection
) -> str:
    """Why events at or below the highest seq the hub holds cannot be acked as held, or
    "" when the hub holds each of them (the same event id, or in quarantine). The hub
    never acks an event it has not stored."""
    differ = await store.not_held(gateway, events, conn=conn)
    for seq, held in differ:
        if held is not None:
            return f"seq {seq}: the hub holds another event ({held}) under it"
    missing = [seq for seq, _ in differ if seq <= mark.acked_seq]
    if missing:
        kept = await quarantine.held_seqs(gateway, missing, conn=conn)
        if lost := [seq for seq in missing if seq not in kept]:
            return f"seq {lost[0]}: acked before, but the hub holds no event under it"
    return ""


def _in_order(events: list[Event]) -> list[Event]:
    """The events by seq, each seq once (the first copy wins)."""
    seqs = [e.seq for e in events]
    if all(map(operator.lt, seqs, seqs[1:])):
        return events  # the usual case: one or more batches in send order
    unique: dict[int, Event] = {}
    for event in events:
        unique.setdefault(event.seq, event)
    return [unique[seq] for seq in sorted(unique)]


async def commit_events(batches: Sequence[IncomingBatch], *, conn: AsyncConnection) -> FlushResult:
    """Store the batches exactly once with their ledger effects; one transaction."""
    result = FlushResult()
    per_gateway: dict[str, list[IncomingBatch]] = {}
    for batch in batches:
        per_gateway.setdefault(batch.gateway, []).append(batch)
    if not per_gateway:
        return result
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        await store.ensure_gateways(((b[0].site, g) for g, b in per_gateway.items()), conn=conn)
        marks = await store.lock_gateways(list(per_gateway), conn=conn)
        fresh_rows: list[store.Row] = []
        maybe_rows: list[store.Row] = []
        new: dict[str, list[Event]] = {}
        maybe: dict[str, list[Event]] = {}
        offered: dict[str, int] = {}
        for gateway, mark in marks.items():
            mine = [b for b in per_gateway[gateway] if b.site == mark.site]
            result.rejected += sum(len(b.events) for b in per_gateway[gateway] if b not in mine)
            mine = await _own_outbox(mark, mine, result, conn=conn)
            events = _in_order([e for b in mine for e in b.events])
            seqs = [e.seq for e in events]
            # seq <= watermark: stored; (watermark, max_seq]: maybe stored; > max_seq: new.
            low = bisect.bisect_right(seqs, mark.acked_seq)
            high = bisect.bisect_right(seqs, mark.max_seq, lo=low)
            if high and (why := await _not_held(gateway, events[:high], mark, conn=conn)):
                outbox, session = mine[0].outbox, mine[0].session
                first = await outboxes.refuse(mark.site, gateway, outbox, why, session=session,
                                              conn=conn)  # fmt: skip
                result.refused[gateway] = (mark.site, outbox, why)
                result.newly_refused += first
                mine, events, low, high = [], [], 0, 0
            per_gateway[gateway] = mine
            offered[gateway] = sum(len(b.events) for b in mine)
            new[gateway] = events[high:]
            fresh_rows += store.event_rows(mark.site, events[high:], now)
            if high > low:
                maybe[gateway] = events[low:high]
                maybe_rows += store.event_rows(mark.site, events[low:high], now)
        if fresh_rows:
            await store.copy_events(fresh_rows, conn=conn)
        if maybe_rows:
            inserted = await store.insert_events_dedup(maybe_rows, conn=conn)
            for gateway, events in maybe.items():
                stored = [e for e in events if (gateway, e.seq) in inserted]
                new[gateway] = stored + new[gateway]
        applied: list[tuple[str, list[Event]]] = []
        for gateway, mark in marks.items():
            if not per_gateway[gateway]:
                continue
            was_watermark, had_early = mark.acked_seq, bool(mark.early_ranges)
            coverage = Coverage(mark.acked_seq, [(lo, hi) for lo, hi in mark.early_ranges])
            open_gap = coverage.gap
            for batch in sorted(per_gateway[gateway], key=operator.attrgetter("first_seq")):
                coverage.cover(batch.first_seq, batch.last_seq)
            gap = coverage.gap
            detected = gap is not None and gap != open_gap
            filled = open_gap is not None and gap != open_gap
            result.gaps_detected += detected
            result.gaps_filled += filled
            mark.acked_seq = coverage.watermark
            mark.early_ranges = [list(r) for r in coverage.early]
            mark.max_seq = max(mark.max_seq, *(b.last_seq for b in per_gateway[gateway]))
            if gap is not None and gap[1] - gap[0] + 1 > limits.GAP_MAX:
                result.anomalies[gateway] = (mark.site, *gap)  # reported, never asked for
            elif gap is not None:
                result.gaps[gateway] = (mark.site, *gap)
            set_aside = [q for b in per_gateway[gateway] for q in b.quarantined
                         if q.seq is not None or b.last_seq > was_watermark]  # fmt: skip
            result.quarantined += await quarantine.keep_events(
                mark.site, gateway, set_aside, conn=conn
            )
            events = new[gateway]
            duplicates = offered[gateway] - len(events)
            result.duplicates += duplicates
            result.committed += len(events)
            await store.update_gateway(
                mark,
                received=len(events),
                duplicates=duplicates,
                gaps_detected=int(detected),
                gaps_filled=int(filled),
                skew_ms=per_gateway[gateway][-1].skew_ms,
                conn=conn,
            )
            result.acks[gateway] = (mark.site, mark.acked_seq)
            result.outboxes[gateway] = mark.outbox or ""
            result.events.append((mark.site, events))
            await store.record_readings(mark.site, events, conn=conn)
            # The ledger takes a gateway's events in seq order: only up to the watermark.
            if had_early and mark.acked_seq > was_watermark:
                ready = await store.stored_effects(
                    gateway, was_watermark, mark.acked_seq, device_rules.EFFECT_TYPES, conn=conn
                )
            else:
                ready = events[: bisect.bisect_right([e.seq for e in events], mark.acked_seq)]
            applied.append((mark.site, ready))
        result.balances = (await device_rules.apply(applied, conn=conn)).balances
        reports = [
            (e.gateway, e.body) for _, events in applied for e in events
            if type(e.body) is CommandReport
        ]  # fmt: skip
        await store.record_command_reports(reports, conn=conn)
    return result
