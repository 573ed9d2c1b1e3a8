"""Sessions that Dovecot ends (``doveadm kick``), refreshing, and delivery.

``doveadm kick`` plays Gmail ending a session when its token expires: the
library must re-establish the session for safe commands (IMAP with its SELECT
restored, SMTP for the next send, POP reads), refresh a token the server no
longer accepts, deliver each message exactly once and never repeat an APPEND.
"""

from __future__ import annotations

import email.message
import email.utils
from pathlib import Path

import pytest

from gmail_xoauth2 import IMAP4, POP3, SMTP, ConnectionLost, GoogleTokenProvider

from ._clients import PROTOCOLS, MintingProvider, Opened, auth_lines, open_client
from .conftest import MailServer, Transcript


def make_message(sender: str, to: str, subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = email.utils.make_msgid(domain="test.invalid")
    message.set_content(f"{subject}\n")
    return message


def seed(server: MailServer, user: str, *subjects: str) -> None:
    """Deliver messages straight through LMTP, as if someone had sent them."""
    for subject in subjects:
        data = make_message("seed@example.com", user, subject).as_bytes()
        assert server.sink.deliver("seed@example.com", (user,), data).startswith("250")


def count_with(messages: list[bytes], message_id: str) -> int:
    needle = f"Message-ID: {message_id}".encode()
    return sum(needle in raw for raw in messages)


def commands(lines: list[bytes], verb: bytes) -> list[bytes]:
    """IMAP command lines with ``verb`` (after the tag)."""
    return [line for line in lines if line.split(b" ")[1:2] == [verb]]


def test_imap_kick_reconnects_and_restores_selected_mailbox(
    mail_server: MailServer, opened: Opened, user: str
) -> None:
    seed(mail_server, user, "first", "second")
    transcript = Transcript()
    imap = opened.add(
        open_client(
            mail_server.endpoint("imap"),
            user,
            MintingProvider(mail_server.google, user),
            ssl_context=mail_server.ssl_context(transcript),
        )
    )
    assert isinstance(imap, IMAP4)
    assert imap.select("INBOX", readonly=True) == ("OK", [b"2"])
    assert mail_server.kick(user) == 1
    assert imap.search(None, "ALL") == ("OK", [b"1 2"])
    assert imap.state == "SELECTED" and imap.reconnects == 1
    typ, data = imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and data[0][1] == b"Subject: second\r\n\r\n"
    lines = transcript.lines()
    assert len(auth_lines("imap", lines)) == 2
    assert [line.split(b" ", 1)[1] for line in commands(lines, b"EXAMINE")] == [
        b"EXAMINE INBOX",
        b"EXAMINE INBOX",
    ]


def test_pop_kick_reconnects_for_reads(
    mail_server: MailServer, opened: Opened, user: str
) -> None:
    seed(mail_server, user, "first", "second")
    pop = opened.add(
        open_client(
            mail_server.endpoint("pop"),
            user,
            MintingProvider(mail_server.google, user),
            ssl_context=mail_server.ssl_context(),
        )
    )
    assert isinstance(pop, POP3)
    count, size = pop.stat()
    assert count == 2
    assert mail_server.kick(user) == 1
    assert pop.stat() == (count, size)
    _, lines, _ = pop.retr(2)
    assert b"Subject: second" in lines
    assert mail_server.kick(user) == 1
    assert [uid.split()[0] for uid in pop.uidl()[1]] == [b"1", b"2"]


def test_smtp_kick_then_next_send_works(
    mail_server: MailServer, opened: Opened, user: str
) -> None:
    recipient = mail_server.new_user()
    transcript = Transcript()
    smtp = opened.add(
        open_client(
            mail_server.endpoint("smtp", "starttls"),
            user,
            MintingProvider(mail_server.google, user),
            ssl_context=mail_server.ssl_context(transcript),
        )
    )
    assert isinstance(smtp, SMTP)
    first = make_message(user, recipient, "before the kick")
    second = make_message(user, recipient, "after the kick")
    assert smtp.send_message(first) == {}
    assert mail_server.kick(user) == 1
    assert smtp.send_message(second) == {}
    inbox = mail_server.messages(recipient)
    assert len(inbox) == 2
    assert count_with(inbox, first["Message-ID"]) == 1
    assert count_with(inbox, second["Message-ID"]) == 1
    assert len(auth_lines("smtp", transcript.lines())) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_expired_token_and_kick_recover_by_refreshing(
    mail_server: MailServer, opened: Opened, user: str, tmp_path: Path, protocol: str
) -> None:
    google = mail_server.google
    path = google.write_authorized_user_file(tmp_path / "token.json", user)
    provider = GoogleTokenProvider.from_authorized_user_file(path)
    seed(mail_server, user, "waiting")
    client = opened.add(
        open_client(
            mail_server.endpoint(protocol),
            user,
            provider,
            ssl_context=mail_server.ssl_context(),
        )
    )
    if isinstance(client, IMAP4):
        assert client.select("INBOX") == ("OK", [b"1"])
    refreshes = google.request_count("/token", grant_type="refresh_token")
    # Gmail ends an OAuth session when its token expires; the provider still
    # believes its token is good, so the server's rejection must trigger a refresh.
    google.expire_tokens(user)
    assert mail_server.kick(user) == 1
    if isinstance(client, IMAP4):
        assert client.search(None, "ALL") == ("OK", [b"1"])
        assert client.state == "SELECTED"
    elif isinstance(client, POP3):
        assert client.stat()[0] == 1
    else:
        assert isinstance(client, SMTP)
        message = make_message(user, user, "after refresh")
        assert client.send_message(message) == {}
        assert count_with(mail_server.messages(user), message["Message-ID"]) == 1
    assert google.request_count("/token", grant_type="refresh_token") == refreshes + 1


def test_mail_sent_by_smtp_is_found_exactly_once_by_imap_and_pop(
    mail_server: MailServer, opened: Opened, user: str
) -> None:
    recipient = mail_server.new_user()
    context = mail_server.ssl_context()
    message = make_message(user, recipient, "exactly once")
    smtp = opened.add(
        open_client(
            mail_server.endpoint("smtp"),
            user,
            MintingProvider(mail_server.google, user),
            ssl_context=context,
        )
    )
    assert smtp.send_message(message) == {}
    tokens = MintingProvider(mail_server.google, recipient)
    imap = opened.add(
        open_client(
            mail_server.endpoint("imap"), recipient, tokens, ssl_context=context
        )
    )
    assert isinstance(imap, IMAP4)
    imap.select("INBOX", readonly=True)
    typ, found = imap.search(None, "HEADER", "Message-ID", message["Message-ID"])
    assert typ == "OK" and found == [b"1"]
    imap.logout()
    pop = opened.add(
        open_client(mail_server.endpoint("pop"), recipient, tokens, ssl_context=context)
    )
    assert isinstance(pop, POP3)
    count, _ = pop.stat()
    bodies = [b"\r\n".join(pop.retr(n)[1]) for n in range(1, count + 1)]
    assert count_with(bodies, message["Message-ID"]) == 1
    assert count_with(mail_server.messages(recipient), message["Message-ID"]) == 1


def test_append_across_a_kick_never_duplicates(
    mail_server: MailServer, opened: Opened, user: str
) -> None:
    transcript = Transcript()
    imap = opened.add(
        open_client(
            mail_server.endpoint("imap"),
            user,
            MintingProvider(mail_server.google, user),
            ssl_context=mail_server.ssl_context(transcript),
        )
    )
    assert isinstance(imap, IMAP4)
    imap.select("INBOX")
    message = make_message(user, user, "appended once")
    assert mail_server.kick(user) == 1
    try:
        typ, _ = imap.append("INBOX", None, None, message.as_bytes())
    except ConnectionLost as exc:
        # Allowed only as "outcome unknown", and then never sent again.
        assert exc.outcome_unknown
        appended = count_with(mail_server.messages(user), message["Message-ID"])
        assert appended <= 1
    else:
        assert typ == "OK"
        assert count_with(mail_server.messages(user), message["Message-ID"]) == 1
    assert len(commands(transcript.lines(), b"APPEND")) == 1
    # The session is usable afterwards, and the message is there exactly once.
    typ, found = imap.search(None, "HEADER", "Message-ID", message["Message-ID"])
    assert typ == "OK" and len(found[0].split()) <= 1
