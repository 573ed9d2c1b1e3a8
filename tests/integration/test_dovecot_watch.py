"""IMAP4.watch() against a real Dovecot: a ten-minute outage with mail arriving.

The client reaches Dovecot through a loopback forwarder that goes down (every
connection cut, every new one refused) and comes back once the backoff has
waited ten minutes; the waits are counted, not slept.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from gmail_xoauth2 import IMAP4, Backoff, NewMessage

from ._clients import MintingProvider
from .conftest import MailServer
from .test_dovecot_sessions import make_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from _outage import OutageProxy


def deliver(server: MailServer, user: str, subject: str) -> None:
    data = make_message("seed@example.com", user, subject).as_bytes()
    assert server.sink.deliver("seed@example.com", (user,), data).startswith("250")


def test_watch_survives_a_ten_minute_outage_with_mail_arriving(
    mail_server: MailServer, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(mail_server, user, "before the watch")
    endpoint = mail_server.endpoint("imap")
    proxy = OutageProxy((endpoint.host, endpoint.port))
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        if sum(waited) >= 600 and not proxy.is_up:
            proxy.up()

    try:
        imap = IMAP4(
            user,
            MintingProvider(mail_server.google, user),
            endpoint.host,
            proxy.port,
            ssl_context=mail_server.ssl_context(),
            timeout=10,
        )
        watcher = imap.watch(backoff=Backoff.forever(sleep=sleep, cap=60.0))
        deliver(mail_server, user, "one")
        first = next(watcher)
        assert isinstance(first, NewMessage) and first.uid == 2
        proxy.down()
        deliver(mail_server, user, "two")  # while the client cannot connect
        deliver(mail_server, user, "three")
        with caplog.at_level(logging.WARNING, logger="gmail_xoauth2"):
            got = [next(watcher), next(watcher)]
        assert [event.uid for event in got] == [3, 4]  # type: ignore[union-attr]
        assert sum(waited) >= 600
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == len(waited)
        deliver(mail_server, user, "four")
        assert next(watcher).uid == 5  # type: ignore[union-attr]
        watcher.stop()
        assert list(watcher) == []
        _, data = imap.uid("FETCH", "3:5", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [item[1] for item in data if isinstance(item, tuple)]
        assert subjects == [
            b"Subject: two\r\n\r\n",
            b"Subject: three\r\n\r\n",
            b"Subject: four\r\n\r\n",
        ]
        imap.logout()
    finally:
        proxy.close()
