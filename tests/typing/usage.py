"""The public API used as a user would; type-checked by mypy --strict, never run."""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib
import threading
from collections.abc import Iterator, Mapping
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
    KeyringTokenStore,
    RedisTokenStore,
    StaticTokenProvider,
    TokenDirectory,
    TokenFile,
    TokenProvider,
    TokenRevokedError,
    TokenSource,
    TokenStore,
    TokenStores,
    authorize,
    decode_error_challenge,
    oauthbearer_response,
    open_store,
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


class DictStore:
    """A user's own store: the protocol needs no base class."""

    def __init__(self) -> None:
        self.record: dict[str, object] | None = None
        self._lock = threading.Lock()

    def load(self) -> dict[str, object] | None:
        return self.record

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        current = self.record.get("token") if self.record else None
        if (current or None) != replacing:
            return False
        self.record = dict(data)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield


def stores(path: str) -> list[GoogleTokenProvider]:
    own: TokenStore = DictStore()
    users: TokenStores = TokenDirectory(path)
    one: TokenStore = users.for_account("a@example.com")
    fleet = RedisTokenStore(
        "redis://127.0.0.1:6379/0",
        account="a@example.com",
        encryption_key=["new-key", b"old-key"],
        lock_ttl=30.0,
        lock_wait=45.0,
    )
    desk = KeyringTokenStore(account="a@example.com", lock_dir=path)
    keys: tuple[str, str] = (fleet.key, fleet.lock_key)
    fleet.delete()
    desk.delete()
    with one.locked():
        record: dict[str, object] | None = one.load()
        written: bool = one.save(record or {}, replacing=None)
    print(keys, written, desk.service, desk.account, desk.lock_path)
    by_url: TokenStore = open_store("keyring:myapp", account="a@example.com")
    return [
        GoogleTokenProvider.for_user(own, "a@example.com"),
        GoogleTokenProvider.for_user(users, "a@example.com", client="client.json"),
        GoogleTokenProvider.for_user(
            fleet.for_account("b@example.com"), "b@example.com"
        ),
        GoogleTokenProvider.for_user(
            desk, "a@example.com", refresh_margin=timedelta(0)
        ),
        GoogleTokenProvider.for_user(by_url, "a@example.com"),
        authorize("client.json", one, open_browser=False),
    ]


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
