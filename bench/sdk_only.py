"""The floor under Apsara's figures: google-genai in a Gunicorn worker behind HTTP, nothing else.

A WSGI app (no Flask, no storage, no checks) that makes the same Gemini call a
turn makes and answers it the way Apsara does, so that the bench can tell what
hosting an SDK call in a worker costs by itself from what Apsara adds on top:
  POST /turn?turns=N  a direct call with the bench's N-turn history, answered as JSON;
  POST /stream        a streamed call with a 1-turn history, each chunk an SSE `delta` event;
  GET /health/live    200, for the test servers' start-up wait.
Served by `tests.servers.gunicorn(..., app="bench.sdk_only:app")`, with the
gunicorn.conf.py every Apsara run uses (the same worker class, collector settings).
"""
from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

import httpx2
from google import genai
from google.genai import types

from apsara.gemini.client import build_reply_types, speed_up_sdk
from bench.chat import MODEL, direct_contents

_histories: dict[int, list[dict]] = {}


def _warmed_client() -> genai.Client:
    """Made as the worker imports the app, as Apsara's workers warm up before their first request:
    otherwise a burst's first requests to a worker would each make a client of their own."""
    build_reply_types()
    speed_up_sdk()  # as Apsara's client does
    return genai.Client(api_key="bench", http_options=types.HttpOptions(
        base_url=os.environ["GEMINI_BASE_URL"], api_version="v1beta", timeout=60_000,
        # The default pool holds 100 connections: a burst's others would wait for a stream to end.
        client_args={"limits": httpx2.Limits(max_connections=1000, max_keepalive_connections=100)}))


_client = _warmed_client()


def _sdk() -> genai.Client:
    return _client


def _contents(turns: int) -> list[dict]:
    if turns not in _histories:
        _histories[turns] = direct_contents(turns)
    return _histories[turns]


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)  # the body is read, as a turn's is
    path = environ.get("PATH_INFO", "")
    if path == "/turn":
        turns = int(parse_qs(environ.get("QUERY_STRING", "")).get("turns", ["10"])[0])
        response = _sdk().models.generate_content(model=MODEL, contents=_contents(turns))
        body = json.dumps({"reply": {"text": response.text}}).encode()
        start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return _events()
    if path == "/health/live":  # what tests.servers.gunicorn waits for
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


def _events():
    for number, chunk in enumerate(_sdk().models.generate_content_stream(model=MODEL, contents=_contents(1))):
        yield f"id: {number}\nevent: delta\ndata: {json.dumps({'text': chunk.text or ''})}\n\n".encode()
    yield b"event: done\ndata: {}\n\n"


def _flask_app():
    """The same endpoints on Flask, the framework Apsara is built on: what Flask adds to the floor."""
    from flask import Flask, Response, jsonify, request

    flask = Flask(__name__)

    @flask.post("/stream")
    def stream():
        request.get_json(silent=True)
        return Response(_events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    @flask.post("/turn")
    def turn():
        request.get_json(silent=True)
        turns = request.args.get("turns", 10, type=int)
        response = _sdk().models.generate_content(model=MODEL, contents=_contents(turns))
        return jsonify(reply={"text": response.text}), 201

    @flask.get("/health/live")
    def live():
        return ""

    return flask


flask_app = _flask_app()
