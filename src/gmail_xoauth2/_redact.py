"""Secrets kept out of every message: exceptions, log records and debug output.

Each connection registers the access token and the SASL strings it is about to
send. Whatever a server says back — a refusal that quotes the AUTH line, say —
is scrubbed of every registered secret before it reaches an exception (the
whole chain: args, fields, causes), a log record of this package, or the
standard library's debug output.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

__all__ = [
    "REDACTED",
    "get_logger",
    "remember",
    "scrub",
    "scrub_bytes",
    "scrub_exception",
]

REDACTED = "<redacted>"
_REDACTED_BYTES = REDACTED.encode("ascii")

# The most recent secrets of this process (a token lives about an hour; a few
# hundred cover every connection of a busy process for far longer).
_KEEP = 256
# Shorter strings are not secrets worth hiding and would mangle messages.
_SHORTEST = 6

_lock = threading.Lock()
_secrets: OrderedDict[str, bytes] = OrderedDict()
# What scrub() walks: the secrets, longest first (a SASL string holds its
# token: replace it whole). Rebuilt by remember(), read without the lock.
_ordered: tuple[tuple[str, bytes], ...] = ()
# Tokens and base64 strings (not the raw SASL strings, which hold the user's
# address): a server that quotes one cut short still shows part of a secret.
_fragmentable: tuple[str, ...] = ()
# A run of token or base64 characters long enough to be part of a secret.
_RUN = re.compile(r"[A-Za-z0-9+/=._~-]{16,}")
_RUN_BYTES = re.compile(rb"[A-Za-z0-9+/=._~-]{16,}")
_PUNCTUATION = "._-=~"


def remember(*secrets: str | bytes) -> None:
    """Register secrets (tokens, SASL strings, raw or base64) to scrub from now on."""
    global _ordered, _fragmentable
    with _lock:
        for secret in secrets:
            text = (
                secret.decode("utf-8", "replace")
                if isinstance(secret, bytes)
                else secret
            )
            if len(text) < _SHORTEST:
                continue
            _secrets[text] = text.encode("utf-8", "replace")
            _secrets.move_to_end(text)
        while len(_secrets) > _KEEP:
            _secrets.popitem(last=False)
        _ordered = tuple(sorted(_secrets.items(), key=lambda item: -len(item[0])))
        _fragmentable = tuple(k for k in _secrets if "\x01" not in k)


def _fragment(run: str) -> str:
    """``run``, its core replaced if it is part of a secret (punctuation kept)."""
    core = run.strip(_PUNCTUATION)
    if len(core) < 16 or not any(core in secret for secret in _fragmentable):
        return run
    start = run.index(core)
    return run[:start] + REDACTED + run[start + len(core) :]


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``.

    Whole secrets, and runs of 16 or more token or base64 characters that are
    part of one (a server may quote the AUTH line cut short).
    """
    if not _ordered:
        return text
    for secret, _ in _ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _RUN.sub(lambda match: _fragment(match.group()), text)


def scrub_bytes(data: bytes) -> bytes:
    """``data`` with every registered secret replaced, as :func:`scrub` does."""
    if not _ordered:
        return data
    for _, secret in _ordered:
        if secret in data:
            data = data.replace(secret, _REDACTED_BYTES)

    def fragment(match: re.Match[bytes]) -> bytes:
        return _fragment(match.group().decode("ascii")).encode("ascii")

    return _RUN_BYTES.sub(fragment, data)


def _scrub_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub_bytes(bytes(value))
    if depth > 3:
        return value
    if isinstance(value, tuple):
        return tuple(_scrub_value(v, depth + 1) for v in value)
    if isinstance(value, list):
        return [_scrub_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, depth + 1) for k, v in value.items()}
    return value


def scrub_exception(exc: BaseException) -> None:
    """Scrub ``exc`` and its whole chain in place: args, fields, notes, causes."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            current.args = _scrub_value(current.args)
            fields = getattr(current, "__dict__", None)
            if fields:
                for key, value in list(fields.items()):
                    if not key.startswith("__"):
                        fields[key] = _scrub_value(value)
            notes = getattr(current, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [scrub(n) if isinstance(n, str) else n for n in notes]
        except (AttributeError, TypeError):
            # An exception type with read-only fields: its causes still count.
            pass
        pending.append(current.__cause__)
        pending.append(current.__context__)


class _ScrubFilter(logging.Filter):
    """Renders a record's message once, scrubbed; its args are then dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean is not message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1])
            record.exc_text = None
        return True


_FILTER = _ScrubFilter()


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``, with every record it emits scrubbed of secrets."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
