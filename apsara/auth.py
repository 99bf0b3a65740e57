"""Bearer-key authentication and who the current user is.

With `APSARA_API_KEYS` set, every `/api/` request but the OpenAPI document and
the docs page needs `Authorization: Bearer <key>`, and the key names the user.
Without it, everyone is the one local user. A key listed in `APSARA_ADMIN_KEYS`
may also read anyone's usage. Keys are compared in constant time and never logged.
"""
from __future__ import annotations

import hmac
import re

from flask import Flask, current_app, g, request

from .config import LOCAL_USER
from .errors import ApiError

OPEN_PATHS = ("/api/v1/openapi.json", "/api/v1/docs")
ADMIN_USER = "admin"
USAGE_PATH = "/api/v1/usage"


def _user_for(token: str, keys: dict[str, str]) -> str | None:
    found = None
    for user, key in keys.items():
        # Check every key, so timing does not tell how many users come first.
        if hmac.compare_digest(token.encode(), key.encode()):
            found = user
    return found


SIGNED_CONTENT = re.compile(r"^/api/v1/files/([^/]+)/content$")


def _signed_url_user() -> str | None:
    """The owner named by a valid file-URL signature; 401 for a bad or expired one."""
    match = SIGNED_CONTENT.match(request.path)
    if not match or "signature" not in request.args:
        return None
    files = current_app.extensions["apsara"].files
    args = request.args
    if not files.verify(match[1], args.get("user", ""), args.get("expires", ""), args.get("signature", "")):
        raise ApiError(401, "this file link is invalid or has expired; ask for the file again")
    return args["user"]


def authenticate() -> None:
    settings = current_app.extensions["apsara"].settings
    # /v1/ is the OpenAI-compatible API: the same keys, the same users.
    if not request.path.startswith(("/api/", "/v1/")) or request.path.startswith(OPEN_PATHS):
        return
    if request.method == "OPTIONS":  # CORS preflight carries no credentials
        return
    if "Authorization" not in request.headers and (signed := _signed_url_user()):
        g.user = signed
        return
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    g.admin = _admin_key(token, settings.admin_keys)
    if not settings.auth_enabled:
        g.user = LOCAL_USER
        return
    user = _user_for(token, settings.api_keys) if token else None
    if user is None and g.admin and request.path == USAGE_PATH:
        user = ADMIN_USER  # an admin key that is no user's key only reads usage
    if user is None:
        raise ApiError(401, "a valid 'Authorization: Bearer <key>' header is required",
                       headers={"WWW-Authenticate": "Bearer"})
    g.user = user


def current_user() -> str:
    return g.user


def is_admin() -> bool:
    """The request's Bearer key is listed in APSARA_ADMIN_KEYS."""
    return g.get("admin", False)


def _admin_key(token: str, admin_keys: list[str]) -> bool:
    found = False
    for key in admin_keys:
        if token and hmac.compare_digest(token.encode(), key.encode()):
            found = True
    return found


def register_auth(app: Flask) -> None:
    app.before_request(authenticate)
