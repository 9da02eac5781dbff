"""One JSON error shape for every failure, and the handlers that map exceptions onto 4xx answers.

Bad input never reaches the models as an exception that becomes a 500: validation errors name
their field, unknown ids are listed, oversized or undecodable images get 413 / 415 / 422. A
catch-all still logs anything unexpected and answers a clean JSON 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.service import InvalidQueryError, UnknownItemsError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, code and the offending field; raised by the HTTP layer."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.error, self.message, self.field, self.extra = status, error, message, field, extra


def error_body(error: str, message: str, fields: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message, "fields": fields or []}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """'body.k' -> 'k', ('query', 'n') -> 'n', ('path', 'item_id') -> 'item_id'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "form"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        problem = str(detail.get("ctx", {}).get("error", "not valid JSON"))
        return JSONResponse(
            error_body("malformed_json", f"body: malformed JSON ({problem})", [{"field": "body", "problem": f"malformed JSON: {problem}"}]),
            status_code=400,
        )
    fields = []
    for e in errors:
        field = _location(e.get("loc", ()))
        msg = str(e.get("msg", "invalid value"))
        if e.get("type") == "missing":
            msg = "field required"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field (not part of the request schema)"
        fields.append({"field": field, "problem": msg})
    message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
    return JSONResponse(error_body("invalid_request", message, fields), status_code=422)


def _api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    fields = [{"field": exc.field, "problem": exc.message}] if exc.field else []
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    return JSONResponse(error_body(exc.error, message, fields, **exc.extra), status_code=exc.status)


def _unknown_items_handler(request: Request, exc: Exception) -> JSONResponse:
    """Unknown ids in the path are a 404 (the resource does not exist); in a body they are a 422."""
    assert isinstance(exc, UnknownItemsError)
    in_path = "item_id" in request.path_params
    field = "item_id" if in_path else "recent_item_ids"
    shown = ", ".join(exc.item_ids[:20]) + (" ..." if len(exc.item_ids) > 20 else "")
    return JSONResponse(
        error_body(
            "unknown_items",
            f"{field}: unknown item id(s) {shown}",
            [{"field": field, "problem": f"not in the catalogue: {shown}"}],
            unknown_item_ids=list(exc.item_ids),
        ),
        status_code=404 if in_path else 422,
    )


def _invalid_query_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidQueryError)
    return JSONResponse(error_body("invalid_request", f"{exc.field}: {exc.problem}", [{"field": exc.field, "problem": exc.problem}]), status_code=422)


def _http_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
    message = str(exc.detail) if exc.detail else "error"
    return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), message), status_code=exc.status_code, headers=exc.headers)


def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the traceback for the operator; the client gets no internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error: the request could not be served (logged)"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(UnknownItemsError, _unknown_items_handler)
    app.add_exception_handler(InvalidQueryError, _invalid_query_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
