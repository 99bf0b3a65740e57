"""Files: upload, metadata, content (by Bearer key or signed URL)."""
from __future__ import annotations

from pathlib import Path

from flask import current_app, jsonify, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import parse_range_header
from flask_smorest import Blueprint

from ..auth import current_user
from ..errors import ApiError
from ..files import clean_filename
from ..filetypes import ACTIVE_TYPES
from ..schemas import FILE_LINKS, ErrorSchema, FileSchema, UploadSchema

blp = Blueprint("files", __name__, url_prefix="/api/v1/files", description="Uploaded and generated files.")


def _files():
    return current_app.extensions["apsara"].files


def _meta_or_404(file_id: str) -> dict:
    meta = _files().get(current_user(), file_id)
    if meta is None:
        raise ApiError(404, f"file '{file_id}' not found")
    return meta


def _refuse_other_fields() -> None:
    """Only one part, `file`: anything else would be read and thrown away."""
    unknown = sorted((set(request.form) | set(request.files)) - {"file"})
    details = {name: ["Unknown field."] for name in unknown}
    if len(request.files.getlist("file")) > 1:
        details["file"] = ["Send one file per upload."]
    if details:
        first = next(iter(details))
        raise ApiError(422, f"invalid request: {first}: {details[first][0]}", details)


@blp.route("", methods=["POST"])
@blp.arguments(UploadSchema(), location="files")
@blp.response(201, FileSchema)
@blp.doc(responses=FILE_LINKS)
@blp.alt_response(413, schema=ErrorSchema, description="Larger than APSARA_MAX_UPLOAD_MB.")
@blp.alt_response(415, schema=ErrorSchema, description="Not a type the models can read (decided from the bytes).")
def upload(form):
    """Upload a file (multipart field `file`, and nothing else); its type is decided from its bytes.

    Its name is kept without folders, control characters or bidirectional overrides."""
    _refuse_other_fields()
    incoming = form["file"]
    temp_path = Path(incoming.stream.name) if hasattr(incoming.stream, "name") else None
    try:
        if temp_path is None:  # tiny uploads may stay in memory: park them on disk like the rest
            with _files().incoming_file() as fh:
                fh.write(incoming.stream.read())
                temp_path = Path(fh.name)
        incoming.stream.close()
        meta = _files().adopt(current_user(), temp_path, incoming.filename or "")  # its name is cleaned there
    finally:
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
    response = jsonify(_files().public(current_user(), meta))
    response.status_code = 201
    return response


@blp.route("/<file_id>", methods=["GET"])
@blp.response(200, FileSchema)
@blp.alt_response(404, schema=ErrorSchema, description="No such file.")
def get(file_id):
    """A file's metadata, with a fresh signed URL."""
    return jsonify(_files().public(current_user(), _meta_or_404(file_id)))


def _without_a_malformed_range():
    """The request, or its environ less a `Range` that does not parse, counts in another unit
    than bytes or asks for several ranges (werkzeug serves one): such a header is ignored and
    the whole file sent (RFC 9110, 14.2), where werkzeug would answer 416."""
    header = request.headers.get("Range")
    parsed = parse_range_header(header) if header is not None else None
    if header is None or (parsed is not None and parsed.units == "bytes" and len(parsed.ranges) == 1):
        return request
    return {key: value for key, value in request.environ.items() if key != "HTTP_RANGE"}


@blp.route("/<file_id>/content", methods=["GET"])
@blp.response(200, description="The bytes.")
@blp.alt_response(206, description="The bytes asked for with `Range` (one range), and `Content-Range`.")
@blp.alt_response(304, description="Unchanged since the `ETag` given in `If-None-Match`.")
@blp.alt_response(416, schema=ErrorSchema, description="A `Range` outside the file (with `Content-Range: bytes */size`); a `Range` that does not parse, or asks for several ranges, is ignored.")
@blp.doc(security=[{"bearer": []}, {}], parameters=[
    {"in": "query", "name": name, "schema": {"type": "string"}, "required": False,
     "description": "Part of a signed URL (instead of the Bearer key)."}
    for name in ("user", "expires", "signature")])
@blp.alt_response(401, schema=ErrorSchema, description="No valid key and no valid signature.")
@blp.alt_response(404, schema=ErrorSchema, description="No such file.")
def content(file_id):
    """The file's bytes, served so that a browser never runs them."""
    meta = _meta_or_404(file_id)
    mime = meta["mime_type"]
    active = mime in ACTIVE_TYPES
    # Runnable types (HTML, SVG, scripts) only ever download; nosniff and a
    # sandboxing CSP keep the browser from treating anything else as a page.
    # The name is cleaned again: one stored before names were cleaned at upload may hold
    # control characters, which no header may carry (Gunicorn would answer 500). send_file
    # gives a name beyond ASCII as RFC 6266 `filename*=UTF-8''...` with an ASCII fallback.
    response = send_file(_files().content(current_user(), file_id), mimetype=mime,
                         as_attachment=active, download_name=clean_filename(meta["filename"]) or file_id,
                         conditional=False, max_age=300, etag=meta["sha256"])
    if response.content_length is None:  # a reader from the database: it has no size to stat
        response.content_length = meta["size_bytes"]
    try:
        # Ranges and If-None-Match against the size we hold, which send_file cannot learn from
        # a reader from the database (it would answer every range with the whole file).
        response.make_conditional(_without_a_malformed_range(), accept_ranges=True,
                                  complete_length=meta["size_bytes"])
    except RequestedRangeNotSatisfiable:
        response.close()
        raise ApiError(416, "the range asked for is outside the file",
                       headers={"Content-Range": f"bytes */{meta['size_bytes']}"}) from None
    if mime.startswith("text/"):
        response.headers["Content-Type"] = f"{mime}; charset={meta.get('charset', 'utf-8')}"
    # A user's file: browsers may keep it a while, shared caches (a CDN, a proxy) never,
    # and the answer depends on who asks (the key, or the signature in the URL).
    response.cache_control.public = False
    response.cache_control.private = True
    response.vary.add("Authorization")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
