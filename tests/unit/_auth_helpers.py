"""Shared pieces of the auth tests: constants, the play-the-browser helper."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

USER = "alice@example.com"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REFRESHES = {"path": "/token", "grant_type": "refresh_token"}


def open_url(url: str) -> None:
    """Play the browser: follow the consent page's redirect to the loopback."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        reply.read()
