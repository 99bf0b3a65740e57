"""Settings, read once from the environment (and `.env`) when the app is built.

Everything the server can be told lives in `Settings`; `create_app` takes either
a `Settings` or a dict of overrides, so tests never touch the real environment.
Variable names are the ones the API document fixes (the Gemini key is read from
`gemini`, then `GEMINI_API_KEY`, then `GOOGLE_API_KEY`).
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

VERSION = "2.5.0"
USER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOCAL_USER = "local"
GEMINI_KEY_VARIABLES = ("gemini", "GEMINI_API_KEY", "GOOGLE_API_KEY")


class ConfigError(ValueError):
    """A setting that the server cannot start with."""


@dataclass
class Settings:
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None
    gemini_api_version: str = "v1beta"
    gemini_timeout_s: float = 120.0
    gemini_retry_attempts: int = 3
    # Open connections to Gemini per worker process: the most replies it streams at once.
    gemini_max_connections: int = 1000
    data_dir: Path = Path("data")
    # postgresql://... keeps all state in PostgreSQL (several replicas); None: files under data_dir.
    database_url: str | None = None
    default_model: str = "gemini-3.8-flash"
    # user name -> API key; empty means auth is off and everyone is LOCAL_USER.
    api_keys: dict[str, str] = field(default_factory=dict)
    cors_origins: list[str] = field(default_factory=list)
    max_upload_mb: int = 100
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    file_url_ttl_s: int = 3600
    # How often a worker sweeps crash leftovers out of the upload folder.
    upload_sweep_every_s: float = 600.0
    models_cache_ttl_s: float = 300.0
    # Seconds of silence on a stream before a `: ping` comment goes out.
    ping_interval_s: float = 15.0
    max_title_chars: int = 200
    max_system_instruction_chars: int = 200_000
    max_message_chars: int = 1_000_000
    max_files_per_message: int = 100
    max_function_steps: int = 8
    # Smallest prefix worth an explicit context cache; None: Gemini's minimum per model.
    cache_min_tokens: int | None = None
    # `auto`: tier -> models to try in order (unset tiers keep the built-in defaults).
    auto_tiers: dict[str, list[str]] = field(default_factory=dict)
    # Optional LLM judge for `auto` (a cheap model) and how long it may take.
    auto_judge_model: str | None = None
    auto_judge_timeout_s: float = 1.5
    # The model that draws when a text model calls generate_image.
    image_model: str = "gemini-3.1-flash-image"
    # Automatic titles, and the model that writes them; None: the `lite` tier of the auto router.
    auto_titles: bool = True
    title_model: str | None = None
    title_timeout_s: float = 10.0
    # Largest import (MB); None: the upload limit.
    max_import_mb: float | None = None
    # Hours after its last message that a temporary conversation is deleted, and how often
    # the server looks (0: never; the server's default looks twice a minute).
    temporary_ttl_h: float = 24.0
    temporary_sweep_s: float = 30.0

    @property
    def import_limit_bytes(self) -> int:
        return int((self.max_import_mb if self.max_import_mb is not None else self.max_upload_mb) * 1024 * 1024)
    # Usage and limits: a price file replacing the shipped table, budgets
    # ({"default": {...}, "users": {...}}), keys that may read anyone's usage,
    # rate limits ({"requests": "120/minute", "streams": 4, "uploads": "60/hour"})
    # and where their counters live (a `limits` storage URI; unset: SQLite in data_dir).
    prices_path: str | None = None
    budgets: dict = field(default_factory=dict)
    admin_keys: list[str] = field(default_factory=list)
    rate_limits: dict = field(default_factory=dict)
    rate_limit_storage: str | None = None
    # GET /metrics needs this Bearer token; unset: /metrics is 404.
    metrics_token: str | None = None
    log_format: str = "text"
    # Where clients reach this server (`https://api.example.com`): file URLs become absolute.
    public_url: str | None = None
    # Which Gemini answers: "gemini" (the API), "vertex" (Vertex AI, the SDK's
    # GOOGLE_GENAI_USE_VERTEXAI) or "fake" (`make run`'s offline fake).
    gemini_upstream: str = "gemini"

    def __post_init__(self):
        # Once, here: every later use (send_file resolves relative paths against the
        # package folder, not the working directory) sees the same absolute folder.
        self.data_dir = Path(os.path.abspath(os.path.expanduser(self.data_dir)))

    @property
    def history_dir(self) -> Path:
        return self.data_dir / "history"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


def parse_api_keys(raw: str) -> dict[str, str]:
    """`user:key,user:key` -> {user: key}; refuses anything ambiguous."""
    keys: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        user, sep, key = item.partition(":")
        user, key = user.strip(), key.strip()
        if not sep or not key:
            raise ConfigError("APSARA_API_KEYS entries must look like user:key")
        if not USER_NAME.match(user):
            raise ConfigError(f"APSARA_API_KEYS: user name {user!r} must match {USER_NAME.pattern}")
        if user in keys:
            raise ConfigError(f"APSARA_API_KEYS: user {user!r} is listed twice")
        if key in keys.values():
            raise ConfigError("APSARA_API_KEYS: two users share one key")
        keys[user] = key
    return keys


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def _number(env, name, default, kind=float):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def parse_public_url(raw: str) -> str:
    """`https://host[:port][/prefix]`, without a trailing slash; refuses anything else."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("APSARA_PUBLIC_URL must look like https://api.example.com (optionally with a path)")
    return raw.strip().rstrip("/")


def _upstream(env) -> str:
    if env.get("APSARA_OFFLINE_FAKE") == "1":
        return "fake"
    if (env.get("GOOGLE_GENAI_USE_VERTEXAI") or "").lower() in ("1", "true"):
        return "vertex"
    return "gemini"


def from_env(env=None) -> Settings:
    """Build settings from an environment mapping (default: os.environ plus `.env`)."""
    if env is None:
        from dotenv import load_dotenv

        # Real environment variables win over the .env file.
        load_dotenv(override=False)
        env = os.environ
    key = next((env[name] for name in GEMINI_KEY_VARIABLES if env.get(name)), None)
    settings = Settings(
        gemini_api_key=key,
        gemini_base_url=env.get("GEMINI_BASE_URL") or None,
        gemini_api_version=env.get("GEMINI_API_VERSION") or "v1beta",
        gemini_timeout_s=_number(env, "GEMINI_TIMEOUT_S", 120.0),
        data_dir=Path(env.get("APSARA_DATA_DIR") or "data"),
        database_url=env.get("APSARA_DATABASE_URL") or None,
        api_keys=parse_api_keys(env.get("APSARA_API_KEYS", "")),
        cors_origins=_split(env.get("CORS_ORIGINS")),
        max_upload_mb=_number(env, "APSARA_MAX_UPLOAD_MB", 100, int),
        models_cache_ttl_s=_number(env, "APSARA_MODELS_CACHE_S", 300.0),
        gemini_upstream=_upstream(env),
    )
    if env.get("APSARA_PUBLIC_URL"):
        settings.public_url = parse_public_url(env["APSARA_PUBLIC_URL"])
    if env.get("APSARA_DEFAULT_MODEL"):
        settings.default_model = env["APSARA_DEFAULT_MODEL"]
    for tier in ("lite", "flash", "pro", "image"):
        if env.get(f"APSARA_AUTO_{tier.upper()}"):
            settings.auto_tiers[tier] = _split(env[f"APSARA_AUTO_{tier.upper()}"])
    if env.get("APSARA_AUTO_JUDGE"):
        settings.auto_judge_model = env["APSARA_AUTO_JUDGE"]
        settings.auto_judge_timeout_s = _number(env, "APSARA_AUTO_JUDGE_TIMEOUT_S", 1.5)
    if env.get("APSARA_IMAGE_MODEL"):
        settings.image_model = env["APSARA_IMAGE_MODEL"]
    if env.get("APSARA_TITLE_MODEL"):
        settings.title_model = env["APSARA_TITLE_MODEL"]
    if env.get("APSARA_MAX_IMPORT_MB"):
        settings.max_import_mb = _number(env, "APSARA_MAX_IMPORT_MB", None)
    settings.temporary_ttl_h = _number(env, "APSARA_TEMPORARY_TTL_H", 24.0)
    settings.temporary_sweep_s = min(60.0, _number(env, "APSARA_TEMPORARY_SWEEP_S", 30.0))
    if env.get("APSARA_SECRET_KEY"):
        settings.secret_key = env["APSARA_SECRET_KEY"]
    elif settings.database_url:
        settings.secret_key = ""  # replicas share the one kept in the database
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("APSARA_DATABASE_URL must start with postgresql://")
    _usage_settings(settings, env)
    return settings


def _usage_settings(settings: Settings, env) -> None:
    from .ratelimits import RateLimitError, parse_rate_limits
    from .usage.budgets import BudgetError, parse_budgets

    try:
        settings.budgets = parse_budgets(env.get("APSARA_BUDGETS"))
        settings.rate_limits = parse_rate_limits(env.get("APSARA_RATE_LIMITS"))
    except (BudgetError, RateLimitError) as exc:
        raise ConfigError(str(exc)) from None
    settings.prices_path = env.get("APSARA_PRICES") or None
    settings.admin_keys = _split(env.get("APSARA_ADMIN_KEYS"))
    settings.rate_limit_storage = env.get("APSARA_RATE_LIMIT_STORAGE") or None
    settings.metrics_token = env.get("APSARA_METRICS_TOKEN") or None
    log_format = (env.get("APSARA_LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError("APSARA_LOG_FORMAT is text or json")
    settings.log_format = log_format
