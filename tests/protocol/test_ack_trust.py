"""An ack trims only what this process has sent: an outbox put back from a disk image,
identity and all, hears the hub's watermark for events it never sent (the original box's)
and must keep its own events under those seqs until the hub has compared them."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.sending import RecordAck, Send, SendWindow


def window(acked: int) -> SendWindow:
    return SendWindow(
        acked=acked, origin=0, window_events=1000, batch_max_events=100, ack_timeout_s=2.0
    )


def recorded(actions: Sequence[object]) -> list[int]:
    return [a.seq for a in actions if isinstance(a, RecordAck)]


def test_a_watermark_past_everything_sent_trims_nothing_yet() -> None:
    w = window(acked=10)
    # The hub stored up to 40 from the original box; this copy stores 11..50 of its own.
    assert recorded(w.ack(40, newest=50, now=1.0)) == []
    assert w.acked == 10
    send = Send(after=10, upto=None, limit=100, live=False, epoch=w.epoch)
    w.sent(send, covered=50, seqs=range(11, 51), now=1.1)
    # Only once the copy has sent them (and the hub has compared them) does an ack trim.
    assert recorded(w.ack(40, newest=50, now=1.2)) == [40]


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_an_ack_never_trims_past_what_was_sent(acked: int, sent: int, ack: int) -> None:
    w = window(acked=acked)
    newest = max(acked, sent, ack)
    if sent > acked:
        w.sent(Send(acked, None, sent - acked, False, w.epoch), covered=sent,
               seqs=range(acked + 1, sent + 1), now=0.0)  # fmt: skip
    for seq in recorded(w.ack(ack, newest=newest, now=0.1)):
        assert seq <= max(acked, sent)
