"""Running the server functions a model calls, generate_image included.

A turn offers the model the server functions among its tools (and, on a text
model with image_generation, `generate_image`); when the model calls one, it
runs here and its result goes back to the model. Failures become error results.
"""
from __future__ import annotations

from .attachments import Attachments
from .conversations.manager import Turn
from .files import FileStore
from .functions import BUILT_IN_FUNCTIONS, GENERATE_IMAGE, run_function
from .gemini.catalog import ModelCatalog
from .gemini.client import GeminiClient
from .gemini.errors import to_api_error
from .gemini.requests import draw
from .gemini.replies import ReplyBuilder


class FunctionCalls:
    def __init__(self, attachments: Attachments, catalog: ModelCatalog, gemini: GeminiClient, image_model: str):
        self.attachments = attachments
        self.files: FileStore = attachments.files
        self.catalog = catalog
        self.gemini = gemini
        self.image_model = image_model

    def declarations(self, choice) -> list[dict]:
        """Declarations of the server functions this turn offers the model."""
        declared = [BUILT_IN_FUNCTIONS[t].declaration() for t in choice.tools if t in BUILT_IN_FUNCTIONS]
        if "image_generation" in choice.tools and not choice.model.makes_images:
            declared.append(GENERATE_IMAGE)
        return declared

    def run(self, owner: str, turn: Turn, call: dict, builder: ReplyBuilder,
            last_round: bool) -> tuple[dict, list[dict]]:
        """(the function_response part, file parts of pictures it made)."""
        name, args = call["name"], call.get("args") or {}
        allowed, made = set(turn.choice.tools), []
        if name in BUILT_IN_FUNCTIONS and name in allowed:
            response = run_function(BUILT_IN_FUNCTIONS[name], args)
        elif name == "generate_image" and "image_generation" in allowed:
            response, made = self._generate_image(owner, turn, builder, args)
        else:
            response = {"error": f"there is no function called {name!r} here"}
        if last_round:
            response = {**response, "note": "function-call limit reached: answer the user now"}
        result = {"type": "function_response", "name": name, "response": response}
        if call.get("call_id"):
            result["call_id"] = call["call_id"]
        return result, made

    def _generate_image(self, owner: str, turn: Turn, builder: ReplyBuilder, args: dict) -> tuple[dict, list]:
        """generate_image on a text model: the configured image model draws, the picture is stored."""
        prompt = args.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return {"error": "generate_image needs a prompt"}, []
        image_model = self.catalog.get(self.image_model)
        if image_model is None:
            return {"error": f"the image model {self.image_model} is not available"}, []
        parts: list[dict] = [{"text": prompt}]
        if args.get("edit_previous"):
            previous = self._latest_image(owner, turn, builder)
            if previous is None:
                return {"error": "there is no earlier picture in this conversation to change"}, []
            parts.append({"inline_data": {"mime_type": previous["mime_type"],
                                          "data": self.files.read_bytes(owner, previous["file_id"])}})
        try:
            response = draw(self.gemini, image_model.id, parts, billed_to=turn.bill)
        except Exception as exc:  # reported to the model, which can tell the user
            return {"error": f"the image model failed: {to_api_error(exc, self.gemini.secret).message}"}, []
        images = ReplyBuilder(on_inline=self.attachments.image_saver(owner))
        images.feed(response)
        # The image model's signatures belong to its own turn, not to this conversation's.
        made = [{k: v for k, v in p.items() if k != "thought_signature"} for p in images.parts if p["type"] == "file"]
        if not made:
            return {"error": "the image model made no picture", "said": "".join(
                p.get("text", "") for p in images.parts if p["type"] == "text")[:500]}, []
        return {"result": "the picture is shown to the user", "file_ids": [p["file_id"] for p in made]}, made

    def _latest_image(self, owner: str, turn: Turn, builder: ReplyBuilder) -> dict | None:
        for part in reversed(builder.parts):
            if part["type"] == "file" and part["mime_type"].startswith("image/"):
                return part
        for message in reversed(turn.context):
            for part in reversed(message["parts"]):
                if part["type"] == "file" and part["mime_type"].startswith("image/"):
                    return part
        return None
