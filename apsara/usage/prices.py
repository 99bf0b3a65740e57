"""What Gemini tokens cost: a price table, and a call's estimated cost from its usage.

Prices are USD per million tokens, per model id or id prefix (the longest
matching prefix wins), with `input`, `output` (thoughts are priced as output)
and `cached_input` (tokens read from a context cache). A table ships with the
service (`prices.json` beside this module); `APSARA_PRICES` names a JSON file
that replaces it, because prices change more often than releases.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).with_name("prices.json")
FIELDS = ("input", "output", "cached_input")


class PriceError(ValueError):
    """A price file the server cannot start with."""


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float

    def cost(self, usage: dict) -> float:
        """USD for one call's usage (the API's token field names)."""
        cached = usage.get("cached_tokens", 0)
        fresh = max(0, usage.get("prompt_tokens", 0) - cached)
        out = usage.get("output_tokens", 0) + usage.get("thought_tokens", 0)
        return (fresh * self.input + cached * self.cached_input + out * self.output) / 1_000_000


FREE = Price(0.0, 0.0, 0.0)


class PriceTable:
    def __init__(self, table: dict[str, Price]):
        # Longest prefix first, so the first match is the most specific one.
        self._entries = sorted(table.items(), key=lambda item: len(item[0]), reverse=True)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PriceTable":
        source = Path(path) if path else SHIPPED
        try:
            raw = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise PriceError(f"APSARA_PRICES: cannot read {source.name}: {exc.__class__.__name__}") from None
        return cls(parse(raw))

    def price(self, model: str) -> Price:
        for prefix, price in self._entries:
            if model.startswith(prefix):
                return price
        return FREE

    def cost(self, model: str, usage: dict) -> float:
        return self.price(model).cost(usage)


def parse(raw) -> dict[str, Price]:
    if not isinstance(raw, dict):
        raise PriceError("APSARA_PRICES must hold a JSON object of model prefixes")
    table = {}
    for prefix, entry in raw.items():
        if prefix.startswith("_"):
            continue  # comments
        if not isinstance(entry, dict) or set(entry) - set(FIELDS) or not {"input", "output"} <= set(entry):
            raise PriceError(f"APSARA_PRICES[{prefix!r}] needs 'input' and 'output' "
                             "(and may have 'cached_input'), in USD per million tokens")
        values = {k: entry.get(k, entry["input"]) for k in FIELDS}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values.values()):
            raise PriceError(f"APSARA_PRICES[{prefix!r}]: prices are numbers, zero or more")
        table[prefix] = Price(**{k: float(v) for k, v in values.items()})
    return table
