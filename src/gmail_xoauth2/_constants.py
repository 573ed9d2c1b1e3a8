"""Gmail's endpoints and limits, as Google documents them."""

from __future__ import annotations

__all__ = [
    "GMAIL_IMAP_HOST",
    "GMAIL_POP_HOST",
    "GMAIL_SMTP_HOST",
    "IMAP_SESSION_LIMIT",
    "POP_SESSION_LIMIT",
]

from datetime import timedelta

GMAIL_IMAP_HOST = "imap.gmail.com"
GMAIL_POP_HOST = "pop.gmail.com"
GMAIL_SMTP_HOST = "smtp.gmail.com"

# "Gmail IMAP sessions are limited to about 24 hours ... POP sessions to about
# 7 days" (Google, "IMAP, POP, and SMTP"). Reconnect a little before.
IMAP_SESSION_LIMIT = timedelta(hours=23, minutes=30)
POP_SESSION_LIMIT = timedelta(days=6, hours=23)
