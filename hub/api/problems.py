"""The one error shape of the API, for the OpenAPI schema: ``{"detail": ...}``.

``detail`` is a message a person can act on, or FastAPI's list of field errors (422).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

DESCRIPTIONS = {
    400: "the body is not JSON",
    401: "no or invalid credentials",
    403: "not allowed for the caller's roles or sites",
    404: "no such site or record (or outside the caller's sites)",
    409: "clashes with the current state (stock, a document's state, a key in use)",
    413: "the body is too large",
    422: "invalid request, or an Idempotency-Key reused with another body",
}


class Problem(BaseModel):
    """An error: a message a person can act on (or FastAPI's list of field errors)."""

    detail: str | list[dict[str, Any]]


def errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route; ``described`` overrides a text, e.g. ``e404="…"``."""
    return {
        code: {"model": Problem, "description": described.get(f"e{code}", DESCRIPTIONS[code])}
        for code in codes
    }


READ_ERRORS = errors(401, 403, 404, 422)
WRITE_ERRORS = errors(400, 401, 403, 404, 409, 422)
