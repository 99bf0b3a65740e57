"""The playground: a small chat page at `/` that speaks only the public API.

The page is plain HTML, CSS and ES modules from `static/`, with no build step and
nothing fetched from another server, so it works offline. It is also the
reference client for frontend developers: every request it makes is one the
API documents.

Caching: `/` is revalidated on every load (an ETag makes that a 304), and it
names the assets under a folder that is a hash of their contents
(`/playground/<hash>/app.js`), so browsers keep them for a year and a new
version is a new URL. The relative imports between modules stay inside that
folder.

Every answer of the page carries a strict Content-Security-Policy: scripts and
styles only from this server, no inline code, no plugins, no framing, and
Trusted Types required, so assigning a string to `innerHTML` throws: model text
can only ever reach the page as text.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, request, send_from_directory

from ..errors import ApiError

STATIC = Path(__file__).with_name("static")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
YEAR_S = 365 * 24 * 3600
DOCS_URL = "/api/v1/docs"


def assets_version(folder: Path = STATIC) -> str:
    """A short hash of every asset's name and bytes: it changes whenever one does."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def content_security_policy(public_url: str | None) -> str:
    # File links are signed URLs on this server, or under APSARA_PUBLIC_URL when it is set.
    images = "'self' blob:"
    if public_url:
        parts = urlsplit(public_url)
        images += f" {parts.scheme}://{parts.netloc}"
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", f"img-src {images}",
        "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
        "require-trusted-types-for 'script'", "trusted-types 'none'",
    ])


def register_playground(app: Flask) -> None:
    version = assets_version()
    assets_url = f"/playground/{version}/"
    page = (STATIC / "index.html").read_text().replace("{{assets}}", assets_url).encode()
    etag = hashlib.sha256(page).hexdigest()[:16]
    policy = content_security_policy(app.extensions["apsara"].settings.public_url)
    blp = Blueprint("playground", __name__)

    @blp.after_request
    def protect(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @blp.route("/")
    def home():
        response = Response(page, mimetype="text/html")
        response.set_etag(etag)
        response.cache_control.no_cache = True  # revalidate: a new version shows at the next load
        return response.make_conditional(request)

    @blp.route("/playground/<asset_version>/<name>")
    def asset(asset_version: str, name: str):
        if Path(name).suffix not in ASSET_TYPES or not (STATIC / name).is_file():
            raise ApiError(404, "no such resource")
        if asset_version != version:
            # A page from another release (a rolling restart): serve what we have, but never keep it.
            response = send_from_directory(STATIC, name, max_age=0)
            response.cache_control.no_store = True
            return response
        response = send_from_directory(STATIC, name, max_age=YEAR_S, mimetype=ASSET_TYPES[Path(name).suffix])
        response.cache_control.immutable = True
        return response

    app.register_blueprint(blp)
