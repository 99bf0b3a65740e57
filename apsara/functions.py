"""Server functions: tools that run here, in this process, when a model calls them.

Each function has a declaration (name, description, JSON schema of its
arguments) that is sent to Gemini, and a Python implementation that gets the
arguments and returns a JSON object. A function that fails returns
`{"error": "..."}` to the model instead of failing the turn.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class FunctionError(Exception):
    """A problem the model should be told about (bad arguments, nothing to edit...)."""


@dataclass
class ServerFunction:
    name: str
    description: str
    parameters: dict
    run: Callable[..., dict]

    def declaration(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters_json_schema": self.parameters}


# -- get_current_time ------------------------------------------------------------------
def get_current_time(timezone_name: str = "UTC", now: datetime | None = None) -> dict:
    try:
        zone = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FunctionError(f"unknown time zone {timezone_name!r}; use an IANA name like 'Europe/Paris'") from None
    moment = (now or datetime.now(timezone.utc)).astimezone(zone)
    return {"timezone": timezone_name, "iso": moment.isoformat(timespec="seconds"),
            "date": moment.strftime("%Y-%m-%d"), "time": moment.strftime("%H:%M:%S"),
            "weekday": moment.strftime("%A"), "utc_offset": moment.strftime("%z")}


# -- calculator --------------------------------------------------------------------------
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
              "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp, "sin": math.sin,
              "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
              "factorial": math.factorial, "min": min, "max": max, "hypot": math.hypot}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
MAX_EXPRESSION = 500
MAX_EXPONENT = 10_000
MAX_DIGITS = 5_000


def _evaluate(node):
    """Walk the syntax tree; only numbers, arithmetic and the listed functions exist here."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise FunctionError("exponent too large")
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int) and \
                (left.bit_length() + right.bit_length()) > MAX_DIGITS * 4:
            raise FunctionError("number too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > MAX_DIGITS * 4:
            raise FunctionError("number too large")
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        args = [_evaluate(a) for a in node.args]
        if node.func.id == "factorial" and (not args or args[0] > 1000):
            raise FunctionError("factorial argument too large")
        return _FUNCTIONS[node.func.id](*args)
    raise FunctionError(f"not allowed in an expression: {ast.dump(node)[:60]}")


def calculator(expression: str) -> dict:
    if not isinstance(expression, str) or not expression.strip():
        raise FunctionError("give an arithmetic expression, e.g. '2 * (3 + 4)'")
    if len(expression) > MAX_EXPRESSION:
        raise FunctionError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise FunctionError(f"cannot parse {expression!r}") from None
    try:
        value = _evaluate(tree)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise FunctionError(f"cannot compute: {exc}") from None
    return {"expression": expression, "result": value}


BUILT_IN_FUNCTIONS = {
    "get_current_time": ServerFunction(
        "get_current_time",
        "The current date and time in a time zone. Use it whenever the user asks about now, today or dates.",
        {"type": "object", "properties": {"timezone": {
            "type": "string", "description": "IANA time zone name, e.g. 'Asia/Kolkata'; default UTC"}}},
        lambda timezone="UTC", **_: get_current_time(timezone)),
    "calculator": ServerFunction(
        "calculator",
        "Exact arithmetic. Supports + - * / // % ** (or ^), parentheses, pi, e and sqrt, log, exp, "
        "sin, cos, tan, factorial, round, abs, min, max.",
        {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
        lambda expression="", **_: calculator(expression)),
}

GENERATE_IMAGE = {
    "name": "generate_image",
    "description": "Make a picture for the user, or change the most recent picture of this conversation. "
                   "The picture is shown to the user; describe it briefly afterwards.",
    "parameters_json_schema": {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string", "description": "What the picture shows, in detail."},
        "edit_previous": {"type": "boolean",
                          "description": "true to change the most recent picture instead of making a new one"}}},
}


def run_function(function: ServerFunction, args: dict) -> dict:
    """Run one call; any failure becomes an error result for the model."""
    try:
        return function.run(**(args or {}))
    except FunctionError as exc:
        return {"error": str(exc)}
    except TypeError:
        return {"error": f"wrong arguments for {function.name}: {sorted((args or {}).keys())}"}
    except Exception as exc:  # a bug in a function must not end the turn
        return {"error": f"{function.name} failed: {type(exc).__name__}"}


__all__ = ["BUILT_IN_FUNCTIONS", "GENERATE_IMAGE", "ServerFunction", "run_function", "available_timezones"]
