"""The edge's send window, without a broker: examples of each rule, then properties.

The properties drive a ``SendWindow`` against a model outbox (seqs with holes, as
telemetry over budget leaves) and a model hub that keeps the stream as the real one
does (``protocol.delivery.Coverage``) and acks its watermark. A Hypothesis state machine
interleaves appends, sends planned and completed (or lost), acks (current, stale,
duplicated, past the newest), their recording, replay requests, hub instances coming and
going, sessions ending and starting, and time passing.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from warelink.protocol.delivery import Coverage
from warelink.protocol.sending import (
    TRANSITIONS,
    AckRefused,
    AckTimeout,
    Action,
    Announce,
    Gather,
    HubBehind,
    HubOffline,
    HubOnline,
    Idle,
    InstanceGone,
    LinkEvent,
    NewOutbox,
    Phase,
    RecordAck,
    Send,
    SendWindow,
)

TIMEOUT = 5.0


def window(**overrides: Any) -> SendWindow:
    options: dict[str, Any] = {
        "acked": 0,
        "origin": 0,
        "window_events": 100,
        "batch_max_events": 10,
        "ack_timeout_s": TIMEOUT,
    }
    options.update(overrides)
    return SendWindow(**options)


def answered(w: SendWindow, *, hub_watermark: int | None = None, now: float = 0.0) -> None:
    """Connected, one hub instance present, the birth answered with ``hub_watermark``."""
    assert w.connected(now) == [Announce()]
    w.presence("hub-1", online=True, now=now)
    seq = w.acked if hub_watermark is None else hub_watermark
    for action in w.ack(seq, newest=max(seq, w.acked), now=now):
        if isinstance(action, RecordAck):
            w.recorded(action.seq, now)
    assert w.phase is Phase.ANSWERED


def sends(actions: list[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def only_send(actions: list[Action]) -> Send:
    (send,) = sends(actions)
    return send


# ------------------------------------------------------------------ the handshake table


def test_the_handshake_table_is_total() -> None:
    assert set(TRANSITIONS) == {(p, e) for p in Phase for e in LinkEvent}


def test_nothing_goes_out_before_the_birth_is_answered() -> None:
    w = window()
    assert w.connected(0.0) == [Announce()]
    assert w.presence("hub-1", online=True, now=0.0) == [HubOnline("hub-1"), Announce()]
    assert isinstance(w.next(newest=50, now=0.1)[-1], Idle)
    assert w.ack(0, newest=50, now=0.2) == []  # the answer: the hub's watermark is ours
    assert only_send(w.next(newest=50, now=0.3)) == Send(0, None, 10, live=False, epoch=w.epoch)


def test_an_unanswered_birth_is_announced_again_after_the_ack_timeout() -> None:
    w = window()
    w.connected(0.0)
    w.presence("hub-1", online=True, now=0.0)
    assert Announce() not in w.next(newest=5, now=TIMEOUT - 0.1)
    assert Announce() in w.next(newest=5, now=TIMEOUT + 0.1)
    w.ack(0, newest=5, now=TIMEOUT + 0.2)
    assert Announce() not in w.next(newest=5, now=100.0)


def test_no_announce_again_while_no_hub_is_there() -> None:
    w = window()
    w.connected(0.0)
    assert w.next(newest=5, now=100.0) == [Idle(TIMEOUT / 2)]


# ------------------------------------------------------------------ acks


def test_in_order_batches_move_the_cursor_and_acks_the_watermark() -> None:
    w = window()
    answered(w)
    send = only_send(w.next(newest=25, now=1.0))
    assert (send.after, send.upto) == (0, None)
    assert w.sent(send, covered=10, seqs=range(1, 11), now=1.0) == 0
    assert (w.cursor, w.acked) == (10, 0)
    assert only_send(w.next(newest=25, now=1.0)).after == 10
    assert w.ack(10, newest=25, now=1.1) == [RecordAck(10)]
    w.recorded(10, 1.1)
    assert w.acked == 10
    assert w.ack(7, newest=25, now=1.2) == []  # an old ack moves nothing
    assert w.acked == 10


def test_an_ack_past_the_newest_stored_seq_is_refused() -> None:
    w = window()
    answered(w)
    before = (w.acked, w.cursor, w.epoch, w.hub_online)
    assert w.ack(26, newest=25, now=1.0) == [AckRefused(26, 25)]
    assert (w.acked, w.cursor, w.epoch, w.hub_online) == before


def test_the_window_holds_back_what_the_hub_has_not_acked() -> None:
    w = window(window_events=3, batch_max_events=1)
    answered(w)
    for seq in (1, 2, 3):
        send = only_send(w.next(newest=10, now=1.0))
        w.sent(send, covered=seq, seqs=[seq], now=1.0)
    assert isinstance(w.next(newest=10, now=1.0)[-1], Idle)
    w.ack(1, newest=10, now=1.5)
    w.recorded(1, 1.5)
    assert only_send(w.next(newest=10, now=1.5)).after == 3


def test_a_birth_answered_below_the_watermark_sends_from_the_hubs() -> None:
    w = window(acked=40, origin=0)
    answered(w, hub_watermark=40)
    w.disconnected()
    w.connected(10.0)
    w.presence("hub-1", online=True, now=10.0)
    assert w.ack(25, newest=50, now=10.1) == [HubBehind(hub_watermark=25, acked=40)]
    assert (w.cursor, w.acked) == (25, 40)
    assert only_send(w.next(newest=50, now=10.2)).after == 25


def test_a_new_outbox_past_the_hubs_watermark_sends_from_the_hubs() -> None:
    w = window(acked=100, origin=100)  # a replaced box: its outbox starts at 101
    w.connected(0.0)
    w.presence("hub-1", online=True, now=0.0)
    assert w.ack(60, newest=120, now=0.1) == [NewOutbox(hub_watermark=60, origin=100)]
    assert only_send(w.next(newest=120, now=0.2)).after == 60


# ------------------------------------------------------------------ rewinds


def test_a_send_planned_before_a_rewind_does_not_move_the_cursor() -> None:
    w = window()
    answered(w)
    first = only_send(w.next(newest=30, now=1.0))
    w.sent(first, covered=10, seqs=range(1, 11), now=1.0)
    second = only_send(w.next(newest=30, now=1.0))
    w.replay(4, now=1.1)  # the hub misses 4..: while the second batch is in flight
    w.sent(second, covered=20, seqs=range(11, 21), now=1.2)
    assert w.cursor == 3
    again = only_send(w.next(newest=30, now=1.3))
    assert again.after == 3
    assert w.sent(again, covered=13, seqs=range(4, 14), now=1.3) == 7  # 4..10 went before


def test_an_ack_that_overtakes_a_send_in_flight_keeps_the_cursor_where_it_put_it() -> None:
    w = window()
    answered(w)
    send = only_send(w.next(newest=30, now=1.0))
    w.ack(25, newest=30, now=1.1)  # the hub had them from an earlier session
    w.recorded(25, 1.1)
    w.sent(send, covered=10, seqs=range(1, 11), now=1.2)
    assert w.cursor == 25


def test_the_ack_timeout_rewinds_to_the_watermark() -> None:
    w = window(window_events=10, batch_max_events=10)
    answered(w)
    send = only_send(w.next(newest=10, now=1.0))
    w.sent(send, covered=10, seqs=range(1, 11), now=1.0)
    assert w.next(newest=10, now=1.0 + TIMEOUT - 0.1) == [Idle(TIMEOUT / 2)]
    actions = w.next(newest=10, now=1.0 + TIMEOUT + 0.1)
    assert actions == [AckTimeout(acked=0, sent=10), Idle(TIMEOUT / 2)]
    assert w.cursor == 0
    assert only_send(w.next(newest=10, now=7.0)).after == 0


def test_the_ack_timeout_counts_from_the_send_not_from_the_last_ack_before_a_quiet_spell() -> None:
    w = window()
    answered(w, now=0.0)
    send = only_send(w.next(newest=5, now=100.0))  # quiet for long, then one event
    w.sent(send, covered=5, seqs=range(1, 6), now=100.0)
    assert AckTimeout(acked=0, sent=5) not in w.next(newest=5, now=101.0)
    assert AckTimeout(acked=0, sent=5) in w.next(newest=5, now=100.0 + TIMEOUT + 0.1)


# ------------------------------------------------------------------ presence


def test_an_instance_leaving_while_others_stay_sends_everything_unacked_again() -> None:
    w = window()
    answered(w)
    w.presence("hub-2", online=True, now=0.0)
    send = only_send(w.next(newest=30, now=1.0))
    w.sent(send, covered=10, seqs=range(1, 11), now=1.0)
    assert w.presence("hub-2", online=False, now=1.1) == [InstanceGone("hub-2", remaining=1)]
    assert w.cursor == 0 and w.hub_online


def test_the_last_instance_leaving_takes_the_hub_offline_unless_it_acked_lately() -> None:
    w = window()
    answered(w, now=0.0)  # the answer was an ack at 0.0: the hub is alive till TIMEOUT
    assert w.presence("hub-1", online=False, now=1.0) == []
    assert w.hub_online
    assert w.next(newest=0, now=TIMEOUT + 0.1)[0] == HubOffline()
    assert not w.hub_online
    assert w.presence("hub-1", online=True, now=20.0) == [HubOnline("hub-1"), Announce()]
    assert w.phase is Phase.ANNOUNCED  # a hub that was away hears the birth again


def test_a_hub_that_acks_is_present_even_without_its_presence() -> None:
    w = window()
    w.connected(0.0)
    w.ack(0, newest=10, now=0.1)
    assert w.hub_online and w.phase is Phase.ANSWERED
    assert sends(w.next(newest=10, now=0.2))


def test_a_disconnect_forgets_presence_and_acks() -> None:
    w = window()
    answered(w)
    w.disconnected()
    assert (w.phase, w.hub_online, w.hubs) == (Phase.OFFLINE, False, frozenset())


# ------------------------------------------------------------------ gather, live ahead


def test_a_small_batch_waits_once_for_more_events() -> None:
    w = window(gather_s=0.01)
    answered(w)
    assert w.next(newest=3, now=1.0) == [Gather(0.01)]
    assert only_send(w.next(newest=4, now=1.01)).after == 0
    assert sends(w.next(newest=40, now=1.02))  # a full batch does not wait


def test_live_events_skip_ahead_of_a_large_backlog() -> None:
    w = window(window_events=1000, batch_max_events=10, live_ahead_batches=2)
    answered(w)
    backlog = only_send(w.next(newest=100, now=1.0))
    assert (backlog.after, backlog.upto, backlog.live) == (0, 100, False)
    w.sent(backlog, covered=10, seqs=range(1, 11), now=1.0)
    live = only_send(w.next(newest=103, now=1.1))
    assert (live.after, live.upto, live.live) == (100, None, True)
    w.sent(live, covered=103, seqs=range(101, 104), now=1.1)
    assert only_send(w.next(newest=103, now=1.2)).after == 10  # then the backlog's turn
    w.sent(Send(10, 100, 10, False, w.epoch), covered=100, seqs=range(11, 101), now=1.3)
    assert (w.cursor, w.live_tail) == (103, None)  # the backlog is in: back in order


@pytest.mark.parametrize(
    "options",
    [
        {"acked": -1},
        {"window_events": 0},
        {"batch_max_events": 0},
        {"ack_timeout_s": 0},
        {"gather_s": -1},
    ],
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        window(**options)


# ------------------------------------------------------------------ the model world


@dataclass
class ModelOutbox:
    """The outbox's reading rules (``Outbox.read_batch``, ``mark_acked``) over a list."""

    newest: int = 0
    stored: list[int] = field(default_factory=list)  # sorted; holes were dropped
    acked: int = 0

    def append(self, count: int, dropped: set[int]) -> None:
        for i in range(count):
            if i not in dropped:
                self.stored.append(self.newest + i + 1)
        self.newest += count

    def read(self, after: int, limit: int, upto: int | None) -> tuple[list[int], int]:
        last = self.newest if upto is None else min(self.newest, upto)
        start = bisect.bisect_right(self.stored, after)
        end = bisect.bisect_right(self.stored, last)
        rows = self.stored[start:end][:limit]
        return rows, rows[-1] if len(rows) == limit else last

    def mark_acked(self, seq: int) -> int:
        self.acked = max(self.acked, min(seq, self.newest))
        return self.acked


class SendWindowWorld(RuleBasedStateMachine):
    """A send window, a model outbox and a model hub, with every input in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.outbox = ModelOutbox()
        self.hub = Coverage()
        self.w = window()
        self.in_flight: Send | None = None
        self.recording: int | None = None  # an ack the outbox is recording
        self.sent: set[int] = set()  # seqs handed to the broker since a rewind below them
        self.below_on_purpose = False  # a birth answer below the watermark rewound past it
        self.last_acked = 0

    @initialize(
        origin=st.integers(0, 30),
        acked=st.integers(0, 30),
        unacked=st.integers(0, 60),
        hub_ahead=st.integers(0, 60),
        window_events=st.integers(1, 40),
        batch=st.integers(1, 8),
        live_ahead=st.sampled_from([1, 2, 4, 1000]),
        gather=st.sampled_from([0.0, 0.01]),
    )
    def start(
        self,
        origin: int,
        acked: int,
        unacked: int,
        hub_ahead: int,
        window_events: int,
        batch: int,
        live_ahead: int,
        gather: float,
    ) -> None:
        """An outbox that may have run before: stored after ``origin``, acked up to
        ``origin + acked``; the hub may have more than the outbox knows acked."""
        self.outbox = ModelOutbox(newest=origin, acked=origin + acked)
        self.outbox.append(acked + unacked, set())
        self.hub = Coverage(watermark=origin + acked + min(hub_ahead, unacked))
        self.last_acked = origin + acked
        self.w = SendWindow(
            acked=origin + acked,
            origin=origin,
            window_events=window_events,
            batch_max_events=batch,
            ack_timeout_s=TIMEOUT,
            gather_s=gather,
            live_ahead_batches=live_ahead,
        )

    # -------------------------------------------------------------- helpers

    @property
    def online(self) -> bool:
        return self.w.phase is not Phase.OFFLINE

    def take(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send():
                    assert self.in_flight is None
                    self.check_planned(action)
                    self.in_flight = action
                case RecordAck(seq=seq):
                    assert self.recording is None
                    self.recording = seq
                case HubBehind() | NewOutbox():
                    self.below_on_purpose = True
                case _:
                    pass

    def check_planned(self, send: Send) -> None:
        w = self.w
        assert send.epoch == w.epoch and send.limit == w.batch_max_events
        assert w.phase is Phase.ANSWERED and w.hub_online  # the birth answered, a hub there
        if send.live:
            assert send.after == w.live_tail and send.upto is None
        else:  # in order (the backlog too): from the cursor, inside the window
            assert send.after == w.cursor
            assert w.cursor - w.acked < w.window_events
            assert (send.upto is None) == (w.live_tail is None)

    def watch(self, epoch: int) -> None:
        """After a rewind, what lies past the cursor has to be sent again."""
        if self.w.epoch != epoch:
            self.sent = {seq for seq in self.sent if seq <= self.w.cursor}

    def deliver(self, *, lost: bool) -> None:
        send, self.in_flight = self.in_flight, None
        assert send is not None
        rows, covered = self.outbox.read(send.after, send.limit, send.upto)
        if covered > send.after:
            self.sent.update(range(send.after + 1, covered + 1))
            if not lost:
                self.hub.cover(send.after + 1, covered)
        epoch = self.w.epoch
        self.w.sent(send, covered=covered, seqs=rows, now=self.now)
        self.watch(epoch)

    def acked_by_hub(self, seq: int) -> None:
        epoch = self.w.epoch
        self.take(self.w.ack(seq, newest=self.outbox.newest, now=self.now))
        self.watch(epoch)

    def record(self) -> None:
        seq, self.recording = self.recording, None
        assert seq is not None
        self.w.recorded(self.outbox.mark_acked(seq), self.now)

    # -------------------------------------------------------------- rules

    @rule(count=st.integers(1, 30), dropped=st.sets(st.integers(0, 29), max_size=5))
    def append(self, count: int, dropped: set[int]) -> None:
        self.outbox.append(count, dropped)

    @rule(seconds=st.floats(0, 2 * TIMEOUT))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: not self.online)
    @rule()
    def connect(self) -> None:
        epoch = self.w.epoch
        self.take(self.w.connected(self.now))
        self.watch(epoch)

    @precondition(lambda self: self.online)
    @rule()
    def disconnect(self) -> None:
        self.w.disconnected()
        self.in_flight = None  # the session's tasks are cancelled mid-way
        self.recording = None

    @precondition(lambda self: self.online and self.recording is None)
    @rule(instance=st.sampled_from(["hub-1", "hub-2"]), online=st.booleans())
    def presence(self, instance: str, online: bool) -> None:
        epoch = self.w.epoch
        self.take(self.w.presence(instance, online=online, now=self.now))
        self.watch(epoch)

    @precondition(lambda self: self.online and self.in_flight is None)
    @rule()
    def next(self) -> None:
        epoch = self.w.epoch
        self.take(self.w.next(self.outbox.newest, self.now))
        self.watch(epoch)

    @precondition(lambda self: self.in_flight is not None)
    @rule(lost=st.booleans())
    def send_completes(self, lost: bool) -> None:
        self.deliver(lost=lost)

    @precondition(lambda self: self.online and self.recording is None)
    @rule(rounds=st.integers(1, 10))
    def a_quiet_while(self, rounds: int) -> None:
        """Sends and acks go to and fro for a while, nothing lost."""
        for _ in range(rounds):
            if self.in_flight is None:
                self.next()
            if self.in_flight is not None:
                self.deliver(lost=False)
                self.acked_by_hub(self.hub.watermark)
            if self.recording is not None:
                self.record()

    @precondition(lambda self: self.online and self.recording is None)
    @rule()
    def ack(self) -> None:
        self.acked_by_hub(self.hub.watermark)

    @precondition(lambda self: self.online and self.recording is None)
    @rule(data=st.data())
    def stale_ack(self, data: st.DataObject) -> None:
        self.acked_by_hub(data.draw(st.integers(0, self.hub.watermark)))

    @precondition(lambda self: self.online and self.recording is None)
    @rule(past=st.integers(1, 1000))
    def ack_past_the_newest(self, past: int) -> None:
        before = (self.w.acked, self.w.cursor, self.w.epoch, self.w.phase, self.w.hub_online)
        seq = self.outbox.newest + past
        assert self.w.ack(seq, newest=self.outbox.newest, now=self.now) == [
            AckRefused(seq, self.outbox.newest)
        ]
        assert (
            self.w.acked,
            self.w.cursor,
            self.w.epoch,
            self.w.phase,
            self.w.hub_online,
        ) == before

    @precondition(lambda self: self.recording is not None)
    @rule()
    def ack_recorded(self) -> None:
        self.record()

    @precondition(lambda self: self.online and self.recording is None and self.hub.gap)
    @rule()
    def replay_request(self) -> None:
        gap = self.hub.gap
        assert gap is not None
        epoch = self.w.epoch
        self.w.replay(gap[0], self.now)
        self.watch(epoch)

    # -------------------------------------------------------------- invariants

    @invariant()
    def the_watermark_is_the_hubs_and_never_goes_back(self) -> None:
        w = self.w
        assert self.last_acked <= w.acked <= self.outbox.acked <= self.hub.watermark
        self.last_acked = w.acked

    @invariant()
    def the_cursor_stays_between_the_watermark_and_the_newest(self) -> None:
        w = self.w
        assert w.cursor <= self.outbox.newest
        if w.cursor >= w.acked:
            self.below_on_purpose = False
        assert w.cursor >= w.acked or self.below_on_purpose

    @invariant()
    def the_cursor_never_skips_what_was_not_sent(self) -> None:
        w = self.w
        assert all(seq in self.sent for seq in range(w.acked + 1, w.cursor + 1))

    def teardown(self) -> None:
        """Once nothing is lost any more, everything appended reaches the hub, acked."""
        if self.recording is not None:
            self.record()
        if self.in_flight is not None:
            self.deliver(lost=False)
        if not self.online:
            self.fair(self.w.connected(self.now))
        self.fair(self.w.presence("hub-1", online=True, now=self.now))
        for _ in range(20_000):
            if self.w.acked == self.outbox.newest:
                break
            self.fair(self.w.next(self.outbox.newest, self.now))
        assert self.hub.watermark == self.outbox.newest
        assert self.w.acked == self.outbox.newest

    def fair(self, actions: list[Action]) -> None:
        """A world that loses nothing: batches arrive, the hub acks and answers at once."""
        epoch = self.w.epoch
        self.take(actions)
        self.watch(epoch)
        for action in actions:
            match action:
                case Announce():
                    self.acked_by_hub(self.hub.watermark)  # the hub answers the birth
                case Idle(seconds=seconds) | Gather(seconds=seconds):
                    self.now += seconds
                case _:
                    pass
            if self.in_flight is not None:
                self.deliver(lost=False)
                self.acked_by_hub(self.hub.watermark)
            if self.recording is not None:
                self.record()


TestSendWindowWorld = SendWindowWorld.TestCase
TestSendWindowWorld.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)


# ------------------------------------------------------------------ live ahead, end to end


@given(
    backlog=st.integers(1, 400),
    batch=st.integers(1, 10),
    live_ahead=st.integers(1, 5),
    window_events=st.integers(1, 200),
    arrivals=st.lists(st.integers(0, 4), max_size=200),
)
@settings(deadline=None)
def test_live_events_go_ahead_while_the_backlog_drains_in_order(
    backlog: int, batch: int, live_ahead: int, window_events: int, arrivals: list[int]
) -> None:
    """While live events wait, live and backlog batches take turns (the live ones never
    wait for two backlog batches in a row); the backlog goes out in order, whole; in the
    end everything is acked."""
    w = SendWindow(
        acked=0,
        origin=0,
        window_events=window_events,
        batch_max_events=batch,
        ack_timeout_s=TIMEOUT,
        live_ahead_batches=live_ahead,
    )
    outbox, hub, now = ModelOutbox(), Coverage(), 0.0
    outbox.append(backlog, set())
    answered(w)
    backlog_end: int | None = None  # the backlog draining now, if one is
    backlog_covered = 0  # how far it went out, in order
    backlogs = 0  # backlogs drained
    previous: Send | None = None
    epoch = w.epoch
    for step in range(20_000):
        if step >= len(arrivals) and w.acked == outbox.newest:
            break
        for action in w.next(outbox.newest, now):
            if isinstance(action, Idle):
                now += action.seconds
            if not isinstance(action, Send):
                continue
            rows, covered = outbox.read(action.after, action.limit, action.upto)
            if action.upto is not None:
                if action.upto != backlog_end:  # a backlog starts draining
                    assert backlog_end is None
                    backlog_end = action.upto
                else:
                    assert action.after == backlog_covered  # in order, nothing skipped
                live_waiting = w.live_tail is not None and outbox.newest > w.live_tail
                if live_waiting and previous is not None:
                    assert previous.live or previous.upto is None, "two backlog batches in a row"
            previous = action
            w.sent(action, covered=covered, seqs=rows, now=now)
            if action.upto is not None:
                backlog_covered = covered
                if w.live_tail is None:  # drained: back in order
                    assert covered == backlog_end
                    backlog_end, backlogs = None, backlogs + 1
            hub.cover(action.after + 1, covered)
            for ack in w.ack(hub.watermark, newest=outbox.newest, now=now):
                if isinstance(ack, RecordAck):
                    w.recorded(outbox.mark_acked(ack.seq), now)
        if step < len(arrivals):
            outbox.append(arrivals[step], set())
    assert w.epoch == epoch  # nothing was lost: no rewind
    assert backlog_end is None
    assert backlogs >= (backlog > live_ahead * batch)
    assert w.acked == hub.watermark == outbox.newest
    assert w.live_tail is None
