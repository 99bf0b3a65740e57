"""The one error type of the service and the one JSON shape every error has.

Any layer raises `ApiError(code, message, details)`; the handlers registered by
`register_error_handlers` turn it, every werkzeug HTTPException (unknown route,
405, 413...) and any unexpected crash into
`{"error": {"code", "status", "message", "details"}}`. Nothing else writes
error bodies, so no stack trace, server path or key can slip into one.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("apsara")

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UPSTREAM_ERROR",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error the client should see, with its HTTP status."""

    def __init__(self, code: int, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    @property
    def status(self) -> str:
        return STATUS_NAMES.get(self.code, "INTERNAL" if self.code >= 500 else "INVALID_ARGUMENT")

    def to_dict(self) -> dict:
        details = {_printable(str(k)): [_printable(str(m)) for m in v] if isinstance(v, list) else v
                   for k, v in self.details.items()}
        return {"error": {"code": self.code, "status": self.status,
                          "message": _printable(self.message), "details": details}}


def _printable(text: str) -> str:
    """Text safe to write as JSON: a lone surrogate echoed from the client becomes '?'."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what} '{ident}' not found")


def unprocessable(field: str, message: str) -> ApiError:
    return ApiError(422, message, {field: [message]})


def error_response(error: ApiError):
    response = jsonify(error.to_dict())
    response.status_code = error.code
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# A request can hold a million mistakes (one per unknown key): the answer names the first ones.
MAX_DETAILS = 50
MORE = "_more"


def _flatten(messages, prefix="", limit: int = MAX_DETAILS) -> dict[str, list[str]]:
    """webargs' nested {"settings": {"temperature": [..]}} -> {"settings.temperature": [..]};
    the first `limit` paths, and MORE when there were others."""
    out: dict[str, list[str]] = {}
    walks = [iter([(prefix, messages)])]  # iterators, not lists: a million keys are never copied
    while walks:
        entry = next(walks[-1], None)
        if entry is None:
            walks.pop()
            continue
        path, value = entry
        if isinstance(value, list) and all(isinstance(m, str) for m in value):
            if len(out) >= limit:
                out[MORE] = ["more problems, not listed"]
                break
            out[path or "_body"] = value
        elif isinstance(value, (list, dict)):
            walks.append(_children(path, value))
    return out


def _children(path: str, value):
    """(path, item) of each item of a list (the same path) or dict (the path and its key)."""
    if isinstance(value, list):
        for item in value:
            yield path, item
    else:
        for key, item in value.items():
            yield (f"{path}.{key}" if path else str(key)), item


def validation_details(messages: dict) -> dict[str, list[str]]:
    """Drop webargs' location level (json, query, ...) and flatten to dotted paths."""
    details: dict[str, list[str]] = {}
    for location_messages in messages.values():
        details.update(_flatten(location_messages, limit=MAX_DETAILS - len(details)))
        if MORE in details:
            break
    return details


def _from_http_exception(exc: HTTPException) -> ApiError:
    code = exc.code or 500
    data = getattr(exc, "data", None) or {}
    if code == 422 and "messages" in data:
        details = validation_details(data["messages"])
        first = next(iter(details.items()), ("body", ["invalid"]))
        field_name = "request body" if first[0] == "_body" else first[0]
        return ApiError(422, f"invalid request: {field_name}: {first[1][0]}", details)
    if code == 400 and not data:
        return ApiError(400, "malformed request")
    if code == 404:
        return ApiError(404, "no such resource")
    if code == 405:
        return ApiError(405, "method not allowed on this resource",
                        headers={"Allow": ", ".join(exc.valid_methods or [])} if getattr(exc, "valid_methods", None) else None)
    if code == 413:
        return ApiError(413, "request body is too large")
    message = data.get("message") or exc.description or exc.name
    return ApiError(code, str(message))


DATABASE_RETRY_AFTER_S = 5


def _database_unavailable(exc: BaseException) -> bool:
    """psycopg's OperationalError (the pool's PoolTimeout is one): connecting failed, the
    connection broke mid-statement, or no connection came free in time."""
    try:
        import psycopg
    except ImportError:  # installed with the service; only the database mode raises its errors
        return False
    return isinstance(exc, psycopg.OperationalError)


def _unreadable_body(exc: BaseException) -> bool:
    """Gunicorn's reader found the body malformed as the app read it: a chunk size that is not
    hex, a chunk without its terminator, a connection gone mid-chunk. The client's fault."""
    try:
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:  # served by another server: its own errors are werkzeug's
        return False
    return isinstance(exc, (ParseException, NoMoreData))


def uncaught_error(exc: Exception) -> ApiError:
    """What an exception no code caught tells the client (the API's handler and /v1's)."""
    if _unreadable_body(exc):
        return ApiError(400, "malformed request body")
    if _database_unavailable(exc):
        # The database is away (down, restarting, unreachable, out of connections): not a bug
        # here, and the client may try again. Only the error's type is logged: its message
        # names the database's address.
        log.warning("database unavailable (%s): answered 503", type(exc).__name__)
        return ApiError(503, "the database is unavailable; try again shortly",
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})
    # The trace goes to the log only; the client gets a plain INTERNAL.
    log.exception("unhandled error")
    return ApiError(500, "internal error")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        return error_response(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def handle_crash(exc: Exception):
        return error_response(uncaught_error(exc))
