"""The `auto` model: pick a tier for each turn, then a model that can really serve it.

1. The local classifier reads the turn (and the tier of the turn before) and
   proposes a tier: lite, flash, pro or image.
2. Hard constraints come before taste: the model must read every file in the
   context, hold the context in its input limit, and use every enabled tool; an
   image request goes to an image model. When the tier's models cannot, the turn
   moves up (lite -> flash -> pro) or to any model that can.
3. The conversation's thinking settings are translated to what the chosen model
   takes (levels <-> budgets).
Tier -> models comes from configuration (first available wins).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..filetypes import input_kind
from ..gemini.catalog import ModelCatalog, ModelInfo
from .classifier import Classifier
from .features import features
from .reasons import explain

DEFAULT_TIER_MODELS = {
    "lite": ["gemini-3.5-flash-lite", "gemini-3.1-flash-lite", "gemini-2.5-flash-lite"],
    "flash": ["gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.6-flash"],
    "pro": ["gemini-3.1-pro-preview", "gemini-2.5-pro"],
    "image": ["gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image"],
}
ESCALATION = ["lite", "flash", "pro"]


@dataclass
class Routing:
    model: str
    tier: str
    reason: str
    classifier: str
    latency_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


class Router:
    def __init__(self, catalog: ModelCatalog, tier_models: dict[str, list[str]] | None = None,
                 classifier: Classifier | None = None, judge=None):
        self.catalog = catalog
        self.tier_models = {**DEFAULT_TIER_MODELS, **(tier_models or {})}
        self.classifier = classifier or Classifier.load()
        # judge(text, previous_tier, billed_to) -> tier or None; when set it is asked first.
        self.judge = judge

    def _fits(self, model: ModelInfo, kinds: set[str], tools: list[str], tokens: int) -> bool:
        return (kinds <= set(model.inputs) | {"text"} and all(t in model.tools for t in tools)
                and tokens <= model.input_token_limit)

    def _shortfall(self, tier: str, available: dict[str, ModelInfo], kinds: set[str], tools: list[str],
                   tokens: int) -> str:
        """What the tier's first available model lacks for this turn, in plain words."""
        model = next((available[i] for i in self.tier_models[tier] if i in available), None)
        if model is None:
            return f"no {tier} model is available"
        lacks = []
        if unreadable := sorted(kinds - set(model.inputs) - {"text"}):
            lacks.append(f"cannot read {' or '.join(unreadable)}")
        if missing := [t for t in tools if t not in model.tools]:
            lacks.append(f"cannot use {', '.join(missing)}")
        if tokens > model.input_token_limit:
            lacks.append(f"cannot hold this conversation ({tokens:,} tokens, at most {model.input_token_limit:,})")
        return f"{model.id} " + " and ".join(lacks or ["does not fit this turn"])

    def _pick(self, tier: str, kinds: set[str], tools: list[str], tokens: int) -> tuple[ModelInfo | None, str]:
        """The first model of the tier (or a higher one) that fits; with why it moved."""
        available = {m.id: m for m in self.catalog.models()}
        if tier == "image":
            images = [available[i] for i in self.tier_models["image"] if i in available]
            # Tools an image model lacks are left out of a picture turn rather than refusing it.
            for needed in (tools, [t for t in tools if t == "image_generation"]):
                for model in images:
                    if self._fits(model, kinds, needed, tokens):
                        note = "" if needed == tools else "; tools the image model lacks were left out"
                        return model, note
            tier, moved = "flash", "; no image model can take this turn"
        else:
            moved = ""
        start = ESCALATION.index(tier)
        for step, name in enumerate(ESCALATION[start:]):
            for model_id in self.tier_models[name]:
                model = available.get(model_id)
                if model and self._fits(model, kinds, tools, tokens):
                    note = moved if step == 0 else \
                        f"{moved}; moved up to {name}: {self._shortfall(tier, available, kinds, tools, tokens)}"
                    return model, note
        for model in available.values():
            if not model.makes_images and self._fits(model, kinds, tools, tokens):
                return model, f"{moved}; no configured model fits, {model.id} does"
        return None, moved

    def tier_model(self, tier: str) -> str | None:
        """The model a text-only turn of this tier would get (None when the catalog offers none)."""
        model, _note = self._pick(tier, set(), [], 0)
        return model.id if model else None

    def route(self, text: str, *, file_types: list[str] = (), tools: list[str] = (), context_tokens: int = 0,
              previous_tier: str | None = None, history_turns: int = 0, billed_to=None) -> Routing:
        """`billed_to`: the bill the judge's call goes on (see apsara.usage)."""
        started = time.perf_counter()
        has_image = any(t.startswith("image/") for t in file_types)
        found = features(text, previous_tier=previous_tier, has_image=has_image,
                         has_other_file=any(not t.startswith("image/") for t in file_types),
                         history_turns=history_turns)
        scored = self.classifier.score(found)
        tier, classifier = scored.tier, "local-logistic-v1"
        judged = self.judge(text, previous_tier, billed_to) if self.judge is not None else None
        if judged is not None:
            tier, classifier = judged, "llm-judge"
        kinds = {input_kind(t) for t in file_types}
        model, note = self._pick(tier, kinds, list(tools), context_tokens)
        if model is None:
            model_id, note = "", "; no available model can take this turn"
        else:
            model_id = model.id
        proposed = tier
        tier = "image" if model is not None and model.makes_images else \
            next((name for name, ids in self.tier_models.items() if model_id in ids), proposed)
        if judged is not None:
            reason = f"{proposed}: the judge model's choice (local classifier: {scored.tier}){note}"
        else:
            why = explain(scored.top_features, text, has_image=has_image, history_turns=history_turns)
            reason = f"{proposed} ({scored.probabilities[proposed]:.0%}): {why}{note}"
        return Routing(model_id, tier, reason, classifier, round((time.perf_counter() - started) * 1000, 3))


LEVEL_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}


def translate_thinking(settings: dict, model: ModelInfo) -> dict:
    """Thinking settings made valid for `model`: levels <-> budgets, clamped, or dropped."""
    out = dict(settings)
    level, budget = out.pop("thinking_level", None), out.pop("thinking_budget", None)
    thinking = model.thinking
    if thinking is None:
        out.pop("include_thoughts", None)
        return out
    if "levels" in thinking:
        levels = thinking["levels"]
        if level is None and budget is not None:
            level = "minimal" if budget == 0 else ("low" if 0 < budget <= 2048 else
                                                   "medium" if 0 < budget <= 12000 else "high")
        if level is not None:
            order = ["minimal", "low", "medium", "high"]
            if level not in levels:  # the nearest level the model takes
                level = min(levels, key=lambda lv: abs(order.index(lv) - order.index(level)))
            out["thinking_level"] = level
    else:
        low, high = thinking["budget"]
        if budget is None and level is not None:
            budget = 0 if level == "minimal" and thinking.get("can_disable") else LEVEL_BUDGETS[level]
        if budget is not None:
            if budget == 0 and not thinking.get("can_disable"):
                budget = low
            elif budget not in (-1, 0):
                budget = max(low, min(high, budget))
            out["thinking_budget"] = budget
    return out
