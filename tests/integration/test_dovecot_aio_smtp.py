"""aio.SMTP against a real Dovecot submission service: login, kick, rejection.

The scenarios of the sync SMTP's Dovecot tests, awaited: both mechanisms over
implicit TLS and STARTTLS, a session ended by ``doveadm kick`` followed by a
send that reconnects (each message delivered once), and a rejected token
refreshed once.
"""

from __future__ import annotations

import asyncio

import pytest

from gmail_xoauth2 import AuthenticationFailed, StaticTokenProvider, aio

from ._clients import MECHANISMS, TLS_MODES, MintingProvider
from .conftest import MailServer
from .test_dovecot_sessions import count_with, make_message


def client(
    mail_server: MailServer, user: str, tokens: object, tls: str, **kwargs: object
) -> aio.SMTP:
    endpoint = mail_server.endpoint("smtp", tls)
    return aio.SMTP(
        user,
        tokens,  # type: ignore[arg-type]
        endpoint.host,
        endpoint.port,
        starttls=endpoint.starttls,
        ssl_context=mail_server.ssl_context(),
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_login_and_send(
    mail_server: MailServer, user: str, mechanism: str, tls: str
) -> None:
    recipient = mail_server.new_user()
    message = make_message(user, recipient, f"aio {mechanism} {tls}")
    tokens = MintingProvider(mail_server.google, user)

    async def main() -> None:
        async with client(mail_server, user, tokens, tls, mechanism=mechanism) as smtp:
            errors, _ = await smtp.send_message(message)
            assert errors == {}

    asyncio.run(main())
    inbox = mail_server.messages(recipient)
    assert count_with(inbox, message["Message-ID"]) == 1


def test_kick_then_next_send_reconnects(mail_server: MailServer, user: str) -> None:
    recipient = mail_server.new_user()
    first = make_message(user, recipient, "before the kick")
    second = make_message(user, recipient, "after the kick")
    tokens = MintingProvider(mail_server.google, user)

    async def main() -> None:
        async with client(mail_server, user, tokens, "starttls") as smtp:
            await smtp.send_message(first)
            assert await asyncio.to_thread(mail_server.kick, user) == 1
            await smtp.send_message(second)

    asyncio.run(main())
    inbox = mail_server.messages(recipient)
    assert len(inbox) == 2
    assert count_with(inbox, first["Message-ID"]) == 1
    assert count_with(inbox, second["Message-ID"]) == 1


def test_a_rejected_token_fails_after_one_refresh(
    mail_server: MailServer, user: str
) -> None:
    tokens = StaticTokenProvider("ya29.not-a-token")

    async def main() -> None:
        await client(mail_server, user, tokens, "implicit").connect()

    with pytest.raises(AuthenticationFailed) as info:
        asyncio.run(main())
    assert info.value.protocol == "smtp"
    assert "ya29.not-a-token" not in str(info.value)
