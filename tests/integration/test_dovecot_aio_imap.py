"""aio.IMAP4 against a real Dovecot: login, a kicked session, watch() across a kick.

What the client sends inside TLS is recorded through the context's
``sslobject_class`` (the asyncio class runs TLS through ``ssl.SSLObject`` over
a memory BIO, not ``ssl.SSLSocket``), so the AUTHENTICATE line is asserted
byte for byte, as for the sync class in ``test_dovecot_login.py``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from gmail_xoauth2 import Backoff, NewMessage, StaticTokenProvider, aio

from ._clients import MECHANISMS, TLS_MODES, MintingProvider, auth_lines
from .conftest import MailServer, Transcript
from .test_dovecot_sessions import commands, seed


def recording_context(server: MailServer, transcript: Transcript) -> ssl.SSLContext:
    """A context trusting the test CA that records what the client encrypts."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    chunks = transcript.chunks

    class RecordingObject(ssl.SSLObject):
        def write(self, data: Any) -> int:
            chunks.append(bytes(data))
            return super().write(data)

    context.sslobject_class = RecordingObject
    return context


def client(
    server: MailServer, user: str, tokens: Any, tls: str = "implicit", **kwargs: Any
) -> aio.IMAP4:
    endpoint = server.endpoint("imap", tls)
    kwargs.setdefault("ssl_context", server.ssl_context())
    return aio.IMAP4(
        user,
        tokens,
        endpoint.host,
        endpoint.port,
        starttls=endpoint.starttls,
        timeout=10.0,
        **kwargs,
    )


@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_login_sends_one_authenticate_line_and_the_session_works(
    mail_server: MailServer, user: str, mechanism: str, tls: str
) -> None:
    endpoint = mail_server.endpoint("imap", tls)
    token = mail_server.google.mint_access_token(user)
    transcript = Transcript()
    imap = client(
        mail_server,
        user,
        StaticTokenProvider(token),
        tls,
        mechanism=mechanism,
        ssl_context=recording_context(mail_server, transcript),
    )

    async def main() -> None:
        async with imap:
            assert imap.state == "AUTH"
            assert await imap.select("INBOX") == ("OK", [b"0"])

    asyncio.run(main())
    initial = endpoint.initial_response(mechanism, user, token)
    # SASL-IR (RFC 4959): the initial response on the AUTHENTICATE line itself.
    assert auth_lines("imap", transcript.lines()) == [
        b"AUTHENTICATE " + mechanism.encode() + b" " + initial
    ]
    assert imap.state == "LOGOUT"


@pytest.mark.parametrize("tls", TLS_MODES)
def test_kicked_session_reconnects_and_restores_the_mailbox(
    mail_server: MailServer, user: str, tls: str
) -> None:
    seed(mail_server, user, "first", "second")
    transcript = Transcript()
    imap = client(
        mail_server,
        user,
        MintingProvider(mail_server.google, user),
        tls,
        ssl_context=recording_context(mail_server, transcript),
    )

    async def main() -> None:
        async with imap:
            assert await imap.select("INBOX", readonly=True) == ("OK", [b"2"])
            assert await asyncio.to_thread(mail_server.kick, user) == 1
            assert await imap.search(None, "ALL") == ("OK", [b"1 2"])
            assert imap.state == "SELECTED" and imap.reconnects == 1
            typ, data = await imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and data[0][1] == b"Subject: second\r\n\r\n"

    asyncio.run(main())
    lines = transcript.lines()
    assert len(auth_lines("imap", lines)) == 2
    assert [line.split(b" ", 1)[1] for line in commands(lines, b"EXAMINE")] == [
        b"EXAMINE INBOX",
        b"EXAMINE INBOX",
    ]


def test_expired_token_and_kick_recover_with_one_refresh(
    mail_server: MailServer, user: str
) -> None:
    seed(mail_server, user, "waiting")
    tokens = MintingProvider(mail_server.google, user)
    imap = client(mail_server, user, tokens)

    async def main() -> None:
        async with imap:
            assert await imap.select("INBOX") == ("OK", [b"1"])
            # Dovecot now refuses the token the provider believes is good:
            # the rejection must lead to exactly one refresh.
            mail_server.google.expire_tokens(user)
            assert await asyncio.to_thread(mail_server.kick, user) == 1
            assert await imap.search(None, "ALL") == ("OK", [b"1"])
            assert imap.state == "SELECTED"

    asyncio.run(main())
    assert tokens.refreshes == 1


def test_watch_across_a_kick_reports_each_message_once(
    mail_server: MailServer, user: str
) -> None:
    seed(mail_server, user, "before the watch")
    imap = client(mail_server, user, MintingProvider(mail_server.google, user))

    async def main() -> list[int]:
        seen: list[int] = []
        async with imap, imap.watch(backoff=Backoff.forever(cap=1.0)) as watcher:
            for round_ in range(2):
                await asyncio.to_thread(seed, mail_server, user, f"one {round_}")
                event = await asyncio.wait_for(watcher.__anext__(), 20)
                assert isinstance(event, NewMessage)
                seen.append(event.uid)
                # Dovecot ends the session; mail arrives while it is down.
                assert await asyncio.to_thread(mail_server.kick, user) >= 1
                await asyncio.to_thread(seed, mail_server, user, f"two {round_}")
                event = await asyncio.wait_for(watcher.__anext__(), 20)
                assert isinstance(event, NewMessage)
                seen.append(event.uid)
            watcher.stop()
            assert [event async for event in watcher] == []
            assert imap.reconnects >= 2
            _, data = await imap.uid(
                "FETCH", "2:5", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
            )
            subjects = [item[1] for item in data if isinstance(item, tuple)]
            assert subjects == [
                b"Subject: one 0\r\n\r\n",
                b"Subject: two 0\r\n\r\n",
                b"Subject: one 1\r\n\r\n",
                b"Subject: two 1\r\n\r\n",
            ]
        return seen

    assert asyncio.run(main()) == [2, 3, 4, 5]
