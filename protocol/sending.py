"""The edge's side of delivery, free of I/O: what the uplink sends next, and when.

The uplink (``edge/uplink.py``) owns the MQTT client and the outbox; a ``SendWindow``
owns every decision about them. The caller tells it what happened (connected, an ack, a
replay request, a hub instance's presence, a batch sent), always with the time as a
number, and asks ``next()`` what to do; the answers are the actions below, carried out
in order. Nothing here reads a clock or touches the outbox.

The rules (DESIGN.md, decisions 1 and 2):

- The *cursor* is the last seq handed to the broker in order; only the hub's cumulative
  ack moves the *acked* watermark. In-order batches go out while fewer than
  ``window_events`` seqs are unacked: flow control by the hub's acks, not by PUBACKs.
- Each session starts with a birth; nothing is sent until the hub answers it with its
  watermark (the birth handshake, one transition table below). An answer below ours
  means the hub lost what it had acked, or this outbox is new and starts past it:
  either way, send from there.
- *Rewinds* send everything after a point again: on every new session, when the hub
  comes back, when an instance that may have held batches leaves while others stay, on
  the hub's replay request, and when no ack came for ``ack_timeout_s`` after a send. A
  batch planned before a rewind never moves the cursor past it (``Send.epoch``).
- The hub is present while any hub instance's presence says so, or while its acks keep
  coming (a hub whose presence we missed still answers).
- *Live ahead*: while a backlog of more than ``live_ahead_batches`` batches drains, live
  events (past the backlog's end) go first, turn about with the backlog's batches; the
  hub holds the early range and applies it when the backlog before it is in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

LIVE_AHEAD_BATCHES: Final = 20  # a backlog of more batches than this lets live events go first


class Phase(enum.Enum):
    """Where the birth handshake of the broker session stands."""

    OFFLINE = "offline"  # no broker session
    ANNOUNCED = "announced"  # the birth is out; the hub's answer (its watermark) is not in
    ANSWERED = "answered"  # the hub answered: batches may go out


class LinkEvent(enum.Enum):
    CONNECTED = "connected"  # a broker session started
    DISCONNECTED = "disconnected"
    ACK = "ack"  # an ack came (the first after a birth is the birth's answer)
    HUB_BACK = "hub_back"  # the hub came back after being away
    ANSWER_OVERDUE = "answer_overdue"  # the hub is there, but no answer for ack_timeout_s


class LinkStep(enum.Enum):
    """What a transition does, beyond changing the phase."""

    NOTHING = "nothing"
    ANNOUNCE = "announce"  # publish the birth again
    START_OVER = "start_over"  # publish the birth, then send again from the watermark
    TAKE_WATERMARK = "take_watermark"  # the ack answers the birth: below ours, rewind to it


_P = Phase
_E = LinkEvent
_S = LinkStep

TRANSITIONS: Final[dict[tuple[Phase, LinkEvent], tuple[Phase, LinkStep]]] = {
    # A session starts with a birth (a second CONNECTED would be a new session too).
    (_P.OFFLINE, _E.CONNECTED): (_P.ANNOUNCED, _S.START_OVER),
    (_P.ANNOUNCED, _E.CONNECTED): (_P.ANNOUNCED, _S.START_OVER),
    (_P.ANSWERED, _E.CONNECTED): (_P.ANNOUNCED, _S.START_OVER),
    (_P.OFFLINE, _E.DISCONNECTED): (_P.OFFLINE, _S.NOTHING),
    (_P.ANNOUNCED, _E.DISCONNECTED): (_P.OFFLINE, _S.NOTHING),
    (_P.ANSWERED, _E.DISCONNECTED): (_P.OFFLINE, _S.NOTHING),
    (_P.OFFLINE, _E.ACK): (_P.OFFLINE, _S.NOTHING),
    (_P.ANNOUNCED, _E.ACK): (_P.ANSWERED, _S.TAKE_WATERMARK),
    (_P.ANSWERED, _E.ACK): (_P.ANSWERED, _S.NOTHING),
    # A hub that was away hears the birth again, and gets everything unacked again.
    (_P.OFFLINE, _E.HUB_BACK): (_P.OFFLINE, _S.NOTHING),
    (_P.ANNOUNCED, _E.HUB_BACK): (_P.ANNOUNCED, _S.START_OVER),
    (_P.ANSWERED, _E.HUB_BACK): (_P.ANNOUNCED, _S.START_OVER),
    # The birth or its answer got lost: again.
    (_P.OFFLINE, _E.ANSWER_OVERDUE): (_P.OFFLINE, _S.NOTHING),
    (_P.ANNOUNCED, _E.ANSWER_OVERDUE): (_P.ANNOUNCED, _S.ANNOUNCE),
    (_P.ANSWERED, _E.ANSWER_OVERDUE): (_P.ANSWERED, _S.NOTHING),
}


# ---------------------------------------------------------------- what to do


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish the birth, with the outbox's newest seq."""


@dataclass(frozen=True, slots=True)
class Send:
    """Publish the stored events after ``after`` (at most ``limit`` of them, none past
    ``upto`` when given) as one batch, then report it with ``SendWindow.sent``."""

    after: int
    upto: int | None
    limit: int
    live: bool  # a live-ahead batch, past the backlog's end
    epoch: int  # the rewinds it was planned under


@dataclass(frozen=True, slots=True)
class Gather:
    """Wait ``seconds`` for a fuller batch, then ask ``next()`` again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to send now: wait for an ack, new events or a rewind, at most ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class RecordAck:
    """Make the hub's ack durable in the outbox, then report with ``SendWindow.recorded``."""

    seq: int


# ---------------------------------------------------------------- what to say (logs, counters)


@dataclass(frozen=True, slots=True)
class AckRefused:
    """An ack past the newest stored seq: no hub can have committed what this outbox
    never stored, and taking it would trim events never sent."""

    seq: int
    newest: int


@dataclass(frozen=True, slots=True)
class HubOnline:
    instance: str  # the instance whose presence brought the hub back


@dataclass(frozen=True, slots=True)
class HubOffline:
    """No instance's presence, and no ack for ``ack_timeout_s``."""


@dataclass(frozen=True, slots=True)
class InstanceGone:
    """An instance left while others stay; what it held is sent again to them."""

    instance: str
    remaining: int


@dataclass(frozen=True, slots=True)
class AckTimeout:
    acked: int
    sent: int  # the cursor the timeout rewound from


@dataclass(frozen=True, slots=True)
class HubBehind:
    """The hub's answer to the birth is below what it had acked (its database was restored)."""

    hub_watermark: int
    acked: int


@dataclass(frozen=True, slots=True)
class NewOutbox:
    """The hub's answer to the birth is below a new outbox's origin: sent from there, the
    range the outbox never had is covered as gone."""

    hub_watermark: int
    origin: int


Action = (
    Announce
    | Send
    | Gather
    | Idle
    | RecordAck
    | AckRefused
    | HubOnline
    | HubOffline
    | InstanceGone
    | AckTimeout
    | HubBehind
    | NewOutbox
)


class SendWindow:
    """One gateway's send window over one outbox, across broker sessions."""

    def __init__(
        self,
        *,
        acked: int,
        origin: int,
        window_events: int,
        batch_max_events: int,
        ack_timeout_s: float,
        gather_s: float = 0.0,
        live_ahead_batches: int = LIVE_AHEAD_BATCHES,
    ) -> None:
        if acked < 0 or origin < 0:
            raise ValueError("acked and origin are seqs: 0 or more")
        if window_events < 1 or batch_max_events < 1 or live_ahead_batches < 1:
            raise ValueError("window_events, batch_max_events and live_ahead_batches: 1 or more")
        if not ack_timeout_s > 0 or not gather_s >= 0:
            raise ValueError("ack_timeout_s must be positive and gather_s not negative")
        self.window_events = window_events
        self.batch_max_events = batch_max_events
        self.ack_timeout_s = ack_timeout_s
        self.gather_s = gather_s
        self.live_ahead_after = live_ahead_batches * batch_max_events
        self.origin = origin  # the seq before this outbox's first
        self.phase = Phase.OFFLINE
        self.hub_online = False
        self._acked = acked
        self._cursor = acked  # last seq handed to the broker in order, this session
        self._highest_sent = acked  # for counting resends
        # The highest seq any send of this process covered: a hub can have stored of this
        # outbox only what was sent, so an ack past it trims no further (an outbox put
        # back from an image sends again what the hub claims, and the hub compares).
        self._sent_high = acked
        # While a large backlog drains, ``_tail`` is the last live seq sent and
        # ``_backlog_end`` where the backlog stops; None: in order.
        self._tail: int | None = None
        self._backlog_end = 0
        self._live_turn = True  # live-ahead: a live batch goes next, if there is one
        self._gathered = False  # the next in-order send has waited for a fuller batch
        self._epoch = 0  # rewinds so far
        self._last_progress = -math.inf  # an ack, a rewind, or a send with nothing in flight
        self._announced_at = -math.inf
        self._hubs: set[str] = set()  # hub instances whose presence is up
        self._acked_at = -math.inf  # the time of the last ack: a hub that acks is alive

    # ------------------------------------------------------------ what it knows

    @property
    def acked(self) -> int:
        """Everything up to here is committed at the hub (and recorded in the outbox)."""
        return self._acked

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def live_tail(self) -> int | None:
        """The last live seq sent ahead of a draining backlog; None when sending in order."""
        return self._tail

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def hubs(self) -> frozenset[str]:
        return frozenset(self._hubs)

    # ------------------------------------------------------------ what happened

    def connected(self, now: float) -> list[Action]:
        """A broker session started (subscriptions in place): announce, start over."""
        return self._handle(_E.CONNECTED, now)

    def disconnected(self) -> None:
        """The session ended; retained presence comes again with the next subscribe."""
        self._handle(_E.DISCONNECTED, -math.inf)
        self._hubs.clear()
        self._acked_at = -math.inf
        self.hub_online = False

    def ack(self, seq: int, *, newest: int, now: float) -> list[Action]:
        """The hub's cumulative ack; ``newest`` is the outbox's newest stored seq."""
        if seq > newest:
            return [AckRefused(seq, newest)]
        self._acked_at = now
        self.hub_online = True
        out: list[Action] = []
        if self._transition(_E.ACK) is _S.TAKE_WATERMARK and seq < self._acked:
            if self._acked > self.origin:
                out.append(HubBehind(hub_watermark=seq, acked=self._acked))
            else:
                out.append(NewOutbox(hub_watermark=seq, origin=self.origin))
            self._rewind(seq, now)
        trusted = min(seq, self._sent_high)  # never trim what this process has not sent
        if trusted > self._acked:
            out.append(RecordAck(trusted))
        return out

    def recorded(self, acked: int, now: float) -> None:
        """The outbox recorded the ack: its watermark is now ``acked``."""
        self._acked = max(self._acked, acked)
        self._cursor = max(self._cursor, self._acked)
        self._last_progress = now

    def replay(self, from_seq: int, now: float) -> None:
        """The hub misses a range starting at ``from_seq``: send again from there."""
        self._rewind(from_seq - 1, now)

    def presence(self, instance: str, *, online: bool, now: float) -> list[Action]:
        """One hub instance came or went; the hub is present while any instance is."""
        out: list[Action] = []
        was = self.hub_online
        if online:
            self._hubs.add(instance)
        elif instance in self._hubs:
            self._hubs.discard(instance)
            if self._hubs:  # it may have held batches that will never be acked
                out.append(InstanceGone(instance, remaining=len(self._hubs)))
                self._rewind(self._acked, now)
        self.hub_online = bool(self._hubs) or self._acks_recent(now)
        if self.hub_online and not was:
            out.append(HubOnline(instance))
            out += self._handle(_E.HUB_BACK, now)
        elif was and not self.hub_online:
            out.append(HubOffline())
        return out

    def sent(self, send: Send, *, covered: int, seqs: Iterable[int], now: float) -> int:
        """``send`` went out covering up to ``covered`` with the events ``seqs``; returns
        how many of them had been sent before (in-order sends only)."""
        if covered <= send.after:
            return 0  # nothing was there to send
        self._sent_high = max(self._sent_high, covered)
        if send.after <= self._acked:
            # Nothing was in flight: the ack timeout counts from this send, not from the
            # last ack before a quiet spell.
            self._last_progress = now
        resent = 0 if send.live else sum(1 for seq in seqs if seq <= self._highest_sent)
        tail = self._tail
        ahead = send.live or send.upto is not None  # a live-ahead or a backlog batch
        if send.epoch != self._epoch or (ahead and tail is None):
            return resent  # rewound meanwhile: the cursor stays where the rewind put it
        # An ack that came meanwhile may have moved the cursor further: it stays there.
        if send.live:
            self._tail = covered
        elif send.upto is not None and tail is not None:  # a backlog batch
            self._cursor = max(self._cursor, covered)
            if covered >= self._backlog_end:  # the backlog is in: back in order
                self._cursor, self._tail = max(self._cursor, tail), None
                self._highest_sent = max(self._highest_sent, self._cursor)
        else:
            self._cursor = max(self._cursor, covered)
            self._highest_sent = max(self._highest_sent, covered)
        return resent

    # ------------------------------------------------------------ what to do next

    def next(self, newest: int, now: float) -> list[Action]:
        """What to do now, ``newest`` being the outbox's newest stored seq."""
        out: list[Action] = []
        if self.hub_online and not self._hubs and not self._acks_recent(now):
            self.hub_online = False  # no instance's presence, no acks lately
            out.append(HubOffline())
        if not self._ready(newest):
            self._gathered = False
            if self._cursor > self._acked and now - self._last_progress > self.ack_timeout_s:
                out.append(AckTimeout(acked=self._acked, sent=self._cursor))
                self._rewind(self._acked, now)
            if self.hub_online and now - self._announced_at > self.ack_timeout_s:
                out += self._handle(_E.ANSWER_OVERDUE, now)
            out.append(Idle(self.ack_timeout_s / 2))
            return out
        if self._tail is None and newest - self._cursor > self.live_ahead_after:
            self._tail = self._backlog_end = newest  # from here on, new events are live
            self._live_turn = True
        if self._tail is not None:
            if self._live_turn and newest > self._tail:
                self._live_turn = False
                out.append(self._send(self._tail, None, live=True))
            else:
                self._live_turn = True
                out.append(self._send(self._cursor, self._backlog_end))
            return out
        small = newest - self._cursor < self.batch_max_events
        if small and self.gather_s > 0 and not self._gathered:
            self._gathered = True
            out.append(Gather(self.gather_s))  # let a fuller batch gather
            return out
        self._gathered = False
        out.append(self._send(self._cursor, None))
        return out

    # ------------------------------------------------------------ inside

    def _ready(self, newest: int) -> bool:
        return (
            self.hub_online
            and self.phase is Phase.ANSWERED
            and self._cursor < newest
            and self._cursor - self._acked < self.window_events
        )

    def _send(self, after: int, upto: int | None, *, live: bool = False) -> Send:
        return Send(after, upto, self.batch_max_events, live=live, epoch=self._epoch)

    def _acks_recent(self, now: float) -> bool:
        return now - self._acked_at < self.ack_timeout_s

    def _transition(self, event: LinkEvent) -> LinkStep:
        self.phase, step = TRANSITIONS[self.phase, event]
        return step

    def _handle(self, event: LinkEvent, now: float) -> list[Action]:
        """The handshake's transition for ``event``; the announcing steps done here."""
        step = self._transition(event)
        if step not in (_S.ANNOUNCE, _S.START_OVER):
            return []
        self._announced_at = now
        if step is _S.START_OVER:
            self._rewind(self._acked, now)
        return [Announce()]

    def _rewind(self, to: int, now: float) -> None:
        """Send again everything after ``to``."""
        self._cursor = min(self._cursor, to)
        self._tail = None  # start over in order; live-ahead resumes if the backlog is large
        self._epoch += 1  # a send in progress must not move the cursor past this
        self._last_progress = now
