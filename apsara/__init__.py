"""Apsara-2.5: a chat backend for Google's Gemini models.

`create_app(config)` builds everything — settings, the conversation store, the
Gemini client holder, the model catalog, blueprints, error handlers — so a test
can build as many independent apps as it likes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, Request, current_app
from flask_cors import CORS

from .config import VERSION, Settings, from_env

if TYPE_CHECKING:
    from .chat import Chat
    from .conversations import ConversationManager, ConversationStore
    from .files import FileStore
    from .gemini.catalog import ModelCatalog
    from .gemini.client import GeminiClient
    from .gemini.judge import judge_tier
    from .routing.router import Router
    from .transfer.service import Transfers

log = logging.getLogger("apsara")


class UploadRequest(Request):
    """Uploads stream straight into the data folder instead of memory or /tmp."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return current_app.extensions["apsara"].files.incoming_file()


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
    transfers: "Transfers"


def _settings(config) -> Settings:
    if isinstance(config, Settings):
        return config
    settings = from_env()
    return settings.replace(**config) if config else settings


def create_app(config: Settings | dict | None = None) -> Flask:
    from .chat import Chat
    from .files import FileStore
    from .gemini.judge import judge_tier
    from .routing.router import Router
    from .conversations import ConversationManager, ConversationStore
    from .conversations.sweeper import TemporarySweeper
    from .gemini.catalog import ModelCatalog
    from .gemini.client import GeminiClient
    from .jsonio import OrjsonProvider
    from .transfer.service import Transfers

    settings = _settings(config)
    _configure_logging()
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    # A doubled slash is a 404, not a redirect to somewhere else.
    app.url_map.merge_slashes = False
    # Werkzeug refuses larger bodies with 413 before reading them.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024 + 64 * 1024

    store = ConversationStore(settings.data_dir)
    store.history_dir.mkdir(parents=True, exist_ok=True)
    store.sweep_temp_files()
    gemini = GeminiClient(settings)
    catalog = ModelCatalog(gemini.list_models if gemini.configured else None,
                           ttl_s=settings.models_cache_ttl_s)
    files = FileStore(settings.data_dir, settings.secret_key, settings.file_url_ttl_s)
    files.sweep_incoming()
    manager = ConversationManager(store, catalog, settings.default_model, files.signed_url)
    judge = None
    if settings.auto_judge_model and gemini.configured:
        def judge(text, previous_tier):
            return judge_tier(gemini, settings.auto_judge_model, text, previous_tier, settings.auto_judge_timeout_s)
    router = Router(catalog, settings.auto_tiers, judge=judge)
    store.check_search_index()
    if settings.temporary_sweep_s > 0:
        TemporarySweeper(manager, settings.data_dir / ".temporary-sweep.lock",
                         settings.temporary_ttl_h).start(settings.temporary_sweep_s)
    app.extensions["apsara"] = Services(settings, store, manager, catalog, gemini,
                                        Chat(manager, catalog, gemini, files, settings, router), files, router,
                                        Transfers(manager, files))
    app.request_class = UploadRequest

    register_extensions(app, settings)
    register_blueprints(app)
    if not settings.auth_enabled:
        log.warning("APSARA_API_KEYS is not set: authentication is OFF and every request "
                    "acts as the single local user")
    if not gemini.configured:
        log.warning("No Gemini API key (set the variable 'gemini'): chat will answer 503")
    return app


def _configure_logging() -> None:
    # Under Gunicorn the root logger may already be set up; only fill a gap.
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def register_extensions(app: Flask, settings: Settings) -> None:
    if settings.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": settings.cors_origins}},
             expose_headers=["Retry-After", "Content-Disposition"])


def register_blueprints(app: Flask) -> None:
    from .api import register_api
    from .auth import register_auth
    from .errors import register_error_handlers

    register_auth(app)
    register_api(app)
    # After flask-smorest, so its default handler is replaced by ours.
    register_error_handlers(app)


__all__ = ["create_app", "VERSION"]
