"""The public API used as a user would; type-checked by mypy --strict, never run."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
from datetime import timedelta
from email.message import EmailMessage

import gmail_xoauth2
from gmail_xoauth2 import (
    IMAP4,
    IMAP_ADMIN_SCOPE,
    MAIL_SCOPE,
    POP3,
    SMTP,
    AuthenticationFailed,
    Clock,
    ConnectionLost,
    DeliveryUnknown,
    ErrorChallenge,
    GoogleTokenProvider,
    StaticTokenProvider,
    TokenFile,
    TokenProvider,
    TokenRevokedError,
    TokenSource,
    authorize,
    decode_error_challenge,
    oauthbearer_response,
    xoauth2_response,
    xoauth2_string,
)
from gmail_xoauth2.testing import FakeGmail, ManualClock


def codec() -> None:
    raw: bytes = xoauth2_response("a@example.com", "ya29.t")
    text: str = xoauth2_string("a@example.com", "ya29.t")
    bearer: bytes = oauthbearer_response("a@example.com", "t", host="h", port=993)
    challenge: ErrorChallenge = decode_error_challenge(text)
    status: str = challenge.status
    scope: str | None = challenge.scope
    print(raw, bearer, status, scope, MAIL_SCOPE)


def providers(path: str) -> TokenProvider:
    google = GoogleTokenProvider.from_authorized_user_file(path)
    fresh: str = google.token()
    forced: str = google.token(force_refresh=True)
    print(fresh, forced, google.expiry)
    static: TokenProvider = StaticTokenProvider("t")
    print(static.token())
    sa = GoogleTokenProvider.from_service_account_file(path, "user@example.com")
    print(sa.token())
    return authorize("client_secrets.json", "token.json", open_browser=False)


def imaplib_forms(imap: IMAP4) -> None:
    """imaplib's documented forms, which typeshed's imaplib stubs alone refuse."""
    typ, data = imap.uid("SEARCH", None, "ALL")
    for uid in data[0].split():
        print(imap.uid("FETCH", uid, "(BODY.PEEK[])"))
    typ, data = imap.search(None, "UNSEEN")
    first: bytes = data[0].split()[0]
    typ, fetched = imap.fetch(first, "(BODY.PEEK[HEADER])")
    header: bytes = fetched[0][1]
    print(typ, header.decode())
    print(imap.search("UTF-8", b"SUBJECT", "caf\u00e9".encode()))
    print(imap.store(first, "+FLAGS", "\\Seen"), imap.copy(first, "Archive"))
    print(imap.uid("STORE", b"7", "+FLAGS", "(\\Seen)"), imap.uid("COPY", first, "X"))
    print(imap.sort("DATE", "UTF-8", "ALL"), imap.thread("REFERENCES", "UTF-8", b"ALL"))


def public_types(path: str) -> None:
    clock: Clock = ManualClock()
    tokens: TokenSource = lambda: "ya29.t"  # noqa: E731
    store = TokenFile(path)
    with store.locked():
        print(store.read(), store.cached_token(clock(), timedelta(minutes=5)))
    google = GoogleTokenProvider.from_authorized_user_file(path, clock=clock)
    print(google.token(), IMAP_ADMIN_SCOPE)
    with IMAP4("a@example.com", tokens, clock=clock) as imap:
        imaplib_forms(imap)


def protocols(tokens: TokenProvider) -> None:
    with IMAP4("a@example.com", tokens) as imap:
        assert isinstance(imap, imaplib.IMAP4)
        typ, data = imap.select("INBOX", readonly=True)
        print(typ, data, imap.uid("SEARCH", "ALL"))
    pop = POP3("a@example.com", lambda: "token", mechanism="OAUTHBEARER")
    assert isinstance(pop, poplib.POP3)
    print(pop.stat())
    pop.quit()
    message = EmailMessage()
    with SMTP("a@example.com", tokens, port=587) as smtp:
        assert isinstance(smtp, smtplib.SMTP)
        refused: dict[str, tuple[int, bytes]] = smtp.send_message(message)
        print(refused)


def errors() -> None:
    try:
        protocols(StaticTokenProvider("t"))
    except AuthenticationFailed as exc:
        print(exc.status, exc.scope, exc.protocol, exc.mechanism, exc.server_text)
    except DeliveryUnknown as exc:
        print(exc.outcome_unknown)
    except ConnectionLost as exc:
        print(exc.outcome_unknown)
    except TokenRevokedError as exc:
        print(exc.retryable)
    except gmail_xoauth2.Error:
        pass


def fake() -> None:
    clock = ManualClock()
    with FakeGmail(clock=clock) as gmail:
        tokens = gmail.token_provider("alice@example.com")
        with IMAP4(
            "alice@example.com",
            tokens,
            gmail.host,
            gmail.imap_port,
            ssl_context=gmail.ssl_context(),
            clock=clock,
        ) as imap:
            clock.advance(timedelta(hours=1))
            print(imap.noop())
