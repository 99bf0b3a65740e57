"""What Gunicorn needs from this service besides `wsgi:app`: its log lines and its own answers.

`gunicorn.conf.py` installs both:

- `AccessLogger` writes each access-log line with the client's address — the one a
  trusted proxy (FORWARDED_ALLOW_IPS) reports in X-Forwarded-For, else the peer's —
  and with every control character escaped, so nothing in a URL (`%0a`) or a header
  can start a forged line.
- `answer_errors_in_json` makes the answers Gunicorn writes itself, before the app
  sees a request (a URL over its 4094-byte limit: 414, headers too large: 431, a
  malformed request: 400), the service's JSON error envelope instead of HTML.
"""
from __future__ import annotations

import ipaddress
import re

import orjson
from gunicorn import glogging, util

from .errors import ApiError

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda match: f"\\x{ord(match[0]):02x}" if ord(match[0]) < 256
                            else f"\\u{ord(match[0]):04x}", text)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(address: str, allowed: list[str]) -> bool:
    if "*" in allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The client as the nearest trusted proxies report it.

    Each proxy appends the address it was connected from to X-Forwarded-For, so the
    list is read from the right: past every trusted proxy, the first address is the
    client. Anything the client wrote itself is further left and never reached,
    and a peer that is not a trusted proxy is the client.
    """
    client = peer
    # A peer on a unix socket has no address: Gunicorn trusts it, as the proxy it must be.
    peer_is_proxy = _trusted(peer, trusted_proxies) or not _is_address(peer)
    if not forwarded_for or not peer_is_proxy:
        return client
    for hop in reversed([entry.strip() for entry in forwarded_for.split(",")]):
        if not _is_address(hop):
            break  # not an address: nothing further left can be believed
        client = hop
        if not _trusted(hop, trusted_proxies):
            break
    return client


class AccessLogger(glogging.Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["h"] = client_address(environ.get("REMOTE_ADDR") or "-", environ.get("HTTP_X_FORWARDED_FOR"),
                                    self.cfg.forwarded_allow_ips)
        return {name: printable(value) if isinstance(value, str) else value for name, value in atoms.items()}


# Gunicorn's messages may quote what the client sent; these say what went wrong and nothing else.
_MESSAGES = {
    400: "malformed HTTP request",
    403: "forbidden",
    414: "the URL is too long",
    417: "expectation failed: only 100-continue is understood",
    431: "the request headers are too large",
    500: "internal error",
    501: "unsupported transfer coding",
}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    body = orjson.dumps(ApiError(status_int, _MESSAGES.get(status_int, reason.lower())).to_dict())
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def answer_errors_in_json() -> None:
    """Gunicorn writes its own error answers through `gunicorn.util.write_error`; use ours."""
    util.write_error = write_json_error
