"""Usage as the rest of the service sees it: bills for turns, and the call hook.

A turn (or /generate, a title, a route preview) opens a `Bill`: who pays, for
which conversation. Before its first Gemini call, `bill.hold(...)` reserves the
worst case of that call against the user's budget (or refuses with 429); before
each further one (a function round) `bill.renew(...)` checks and reserves again;
`bill.settle()` at the end frees what was not spent. Every Gemini call reports to
`UsageService.record` (the Gemini client's `on_call` hook), which prices it,
writes it to the ledger against the bill's reservation, and counts it in metrics.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from .. import metrics
from ..errors import ApiError
from .budgets import Budgets
from .ledger import TOKEN_FIELDS, CallUsage, UsageLedger
from .prices import PriceTable

log = logging.getLogger("apsara.usage")


class Bill:
    """Who a turn's Gemini calls are billed to, and the budget they hold meanwhile."""

    def __init__(self, service: "UsageService", user: str, conversation_id: str | None = None):
        self._service = service
        self.user = user
        self.conversation_id = conversation_id
        self.reservation_id: str | None = None
        self.calls: list[CallUsage] = []  # what was recorded on this bill (for the request's log line)
        self.gemini_s = 0.0  # time spent in Gemini calls: the rest of a request's time is Apsara's

    def hold(self, models: Iterable, input_tokens: int, output_tokens: int | None = None) -> None:
        """Reserve the dearest of `models` answering `input_tokens` with up to `output_tokens`
        (default: the model's output limit). The first hold checks the budget and may refuse
        with 429; a later one only changes the amount (a turn that now knows its model)."""
        self._service.hold(self, list(models), input_tokens, output_tokens)

    def renew(self, models: Iterable, input_tokens: int, output_tokens: int | None = None) -> None:
        """Before a further call of the same turn (a function round). What the earlier calls
        spent is settled by now, so the budget is checked again as for a new turn (429 when
        they reached it) and the reservation is made anew for this call's worst case."""
        self.settle()
        self.hold(models, input_tokens, output_tokens)

    @property
    def holding(self) -> bool:
        """Whether this bill holds part of a budget (there is one for its user)."""
        return self.reservation_id is not None

    def settle(self) -> None:
        """What the turn spent is in the ledger: the rest of its reservation goes (when the
        turn ends, or before a further call renews it). A release the ledger cannot write (a
        full disk, the database away) is logged, not raised: the reply must still end (else it
        would stay streaming, holding its conversation), and the hold lapses by itself once
        stale or with its process."""
        if self.reservation_id is not None:
            reservation, self.reservation_id = self.reservation_id, None
            try:
                self._service.ledger.release(reservation)
            except Exception as exc:  # noqa: BLE001 - see above
                # The type only: a database's error names its address.
                log.error("could not release budget reservation %s (%s); it lapses by itself", reservation,
                          type(exc).__name__)

    def totals(self) -> dict:
        """Tokens of every call on this bill, and the model of the last one."""
        sums = {name: sum(c.usage.get(name, 0) for c in self.calls) for name in TOKEN_FIELDS}
        return {"model": self.calls[-1].model if self.calls else None, **sums,
                "gemini_ms": round(self.gemini_s * 1000, 1)}


class UsageService:
    def __init__(self, ledger: UsageLedger, prices: PriceTable, budgets: Budgets,
                 clock: Callable[[], float] = time.time):
        self.ledger = ledger
        self.prices = prices
        self.budgets = budgets
        self.clock = clock
        self.on_new_bill: Callable[[Bill], None] | None = None  # the request log follows bills

    def bill(self, user: str, conversation_id: str | None = None) -> Bill:
        bill = Bill(self, user, conversation_id)
        if self.on_new_bill is not None:
            self.on_new_bill(bill)
        return bill

    # -- budgets -------------------------------------------------------------------
    def estimate(self, models: list, input_tokens: int, output_tokens: int | None) -> tuple[int, float]:
        """(tokens, USD) of the dearest of `models` for one call of that size."""
        tokens, usd = 0, 0.0
        for model in models:
            out = output_tokens or model.output_token_limit
            tokens = max(tokens, input_tokens + out)
            usd = max(usd, self.prices.cost(model.id, {"prompt_tokens": input_tokens, "output_tokens": out}))
        return tokens, usd

    def hold(self, bill: Bill, models: list, input_tokens: int, output_tokens: int | None) -> None:
        if not self.budgets.limits_for(bill.user):
            return  # nothing to hold against: no reservation, no database round trip
        tokens, usd = self.estimate(models, input_tokens, output_tokens)
        if bill.reservation_id is not None:
            self.ledger.resize(bill.reservation_id, tokens, usd)
            return

        def check(spending):
            try:
                self.budgets.check(bill.user, spending, self.clock())
            except ApiError as refusal:
                metrics.budget_refused(refusal.details["limit"][0])
                raise

        bill.reservation_id = self.ledger.reserve(bill.user, tokens, usd, check)

    # -- the Gemini client's hook ---------------------------------------------------------
    def record(self, call) -> None:
        """One Gemini call ended (a `gemini.metering.CallRecord`): price it, write it, count it."""
        usage = call.usage or {}
        cost = self.prices.cost(call.model, usage) if usage else 0.0
        metrics.gemini_call(call, cost)
        if isinstance(call.billed_to, Bill):
            call.billed_to.gemini_s += call.duration_s
        if not call.answered and not usage:
            return  # Gemini never answered (refused, unreachable): nothing was billed
        bill: Bill | None = call.billed_to
        if bill is None:
            log.warning("a Gemini call to %s was billed to nobody", call.model)
            return
        entry = CallUsage(user=bill.user, model=call.model, usage=dict(usage), cost_usd=cost,
                          purpose=call.purpose, conversation_id=bill.conversation_id,
                          reservation_id=bill.reservation_id, at=self.clock())
        self.ledger.record(entry)
        bill.calls.append(entry)
