"""Apsara-2.5: a chat backend for Google's Gemini models.

`create_app(config)` builds everything — settings, the conversation store, the
Gemini client holder, the model catalog, blueprints, error handlers — so a test
can build as many independent apps as it likes.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, Request, current_app, request
from flask_cors import CORS
from werkzeug.utils import cached_property

from .config import VERSION, Settings, from_env
from .errors import ApiError

if TYPE_CHECKING:
    from .chat import Chat
    from .conversations import ConversationManager, ConversationStore
    from .files import FileStore
    from .gemini.catalog import ModelCatalog
    from .gemini.client import GeminiClient
    from .gemini.judge import judge_tier
    from .ratelimits import RateLimits
    from .routing.router import Router
    from .transfer.service import Transfers
    from .usage import UsageService

log = logging.getLogger("apsara")


class UploadRequest(Request):
    """Uploads stream straight into the data folder instead of memory or /tmp.

    Every temp file made for this request is listed, so it is removed when the
    request ends, whatever part of the body it held.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.incoming_files: list = []
        self._read: _CountedStream | None = None

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        handle = current_app.extensions["apsara"].files.incoming_file()
        self.incoming_files.append(handle)
        return handle

    @cached_property
    def stream(self):
        self._read = _CountedStream(super().stream)
        return self._read

    def _load_form_data(self) -> None:
        super()._load_form_data()
        # Gunicorn ends a body where the client stopped sending (a half-closed connection): a
        # multipart body cut short parses as a form without its file. Told as a JSON body's is.
        read, announced = (self._read.count if self._read else None), self.content_length
        if self.want_form_data_parsed and read is not None and announced is not None and read < announced:
            raise ApiError(400, f"the body ended after {read} of the {announced} bytes its Content-Length "
                                "announced")


class _CountedStream:
    """A request's input, counting the bytes read from it."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._stream.readline(size)
        self.count += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@dataclass
class Services:
    """What the views reach through `current_app.extensions["apsara"]`."""

    settings: Settings
    store: "ConversationStore"
    manager: "ConversationManager"
    catalog: "ModelCatalog"
    gemini: "GeminiClient"
    chat: "Chat"
    files: "FileStore"
    router: "Router"
    usage: "UsageService"
    rate_limits: "RateLimits"
    transfers: "Transfers"


def _settings(config) -> Settings:
    if isinstance(config, Settings):
        return config
    settings = from_env()
    return settings.replace(**config) if config else settings


def create_app(config: Settings | dict | None = None) -> Flask:
    from .chat import Chat
    from .gemini.judge import judge_tier
    from .stores import open_stores
    from .routing.router import Router
    from .conversations import ConversationManager
    from .conversations.sweeper import TemporarySweeper
    from .gemini.catalog import ModelCatalog
    from .gemini.client import GeminiClient
    from .api.hooks import note_bill
    from .jsonio import OrjsonProvider
    from .logging_setup import configure_logging
    from .transfer.service import Transfers
    from .usage import Budgets, PriceTable, UsageService

    settings = _settings(config)
    configure_logging(settings.log_format)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    # A doubled slash is a 404, not a redirect to somewhere else.
    app.url_map.merge_slashes = False
    # Werkzeug refuses larger bodies with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024 + 64 * 1024

    stores = open_stores(settings)
    store, files = stores.conversations, stores.files
    gemini = GeminiClient(settings)
    catalog = ModelCatalog(gemini.list_models if gemini.configured else None,
                           ttl_s=settings.models_cache_ttl_s)
    manager = ConversationManager(store, catalog, settings.default_model, files.signed_url)
    # Every Gemini call is reported to the usage service: ledger, budgets, metrics.
    usage = UsageService(stores.ledger, PriceTable.load(settings.prices_path), Budgets(settings.budgets))
    usage.on_new_bill = note_bill
    gemini.on_call = usage.record
    judge = None
    if settings.auto_judge_model and gemini.configured:
        def judge(text, previous_tier, billed_to=None):
            if catalog.get(settings.auto_judge_model) is None:
                return None  # never ask a model the API does not offer: the local classifier decides
            return judge_tier(gemini, settings.auto_judge_model, text, previous_tier,
                              settings.auto_judge_timeout_s, billed_to)
    router = Router(catalog, settings.auto_tiers, judge=judge)
    store.check_search_index()
    if settings.temporary_sweep_s > 0:
        TemporarySweeper(manager, settings.data_dir / ".temporary-sweep.lock",
                         settings.temporary_ttl_h).start(settings.temporary_sweep_s)
    chat = Chat(manager, catalog, gemini, files, settings, router, usage)
    rate_limits = stores.rate_limits
    transfers = Transfers(manager, files, stores.imports)
    app.extensions["apsara"] = Services(settings, store, manager, catalog, gemini, chat, files, router,
                                        usage, rate_limits, transfers)
    app.request_class = UploadRequest

    @app.before_request
    def sweep_leftovers():
        files.sweep_now_and_then()
        try:
            transfers.take_back_abandoned()
        except Exception as exc:  # noqa: BLE001 - the request goes on; the next look tries again
            # The type only: a database's error names its address (the database away is the usual cause).
            log.warning("could not look for imports that never ended (%s)", type(exc).__name__)

    @app.teardown_request
    def remove_upload_temp_files(_exc=None):
        handles = getattr(request, "incoming_files", [])
        for handle in handles:
            handle.close()
        files.discard([handle.name for handle in handles])

    register_extensions(app, settings)
    register_blueprints(app)
    if not settings.auth_enabled:
        log.warning("APSARA_API_KEYS is not set: authentication is OFF and every request "
                    "acts as the single local user")
    if not gemini.configured:
        log.warning("No Gemini API key (set the variable 'gemini'): chat will answer 503")
    return app


# Browsers on the allowed origins may call the API (the OpenAI-compatible one too) and read the health answers.
CORS_PATHS = re.compile(r"^/(api/.*|v1/.*|health|health/live)$")
# How long a browser may reuse a preflight answer (Chrome caps it at 2 hours).
CORS_MAX_AGE_S = 600


def register_extensions(app: Flask, settings: Settings) -> None:
    if settings.cors_origins:
        CORS(app, resources={CORS_PATHS: {"origins": settings.cors_origins}}, max_age=CORS_MAX_AGE_S,
             expose_headers=["Retry-After", "Content-Disposition", "X-Request-Id"])
        app.after_request(_vary_on_origin)


def _vary_on_origin(response):
    # Every answer on these paths depends on Origin (allowed or not), so a shared
    # cache must never hand one origin's answer to another; flask-cors adds Vary
    # only when several origins are configured.
    if CORS_PATHS.match(request.path):
        response.vary.add("Origin")
    return response


def register_blueprints(app: Flask) -> None:
    from .api import register_api
    from .api.hooks import register_hooks
    from .api.metrics import register_metrics
    from .auth import register_auth
    from .errors import register_error_handlers
    from .playground import register_playground

    register_auth(app)
    register_metrics(app)
    register_api(app)
    register_hooks(app)  # request ids first of all; rate limits after authentication and body limits
    register_playground(app)
    # After flask-smorest, so its default handler is replaced by ours.
    register_error_handlers(app)


__all__ = ["create_app", "VERSION"]
