"""What can go wrong in a request, as the domain says it; the app maps each to HTTP.

Domain code raises these with a message a person can act on; routes stay thin.
"""

from __future__ import annotations


class RequestError(Exception):
    status = 400


class NotFound(RequestError):
    """The thing named does not exist (or is outside the caller's sites)."""

    status = 404


class Conflict(RequestError):
    """The request clashes with the current state (a closed count, a used key, …)."""

    status = 409


class Invalid(RequestError):
    """The request is well-formed but breaks a rule (unknown unit, bad check digit, …)."""

    status = 422


class Forbidden(RequestError):
    """Allowed to call, but not to do this (approving one's own count, say)."""

    status = 403
