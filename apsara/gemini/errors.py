"""Gemini failures -> the service's ApiError, with Gemini's message and never the key.

429 keeps Retry-After: Gemini's header when it sends one, else the `retryDelay`
of the RetryInfo in the error's details (whole seconds, rounded up), also put in
the error body's details; Gemini 503 or an unreachable API -> 503; our read timeout
-> 504; a rejected key or any other upstream fault -> 502; a Gemini 400 caused by
what the request asked for -> 422.
"""
from __future__ import annotations

import math
import re

import httpx2
from google.genai import errors as genai_errors

from ..errors import ApiError

_KEY_PROBLEMS = ("API key not valid", "API_KEY_INVALID", "API key expired", "unregistered callers")


def _scrub(message: str, secret: str | None) -> str:
    message = (message or "").strip()
    if secret:
        message = message.replace(secret, "***")
    return message[:2000]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _error_details(exc: genai_errors.APIError) -> list:
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, list) else []


def retry_after_s(exc: genai_errors.APIError) -> int | None:
    """Seconds to wait, from a Retry-After header or RetryInfo.retryDelay ("58s", "0.5s")."""
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    if header and header.strip().isdigit():
        return int(header.strip())
    for detail in _error_details(exc):
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return max(1, math.ceil(float(match[1])))
    return None


def to_api_error(exc: BaseException, secret: str | None = None) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        message = _scrub(exc.message or str(exc.status or ""), secret)
        code = exc.code or 502
        if code in (401, 403) or any(p in message for p in _KEY_PROBLEMS):
            return ApiError(502, "Gemini rejected the configured API key (check the variable 'gemini')")
        if code == 429:
            wait = retry_after_s(exc)
            if wait is None:
                return ApiError(429, f"Gemini rate limit: {message}")
            return ApiError(429, f"Gemini rate limit: {message}", {"retry_after": [str(wait)]},
                            headers={"Retry-After": str(wait)})
        if code == 503:
            return ApiError(503, f"Gemini is unavailable: {message}")
        if code == 504:
            return ApiError(504, f"Gemini did not answer in time: {message}")
        if code == 404:
            return ApiError(422, f"Gemini does not offer this: {message}", {"model": [message]})
        if 400 <= code < 500:
            return ApiError(422, f"Gemini refused the request: {message}", {"_gemini": [message]})
        return ApiError(502, f"Gemini failed: {message}")
    if isinstance(exc, httpx2.TimeoutException):
        return ApiError(504, "Gemini did not answer in time")
    if isinstance(exc, (httpx2.ConnectError, httpx2.NetworkError, httpx2.RemoteProtocolError)):
        return ApiError(503, "Gemini cannot be reached")
    if isinstance(exc, (genai_errors.UnknownApiResponseError, httpx2.HTTPError, ValueError)):
        return ApiError(502, "Gemini sent an answer this server could not read")
    return ApiError(500, "internal error")
