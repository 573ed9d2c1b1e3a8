"""A fake Gmail and a fake Google on loopback, for testing code that uses Gmail.

::

    from gmail_xoauth2 import IMAP4
    from gmail_xoauth2.testing import FakeGmail

    with FakeGmail() as gmail:
        gmail.deliver("alice@example.com", b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        tokens = gmail.token_provider("alice@example.com")
        with IMAP4("alice@example.com", tokens, gmail.host, gmail.imap_port,
                   ssl_context=gmail.ssl_context()) as imap:
            imap.select("INBOX")

Both speak the real protocols over real sockets, check every token they are
given, and answer a bad one exactly as Gmail does.
"""

from __future__ import annotations

from ._server import TranscriptLine
from .clock import ManualClock
from .gmail import FakeGmail
from .google import FakeGoogle

__all__ = ["FakeGmail", "FakeGoogle", "ManualClock", "TranscriptLine"]
