"""Who may connect: bearer tokens, browser origins, TLS, and logs that never show a token.

- :class:`AccessPolicy` decides on a websocket handshake before any audio is read: a missing or wrong token is
  answered ``401`` (with ``WWW-Authenticate: Bearer``), a browser page from an origin not allowed ``403``.
  Tokens come in an ``Authorization: Bearer <token>`` header or, for browsers (whose websocket API cannot set
  headers), a ``token`` query parameter. They are compared with :func:`hmac.compare_digest` (constant time)
  against every configured token, so the time taken tells nothing about how much of a guess was right.
- :func:`read_tokens_file` reads one token per line (``#`` comments and blank lines ignored).
- :func:`server_ssl_context` builds the TLS context of ``--certfile/--keyfile`` (``wss://`` and ``https://``).
- :class:`RedactingLogger` wraps the websockets library's logger, whose debug output carries request paths
  and headers, and replaces token values with ``<redacted>``.

Plain HTTP pages (``/``, ``/healthz``, ``/metrics``) need no token: the page holds no secret, and the token
it passes on comes from its own URL (``https://host/?token=...``).
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["AccessPolicy", "RedactingLogger", "read_tokens_file", "server_ssl_context", "token_from_request"]

TOKEN_QUERY = "token"
_SECRET = re.compile(r"(?im)(authorization:[ \t]*)[^\r\n]+|(bearer[ \t]+|[?&]token=)[^\s&\"']+")


def read_tokens_file(path: str | os.PathLike) -> tuple[str, ...]:
    """The tokens of a file: one per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: the file cannot be read, has no token, or a line holds whitespace inside a token.
    """
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"tokens file {path}: cannot read it ({e})") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line.split()) != 1:
            raise ValueError(f"tokens file {path}, line {n}: expected one token per line (no spaces)")
        tokens.append(line)
    if not tokens:
        raise ValueError(f"tokens file {path} has no token (one per line expected)")
    return tuple(tokens)


def token_from_request(headers, path: str) -> str | None:
    """The bearer token of a request: the ``Authorization: Bearer`` header, else the ``token`` query
    parameter; None when neither is present."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(path).query).get(TOKEN_QUERY)
    return values[0] if values else None


@dataclass(frozen=True)
class AccessPolicy:
    """The handshake checks of :class:`~slimasr.serve.server.AsrServer`.

    Args:
        tokens: accepted bearer tokens; empty = no token needed. Not shown by ``repr``.
        allow_origins: accepted ``Origin`` headers (``https://app.example.org``; ``*`` = any); empty = any.
            Requests without an ``Origin`` header (non-browser clients) and the server's own page are not
            affected.
    """

    tokens: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"AccessPolicy(tokens={len(self.tokens)}, allow_origins={self.allow_origins!r})"

    def __post_init__(self) -> None:
        for t in self.tokens:
            if not t or any(c.isspace() for c in t):
                raise ValueError("a token must be non-empty and contain no whitespace")
        for o in self.allow_origins:
            if o != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s]+", o):
                raise ValueError(f"allowed origin {o!r}: expected scheme://host[:port] (no path), or *")

    def origin_allowed(self, origin: str | None, host: str | None = None) -> bool:
        """Whether a browser page from ``origin`` may connect; the server's own page (an origin whose host
        is the request's ``Host``) always may."""
        if origin is None or not self.allow_origins or "*" in self.allow_origins:
            return True
        origin = origin.rstrip("/").lower()
        if host and urlsplit(origin).netloc == host.lower():
            return True
        return origin in {o.lower() for o in self.allow_origins}

    def token_valid(self, token: str | None) -> bool:
        if not self.tokens:
            return True
        if token is None:
            return False
        given = token.encode("utf-8", "surrogateescape")
        ok = False
        for t in self.tokens:                      # every token is compared: no early exit
            ok |= hmac.compare_digest(given, t.encode("utf-8"))
        return ok

    def check(self, headers, path: str) -> tuple[int, str, str] | None:
        """None when the handshake may go on, else (HTTP status, metrics reason, message)."""
        if not self.origin_allowed(headers.get("Origin"), headers.get("Host")):
            return 403, "origin", "origin not allowed\n"
        if not self.token_valid(token_from_request(headers, path)):
            return 401, "unauthorized", "a valid bearer token is required\n"
        return None


def server_ssl_context(certfile: str | os.PathLike, keyfile: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or newer) with this certificate chain and private key (PEM).

    Raises:
        ValueError: a file is missing or unreadable, or the key does not match the certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, f in (("certfile", certfile), ("keyfile", keyfile)):
        if f is not None and not os.path.isfile(f):
            raise ValueError(f"--{name} {f} does not exist")
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(f"--certfile {certfile} / --keyfile {keyfile}: not a matching PEM certificate and "
                         f"private key ({getattr(e, 'reason', None) or e})") from None
    return ctx


def redact(text: str) -> str:
    """``text`` with ``Authorization`` header values, bearer tokens and ``token=`` query values replaced by
    ``<redacted>``."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "<redacted>", text)


class RedactingLogger(logging.LoggerAdapter):
    """A logger adapter whose records never carry a token (for the websockets library's request logs)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level, msg, *args, **kwargs) -> None:
        if self.isEnabledFor(level):
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = " ".join(map(str, (msg, *args)))
            super().log(level, "%s", redact(text), **kwargs)       # formatted first: a header's name and value
                                                                  # are separate arguments
