"""The tools a conversation can switch on, by id.

Built-in tools run at Google (search, URL context, code execution); image
generation is native on image models and a server function elsewhere; server
functions run here, in this process, when the model asks for them.
"""
from __future__ import annotations

BUILT_IN_TOOLS = {
    "google_search": "Ground answers in Google Search results; sources come back with the reply.",
    "url_context": "Let the model read the web pages whose URLs appear in the conversation.",
    "code_execution": "Let the model write and run Python code and use the result.",
    "image_generation": "Make or edit images; on a text model the model asks an image model for them.",
}

SERVER_FUNCTIONS = {
    "get_current_time": "The current date and time, in any IANA time zone.",
    "calculator": "Exact arithmetic on an expression (+ - * / // % **, parentheses, functions like sqrt).",
}

TOOL_DESCRIPTIONS = {**BUILT_IN_TOOLS, **SERVER_FUNCTIONS}
