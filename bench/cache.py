"""Tokens served from the context cache over a 20-turn conversation with a large file.

Against the offline fake (which counts words as tokens). Prints the prompt tokens
of all turns, how many came from the cache, and the share of input that did not
have to be sent and billed at the full rate.
Run: `.venv/bin/python bench/cache.py`.
"""
from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apsara import create_app  # noqa: E402
from apsara.config import Settings  # noqa: E402
from apsara.testing.fake_gemini import FakeGemini  # noqa: E402

TURNS = 20
BOOK = ("the quick brown fox jumps over the lazy dog " * 5000).encode()  # 45,000 words


def run(cache_min_tokens: int | None) -> tuple[int, int]:
    fake = FakeGemini().start()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), gemini_api_key="bench", gemini_base_url=fake.url,
                                  cache_min_tokens=cache_min_tokens))
        client = app.test_client()
        client.post("/api/v1/conversations", json={"id": "c1", "system_instruction": "Answer from the book."})
        book = client.post("/api/v1/files", data={"file": (io.BytesIO(BOOK), "book.txt")},
                           content_type="multipart/form-data").json
        prompt = cached = 0
        for n in range(TURNS):
            body = {"text": f"Question {n} about the book?"}
            if n == 0:
                body["files"] = [book["id"]]
            usage = client.post("/api/v1/conversations/c1/messages", json=body).json["reply"]["usage"]
            prompt += usage["prompt_tokens"]
            cached += usage.get("cached_tokens", 0)
    fake.stop()
    return prompt, cached


def main() -> None:
    prompt, cached = run(None)
    plain_prompt, plain_cached = run(10**12)  # caching off
    print(f"{TURNS} turns, 45,000-word file: prompt tokens {prompt:,} with caching ({plain_prompt:,} without)")
    print(f"served from the cache: {cached:,} tokens ({cached / prompt:.0%} of all input); "
          f"sent and billed at the full rate: {prompt - cached:,} instead of {plain_prompt - plain_cached:,}")


if __name__ == "__main__":
    main()
