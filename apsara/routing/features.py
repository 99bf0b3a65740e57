"""What the router looks at in a turn: a few dozen named, readable features.

Each feature is a number, most of them counts of words from a small lexicon
(greetings, proofs, system design, drawing...) squashed to 0..1, plus the shape
of the text (length, code, lines) and of the conversation (the tier of the
previous turn, an attached image). The classifier weighs them; `reasons.py`
says the strongest of them in plain words, quoting the words that matched.
"""
from __future__ import annotations

import math
import re

_WORD = re.compile(r"[a-z0-9']+")

# Lexicons: phrase lists (lowercase); multi-word phrases are matched in the joined text.
LEXICONS: dict[str, tuple[str, ...]] = {
    "greeting": ("hi", "hello", "hey", "thanks", "thank", "thx", "ty", "cheers", "bye", "goodbye", "ok",
                 "okay", "cool", "great", "nice", "awesome", "good morning", "good night", "good evening",
                 "how are you", "lol", "yes", "no", "sure", "perfect", "got it", "appreciate"),
    "small_task": ("translate", "translation", "typo", "typos", "spelling", "spell", "grammar", "rephrase",
                   "reword", "shorter", "shorten", "synonym", "antonym", "capitalize", "uppercase", "lowercase",
                   "capital of", "define", "definition", "meaning of", "what does", "stand for", "convert",
                   "how many", "how much is", "what year", "who is", "who was", "when was", "when did",
                   "what is the", "abbreviation", "plural", "past tense", "one word", "one sentence",
                   "quick question", "yes or no", "true or false", "fix this sentence", "proofread",
                   "emoji", "rhyme", "acronym"),
    "everyday": ("explain", "explanation", "write", "draft", "email", "letter", "essay", "story", "poem",
                 "summarize", "summary", "summarise", "compare", "difference between", "outline", "plan",
                 "recipe", "list", "describe", "blog", "cover letter", "tips", "ideas", "suggest", "recommend",
                 "pros and cons", "itinerary", "how do i", "how to", "tutorial", "overview", "review",
                 "rewrite", "paragraph", "presentation", "cover", "motivate", "advice", "schedule"),
    "reasoning": ("prove", "proof", "theorem", "lemma", "derive", "derivation", "rigorous", "rigorously",
                  "formal", "formally", "induction", "contradiction", "invariant", "asymptotic", "complexity",
                  "optimal", "optimize", "optimise", "np-hard", "np-complete", "reduction", "eigenvalue",
                  "eigenvalues", "integral", "differential equation", "probability that", "expected value",
                  "combinatorics", "bayesian", "step by step", "step-by-step", "analyze", "analyse",
                  "trade-off", "trade-offs", "tradeoffs", "edge cases", "counterexample", "why does",
                  "why is", "subtle", "non-trivial", "nontrivial", "paradox", "game theory", "equilibrium",
                  "closed form", "recurrence", "convergence", "converge", "bound", "upper bound",
                  "lower bound", "estimate", "fermi", "riddle", "puzzle", "logic puzzle", "minimize",
                  "maximize", "irrational", "infinitely many", "for all", "there exists", "if and only if"),
    "system_design": ("design a", "architecture", "scalable", "scale to", "distributed", "microservices",
                      "sharding", "replication", "consensus", "raft", "paxos", "load balancer", "throughput",
                      "latency", "high availability", "fault tolerant", "fault-tolerant", "rate limiter",
                      "event sourcing", "cqrs", "kubernetes", "million users", "millions of", "billions of",
                      "data model", "schema design", "caching strategy", "consistency", "partition",
                      "migration plan", "zero downtime", "multi-region"),
    "debugging": ("race condition", "deadlock", "memory leak", "segfault", "segmentation fault", "heisenbug",
                  "intermittent", "intermittently", "flaky", "only in production", "corrupt", "corrupted",
                  "undefined behavior", "undefined behaviour", "concurrency", "thread-safe", "data race",
                  "stack overflow", "profil", "bottleneck", "root cause", "regression", "why is it slow",
                  "performance", "leak", "hangs", "sporadic", "nondeterministic", "non-deterministic"),
    "code": ("code", "function", "class", "python", "javascript", "typescript", "java", "rust", "golang",
             "c++", "sql", "query", "regex", "api", "script", "bash", "compile", "compiler", "bug",
             "error", "exception", "traceback", "stack trace", "unit test", "refactor", "implement",
             "algorithm", "snippet", "library", "framework", "react", "django", "flask", "css", "html"),
    "image": ("draw", "drawing", "picture", "image", "illustration", "illustrate", "logo", "sketch",
              "paint", "painting", "render", "photo of", "photograph of", "wallpaper", "poster", "icon",
              "sticker", "cartoon", "anime", "watercolor", "watercolour", "portrait of", "generate an image",
              "make an image", "create an image", "visualize", "visualise", "mockup", "comic", "meme",
              "pixel art", "3d render", "thumbnail", "banner", "avatar", "infographic"),
    "image_edit": ("make it", "make the", "change the", "turn it", "turn the", "add a", "remove the",
                   "replace the", "recolor", "recolour", "background", "brighter", "darker", "yellow",
                   "red", "blue", "green", "black and white", "style of", "more realistic", "zoom",
                   "crop", "instead", "now make", "this photo", "this picture", "this image"),
    "multi_step": ("first", "then", "finally", "each", "compare", "plan", "considering", "assume",
                   "given that", "constraints", "requirements", "must", "should handle", "justify",
                   "and explain why", "in detail", "thorough", "comprehensive", "carefully"),
    "hedge": ("please", "could you", "would you", "kindly", "if you don't mind", "i was wondering",
              "sorry", "just", "quick", "simple", "simply", "little", "hopefully"),
    "math": ("solve", "equation", "x^2", "x²", "sqrt", "log", "matrix", "vector", "derivative", "integral",
             "limit", "sum of", "prime", "primes", "modulo", "divisible", "polynomial", "geometry",
             "triangle", "probability", "calculate", "compute"),
}

TIERS = ("lite", "flash", "pro", "image")


def _squash(count: float, scale: float = 1.0) -> float:
    return 1.0 - math.exp(-count / scale)


def _count(text: str, words: set[str], phrases: tuple[str, ...]) -> int:
    total = 0
    for phrase in phrases:
        if " " in phrase or "-" in phrase or not phrase.isalnum():  # as _is_phrase, inline: this is hot
            total += text.count(phrase)
        elif phrase in words:
            total += 1
    return total


def _is_phrase(phrase: str) -> bool:
    """Matched anywhere in the text (several words, hyphens, symbols), not as one whole word."""
    return " " in phrase or "-" in phrase or not phrase.isalnum()


def _pattern(phrase: str) -> re.Pattern:
    # A phrase may sit inside longer words ("design a" in "design an"): quote those whole.
    return re.compile(rf"[a-z0-9']*{re.escape(phrase)}[a-z0-9']*" if _is_phrase(phrase)
                      else rf"(?<![a-z0-9']){re.escape(phrase)}(?![a-z0-9'])")


_PATTERNS = {name: [_pattern(phrase) for phrase in phrases] for name, phrases in LEXICONS.items()}


def matched_words(text: str, lexicon: str, limit: int = 3) -> list[str]:
    """The words of `text` a lexicon matched, as the user wrote them, in order (for reasons)."""
    lowered = text.lower()
    source = text if len(text) == len(lowered) else lowered  # a few letters change length when lowered
    found: dict[str, int] = {}
    for pattern in _PATTERNS[lexicon]:
        if match := pattern.search(lowered):
            found.setdefault(source[match.start():match.end()], match.start())
    return sorted(found, key=found.get)[:limit]


def word_count(text: str) -> int:
    """Words as a person counts them (between spaces), for reasons."""
    return len(text.split())


def features(text: str, *, previous_tier: str | None = None, has_image: bool = False,
             has_other_file: bool = False, history_turns: int = 0) -> dict[str, float]:
    """The named features of one turn."""
    lowered = text.lower()
    word_list = _WORD.findall(lowered)
    words = set(word_list)
    n_words = len(word_list)
    code_lines = sum(1 for line in text.splitlines()
                     if re.search(r"[;{}]\s*$|^\s*(def|class|import|from|return|for|if|while|function|const|"
                                  r"let|var|public|private|#include|SELECT|select)\b", line))
    f: dict[str, float] = {"bias": 1.0}
    for name, phrases in LEXICONS.items():
        f[name] = _squash(_count(lowered, words, phrases), 1.5)
    f["short"] = 1.0 if n_words <= 6 else 0.0
    f["length"] = _squash(n_words, 60.0)
    f["very_long"] = 1.0 if n_words > 250 else 0.0
    f["questions"] = _squash(text.count("?"), 2.0)
    f["code_block"] = 1.0 if "```" in text or code_lines >= 3 else 0.0
    f["code_density"] = min(1.0, code_lines / max(1, len(text.splitlines())))
    f["numbers"] = _squash(len(re.findall(r"\d+", text)), 4.0)
    f["math_symbols"] = _squash(len(re.findall(r"[=∑∫√≤≥≠∀∃^]|\\frac|\\sum", text)), 3.0)
    f["has_image"] = 1.0 if has_image else 0.0
    f["has_file"] = 1.0 if has_other_file else 0.0
    f["image_edit_with_image"] = f["image_edit"] * (1.0 if (has_image or previous_tier == "image") else 0.0)
    for tier in TIERS:
        f[f"after_{tier}"] = 1.0 if previous_tier == tier else 0.0
    # A short follow-up ("why?", "and for n=3?") carries the weight of what it follows,
    # unless it says something of its own ("thanks", "draw a cat").
    own_signal = max(f[name] for name in ("greeting", "small_task", "everyday", "reasoning", "system_design",
                                          "debugging", "image", "math"))
    follow_up = 1.0 if n_words <= 8 and previous_tier and own_signal == 0.0 else 0.0
    for tier in TIERS:
        f[f"follow_{tier}"] = follow_up * f[f"after_{tier}"]
    f["in_conversation"] = _squash(history_turns, 4.0)
    return f
