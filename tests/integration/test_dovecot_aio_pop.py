"""gmail_xoauth2.aio.POP3 against the private Dovecot: login, reads, kicked sessions.

The scenarios of test_dovecot_login.py and test_dovecot_sessions.py for POP,
with the asyncio class: both mechanisms over implicit TLS and STLS, a rejected
token, ``doveadm kick`` ending the session (reads reconnect; pending deletions
are reported lost, never applied), and deletions committed by QUIT.
"""

from __future__ import annotations

import asyncio
import poplib

import pytest

from gmail_xoauth2 import AuthenticationFailed, ConnectionLost, StaticTokenProvider
from gmail_xoauth2.aio import POP3

from ._clients import MECHANISMS, TLS_MODES, MintingProvider
from .conftest import MailServer
from .test_dovecot_sessions import seed


def client(
    server: MailServer,
    user: str,
    tokens: object,
    *,
    tls: str = "implicit",
    mechanism: str = "XOAUTH2",
) -> POP3:
    endpoint = server.endpoint("pop", tls)
    return POP3(
        user,
        tokens,  # type: ignore[arg-type]
        endpoint.host,
        endpoint.port,
        starttls=endpoint.starttls,
        ssl_context=server.ssl_context(),
        mechanism=mechanism,
        timeout=10.0,
    )


@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_login_and_read(
    mail_server: MailServer, user: str, tls: str, mechanism: str
) -> None:
    seed(mail_server, user, "first", "second")
    provider = MintingProvider(mail_server.google, user)

    async def main() -> tuple[tuple[int, int], list[bytes], list[bytes]]:
        async with client(
            mail_server, user, provider, tls=tls, mechanism=mechanism
        ) as pop:
            stat = await pop.stat()
            _, lines, _ = await pop.retr(2)
            _, uids, _ = await pop.uidl()
            return stat, lines, uids

    (count, _), lines, uids = asyncio.run(main())
    assert count == 2
    assert b"Subject: second" in lines
    assert [uid.split()[0] for uid in uids] == [b"1", b"2"]
    assert provider.refreshes == 0


def test_a_rejected_token_raises_authentication_failed(
    mail_server: MailServer, user: str
) -> None:
    token = "ya29.not-a-token-google-ever-issued"

    async def main() -> None:
        await client(mail_server, user, StaticTokenProvider(token)).connect()

    with pytest.raises(AuthenticationFailed) as caught:
        asyncio.run(main())
    failure = caught.value
    assert isinstance(failure, poplib.error_proto)
    assert (failure.protocol, failure.status) == ("pop", "401")
    assert failure.server_text == "-ERR [AUTH] Authentication failed."
    assert token not in str(failure) and token not in repr(failure.args)


def test_kick_reconnects_for_reads(mail_server: MailServer, user: str) -> None:
    seed(mail_server, user, "first", "second")

    async def main() -> None:
        provider = MintingProvider(mail_server.google, user)
        async with client(mail_server, user, provider) as pop:
            count, size = await pop.stat()
            assert count == 2
            assert mail_server.kick(user) == 1
            assert await pop.stat() == (count, size)
            _, lines, _ = await pop.retr(2)
            assert b"Subject: second" in lines
            assert mail_server.kick(user) == 1
            assert [u.split()[0] for u in (await pop.uidl())[1]] == [b"1", b"2"]

    asyncio.run(main())


def test_kick_with_deletions_pending_applies_none_then_quit_commits(
    mail_server: MailServer, user: str
) -> None:
    seed(mail_server, user, "first", "second")

    async def main() -> None:
        pop = client(mail_server, user, MintingProvider(mail_server.google, user))
        await pop.connect()
        await pop.dele(1)
        assert mail_server.kick(user) == 1
        with pytest.raises(ConnectionLost, match="NOT applied"):
            await pop.stat()
        assert len(mail_server.messages(user)) == 2
        # The next call starts a new session: mark again, and QUIT commits.
        await pop.uidl()
        await pop.dele(1)
        assert (await pop.quit()).startswith(b"+OK")

    asyncio.run(main())
    assert len(mail_server.messages(user)) == 1
