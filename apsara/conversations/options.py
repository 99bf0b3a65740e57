"""What a conversation (or one turn) may choose: a model, its tools, its thinking.

Checked against the live model catalog at creation, on PATCH and on each turn,
so a choice the model cannot honour is refused with 422 naming what would work,
instead of failing later at Gemini.
"""
from __future__ import annotations

from ..errors import ApiError
from ..gemini.catalog import ModelCatalog, ModelInfo
from .output import check_output


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, message, {field: [message]})


def resolve_model(catalog: ModelCatalog, model_id: str, field: str = "model") -> ModelInfo:
    info = catalog.get(model_id)
    if info is None:
        available = ", ".join(catalog.ids())
        raise _refuse(field, f"model '{model_id}' is not available; available models: {available}")
    return info


def check_tools(catalog: ModelCatalog, model: ModelInfo, tools: list[str], field: str = "tools") -> None:
    for tool in tools:
        if tool not in model.tools:
            able = ", ".join(catalog.models_with_tool(tool)) or "none"
            raise _refuse(field, f"tool '{tool}' cannot be used with model '{model.id}'; "
                                 f"models that can: {able}")


def check_thinking(model: ModelInfo, settings: dict, field: str = "settings") -> None:
    level, budget = settings.get("thinking_level"), settings.get("thinking_budget")
    thinking = model.thinking
    if level is not None and budget is not None:
        raise _refuse(f"{field}.thinking_budget",
                      "set thinking_level or thinking_budget, not both")
    if thinking is None:
        for key in ("thinking_level", "thinking_budget", "include_thoughts"):
            if settings.get(key) not in (None, False):
                raise _refuse(f"{field}.{key}", f"model '{model.id}' has no thinking settings")
        return
    if level is not None:
        levels = thinking.get("levels")
        if not levels:
            low, high = thinking["budget"]
            raise _refuse(f"{field}.thinking_level",
                          f"model '{model.id}' takes thinking_budget ({low}..{high}), not thinking_level")
        if level not in levels:
            raise _refuse(f"{field}.thinking_level",
                          f"model '{model.id}' takes thinking_level one of: {', '.join(levels)}")
    if budget is not None:
        if "budget" not in thinking:
            raise _refuse(f"{field}.thinking_budget",
                          f"model '{model.id}' takes thinking_level ({', '.join(thinking['levels'])}), "
                          "not thinking_budget")
        low, high = thinking["budget"]
        ok = budget == -1 or (budget == 0 and thinking.get("can_disable")) or low <= budget <= high
        if not ok:
            zero = "0 (off), " if thinking.get("can_disable") else ""
            raise _refuse(f"{field}.thinking_budget",
                          f"model '{model.id}' takes thinking_budget -1 (dynamic), {zero}or {low}..{high}")


AUTO = "auto"


def auto_model(catalog: ModelCatalog) -> ModelInfo:
    """`auto` as a model: whatever some available model can do, it can."""
    models = [m for m in catalog.models()]
    return ModelInfo(AUTO, "Automatic", "Picks a lite, flash, pro or image model for each turn.",
                     input_token_limit=max((m.input_token_limit for m in models), default=0),
                     output_token_limit=max((m.output_token_limit for m in models), default=0),
                     inputs=sorted({i for m in models for i in m.inputs}),
                     outputs=sorted({o for m in models for o in m.outputs}),
                     tools=sorted({t for m in models for t in m.tools}), thinking=None, status="stable")


def check_choice(catalog: ModelCatalog, model_id: str, tools: list[str], settings: dict) -> ModelInfo:
    """The whole check for one model + tools + settings combination."""
    if model_id == AUTO:
        # Thinking settings are translated per turn to whatever model is picked.
        model = auto_model(catalog)
        check_tools(catalog, model, tools)
        check_output(settings)
        return model
    model = resolve_model(catalog, model_id)
    check_tools(catalog, model, tools)
    check_thinking(model, settings)
    check_output(settings)
    return model
