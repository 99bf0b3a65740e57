"""Which Gemini models can be chosen, and what each can do.

The live `models.list()` decides which models exist; a bundled table describes
the ones we know (inputs, tools, thinking); for a model the table does not know,
the live fields plus its family's defaults (read from the name: 3.x takes
thinking levels, 2.5 a thinking budget, `-image` makes pictures) describe it.
When the API cannot be reached, the bundled table alone is served (and the
log says so).

Only models that hold a text conversation through generateContent are offered:
the live list also names speech, music, embedding, Imagen and Veo models, which
either have no generateContent or answer it with audio. The configured default
model is used only when it is offered; otherwise the best offered Flash model
stands in, and the catalog says so (once in the log, and in `default_note`).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from .tools import SERVER_FUNCTIONS

log = logging.getLogger("apsara.models")

ALL_INPUTS = ["text", "image", "audio", "video", "pdf"]
TEXT_MODEL_TOOLS = ["google_search", "url_context", "code_execution", "image_generation",
                    *SERVER_FUNCTIONS]
LEVELS = ["low", "medium", "high"]
LEVELS_WITH_MINIMAL = ["minimal", "low", "medium", "high"]


@dataclass
class ModelInfo:
    id: str
    display_name: str
    description: str = ""
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    inputs: list[str] = field(default_factory=lambda: list(ALL_INPUTS))
    outputs: list[str] = field(default_factory=lambda: ["text"])
    tools: list[str] = field(default_factory=lambda: list(TEXT_MODEL_TOOLS))
    # {"levels": [...], "default": "..."} | {"budget": [min, max], "can_disable": bool} | None
    thinking: dict | None = None
    status: str = "stable"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def makes_images(self) -> bool:
        return "image" in self.outputs


def _levels(levels=LEVELS, default="high"):
    return {"levels": list(levels), "default": default}


def _budget(low, high, can_disable):
    return {"budget": [low, high], "can_disable": can_disable}


IMAGE_MODEL_TOOLS = ["image_generation"]

BUNDLED = [
    ModelInfo("gemini-3.8-flash", "Gemini 3.8 Flash", "Fast, capable everyday model.",
              thinking=_levels(default="medium")),
    ModelInfo("gemini-3.7-flash", "Gemini 3.7 Flash", "Previous Flash generation.",
              thinking=_levels(default="medium")),
    ModelInfo("gemini-3.6-flash", "Gemini 3.6 Flash", "Older Flash; also takes minimal thinking.",
              thinking=_levels(LEVELS_WITH_MINIMAL, "medium")),
    ModelInfo("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", "Cheapest fast model.",
              thinking=_levels(LEVELS_WITH_MINIMAL, "minimal")),
    ModelInfo("gemini-3.1-flash-lite", "Gemini 3.1 Flash-Lite", "Low-cost tier.",
              thinking=_levels(LEVELS_WITH_MINIMAL, "minimal")),
    ModelInfo("gemini-3.1-pro-preview", "Gemini 3.1 Pro (preview)", "Strongest reasoning model.",
              thinking=_levels(default="high"), status="preview"),
    ModelInfo("gemini-3.1-flash-image", "Gemini 3.1 Flash Image", "Makes and edits images.",
              inputs=["text", "image"], outputs=["text", "image"], tools=list(IMAGE_MODEL_TOOLS),
              output_token_limit=32_768),
    ModelInfo("gemini-3.1-flash-lite-image", "Gemini 3.1 Flash-Lite Image", "Cheap image model.",
              inputs=["text", "image"], outputs=["text", "image"], tools=list(IMAGE_MODEL_TOOLS),
              output_token_limit=32_768),
    ModelInfo("gemini-3-pro-image", "Gemini 3 Pro Image", "Highest quality images.",
              inputs=["text", "image"], outputs=["text", "image"],
              tools=["image_generation", "google_search"], output_token_limit=32_768),
    ModelInfo("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "Older low-cost model.",
              thinking=_budget(512, 24576, True)),
    ModelInfo("gemini-2.5-flash", "Gemini 2.5 Flash", "Shuts down 2026-12-01.",
              thinking=_budget(0, 24576, True), status="deprecated"),
    ModelInfo("gemini-2.5-pro", "Gemini 2.5 Pro", "Shuts down 2026-12-01.",
              thinking=_budget(128, 32768, False), status="deprecated"),
]

_FAMILY = re.compile(r"^gemini-(?P<major>\d+)(?:\.(?P<minor>\d+))?-(?P<tier>pro|flash-lite|flash)")


def family_defaults(model_id: str) -> ModelInfo:
    """Describe a model the bundled table does not know, from its name."""
    info = ModelInfo(model_id, model_id, status="preview" if "preview" in model_id else "stable")
    match = _FAMILY.match(model_id)
    if "image" in model_id:
        info = replace(info, inputs=["text", "image"], outputs=["text", "image"],
                       tools=list(IMAGE_MODEL_TOOLS))
    if "tts" in model_id or "audio" in model_id or "embedding" in model_id:
        info = replace(info, tools=[])
    if not match or "image" in model_id:
        return info
    major, tier = int(match["major"]), match["tier"]
    if major >= 3:
        lite = tier == "flash-lite"
        info.thinking = _levels(LEVELS_WITH_MINIMAL if lite else LEVELS,
                                "minimal" if lite else ("high" if tier == "pro" else "medium"))
    elif major == 2 and match["minor"] == "5":
        info.thinking = {"pro": _budget(128, 32768, False), "flash": _budget(0, 24576, True),
                         "flash-lite": _budget(512, 24576, True)}[tier]
    return info


_KNOWN = {m.id: m for m in BUNDLED}


def describe(live: dict) -> ModelInfo:
    """One live `models.list()` entry -> ModelInfo (bundled facts win where we have them)."""
    model_id = live["id"]
    base = _KNOWN.get(model_id) or family_defaults(model_id)
    changes = {}
    for key in ("display_name", "description", "input_token_limit", "output_token_limit"):
        if live.get(key) and (model_id not in _KNOWN or key.endswith("limit")):
            changes[key] = live[key]
    info = replace(base, **changes)
    if live.get("thinking") is False:
        info.thinking = None
    return info


# Offered by models.list with generateContent, but not for a text conversation:
# text-to-speech and music models answer with audio; agents (Deep Research, computer
# use, Antigravity) need their own API or a client-side tool loop a chat cannot run;
# the others lack generateContent today and are kept out by name too, should a
# listing ever claim otherwise.
_NOT_CONVERSATION = re.compile(r"(^|-)(tts)(-|$)|^lyria-|embedding|^aqa$|^imagen-|^veo-"
                               r"|^deep-research-|(^|-)computer-use(-|$)|^antigravity-")


def holds_conversation(live: dict) -> bool:
    """Can this live `models.list()` entry hold a text conversation through generateContent?"""
    actions = live.get("actions") or ["generateContent"]
    return "generateContent" in actions and not _NOT_CONVERSATION.search(live["id"])


_PLAIN_FLASH = re.compile(r"^gemini-(?P<major>\d+)(?:\.(?P<minor>\d+))?-flash(?P<preview>-preview)?$")


def best_flash(models: list[ModelInfo]) -> str | None:
    """The newest plain Flash model, stable before preview (not -lite, -image or an alias)."""
    ranked = []
    for model in models:
        match = _PLAIN_FLASH.match(model.id)
        if match:
            ranked.append((match["preview"] is None, int(match["major"]), int(match["minor"] or 0), model.id))
    if ranked:
        return max(ranked)[3]
    flash = [m.id for m in models if "flash" in m.id and not m.makes_images]
    return flash[0] if flash else (models[0].id if models else None)


class ModelCatalog:
    """The live model list, cached for `ttl_s`; the bundled table when the API is out of reach.

    `lister()` returns the live entries as dicts (id, display_name, ..., actions)
    or raises; a failure is remembered for a short while so a dead API is not
    asked on every request.
    """

    FAILURE_TTL_S = 30.0

    def __init__(self, lister: Callable[[], list[dict]] | None, ttl_s: float = 300.0):
        self._lister = lister
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._models: list[ModelInfo] | None = None
        self._source = "bundled"
        self._expires = 0.0
        self._refreshing = False
        self._fallback_said: tuple[str, str] | None = None

    def _read(self) -> tuple[list[ModelInfo], str, float]:
        """(models, where they came from, when to read them again)."""
        models, source, ttl = list(BUNDLED), "bundled", self.FAILURE_TTL_S
        if self._lister is not None:
            try:
                live = [m for m in self._lister() if holds_conversation(m)]
                if live:
                    models, source, ttl = [describe(m) for m in live], "live", self._ttl_s
                else:
                    log.warning("the Gemini API listed no conversation models; serving the bundled "
                                "model table for %.0f s", ttl)
            except Exception as exc:  # any failure to reach the API: serve the table
                log.warning("the live model list could not be read (%s); serving the bundled model "
                            "table for %.0f s", type(exc).__name__, ttl)
        return models, source, time.monotonic() + ttl

    def _refresh_in_background(self) -> None:
        try:
            read = self._read()
            with self._lock:
                self._models, self._source, self._expires = read
        finally:
            self._refreshing = False

    def models(self) -> list[ModelInfo]:
        with self._lock:
            if self._models is None:
                self._models, self._source, self._expires = self._read()
            elif time.monotonic() >= self._expires and not self._refreshing:
                # Out of date: serve the list in hand and read the new one beside this request,
                # so no turn waits on models.list (every page of it) once every few minutes.
                self._refreshing = True
                threading.Thread(target=self._refresh_in_background, name="apsara-models", daemon=True).start()
            return list(self._models)

    @property
    def source(self) -> str:
        self.models()
        return self._source

    def get(self, model_id: str) -> ModelInfo | None:
        return next((m for m in self.models() if m.id == model_id), None)

    def ids(self) -> list[str]:
        return [m.id for m in self.models()]

    def models_with_tool(self, tool: str) -> list[str]:
        return [m.id for m in self.models() if tool in m.tools]

    def default_model(self, configured: str, refresh: bool = True) -> tuple[str, str | None]:
        """(the default model in use, a note saying why it is not `configured`, or None).

        With refresh=False only what is already loaded is consulted (for /health,
        which must stay cheap); nothing loaded yet means the configured one.
        """
        if refresh:
            models = self.models()
        else:
            with self._lock:
                models = list(self._models or [])
        if not models or any(m.id == configured for m in models):
            return configured, None
        chosen = best_flash(models)
        where = "the Gemini API" if self._source == "live" else "the bundled model table"
        note = f"APSARA_DEFAULT_MODEL '{configured}' is not offered by {where}; using '{chosen}' instead"
        if self._fallback_said != (configured, chosen):
            self._fallback_said = (configured, chosen)
            log.warning(note)
        return chosen, note


__all__ = ["ModelCatalog", "ModelInfo", "BUNDLED", "describe", "family_defaults", "holds_conversation",
           "best_flash"]
