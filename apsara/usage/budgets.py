"""Spending limits per user: tokens or USD per UTC day or calendar month.

`APSARA_BUDGETS` is JSON: `{"default": {"tokens_per_day": 2000000}, "users":
{"alice": {"usd_per_month": 20}}}`. A user's limits are the default's with their
own entries laid over it, key by key (`null` lifts a default limit). A turn is
refused when settled spending plus what running turns have reserved has reached
a limit; the refusal names the limit and when it resets.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

from ..errors import ApiError
from .ledger import Spending

LIMITS = ("tokens_per_day", "tokens_per_month", "usd_per_day", "usd_per_month")
# While only running turns' reservations reach a limit, they may finish under it: try again soon.
RUNNING_RETRY_S = 5


class BudgetError(ValueError):
    """An APSARA_BUDGETS value the server cannot start with."""


def _check_limits(where: str, limits) -> dict:
    if not isinstance(limits, dict):
        raise BudgetError(f"APSARA_BUDGETS: {where} must be an object of limits")
    for name, value in limits.items():
        if name not in LIMITS:
            raise BudgetError(f"APSARA_BUDGETS: {where}: unknown limit {name!r}; limits are {', '.join(LIMITS)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise BudgetError(f"APSARA_BUDGETS: {where}.{name} must be a number, zero or more, or null")
    return dict(limits)


def parse_budgets(raw: str | None) -> dict:
    """The variable's JSON -> {"default": {...}, "users": {name: {...}}}, checked."""
    if not raw:
        return {"default": {}, "users": {}}
    try:
        data = json.loads(raw)
    except ValueError:
        raise BudgetError("APSARA_BUDGETS must be JSON") from None
    if not isinstance(data, dict) or set(data) - {"default", "users"}:
        raise BudgetError('APSARA_BUDGETS holds "default" and "users" only')
    users = data.get("users") or {}
    if not isinstance(users, dict):
        raise BudgetError('APSARA_BUDGETS: "users" must map user names to limits')
    return {"default": _check_limits("default", data.get("default") or {}),
            "users": {name: _check_limits(f"users.{name}", limits) for name, limits in users.items()}}


def _resets(limit: str, now: datetime) -> datetime:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if limit.endswith("_day"):
        return midnight + timedelta(days=1)
    first = midnight.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)


def _amount(limit: str, value: float) -> str:
    if not limit.startswith("usd"):
        return f"{int(value):,} tokens"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.2g}"


class Budgets:
    def __init__(self, config: dict | None = None):
        config = config or {"default": {}, "users": {}}
        self._default = config.get("default") or {}
        self._users = config.get("users") or {}

    def limits_for(self, user: str) -> dict[str, float]:
        merged = {**self._default, **self._users.get(user, {})}
        return {name: value for name, value in merged.items() if value is not None}

    def check(self, user: str, spending: Spending, now_s: float) -> None:
        """Raise 429 RESOURCE_EXHAUSTED if a limit is reached (settled plus reserved)."""
        for limit, value in self.limits_for(user).items():
            period, _, unit = limit.partition("_per_")
            key = f"{unit}_{'tokens' if period == 'tokens' else 'usd'}"
            spent = getattr(spending, key)
            if spent < value:
                continue
            now = datetime.fromtimestamp(now_s, timezone.utc)
            resets = _resets(limit, now)
            stamp = resets.isoformat(timespec="seconds").replace("+00:00", "Z")
            settled = spending.settled.get(key, 0)
            if settled >= value:
                retry = math.ceil((resets - now).total_seconds())
                message = (f"budget {limit} ({_amount(limit, value)}) is used up: "
                           f"{_amount(limit, settled)} spent this {unit}; it resets at {stamp}")
            else:
                retry = RUNNING_RETRY_S
                message = (f"budget {limit} ({_amount(limit, value)}) would be reached by the "
                           f"{spending.running} turn(s) still running; try again when they end "
                           f"(it resets at {stamp})")
            raise ApiError(429, message, {"limit": [limit]}, headers={"Retry-After": str(max(1, retry))})
