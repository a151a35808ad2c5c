"""Roles and what each may do: the one place access rules live.

``docs/roles.md`` shows the same matrix per endpoint, and a test holds every endpoint of
the running app to it. Scoping to sites is separate: an identity's ``sites`` (None: all)
limits every permission to those sites.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    CLERK = "clerk"
    ANALYST = "analyst"
    IT_SUPPORT = "it_support"
    COORDINATOR = "coordinator"
    GATEWAY = "gateway"  # a service identity: a gateway or another system acting for devices


class Permission(enum.StrEnum):
    STOCK_READ = "stock.read"  # sites, balances, live state
    MASTERDATA_READ = "masterdata.read"
    MASTERDATA_WRITE = "masterdata.write"  # create, update, CSV import
    LEDGER_READ = "ledger.read"  # movements, exports, KPIs
    RECEIVE = "receive"
    PUTAWAY = "putaway"
    PICK = "pick"
    VERIFY = "verify"
    SHIP = "ship"
    RETURNS = "returns"
    TRANSFER = "transfer"
    QC = "qc"  # release or reject stock on QC hold
    COUNT = "count"  # open and record cycle counts
    COUNT_APPROVE = "count.approve"
    ADJUST = "adjust"  # request an adjustment
    ADJUST_APPROVE = "adjust.approve"
    NOTICES_WRITE = "notices.write"  # advance shipping notices
    ORDERS_WRITE = "orders.write"  # release orders for picking
    EXCEPTIONS_READ = "exceptions.read"
    EXCEPTIONS_RAISE = "exceptions.raise"
    EXCEPTIONS_WORK = "exceptions.work"  # take, comment, hand on for review
    EXCEPTIONS_RESOLVE = "exceptions.resolve"
    GATEWAYS_READ = "gateways.read"  # gateways, their counters, what ingest quarantined
    QUARANTINE_DECIDE = "quarantine.decide"  # release or dismiss a quarantined event
    COMMANDS_READ = "commands.read"
    COMMANDS_WRITE = "commands.write"
    IDENTITIES_ADMIN = "identities.admin"  # users, service identities, keys
    AUDIT_READ = "audit.read"


P = Permission
_FLOOR = {P.RECEIVE, P.PUTAWAY, P.PICK, P.VERIFY, P.SHIP, P.RETURNS, P.TRANSFER, P.COUNT}
_READ = {P.STOCK_READ, P.MASTERDATA_READ, P.EXCEPTIONS_READ}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.SUPERVISOR: frozenset(Permission) - {P.IDENTITIES_ADMIN, P.MASTERDATA_WRITE},
    Role.CLERK: frozenset(_READ | _FLOOR | {P.QC, P.ADJUST, P.EXCEPTIONS_RAISE, P.EXCEPTIONS_WORK}),
    Role.ANALYST: frozenset(_READ | {P.LEDGER_READ, P.GATEWAYS_READ, P.EXCEPTIONS_WORK}),
    Role.IT_SUPPORT: frozenset(
        _READ
        | {P.GATEWAYS_READ, P.COMMANDS_READ, P.COMMANDS_WRITE, P.EXCEPTIONS_WORK, P.AUDIT_READ}
    ),
    Role.COORDINATOR: frozenset(
        _READ | {P.LEDGER_READ, P.NOTICES_WRITE, P.ORDERS_WRITE, P.TRANSFER}
    ),
    Role.GATEWAY: frozenset(_READ | _FLOOR | {P.COMMANDS_READ, P.EXCEPTIONS_RAISE}),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: an identity with its roles and sites (None: every site)."""

    id: str
    kind: str  # "user" or "service"
    roles: frozenset[Role]
    sites: frozenset[str] | None
    credential: str = ""  # the id of the credential it presented

    @property
    def actor(self) -> str:
        """How the audit log and the ledger name this principal."""
        return self.id

    def allows(self, permission: Permission) -> bool:
        return any(permission in ROLE_PERMISSIONS[role] for role in self.roles)

    def covers(self, site: str) -> bool:
        return self.sites is None or site in self.sites
