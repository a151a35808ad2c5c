"""The exceptions queue: one place for everything on the floor that needs a person.

Each kind has an owner role (raises and works it), a support role (helps) and a reviewer
role (resolves it), after the owner / support / reviewer pattern of warehouse teams.
``subject`` names the thing that is wrong, so the same problem keeps one open exception
however often it is seen again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from warelink.hub.access import ROLE_PERMISSIONS, Permission, Role
from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.stock import audit


@dataclass(frozen=True)
class Responsibility:
    owner: str
    support: str
    reviewer: str


RESPONSIBILITIES = {
    "negative_balance": Responsibility("clerk", "it_support", "supervisor"),
    "verify_mismatch": Responsibility("clerk", "supervisor", "supervisor"),
    "unknown_sku": Responsibility("admin", "it_support", "supervisor"),
    "unknown_epc": Responsibility("it_support", "admin", "supervisor"),
    "held_location": Responsibility("clerk", "supervisor", "supervisor"),
    "count_variance": Responsibility("clerk", "analyst", "supervisor"),
    "serial_conflict": Responsibility("clerk", "it_support", "supervisor"),
    "floor_report": Responsibility("clerk", "supervisor", "supervisor"),
    "outbox_conflict": Responsibility("it_support", "admin", "supervisor"),
}
KINDS = tuple(RESPONSIBILITIES)


@dataclass(frozen=True)
class Raised:
    """An exception to open."""

    site: str
    kind: str
    subject: str
    detail: dict[str, Any]
    opened_by: str
    movement: int | None = None


async def open_many(raised: Sequence[Raised], *, conn: AsyncConnection) -> list[int]:
    """Open each unless the same (site, kind, subject) is already open; returns new ids.

    One statement for all (ingest may raise thousands at once), the first of duplicates
    wins, rows in key order so concurrent writers take the index entries in one order.
    """
    first: dict[tuple[str, str, str], Raised] = {}
    for item in raised:
        first.setdefault((item.site, item.kind, item.subject), item)
    if not first:
        return []
    items = [first[key] for key in sorted(first)]
    who = [RESPONSIBILITIES[item.kind] for item in items]
    cur = await conn.execute(
        "INSERT INTO exceptions (site, kind, subject, detail, owner_role, support_role,"
        " reviewer_role, opened_by, movement) SELECT * FROM unnest(%b::text[], %b::text[],"
        " %b::text[], %b::jsonb[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int8[])"
        " ON CONFLICT (site, kind, subject) WHERE state IN ('open', 'in_review')"
        " DO NOTHING RETURNING id",
        (
            [i.site for i in items], [i.kind for i in items], [i.subject for i in items],
            [Jsonb(i.detail) for i in items], [w.owner for w in who], [w.support for w in who],
            [w.reviewer for w in who], [i.opened_by for i in items], [i.movement for i in items],
        ),
    )  # fmt: skip
    return sorted(row[0] for row in await cur.fetchall())


# ------------------------------------------------------------------ the queue, worked by people
#
# Every change of an exception writes one audit row with subject "exception:<id>"; its
# history is read back from there (the row itself says who opened it and when).

STATES = ("open", "in_review", "resolved", "dismissed")
ACTIVE = ("open", "in_review")
CLOSING = {"resolved": "resolve", "dismissed": "dismiss"}  # final state: the action


def subject_of(exception_id: int) -> str:
    return f"exception:{exception_id}"


async def raise_floor_report(
    site: str, subject: str, detail: dict[str, Any], *, actor: str, conn: AsyncConnection
) -> int:
    """A person's report from the floor; the same subject while open is one report."""
    ids = await open_many([Raised(site, "floor_report", subject, detail, actor)], conn=conn)
    if not ids:
        cur = await conn.execute(
            "SELECT id FROM exceptions WHERE site = %s AND kind = 'floor_report'"
            " AND subject = %s AND state IN ('open', 'in_review')",
            (site, subject),
        )
        row = await cur.fetchone()
        raise Conflict(
            f"a floor report on {subject!r} is already open (exception {row[0] if row else '?'})"
        )
    await audit.record(actor, "exception.open", site=site, subject=subject_of(ids[0]),
                       detail={"kind": "floor_report", "subject": subject}, conn=conn)  # fmt: skip
    return ids[0]


async def load(
    exception_id: int, *, sites: frozenset[str] | None, lock: bool, conn: AsyncConnection
) -> dict[str, Any]:
    """One exception, if it is in the caller's sites (else as if it did not exist)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM exceptions WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        (exception_id,),
    )
    row = await cur.fetchone()
    if row is None or (sites is not None and row["site"] not in sites):
        raise NotFound(f"no exception {exception_id}")
    return row


async def history(exception: dict[str, Any], *, conn: AsyncConnection) -> list[dict[str, Any]]:
    """What happened to it, oldest first: audit rows, led by its opening."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT at, actor, action, detail FROM audit_log WHERE subject = %s"
        " AND site IS NOT DISTINCT FROM %s ORDER BY at, id",
        (subject_of(exception["id"]), exception["site"]),
    )
    rows = await cur.fetchall()
    if not rows or rows[0]["action"] != "exception.open":
        # opened by the ledger or a device rule, which write no audit row of their own
        rows.insert(0, {"at": exception["opened_at"], "actor": exception["opened_by"],
                        "action": "exception.open",
                        "detail": {"kind": exception["kind"],
                                   "subject": exception["subject"]}})  # fmt: skip
    return rows


async def list_queue(
    *,
    sites: frozenset[str] | None,
    site: str | None,
    state: str | None,
    kind: str | None,
    assignee: str | None,
    limit: int,
    offset: int,
    conn: AsyncConnection,
) -> tuple[list[dict[str, Any]], int]:
    """A page of the queue in the order things went wrong, and how many match in all."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT * FROM exceptions WHERE {_FILTER} ORDER BY opened_at, id LIMIT %s OFFSET %s",
        (*_filter_args(sites, site, state, kind, assignee), limit, offset),
    )
    rows = await cur.fetchall()
    count = await conn.execute(
        f"SELECT count(*) FROM exceptions WHERE {_FILTER}",
        _filter_args(sites, site, state, kind, assignee),
    )
    total = await count.fetchone()
    return rows, int(total[0]) if total else 0


_FILTER = (
    "(%s::text[] IS NULL OR site = ANY(%s)) AND (%s::text IS NULL OR site = %s)"
    " AND (%s::text IS NULL OR state = %s) AND (%s::text IS NULL OR kind = %s)"
    " AND (%s::text IS NULL OR assignee = %s)"
)


def _filter_args(
    sites: frozenset[str] | None,
    site: str | None,
    state: str | None,
    kind: str | None,
    assignee: str | None,
) -> tuple[object, ...]:
    scope = sorted(sites) if sites is not None else None
    return (scope, scope, site, site, state, state, kind, kind, assignee, assignee)


def _require_active(exception: dict[str, Any], doing: str) -> None:
    if exception["state"] not in ACTIVE:
        raise Conflict(f"exception {exception['id']} is {exception['state']}: cannot {doing}")


async def _can_work(identity: str, site: str, *, conn: AsyncConnection) -> None:
    """An assignee is an active identity of the site that may work exceptions."""
    cur = await conn.execute(
        "SELECT roles, sites FROM identities WHERE id = %s AND active", (identity,)
    )
    row = await cur.fetchone()
    if row is None:
        raise Invalid(f"no active identity {identity!r}")
    roles, sites = row
    if sites is not None and site not in sites:
        raise Invalid(f"{identity!r} has no access to site {site!r}")
    known = {Role(r) for r in roles if r in Role.__members__.values()}
    if not any(Permission.EXCEPTIONS_WORK in ROLE_PERMISSIONS[r] for r in known):
        raise Invalid(f"{identity!r} may not work exceptions (roles: {', '.join(roles)})")


async def assign(
    exception: dict[str, Any], assignee: str, *, actor: str, conn: AsyncConnection
) -> None:
    """Take it (assignee is the actor) or give it to someone who may work it."""
    _require_active(exception, "assign it")
    if assignee != actor:
        await _can_work(assignee, exception["site"], conn=conn)
    await conn.execute(
        "UPDATE exceptions SET assignee = %s WHERE id = %s", (assignee, exception["id"])
    )
    await audit.record(actor, "exception.assign", site=exception["site"],
                       subject=subject_of(exception["id"]),
                       detail={"assignee": assignee, "before": exception["assignee"]},
                       conn=conn)  # fmt: skip


async def hand_for_review(
    exception: dict[str, Any], note: str, *, actor: str, conn: AsyncConnection
) -> None:
    """The work is done: the reviewer decides."""
    if exception["state"] != "open":
        raise Conflict(f"exception {exception['id']} is {exception['state']}: only an open"
                       " exception is handed on for review")  # fmt: skip
    await conn.execute(
        "UPDATE exceptions SET state = 'in_review', assignee = coalesce(assignee, %s)"
        " WHERE id = %s",
        (actor, exception["id"]),
    )
    await audit.record(actor, "exception.review", site=exception["site"],
                       subject=subject_of(exception["id"]), detail={"note": note},
                       conn=conn)  # fmt: skip


async def close(
    exception: dict[str, Any],
    state: str,
    resolution: str,
    *,
    actor: str,
    roles: frozenset[str],
    conn: AsyncConnection,
) -> None:
    """Resolve or dismiss: for the exception's reviewer role (or an admin)."""
    if state not in CLOSING:
        raise ValueError(state)
    if exception["reviewer_role"] not in roles and "admin" not in roles:
        raise Forbidden(f"exception {exception['id']} is closed by its reviewer"
                        f" ({exception['reviewer_role']}) or an admin")  # fmt: skip
    _require_active(exception, f"{CLOSING[state]} it")
    await _close(exception["id"], exception["site"], state, resolution, actor=actor, conn=conn)


async def _close(
    exception_id: int, site: str, state: str, resolution: str, *, actor: str,
    conn: AsyncConnection,
) -> None:  # fmt: skip
    await conn.execute(
        "UPDATE exceptions SET state = %s, resolution = %s, resolved_by = %s,"
        " resolved_at = now() WHERE id = %s",
        (state, resolution, actor, exception_id),
    )
    await audit.record(actor, f"exception.{CLOSING[state]}",
                       site=site, subject=subject_of(exception_id),
                       detail={"resolution": resolution}, conn=conn)  # fmt: skip


async def close_open(
    site: str, kind: str, subject: str, *, state: str, resolution: str, actor: str,
    conn: AsyncConnection,
) -> int | None:  # fmt: skip
    """Close the open exception of a thing (when the thing's own decision settles it)."""
    cur = await conn.execute(
        "SELECT id FROM exceptions WHERE site = %s AND kind = %s AND subject = %s"
        " AND state IN ('open', 'in_review') FOR UPDATE",
        (site, kind, subject),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await _close(row[0], site, state, resolution, actor=actor, conn=conn)
    return int(row[0])
