"""Every error the service answers, as one JSON shape, mapped from exceptions in one place.

    {"error": {"code": "...", "message": "...", "field": "..."}}

`AudienceError`s keep their own words (they already name the field, file or product);
validation errors are rewritten to name the parameter and the limit; anything
unexpected becomes a 500 that gives the request id to quote and logs the traceback.
`documented()` gives the OpenAPI entries of the statuses an operation answers, so the
document and the handlers are worded in one place.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from audience.errors import (
    ArtifactError,
    AudienceError,
    ConfigError,
    InputError,
    NotFoundError,
    StateError,
    StoreError,
)
from audience.serving.api.models import ErrorBody
from audience.serving.api.observe import MAX_QUERY_STRING

log = logging.getLogger("audience.api")

#: HTTP status of each library error; the first match in this order wins.
STATUS: tuple[tuple[type[AudienceError], int, str], ...] = (
    (ConfigError, 422, "invalid_parameter"),
    (InputError, 422, "invalid_input"),
    (ArtifactError, 503, "model_unavailable"),
    (NotFoundError, 404, "not_found"),
    (StateError, 409, "conflict"),
    (StoreError, 503, "store_unavailable"),
    (AudienceError, 400, "bad_request"),
)
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    503: "not_ready",
}


#: What each error status of an operation means, for the OpenAPI document.
MEANING = {
    400: "the body could not be read as text: not UTF-8 (`bad_request`)",
    401: "keys are configured and X-API-Key is missing or not one of them (`unauthorized`)",
    404: "an id containing '/' cannot be addressed in the path (`not_found`)",
    409: "the state does not allow it: a campaign launched already, no report yet, or "
    "no user qualifies for a new campaign (`conflict`, `no_report`)",
    413: "the body is over AUDIENCE_MAX_BODY_BYTES (`body_too_large`)",
    414: f"the query string is over {MAX_QUERY_STRING:,} bytes (`query_too_long`)",
    422: "a parameter or body field out of its bounds, of the wrong type or unknown, bad "
    "JSON, or a combination the description rules out (`invalid_parameter`)",
    503: "no model loaded yet, the model could not be read, or the store cannot be "
    "reached (`not_ready`, `model_unavailable`, `store_unavailable`): retry with backoff",
}


def documented(*codes: int, **meaning: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an operation answers; `meaning` rewords one
    (`_404="..."`)."""
    return {
        code: {"model": ErrorBody, "description": meaning.get(f"_{code}", MEANING[code])}
        for code in codes
    }


class ApiError(Exception):
    """An error the API itself decides (unknown user, batch too large, bad key)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Any = None
) -> Response:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    body = orjson.dumps({"error": detail})
    return Response(body, status, headers=headers, media_type="application/json")


def _library(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AudienceError)
    status, code = next((s, c) for t, s, c in STATUS if isinstance(exc, t))
    field = exc.parameter if isinstance(exc, ConfigError | NotFoundError | StateError) else None
    headers = {"Retry-After": "5"} if status == 503 else None
    return error_response(status, code, str(exc), field, headers)


def _api(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "APIKey"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, exc.field, headers)


def _validation(request: Request, exc: Exception) -> Response:
    """The first problem, naming the parameter and what it must be."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]  # where it came from; the parameter's own name follows
    field = ".".join(loc) or None
    where = f"{field}: " if field else ""
    message = f"{where}{first.get('msg', 'invalid value')}"
    if "input" in first and first.get("type") != "missing":
        message += f" (got {_short(first['input'])})"
    return error_response(422, "invalid_parameter", message, field)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 400:
        message = f"{message}: send UTF-8 JSON with Content-Type: application/json"
    elif exc.status_code == 404:
        message = f"no such endpoint: {request.url.path} (see /docs for the API)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return error_response(405, code, message, headers=_allowed(request, exc.headers))
    return error_response(exc.status_code, code, message, headers=exc.headers)


def _allowed(request: Request, given: Any) -> Any:
    """The Allow header of a 405: every method the API document gives the path. Starlette
    names only the first route's, where GET and POST on one path are two routes. A 405
    raised by an endpoint itself (the method is documented) keeps its own header."""
    path, method = request.url.path, request.method.lower()
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            if method in operations:
                return given
            return {"Allow": ", ".join(sorted(m.upper() for m in operations))}
    return given


def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "?")
    log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
    message = (
        f"internal error; the service logged it with request id {request_id}: "
        "please quote it when you report the problem"
    )
    return error_response(500, "internal_error", message)


def install(app: FastAPI) -> None:
    """Route every exception type to its handler."""
    app.add_exception_handler(AudienceError, _library)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
