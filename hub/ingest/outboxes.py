"""Which outbox speaks for a gateway id (DESIGN.md, decision 7; docs/guarantees.md).

Seqs are unique within one outbox only. A gateway id has one current outbox; the hub
stores and acks that outbox's events, and its acks name it. Another outbox under the id:

- a *successor* (every seq it claims is past anything the hub holds of the id: a new box,
  or ``warelink edge reset-outbox``) becomes current and retires the one before it;
- anything else — a retired outbox powered on again, a second install sharing the id, a
  current outbox that no longer holds what it sent (restored from an image) — is
  *refused*: nothing of it is stored or acked, so it keeps every event, and the refusal is
  loud: a log line, a metric, the gateway's ``refused_outbox`` in ``/api/v1/gateways``
  and an ``outbox_conflict`` exception for IT.

``judge`` decides (no I/O); the functions below it record the decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from psycopg import AsyncConnection

from warelink.hub.ingest import store
from warelink.hub.stock import exceptions


class Verdict(enum.Enum):
    ACCEPT = "accept"  # the current outbox (or an edge from before outbox identities)
    ADOPT = "adopt"  # a successor: it becomes current
    REFUSE = "refuse"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


def judge(
    *,
    current: str | None,
    claimed: str,
    known_state: str | None,
    oldest_claimed: int,
    newest_claimed: int | None = None,
    max_seq: int,
) -> Judgement:
    """Whether the hub takes what ``claimed`` sends under a gateway id.

    ``oldest_claimed`` is the lowest seq it sends (a batch's first seq; a birth's last),
    ``newest_claimed`` the newest it holds (a birth says it); ``max_seq`` the highest
    seq the hub holds of the id; ``known_state`` what the hub recorded of the outbox.
    """
    if not claimed:
        return Judgement(Verdict.ACCEPT)  # an edge from before outbox identities
    if current is None:
        return Judgement(Verdict.ADOPT)
    if claimed == current:
        if newest_claimed is not None and newest_claimed < max_seq:
            return Judgement(
                Verdict.REFUSE,
                f"outbox {claimed} holds seqs up to {newest_claimed} only, but the hub"
                f" stored up to {max_seq} from it: restored from an image, or cloned",
            )
        return Judgement(Verdict.ACCEPT)
    if known_state in ("retired", "refused"):
        return Judgement(
            Verdict.REFUSE,
            f"outbox {claimed} was replaced by {current} under this gateway id",
        )
    if oldest_claimed > max_seq:
        return Judgement(Verdict.ADOPT)
    return Judgement(
        Verdict.REFUSE,
        f"outbox {claimed} sends seq {oldest_claimed}, at or below {max_seq} the hub holds"
        f" from {current}: two boxes under one gateway id",
    )


async def admit_birth(
    site: str, gateway: str, claimed: str, last_seq: int, session: int, *, conn: AsyncConnection
) -> tuple[Judgement, bool, str]:
    """Judge the outbox a birth names (in the caller's transaction): the judgement,
    whether the refusal is new, and the outbox the hub now acks for."""
    await store.ensure_gateways([(site, gateway)], conn=conn)
    mark = (await store.lock_gateways([gateway], conn=conn))[gateway]
    if mark.site != site:
        return Judgement(Verdict.ACCEPT), False, mark.outbox or ""  # record_birth reports it
    if claimed and (claimed, session) == mark.refused_session:
        why = f"outbox {claimed} session {session} sent other events under stored seqs"
        first = await refuse(site, gateway, claimed, why, session=session, conn=conn)
        return Judgement(Verdict.REFUSE, why), first, mark.outbox or ""
    states = {} if claimed in ("", mark.outbox) else await known_states(gateway, conn=conn)
    judgement = judge(
        current=mark.outbox, claimed=claimed, known_state=states.get(claimed),
        oldest_claimed=last_seq, newest_claimed=last_seq, max_seq=mark.max_seq,
    )  # fmt: skip
    if judgement.verdict is Verdict.REFUSE:
        first = await refuse(site, gateway, claimed, judgement.reason, session=session,
                             conn=conn)  # fmt: skip
        return judgement, first, mark.outbox or ""
    if judgement.verdict is Verdict.ADOPT:
        await adopt(gateway, claimed, conn=conn)
        return judgement, False, claimed
    return judgement, False, mark.outbox or ""


async def known_states(gateway: str, *, conn: AsyncConnection) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT outbox, state FROM gateway_outboxes WHERE gateway = %s", (gateway,)
    )
    return {outbox: state for outbox, state in await cur.fetchall()}


async def adopt(gateway: str, outbox: str, *, conn: AsyncConnection) -> None:
    """``outbox`` is the gateway's current one; the one before it is retired."""
    await conn.execute(
        "UPDATE gateway_outboxes SET state = 'retired' WHERE gateway = %s AND state = 'current'",
        (gateway,),
    )
    await conn.execute(
        "INSERT INTO gateway_outboxes (gateway, outbox, state) VALUES (%s, %s, 'current')"
        " ON CONFLICT (gateway, outbox) DO UPDATE SET state = 'current', last_seen_at = now()",
        (gateway, outbox),
    )
    await conn.execute("UPDATE gateways SET outbox = %s WHERE id = %s", (outbox, gateway))


async def refuse(
    site: str,
    gateway: str,
    outbox: str,
    reason: str,
    *,
    session: int | None = None,
    conn: AsyncConnection,
) -> bool:
    """Record a refusal; True when it is news: this outbox was not the refused one."""
    await conn.execute(
        "INSERT INTO gateway_outboxes (gateway, outbox, state) VALUES (%s, %s, 'refused')"
        " ON CONFLICT (gateway, outbox) DO UPDATE SET last_seen_at = now(),"
        " state = CASE WHEN gateway_outboxes.state = 'current' THEN 'current' ELSE 'refused' END",
        (gateway, outbox),
    )
    cur = await conn.execute(
        "UPDATE gateways g SET refused_outbox = %s, refused_session = %s, refused_at = now(),"
        " refused_messages = refused_messages + 1"
        " FROM (SELECT refused_outbox FROM gateways WHERE id = %s) before"
        " WHERE g.id = %s RETURNING before.refused_outbox IS DISTINCT FROM %s",
        (outbox, session, gateway, gateway, outbox),
    )
    row = await cur.fetchone()
    first = bool(row and row[0])
    await exceptions.open_many(
        [exceptions.Raised(site, "outbox_conflict", f"{gateway}/{outbox}",
                           {"gateway": gateway, "outbox": outbox, "reason": reason},
                           "hub")],
        conn=conn,
    )  # fmt: skip
    return first
