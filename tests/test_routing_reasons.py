"""The `auto` model's reasons: what the message asks, in the user's words, and true."""
from __future__ import annotations

import re

import pytest

from apsara.routing.features import features
from tests.test_auto import send, start

# Every feature name with an underscore (in_conversation, after_image...) is internal.
INTERNAL_NAMES = [name for name in features("x", previous_tier="pro", has_image=True) if "_" in name]


def route(client, text, **extra):
    response = client.post("/api/v1/route", json={"text": text, **extra})
    assert response.status_code == 200, response.json
    return response.json


def _assert_plain(reason: str) -> None:
    for name in INTERNAL_NAMES:
        assert name not in reason, f"{name!r} in {reason!r}"
    assert not re.search(r"\b[a-z]+_[a-z]+\b", reason.replace("google_search", "")), reason


def test_a_proof_is_explained_as_a_proof_not_by_its_length(chat):
    decision = route(chat, "Prove that there are infinitely many primes")
    assert decision["tier"] == "pro"
    reason = decision["reason"]
    assert "long" not in reason
    assert "proof" in reason and "'Prove'" in reason and "'infinitely many'" in reason
    _assert_plain(reason)


@pytest.mark.parametrize("text", [
    "hi", "thanks!", "what is the capital of France", "Explain how photosynthesis works",
    "Design a scalable chat system for millions of users",
    "My Python service hangs intermittently under load, only in production. Where do I start?",
    "draw a watercolor fox in a snowy forest", "```\nfor i in range(3):\n    print(i)\n```\nwhy does this print 0?",
])
def test_reasons_never_name_internal_features(chat, text):
    _assert_plain(route(chat, text)["reason"])


def test_length_is_named_only_when_the_message_is_long(chat):
    short = route(chat, "Prove the triangle inequality for complex numbers")["reason"]
    assert "long message" not in short
    long_text = " ".join(["Compare these two plans for our move and explain the trade-offs carefully."] * 9)
    words = len(long_text.split())
    reason = route(chat, long_text)["reason"]
    assert words >= 60
    if "long message" in reason:
        assert f"a long message ({words} words)" in reason
    _assert_plain(reason)


def test_follow_ups_are_explained_by_what_they_follow(chat, fake):
    start(chat)
    send(chat, "derive the variance of the binomial distribution step by step")
    decision = route(chat, "why?", conversation_id="c1")
    assert decision["tier"] == "pro"
    assert "a short follow-up to a hard problem" in decision["reason"]
    _assert_plain(decision["reason"])
