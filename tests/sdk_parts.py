"""Request contents with every kind of part Apsara sends, for tests that compare what the SDK builds."""
import base64

from apsara.gemini.convert import to_contents

SIGNATURE = base64.b64encode(b"signed").decode()


def every_part_kind() -> list:
    turns = [
        ("user", [{"type": "text", "text": "plot x²"}, {"type": "inline", "mime_type": "image/png",
                                                      "data": base64.b64encode(b"\x89PNG").decode()},
                  {"type": "uri", "uri": "https://generativelanguage.googleapis.com/v1beta/files/a1",
                   "mime_type": "application/pdf"}]),
        ("model", [{"type": "thought", "text": "thinking", "thought_signature": SIGNATURE},
                   {"type": "code", "language": "python", "code": "print(1)"},
                   {"type": "code_result", "outcome": "OUTCOME_OK", "output": "1\n"},
                   {"type": "function_call", "name": "weather", "args": {"city": "Oslo", "days": [1, 2]},
                    "call_id": "c1", "thought_signature": SIGNATURE},
                   {"type": "function_response", "name": "weather", "response": {"temp": -3.5, "ok": False},
                    "call_id": "c1"},
                   {"type": "text", "text": "", "thought_signature": SIGNATURE}]),
        ("user", [{"type": "text", "text": "🙂 and \u202e"}]),
    ]
    return to_contents(turns)
