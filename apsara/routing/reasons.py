"""Why `auto` chose a tier, in the user's words: what the message asks, quoting the words that showed it.

The classifier ranks the features that pushed its choice; this module turns the
strongest few into plain phrases and leaves out any that would not be true of
this message (a 7-word message is never "a long message", however its length
weighed), so internal feature names never reach a user.
"""
from __future__ import annotations

from .features import matched_words, word_count

# What each lexicon's words show about a message.
ASKS = {
    "greeting": "a greeting or thanks",
    "small_task": "a small, one-fact task",
    "everyday": "an everyday request",
    "reasoning": "a proof or careful reasoning",
    "system_design": "system design",
    "debugging": "a hard bug",
    "code": "code",
    "image": "a picture to make",
    "image_edit": "a change to a picture",
    "multi_step": "several steps",
    "hedge": "polite wording",
    "math": "mathematics",
}
# What a previous turn of each tier was, for follow-ups.
EARLIER = {"lite": "a quick exchange", "flash": "an everyday request", "pro": "a hard problem",
           "image": "a picture"}
LONG_WORDS = 60  # from here on, a message is called long


def _quoted(words: list[str]) -> str:
    return " (" + ", ".join(f"'{word}'" for word in words) + ")" if words else ""


def describe(name: str, text: str, *, has_image: bool, history_turns: int) -> str | None:
    """One feature of this message in plain words, or None when it is not worth saying or not true."""
    words = word_count(text)
    if name in ASKS:
        return ASKS[name] + _quoted(matched_words(text, name))
    if name == "short":
        return f"a short message ({words} word{'s' * (words != 1)})"
    if name in ("length", "very_long"):
        return f"a long message ({words} words)" if words >= LONG_WORDS else None
    if name == "questions":
        count = text.count("?")
        return "a question" if count == 1 else f"{count} questions"
    if name in ("code_block", "code_density"):
        return "pasted code"
    if name == "math_symbols":
        return "mathematical notation"
    if name == "numbers":
        return "numbers"
    if name == "has_image":
        return "an attached picture"
    if name == "has_file":
        return "an attached file"
    if name == "image_edit_with_image":
        picture = "the attached picture" if has_image else "the last picture"
        return f"a change to {picture}" + _quoted(matched_words(text, "image_edit"))
    if name.startswith("follow_"):
        return f"a short follow-up to {EARLIER[name.removeprefix('follow_')]}"
    if name.startswith("after_"):
        return f"right after {EARLIER[name.removeprefix('after_')]}"
    if name == "in_conversation" and history_turns:
        return f"{history_turns} earlier turn{'s' * (history_turns != 1)} in this conversation"
    return None


def explain(ranked: list[tuple[str, float]], text: str, *, has_image: bool = False, history_turns: int = 0,
            limit: int = 3) -> str:
    """The strongest true reasons, joined: "a proof or careful reasoning ('Prove'), mathematics ('primes')"."""
    names = [name for name, _ in ranked]
    phrases: list[str] = []
    for name in names:
        if name.startswith("after_") and f"follow_{name.removeprefix('after_')}" in names:
            continue  # the follow-up already says what came before
        if name == "image_edit" and "image_edit_with_image" in names:
            continue  # said with the picture it changes
        phrase = describe(name, text, has_image=has_image, history_turns=history_turns)
        if phrase and phrase not in phrases:
            phrases.append(phrase)
        if len(phrases) == limit:
            break
    return ", ".join(phrases) or "nothing stands out"
