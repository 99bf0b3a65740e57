"""`make run`: start the server on this machine.

With a Gemini key configured this is plain Gunicorn. Without one it first starts
the bundled offline Gemini fake on a loopback port and points the server at it,
saying so loudly, so a newcomer can chat with no key and no network.
`gunicorn wsgi:app` (the Docker command) never does this.
"""
from __future__ import annotations

import os
import sys

from .config import GEMINI_KEY_VARIABLES


def main() -> None:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    env = dict(os.environ)
    env.setdefault("PORT", "8000")
    if not any(env.get(name) for name in GEMINI_KEY_VARIABLES):
        from .testing.fake_gemini import start_background

        fake = start_background()
        env.update({"gemini": "offline-fake-key", "GEMINI_BASE_URL": fake.url})
        banner = ("!" * 72 + "\n"
                  f"!!  No Gemini key set: replies come from the OFFLINE FAKE at {fake.url}\n"
                  "!!  Set the variable 'gemini' (or put it in .env) for real Gemini.\n" + "!" * 72)
        print(banner, file=sys.stderr, flush=True)
    os.execvpe(sys.executable, [sys.executable, "-m", "gunicorn", "wsgi:app"], env)


if __name__ == "__main__":
    main()
