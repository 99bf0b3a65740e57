"""An OpenAI Chat Completions request body -> what one Gemini turn needs.

Messages become the service's own parts (`text`, `inline`, `function_call`,
`function_response`) so `gemini.convert` builds the Gemini request as it does
for every other turn. System and developer messages make the system
instruction; pictures, audio and PDFs come as data URLs and are checked by their
bytes; tool calls get their thought signatures back from their ids, and pictures
this server sent as Markdown come back as pictures. Anything OpenAI would
refuse, or that Gemini cannot do, is a 400 naming the parameter.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

import orjson

from ..filetypes import sniff
from .answers import OpenAIRequestError
from .signatures import from_param, read_tool_call_id

# Fields this module does not read are ignored, as OpenAI-compatible servers do: chat apps add
# their own (Open WebUI's min_p...), and OpenAI's `user`, `metadata`, `store`, penalties and the
# like change nothing Gemini could honour. Those that would change the answer and cannot be
# honoured (n > 1, logprobs, audio) are refused.

# OpenAI's reasoning efforts -> the service's thinking levels (made valid per model later).
EFFORT_LEVELS = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
                 "xhigh": "high"}
MAX_STOP = 4
# Free-form JSON that goes on to Gemini (schemas, arguments, tool results) nests at most this deep,
# as every JSON body of the service: deeper is no real request.
MAX_DEPTH = 64
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*);base64,"
                      r"(?P<data>.*)$", re.S)
# A picture this server sent as a Markdown image (see completions.picture_as_markdown).
MARKDOWN_PICTURE = re.compile(r"!\[[^\]]*\]\((data:image/[^)\s]+)\)")
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}


@dataclass
class CompletionRequest:
    model: str
    turns: list[tuple[str, list[dict]]]  # (user | model, the service's parts), oldest first
    system_instruction: str = ""
    settings: dict = field(default_factory=dict)  # generation settings, in the service's names
    functions: list[dict] = field(default_factory=list)  # Gemini function declarations
    function_mode: str | None = None  # AUTO, ANY or NONE
    allowed_functions: list[str] | None = None
    json_schema: dict | None = None
    stream: bool = False
    include_usage: bool = False
    results_for: str | None = None  # the model whose function calls the request answers, if it does

    def file_types(self) -> list[str]:
        return [p["mime_type"] for _, parts in self.turns for p in parts if p["type"] == "inline"]

    def estimated_tokens(self) -> int:
        """A generous guess (3 characters a token, 1,000 a file), as for the service's other turns."""
        chars = len(self.system_instruction) + sum(
            len(p.get("text", "")) + len(str(p.get("args") or p.get("response") or ""))
            for _, parts in self.turns for p in parts)
        return chars // 3 + 1000 * len(self.file_types())

    def last_user_text(self) -> str:
        for role, parts in reversed(self.turns):
            texts = [p["text"] for p in parts if p["type"] == "text"]
            if role == "user" and texts:
                return "\n".join(texts)
        return ""


def _refuse(message: str, param: str | None = None, code: str | None = None) -> OpenAIRequestError:
    return OpenAIRequestError(message, param, code)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _refuse(f"'{name}' must be a number from {low:g} to {high:g}", name)
    return value


def _integer(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(f"'{name}' must be an integer from {low} to {high}", name)
    return value


def _depth(value) -> int:
    """How deeply a JSON value nests, without recursion (a hostile body must not exhaust the stack)."""
    deepest, pending = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        pending += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
                    if isinstance(child, (dict, list))]
    return deepest


def _bounded(value, param: str):
    if _depth(value) > MAX_DEPTH:
        raise _refuse(f"nested deeper than {MAX_DEPTH} levels", param)
    return value


def _text_of(content, param: str, allowed=("text",)) -> str:
    """A content that may only hold text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse("content must be a string or a list of content parts", param)
    texts = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise _refuse(f"this message's content parts may only be of type {', '.join(allowed)}",
                          f"{param}[{n}].type")
        text = part.get(kind) if kind == "refusal" else part.get("text")
        if not isinstance(text, str):
            raise _refuse(f"a {kind} part needs a string '{'refusal' if kind == 'refusal' else 'text'}'",
                          f"{param}[{n}]")
        texts.append(text)
    return "".join(texts)


def _read_data_url(url) -> tuple[bytes, str | None, dict[str, str]] | None:
    """(bytes, their type read from the bytes, the URL's parameters) of a base64 data URL; None otherwise."""
    match = DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        return None
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        return None
    params = dict(p.split("=", 1) for p in match["params"].split(";") if p)
    return data, sniff(data[:4096]), params


def _data_url_part(url, param: str, kind: str, accept: tuple[str, ...]) -> dict:
    """A base64 data URL -> an inline part whose type is read from the bytes."""
    found = _read_data_url(url)
    if found is None:
        raise _refuse(f"send the {kind} as a base64 data URL (data:<type>;base64,...); "
                      "this server does not fetch URLs", param)
    data, mime, _ = found
    # An SVG is text that names itself an image: Gemini reads it as text, not as a picture.
    if mime is None or not mime.startswith(accept) or (kind == "image" and mime == "image/svg+xml"):
        raise _refuse(f"the {kind}'s bytes are not a supported {kind} type", param)
    return {"type": "inline", "mime_type": mime, "data": data}


def _audio_part(audio, param: str) -> dict:
    """OpenAI's {"format": "wav" | "mp3", "data": base64} -> an inline part, its type read from the bytes."""
    audio = audio if isinstance(audio, dict) else {}
    # A format of any JSON type may come: only a string can name one (a list is not even hashable).
    audio_format = audio.get("format")
    if not isinstance(audio_format, str) or audio_format not in AUDIO_FORMATS:
        raise _refuse("input_audio.format must be wav or mp3", f"{param}.format")
    if not isinstance(audio.get("data"), str):
        raise _refuse("input_audio.data must be the audio's bytes in base64", f"{param}.data")
    url = f"data:{AUDIO_FORMATS[audio_format]};base64,{audio['data']}"
    return _data_url_part(url, f"{param}.data", "audio", ("audio/",))


def _user_parts(content, param: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _refuse("content must be a string or a non-empty list of content parts", param)
    parts = []
    for n, part in enumerate(content):
        where = f"{param}[{n}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _refuse("a text part needs a string 'text'", f"{where}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_data_url_part(url, f"{where}.image_url.url", "image", ("image/",)))
        elif kind == "input_audio":
            parts.append(_audio_part(part.get("input_audio"), f"{where}.input_audio"))
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            if "file_data" not in file:
                raise _refuse("send the file's bytes as file.file_data (a base64 data URL); "
                              "uploaded file ids are not supported here", f"{where}.file")
            parts.append(_data_url_part(file["file_data"], f"{where}.file.file_data", "file",
                                        ("application/pdf", "text/", "image/", "audio/", "video/")))
        else:
            raise _refuse("content parts of a user message are text, image_url, input_audio or file",
                          f"{where}.type")
    return parts


def _picture(url: str) -> dict | None:
    """A Markdown picture's data URL -> an inline part with its signature; None if it is not a picture."""
    found = _read_data_url(url)
    if found is None or not (found[1] or "").startswith("image/"):
        return None
    data, mime, params = found
    part = {"type": "inline", "mime_type": mime, "data": data}
    signature = from_param(params.get("signature", ""))
    if signature:
        part["thought_signature"] = signature
    return part


def _text_and_pictures(text: str) -> list[dict]:
    """A reply's text as sent back: pictures go to Gemini as pictures, not as megabytes of base64 text."""
    parts, start = [], 0
    for match in MARKDOWN_PICTURE.finditer(text):
        picture = _picture(match[1])
        if picture is None:
            continue
        parts += [{"type": "text", "text": text[start:match.start()]}, picture]
        start = match.end()
    parts.append({"type": "text", "text": text[start:]})
    return [p for p in parts if p["type"] != "text" or p["text"].strip()]


def _assistant_parts(message: dict, param: str, calls_by_id: dict[str, str]) -> list[dict]:
    parts = []
    content = message.get("content")
    if content is not None:
        parts += _text_and_pictures(_text_of(content, f"{param}.content", allowed=("text", "refusal")))
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise _refuse("tool_calls must be a list", f"{param}.tool_calls")
    for n, call in enumerate(tool_calls):
        where = f"{param}.tool_calls[{n}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or \
                not isinstance(function.get("name"), str):
            raise _refuse("each tool call needs an id and a function with a name and arguments", where)
        arguments = function.get("arguments") or "{}"
        try:
            args = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise _refuse("function arguments must be a JSON object, as a string", f"{where}.function.arguments")
        _bounded(args, f"{where}.function.arguments")
        carried = read_tool_call_id(call["id"])
        part = {"type": "function_call", "name": function["name"], "args": args}
        if carried.gemini_id:
            part["call_id"] = carried.gemini_id
        if carried.signature:
            part["thought_signature"] = carried.signature  # back to Gemini exactly as it came
        parts.append(part)
        calls_by_id[call["id"]] = function["name"]
    return parts


def _tool_result(message: dict, param: str, calls_by_id: dict[str, str]) -> dict:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or call_id not in calls_by_id:
        raise _refuse("a tool message must answer a tool call of an earlier assistant message",
                      f"{param}.tool_call_id")
    text = _text_of(message.get("content"), f"{param}.content")
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = text
    _bounded(result, f"{param}.content")
    # Gemini takes an object; a tool that answered an object keeps its shape.
    part = {"type": "function_response", "name": calls_by_id[call_id],
            "response": result if isinstance(result, dict) else {"result": result}}
    gemini_id = read_tool_call_id(call_id).gemini_id
    if gemini_id:
        part["call_id"] = gemini_id
    return part


def _results_for(messages: list) -> str | None:
    """The model whose tool calls the last messages answer: the one that made the calls, if we know it."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "tool":
        return None
    calls = next((m.get("tool_calls") for m in reversed(messages) if m.get("role") == "assistant"), None) or []
    return next((read_tool_call_id(c["id"]).model for c in calls), None)


def read_messages(messages) -> tuple[str, list[tuple[str, list[dict]]]]:
    """(system instruction, turns) from OpenAI messages."""
    if not isinstance(messages, list) or not messages:
        raise _refuse("'messages' must be a non-empty list", "messages")
    system, turns, calls_by_id = [], [], {}
    for n, message in enumerate(messages):
        param = f"messages[{n}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), f"{param}.content"))
        elif role == "user":
            turns.append(("user", _user_parts(message.get("content"), f"{param}.content")))
        elif role == "assistant":
            parts = _assistant_parts(message, param, calls_by_id)
            if parts:
                turns.append(("model", parts))
        elif role == "tool":
            turns.append(("user", [_tool_result(message, param, calls_by_id)]))
        elif role == "function":
            raise _refuse("'function' messages are the old function-calling format; use tools and tool "
                          "messages", f"{param}.role")
        else:
            raise _refuse("role must be system, developer, user, assistant or tool", f"{param}.role")
    if not turns:
        raise _refuse("'messages' needs at least one user message besides system messages", "messages")
    return "\n\n".join(s for s in system if s), turns


def _functions(body: dict) -> list[dict]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _refuse("'tools' must be a list", "tools")
    declared = []
    for n, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise _refuse("only function tools are supported: {\"type\": \"function\", \"function\": "
                          "{\"name\", \"description\", \"parameters\"}}", f"tools[{n}]")
        declaration = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            if not isinstance(function["parameters"], dict):
                raise _refuse("parameters must be a JSON schema object", f"tools[{n}].function.parameters")
            declaration["parameters_json_schema"] = _bounded(function["parameters"],
                                                             f"tools[{n}].function.parameters")
        declared.append(declaration)
    return declared


def _tool_choice(body: dict, names: list[str]) -> tuple[str | None, list[str] | None]:
    """(Gemini's function calling mode, the names it may call) for `tool_choice`."""
    choice = body.get("tool_choice")
    if choice is None:
        return ("AUTO" if names else None), None
    if not names:
        raise _refuse("'tool_choice' is only allowed when 'tools' are given", "tool_choice")
    if choice in ("auto", "none", "required"):
        return {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice], None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if name not in names:
            raise _refuse(f"tool_choice names a function that is not among the tools: {name!r}", "tool_choice")
        return "ANY", [name]
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return _allowed_tools(choice.get("allowed_tools"), names)
    raise _refuse("tool_choice must be auto, none, required or a named function", "tool_choice")


def _allowed_tools(allowed, names: list[str]) -> tuple[str, list[str]]:
    """tool_choice {"type": "allowed_tools", "allowed_tools": {"mode", "tools": [{"type": "function",
    "function": {"name"}}]}} -> (mode, the names it may call), every name among the tools."""
    allowed = allowed if isinstance(allowed, dict) else {}
    tools = allowed.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _refuse("allowed_tools.tools must be a non-empty list of functions among the tools",
                      "tool_choice.allowed_tools.tools")
    chosen = []
    for n, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or name not in names:
            raise _refuse("each allowed tool is {\"type\": \"function\", \"function\": {\"name\"}} naming one "
                          "of the tools", f"tool_choice.allowed_tools.tools[{n}]")
        chosen.append(name)
    mode = allowed.get("mode")
    if not isinstance(mode, str) or mode not in ("auto", "required"):
        raise _refuse("allowed_tools.mode must be auto or required", "tool_choice.allowed_tools.mode")
    return ("ANY" if mode == "required" else "AUTO"), chosen


def _response_format(body: dict) -> tuple[str | None, dict | None]:
    """(response mime type, JSON schema) for `response_format`."""
    wanted = body.get("response_format")
    if wanted is None:
        return None, None
    kind = wanted.get("type") if isinstance(wanted, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return "application/json", None
    if kind == "json_schema":
        spec = wanted.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _refuse("json_schema needs a 'schema' object", "response_format.json_schema")
        return "application/json", _bounded(spec.get("schema"), "response_format.json_schema.schema")
    raise _refuse("response_format.type must be text, json_object or json_schema", "response_format.type")


def _refuse_unsupported(body: dict) -> None:
    if body.get("n") not in (None, 1):
        raise _refuse("only n=1 is supported: Gemini writes one choice per request", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _refuse("logprobs are not available from this server", "logprobs")
    modalities = body.get("modalities") or []
    if body.get("audio") is not None or not isinstance(modalities, list) or any(m != "text" for m in modalities):
        raise _refuse("only text output is supported", "modalities")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise _refuse("'functions' is the old function-calling format; use 'tools'", "functions")
    if body.get("web_search_options") is not None:
        raise _refuse("web_search_options is not supported here; use the /api/v1 API's google_search tool",
                      "web_search_options")


def read_request(body) -> CompletionRequest:
    if not isinstance(body, dict):
        raise _refuse("the request body must be a JSON object")
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _refuse("'model' is required: a model id from GET /v1/models", "model")
    system, turns = read_messages(body.get("messages"))
    results_for = _results_for(body["messages"])
    settings = {"temperature": _number(body, "temperature", 0, 2), "top_p": _number(body, "top_p", 0, 1),
                "top_k": _integer(body, "top_k", 1, 1000), "seed": _integer(body, "seed", -(2**31), 2**31 - 1)}
    max_tokens = _integer(body, "max_completion_tokens", 1, 1_000_000)
    settings["max_output_tokens"] = max_tokens or _integer(body, "max_tokens", 1, 1_000_000)
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
            raise _refuse(f"'stop' must be a string or a list of at most {MAX_STOP} strings", "stop")
        settings["stop_sequences"] = stop
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORT_LEVELS:
            raise _refuse(f"reasoning_effort must be one of {', '.join(EFFORT_LEVELS)}", "reasoning_effort")
        settings["thinking_level"] = EFFORT_LEVELS[effort]
        # A client that asks for reasoning gets Gemini's thought summaries too, as `reasoning_content`.
        settings["include_thoughts"] = True
    settings["response_mime_type"], json_schema = _response_format(body)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _refuse("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise _refuse("stream_options is an object, allowed only with stream: true", "stream_options")
    include_usage = (options or {}).get("include_usage") or False
    if not isinstance(include_usage, bool):
        raise _refuse("stream_options.include_usage must be true or false", "stream_options.include_usage")
    functions = _functions(body)
    mode, allowed = _tool_choice(body, [f["name"] for f in functions])
    if mode == "AUTO" and allowed:
        # Gemini takes allowed names only when it must call one: offer just those functions instead.
        functions, allowed = [f for f in functions if f["name"] in allowed], None
    return CompletionRequest(model=model, turns=turns, system_instruction=system,
                             settings={k: v for k, v in settings.items() if v is not None},
                             functions=functions, function_mode=mode, allowed_functions=allowed,
                             json_schema=json_schema, stream=stream, include_usage=include_usage,
                             results_for=results_for)
