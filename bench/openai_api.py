"""What the OpenAI-compatible API adds on top of a direct SDK call.

Side by side, in one run, against the same offline Gemini fake (its own
process), with a 10-turn history sent by the official `openai` client to
`/v1/chat/completions` under Gunicorn, against the same contents sent straight
to the fake with google-genai:
  1. a whole completion: added p50 (median of paired differences);
  2. a stream: time to the first content chunk, added p50;
  3. the view alone: the app in-process (Flask's test client, no HTTP, no
     `openai` client) against the direct call.
Run: `.venv/bin/python bench/openai_api.py [--samples 200]`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from google import genai  # noqa: E402
from google.genai import types  # noqa: E402

from bench.chat import history, start_fake  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

MODEL = "gemini-3.8-flash"


def messages(turns: int) -> list[dict]:
    roles = {"user": "user", "model": "assistant"}
    return [{"role": roles[role], "content": text} for role, text in history(turns)] + [
        {"role": "user", "content": "and now?"}]


def contents(turns: int) -> list[dict]:
    return [{"role": role, "parts": [{"text": text}]} for role, text in history(turns)] + [
        {"role": "user", "parts": [{"text": "and now?"}]}]


def paired(label: str, direct: list[float], through: list[float]) -> None:
    d50, a50 = statistics.median(direct), statistics.median(through)
    # Pairs were taken back to back: the median of their differences shrugs off machine noise.
    added = statistics.median(t - d for t, d in zip(through, direct))
    print(f"{label}: direct p50 {d50:6.2f} ms | via /v1 p50 {a50:6.2f} ms | added: median paired {added:6.2f} ms")


def in_process(fake_url: str, sdk, samples: int) -> None:
    from apsara import create_app
    from apsara.config import Settings

    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data), gemini_api_key="bench-key", gemini_base_url=fake_url))
        client = app.test_client()
        body, sent = {"model": MODEL, "messages": messages(10)}, contents(10)
        direct, through = [], []
        for n in range(samples + samples // 10):
            started = time.perf_counter()
            sdk.models.generate_content(model=MODEL, contents=sent)
            direct.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            through.append((time.perf_counter() - started) * 1000)
        warm = samples // 10
        paired("the view in-process", direct[warm:], through[warm:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    fake, fake_url = start_fake()
    try:
        with tempfile.TemporaryDirectory() as data, gunicorn(
                {"gemini": "bench-key", "GEMINI_BASE_URL": fake_url, "APSARA_DATA_DIR": data}, workers=1) as base:
            sdk = genai.Client(api_key="bench-key", http_options=types.HttpOptions(base_url=fake_url,
                                                                                   api_version="v1beta"))
            client = openai.OpenAI(base_url=base + "/v1", api_key="any", max_retries=0)
            wanted, sent = messages(10), contents(10)
            direct, through, direct_first, through_first = [], [], [], []
            for _ in range(args.samples // 10):  # warm both paths up
                sdk.models.generate_content(model=MODEL, contents=sent)
                client.chat.completions.create(model=MODEL, messages=wanted)
            for _ in range(args.samples):
                started = time.perf_counter()
                sdk.models.generate_content(model=MODEL, contents=sent)
                direct.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                client.chat.completions.create(model=MODEL, messages=wanted)
                through.append((time.perf_counter() - started) * 1000)

                started = time.perf_counter()
                stream = sdk.models.generate_content_stream(model=MODEL, contents=sent)
                next(iter(stream))
                direct_first.append((time.perf_counter() - started) * 1000)
                stream.close()
                started = time.perf_counter()
                chunks = client.chat.completions.create(model=MODEL, messages=wanted, stream=True)
                next(c for c in chunks if c.choices and c.choices[0].delta.content)
                through_first.append((time.perf_counter() - started) * 1000)
                chunks.close()
            paired(f"10-turn completion ({args.samples} pairs)", direct, through)
            paired("time to first content", direct_first, through_first)
            in_process(fake_url, sdk, args.samples)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
