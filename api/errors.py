"""Errors the API answers with: always ``{"detail": "<clear message>"}`` (plus context, such as the
reorg behind a 409), never a traceback; bad input is a 4xx, never a 500.

- ``ApiError``: raised by routes (400 bad input, 404 not found, 409 cursor from an orphaned branch).
- FastAPI's validation errors become a 400 naming the parameter and the rule it broke.
- ``reject_unknown_params``: a router dependency; a query parameter the route does not declare is a
  400 (a misspelt filter silently ignored would answer the wrong rows).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

log = logging.getLogger("dexnode.api")


class ApiError(Exception):
    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{_where(tuple(err.get('loc', ())))}: {msg}")
    return "invalid parameters: " + "; ".join(problems)


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_message(exc)}, status_code=400)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def reject_unknown_params(conn: HTTPConnection) -> None:
    """A query parameter the matched route does not declare is refused, by name."""
    route = conn.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _known_params(dependant)
    unknown = sorted(set(conn.query_params.keys()) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise bad_request(f"unknown query parameter(s): {', '.join(unknown)}; this route takes: {takes}")


_KNOWN: dict[int, tuple[Any, frozenset[str]]] = {}  # id(dependant) -> (dependant, its query names)


def _known_params(dependant: Any) -> frozenset[str]:
    """The query parameter names of a route's dependency tree, walked once per route."""
    entry = _KNOWN.get(id(dependant))
    if entry is None or entry[0] is not dependant:
        entry = _KNOWN[id(dependant)] = (dependant, frozenset(p.alias for p in _query_params(dependant)))
    return entry[1]


def _query_params(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found.extend(_query_params(sub))
    return found


class ErrorBody(BaseModel):
    detail: str


class ReorgBody(BaseModel):
    detail: str
    pinned: dict[str, Any]
    reorg: dict[str, Any] | None
    new_head: dict[str, Any] | None


# documented on every data route (schemathesis checks the answers against them)
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input: the parameter and the rule it broke"},
    404: {"model": ErrorBody, "description": "no such object in the indexed data"},
    409: {"model": ReorgBody, "description": "the cursor's pinned block was orphaned by a reorg"},
}
