"""A multinomial logistic regression over the named features: weights you can read.

`weights.json` (beside this file) holds one weight per feature and tier, fit by
`python -m apsara.routing.train` on `data/train.jsonl`. Scoring is four dot
products over ~40 numbers: microseconds, no network, deterministic.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .features import TIERS

WEIGHTS_PATH = Path(__file__).with_name("weights.json")


@dataclass
class Scored:
    tier: str
    probabilities: dict[str, float]
    top_features: list[tuple[str, float]]  # what pushed the winner, strongest first, with its contribution


class Classifier:
    def __init__(self, weights: dict[str, dict[str, float]]):
        self.weights = weights  # tier -> feature -> weight

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> "Classifier":
        return cls(json.loads(path.read_text())["weights"])

    def score(self, f: dict[str, float]) -> Scored:
        logits = {t: sum(w.get(name, 0.0) * value for name, value in f.items()) for t, w in self.weights.items()}
        top = max(logits.values())
        exp = {t: math.exp(v - top) for t, v in logits.items()}
        total = sum(exp.values())
        probabilities = {t: exp[t] / total for t in TIERS if t in exp}
        tier = max(probabilities, key=probabilities.get)
        mean = {name: sum(self.weights[t].get(name, 0.0) for t in self.weights) / len(self.weights) for name in f}
        contributions = sorted(((name, (self.weights[tier].get(name, 0.0) - mean[name]) * value)
                                for name, value in f.items() if value and name != "bias"),
                               key=lambda item: -item[1])
        return Scored(tier, probabilities, [c for c in contributions if c[1] > 0])


def fit(samples: list[tuple[dict[str, float], str]], epochs: int = 2500, rate: float = 0.5,
        l2: float = 0.002) -> dict[str, dict[str, float]]:
    """Full-batch gradient descent on cross-entropy with L2; small data, pure Python."""
    names = sorted({name for f, _ in samples for name in f})
    weights = {t: {n: 0.0 for n in names} for t in TIERS}
    count = len(samples)
    for _ in range(epochs):
        grads = {t: {n: 0.0 for n in names} for t in TIERS}
        for f, label in samples:
            logits = {t: sum(weights[t][n] * v for n, v in f.items()) for t in TIERS}
            top = max(logits.values())
            exp = {t: math.exp(v - top) for t, v in logits.items()}
            total = sum(exp.values())
            for t in TIERS:
                error = exp[t] / total - (1.0 if t == label else 0.0)
                if error:
                    grad = grads[t]
                    for n, v in f.items():
                        grad[n] += error * v
        for t in TIERS:
            for n in names:
                penalty = 0.0 if n == "bias" else l2 * weights[t][n]
                weights[t][n] -= rate * (grads[t][n] / count + penalty)
    return {t: {n: round(w, 4) for n, w in ws.items()} for t, ws in weights.items()}
