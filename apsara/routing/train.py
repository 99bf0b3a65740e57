"""Fit the router's weights: `python -m apsara.routing.train`.

Reads `data/train.jsonl` (one labeled turn a line: text, tier, and optionally
previous tier and whether an image is attached), fits the logistic regression
and writes `weights.json`. The evaluation set in bench/routing/ is never read
here: it measures prompts the router has not seen.
"""
from __future__ import annotations

import json
from pathlib import Path

from .classifier import WEIGHTS_PATH, Classifier, fit
from .features import features

TRAIN_PATH = Path(__file__).with_name("data") / "train.jsonl"


def sample_features(row: dict) -> dict[str, float]:
    return features(row["text"], previous_tier=row.get("previous"), has_image=bool(row.get("image")),
                    has_other_file=bool(row.get("file")), history_turns=2 if row.get("previous") else 0)


def main() -> None:
    rows = [json.loads(line) for line in TRAIN_PATH.read_text().splitlines() if line.strip()]
    samples = [(sample_features(row), row["tier"]) for row in rows]
    weights = fit(samples)
    WEIGHTS_PATH.write_text(json.dumps({"trained_on": TRAIN_PATH.name, "samples": len(rows),
                                        "weights": weights}, indent=1, sort_keys=True) + "\n")
    classifier = Classifier(weights)
    right = sum(classifier.score(f).tier == label for f, label in samples)
    print(f"fit on {len(rows)} samples; training accuracy {right / len(rows):.1%}; wrote {WEIGHTS_PATH.name}")


if __name__ == "__main__":
    main()
