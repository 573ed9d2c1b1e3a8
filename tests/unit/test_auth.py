"""GoogleTokenProvider against the fake Google, on a manual clock."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import google.auth.exceptions
import google.oauth2.credentials
import pytest
from _auth_helpers import REFRESHES, START, USER, open_url

from gmail_xoauth2 import MAIL_SCOPE, GoogleTokenProvider, authorize
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._oauth import LoopbackReceiver
from gmail_xoauth2.auth import IMAP_ADMIN_SCOPE
from gmail_xoauth2.errors import (
    ConfigurationError,
    InsecureTokenFile,
    TokenError,
    TokenRevokedError,
)
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as google:
        google.add_user(USER)
        yield google


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backoff(sleeps: list[float]) -> Backoff:
    return Backoff(base=1.0, attempts=3, sleep=sleeps.append, rand=lambda: 0.5)


@pytest.fixture
def token_file(fake: FakeGoogle, tmp_path: Path) -> Path:
    return fake.write_authorized_user_file(tmp_path / "token.json", USER)


def _provider(
    path: Path, clock: ManualClock, backoff: Backoff, **kwargs: object
) -> GoogleTokenProvider:
    return GoogleTokenProvider.from_authorized_user_file(
        path, clock=clock, backoff=backoff, **kwargs
    )


def test_a_valid_token_is_used_until_the_margin(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    cached = json.loads(token_file.read_text())["token"]
    provider = _provider(token_file, clock, backoff)
    assert provider.token() == cached
    assert provider.expiry == START + timedelta(seconds=3599)
    clock.advance(timedelta(minutes=54, seconds=58))  # 5 min 1 s left
    assert provider.token() == cached
    assert fake.request_count(**REFRESHES) == 0
    clock.advance(2)  # 4 min 59 s left: inside the margin
    fresh = provider.token()
    assert fresh != cached
    assert fake.lookup(fresh) is not None
    assert fake.request_count(**REFRESHES) == 1


def test_refreshed_file_is_0600_and_loads_with_google_auth(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    before = json.loads(token_file.read_text())
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=2))
    token = provider.token()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    after = json.loads(token_file.read_text())
    assert after["token"] == token
    assert after["refresh_token"] == before["refresh_token"]
    assert after["token_uri"] == fake.token_uri
    loaded = google.oauth2.credentials.Credentials.from_authorized_user_file(
        str(token_file)
    )
    assert loaded.token == token
    assert loaded.refresh_token == before["refresh_token"]
    assert loaded.client_id == fake.client_id
    assert loaded.scopes == [MAIL_SCOPE]
    # The expiry is on the provider's clock: two hours on, plus an hour.
    expected = START + timedelta(hours=2, seconds=3599)
    assert abs(provider.expiry - expected) < timedelta(seconds=5)  # type: ignore[operator]
    assert loaded.expiry == provider.expiry.replace(tzinfo=None)  # type: ignore[union-attr]


def test_advancing_the_clock_refreshes_once_per_expiry(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    provider = _provider(token_file, clock, backoff)
    for hour in range(1, 4):
        clock.advance(timedelta(hours=1))
        for _ in range(5):
            provider.token()
        assert fake.request_count(**REFRESHES) == hour


def test_sixteen_threads_across_an_expiry_cause_one_refresh(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    provider = _provider(token_file, clock, backoff)
    first = provider.token()
    # Every thread makes 50 calls, then the clock jumps past the expiry, then
    # every thread makes 50 more.
    barrier = threading.Barrier(16, action=lambda: clock.advance(timedelta(hours=1)))
    seen: list[set[str]] = [set() for _ in range(16)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for call in range(100):
                if call == 50:
                    barrier.wait(timeout=30)
                seen[index].add(provider.token())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert fake.request_count(**REFRESHES) == 1
    second = provider.token()
    assert all(tokens == {first, second} for tokens in seen)


def test_force_refresh_refreshes_a_valid_token_once_for_many_threads(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    provider = _provider(token_file, clock, backoff)
    rejected = provider.token()
    barrier = threading.Barrier(16)
    results: list[str] = []

    def work() -> None:
        assert provider.token() == rejected  # what this connection used
        barrier.wait(timeout=30)
        results.append(provider.token(force_refresh=True))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 16
    assert len(set(results)) == 1
    assert results[0] != rejected
    assert fake.request_count(**REFRESHES) == 1
    # A thread still holding the old token gets the new one without a refresh;
    # once it holds the new one and that is rejected too, it refreshes.
    assert provider.token(force_refresh=True) == results[0]
    assert fake.request_count(**REFRESHES) == 1
    assert provider.token(force_refresh=True) != results[0]
    assert fake.request_count(**REFRESHES) == 2


def test_a_token_refreshed_by_another_process_is_adopted(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    one = _provider(token_file, clock, backoff)
    two = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    token = one.token()
    assert two.token() == token
    assert two.expiry == one.expiry
    assert fake.request_count(**REFRESHES) == 1
    # A forced refresh does not adopt the very token that was rejected.
    assert two.token(force_refresh=True) != token
    assert fake.request_count(**REFRESHES) == 2
    assert one.token(force_refresh=True) == two.token()
    assert fake.request_count(**REFRESHES) == 2


_CHILD = """
import sys
from gmail_xoauth2 import GoogleTokenProvider
provider = GoogleTokenProvider.from_authorized_user_file(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
print(provider.token(), flush=True)
"""


def test_four_processes_on_one_expired_file_refresh_once(tmp_path: Path) -> None:
    with FakeGoogle() as fake:  # the real clock: the children use it too
        fake.add_user(USER)
        path = fake.write_authorized_user_file(
            tmp_path / "token.json", USER, expired=True
        )
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [child.communicate(timeout=30) for child in children]
        finally:
            for child in children:
                child.kill()
                child.wait()
        assert [child.returncode for child in children] == [0, 0, 0, 0], outputs
        tokens = {out.strip() for out, _ in outputs}
        assert len(tokens) == 1
        assert fake.request_count(**REFRESHES) == 1
        assert json.loads(path.read_text())["token"] == tokens.pop()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_transient_failures_are_retried_with_backoff(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    sleeps: list[float],
) -> None:
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(503, count=2)
    token = provider.token()
    assert fake.lookup(token) is not None
    assert sleeps == [0.5, 1.0]
    assert fake.request_count(**REFRESHES) == 3


def test_429_is_retried_too(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    sleeps: list[float],
) -> None:
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(429, body={"error": "rate_limit_exceeded"})
    assert fake.lookup(provider.token()) is not None
    assert len(sleeps) == 1


def test_retries_are_bounded_then_a_retryable_token_error(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    sleeps: list[float],
) -> None:
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(500, count=10)
    with pytest.raises(TokenError) as info:
        provider.token()
    assert info.value.retryable is True
    assert "failed 4 times (HTTP 500)" in str(info.value)
    assert isinstance(info.value.__cause__, google.auth.exceptions.TransportError)
    assert len(sleeps) == 3
    assert fake.request_count(**REFRESHES) == 4


def test_a_dead_endpoint_is_a_retryable_token_error(
    token_file: Path, clock: ManualClock, backoff: Backoff, sleeps: list[float]
) -> None:
    clock.advance(timedelta(hours=1))
    # Point the file at a port nobody listens on any more.
    with LoopbackReceiver() as closed:
        dead = f"http://127.0.0.1:{closed.port}/token"
    data = json.loads(token_file.read_text())
    data["token_uri"] = dead
    token_file.write_text(json.dumps(data))
    provider = _provider(token_file, clock, backoff)
    with pytest.raises(TokenError) as info:
        provider.token()
    assert info.value.retryable
    assert "network error" in str(info.value)
    assert len(sleeps) == 3


def test_invalid_grant_is_token_revoked_with_testing_mode_advice(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    sleeps: list[float],
) -> None:
    provider = _provider(token_file, clock, backoff)
    fake.revoke(USER)
    clock.advance(timedelta(hours=1))
    with pytest.raises(TokenRevokedError) as info:
        provider.token()
    message = str(info.value)
    assert "invalid_grant" in message
    assert "Testing" in message
    assert "7 days" in message
    assert "gmail-xoauth2 authorize" in message
    assert info.value.retryable is False
    assert isinstance(info.value.__cause__, google.auth.exceptions.RefreshError)
    assert sleeps == []
    assert fake.request_count(**REFRESHES) == 1


def test_a_wrong_client_secret_is_a_token_error(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    data = json.loads(token_file.read_text())
    data["client_secret"] = "GOCSPX-wrong"
    token_file.write_text(json.dumps(data))
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    with pytest.raises(TokenError, match=r"invalid_client") as info:
        provider.token()
    assert not isinstance(info.value, TokenRevokedError)
    assert "GOCSPX-wrong" not in str(info.value)


def test_a_group_readable_token_file_is_refused(
    token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    token_file.chmod(0o640)
    with pytest.raises(InsecureTokenFile, match=rf"chmod 600 {token_file}"):
        _provider(token_file, clock, backoff)


def test_a_plain_http_token_uri_is_refused(
    token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    data = json.loads(token_file.read_text())
    data["token_uri"] = "http://token.example.com/token"
    token_file.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="https"):
        _provider(token_file, clock, backoff)


def test_a_token_file_without_a_refresh_token_is_refused(
    token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    data = json.loads(token_file.read_text())
    del data["refresh_token"]
    token_file.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="lacks refresh_token"):
        _provider(token_file, clock, backoff)


def test_service_account_token_via_the_jwt_grant(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock, backoff: Backoff
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    provider = GoogleTokenProvider.from_service_account_file(
        key_file,
        USER,
        scopes=(MAIL_SCOPE, IMAP_ADMIN_SCOPE),
        clock=clock,
        backoff=backoff,
    )
    token = provider.token()
    info = fake.lookup(token)
    assert info is not None
    assert info.email == USER
    assert info.scopes == frozenset({MAIL_SCOPE, IMAP_ADMIN_SCOPE})
    assert (
        fake.request_count(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")
        == 1
    )
    assert provider.token() == token
    clock.advance(timedelta(hours=1))
    assert provider.token() != token
    assert repr(provider).startswith(
        "GoogleTokenProvider(service account mailer@fake-project"
    )
    assert f"as {USER}" in repr(provider)


def test_service_account_for_an_unknown_user_is_a_plain_token_error(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock, backoff: Backoff
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    provider = GoogleTokenProvider.from_service_account_file(
        key_file, "stranger@example.com", clock=clock, backoff=backoff
    )
    with pytest.raises(TokenError, match="subject is a user") as info:
        provider.token()
    assert not isinstance(info.value, TokenRevokedError)


def test_service_account_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        GoogleTokenProvider.from_service_account_file(tmp_path / "none.json", USER)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account", "private_key": "-----BEGIN oops"}')
    with pytest.raises(ConfigurationError, match="not a usable service-account"):
        GoogleTokenProvider.from_service_account_file(bad, USER)
    with pytest.raises(ConfigurationError, match="subject"):
        GoogleTokenProvider.from_service_account_file(bad, "")


def test_bad_arguments(token_file: Path) -> None:
    with pytest.raises(ConfigurationError, match="refresh_margin"):
        GoogleTokenProvider.from_authorized_user_file(
            token_file, refresh_margin=timedelta(hours=2)
        )
    with pytest.raises(ConfigurationError, match="refresh_margin"):
        GoogleTokenProvider.from_authorized_user_file(
            token_file, refresh_margin=timedelta(seconds=-1)
        )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "<html>Sign in to the hotel Wi-Fi</html>"),  # a captive portal
        (200, {"expires_in": 3599}),  # no access token
        (200, {"access_token": "ya29.x", "expires_in": "an hour"}),
        (400, "<html>Bad Request</html>"),
        (401, "<html>Unauthorized</html>"),
    ],
)
def test_garbage_from_the_token_endpoint_is_a_token_error(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    status: int,
    body: dict[str, object] | str,
) -> None:
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(status, body=body)
    with pytest.raises(TokenError) as info:
        provider.token()
    message = str(info.value)
    assert "token endpoint" in message
    for text in ("Wi-Fi", "Bad Request", "Unauthorized", "an hour"):
        assert text not in message
    # The next call, with the endpoint healthy again, succeeds.
    assert fake.lookup(provider.token()) is not None


@pytest.mark.parametrize(
    "body",
    [
        None,  # 408 Request Timeout
        {"error": "temporarily_unavailable"},
        {"error": "server_error", "error_description": "try later"},
    ],
)
def test_google_auth_never_sleeps_on_its_own(
    fake: FakeGoogle,
    token_file: Path,
    clock: ManualClock,
    backoff: Backoff,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, object] | None,
) -> None:
    # google-auth retries 408 and these error codes itself with real sleeps;
    # every wait must go through the provider's injectable Backoff instead.
    hidden: list[float] = []
    monkeypatch.setattr(
        "google.auth._exponential_backoff.time",
        type("FakeTime", (), {"sleep": staticmethod(hidden.append)}),
    )
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(408 if body is None else 400, body=body)
    assert fake.lookup(provider.token()) is not None
    assert hidden == []
    assert sleeps == [0.5]
    assert fake.request_count(**REFRESHES) == 2


class _ArrivalLock:
    """The provider's lock, announcing each caller before it blocks on it."""

    def __init__(self, inner: threading.Lock, arrived: threading.Semaphore) -> None:
        self._inner = inner
        self._arrived = arrived

    def __enter__(self) -> None:
        self._arrived.release()
        self._inner.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._inner.release()


def test_threads_waiting_on_a_failing_refresh_share_its_error(
    fake: FakeGoogle, token_file: Path, clock: ManualClock
) -> None:
    # Without sharing, each of 8 waiting threads would run the whole retry
    # loop again, one after another: 8 x 3 requests and 8 x the backoff.
    arrived = threading.Semaphore(0)
    waiters: list[threading.Thread] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            provider.token()
        except BaseException as exc:
            errors.append(exc)

    def sleep(delay: float) -> None:
        # The first refresh is in its backoff, holding the lock: 8 more
        # threads arrive and queue behind it.
        if not waiters:
            arrived.acquire(timeout=30)  # the first caller itself
            waiters.extend(threading.Thread(target=call) for _ in range(8))
            for thread in waiters:
                thread.start()
            for _ in waiters:
                assert arrived.acquire(timeout=30)

    provider = _provider(
        token_file, clock, Backoff(base=1.0, attempts=2, sleep=sleep, rand=lambda: 0)
    )
    provider._lock = _ArrivalLock(provider._lock, arrived)  # type: ignore[assignment]
    clock.advance(timedelta(hours=1))
    fake.fail_next(503, count=100)
    with pytest.raises(TokenError) as first:
        provider.token()
    for thread in waiters:
        thread.join(timeout=30)
    assert len(errors) == 8
    assert fake.request_count(**REFRESHES) == 3
    for error in errors:
        assert type(error) is TokenError
        assert str(error) == str(first.value)
        assert error.retryable
        assert error is not first.value
    # A call made after the failure tries again.
    fake._failures.clear()
    assert fake.lookup(provider.token()) is not None
    assert fake.request_count(**REFRESHES) == 4


def test_unauthorized_client_for_a_user_says_what_to_do(
    fake: FakeGoogle, token_file: Path, clock: ManualClock, backoff: Backoff
) -> None:
    provider = _provider(token_file, clock, backoff)
    clock.advance(timedelta(hours=1))
    fake.fail_next(
        401, body={"error": "unauthorized_client", "error_description": "Unauthorized"}
    )
    with pytest.raises(TokenError) as info:
        provider.token()
    message = str(info.value)
    assert "unauthorized_client" in message
    assert "gmail-xoauth2 authorize" in message
    assert fake.client_secret not in message


def test_delegation_not_authorized_in_the_admin_console_says_where_to_fix_it(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock, backoff: Backoff
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    provider = GoogleTokenProvider.from_service_account_file(
        key_file, USER, scopes=(IMAP_ADMIN_SCOPE,), clock=clock, backoff=backoff
    )
    # Google's answer when the client ID is not allowed the scope for delegation.
    fake.fail_next(
        401,
        body={
            "error": "unauthorized_client",
            "error_description": "Client is unauthorized to retrieve access "
            "tokens using this method, or client not authorized for any of the "
            "scopes requested.",
        },
    )
    with pytest.raises(TokenError) as info:
        provider.token()
    assert "Domain-wide delegation" in str(info.value)
    assert not info.value.retryable
    assert fake.request_count(grant_type=JWT_BEARER) == 1
    token = provider.token()
    assert fake.lookup(token).scopes == {IMAP_ADMIN_SCOPE}  # type: ignore[union-attr]


def test_a_token_file_rewritten_by_authorize_is_followed(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock, backoff: Backoff
) -> None:
    path = fake.write_authorized_user_file(tmp_path / "token.json", USER)
    running = _provider(path, clock, backoff)
    old = running.token()
    # The user revokes the app, then runs authorize again (another process).
    fake.revoke(USER)
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    authorize(secrets_file, path, open_url=open_url, clock=clock, backoff=backoff)
    new = json.loads(path.read_text())["token"]
    assert new != old
    # The server rejects the old token: the running provider adopts the new
    # one from the file, without a refresh and without invalid_grant.
    assert running.token(force_refresh=True) == new
    assert fake.request_count(**REFRESHES) == 0
    # An hour on, it refreshes with the new refresh token.
    clock.advance(timedelta(hours=1))
    fresh = running.token()
    assert fake.lookup(fresh) is not None
    assert fake.request_count(**REFRESHES) == 1
    assert json.loads(path.read_text())["token"] == fresh


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (401, "invalid_client", "service account"),
        (400, "invalid_scope", "scope"),
        (400, "invalid_request", "service account"),
    ],
)
def test_service_account_errors_never_advise_authorize(
    fake: FakeGoogle,
    tmp_path: Path,
    clock: ManualClock,
    backoff: Backoff,
    status: int,
    code: str,
    advice: str,
) -> None:
    # `gmail-xoauth2 authorize` makes a user's token file; it cannot fix a key.
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    provider = GoogleTokenProvider.from_service_account_file(
        key_file, USER, clock=clock, backoff=backoff
    )
    fake.fail_next(status, body={"error": code, "error_description": "Bad Request"})
    with pytest.raises(TokenError) as info:
        provider.token()
    message = str(info.value)
    assert code in message
    assert advice in message
    assert "authorize" not in message


def test_credentials_without_a_refresh_token_say_so() -> None:
    from google.oauth2.credentials import Credentials

    from gmail_xoauth2 import TokenError

    provider = GoogleTokenProvider(Credentials(token=None))
    with pytest.raises(TokenError, match="no refresh token") as info:
        provider.token()
    assert "gmail-xoauth2 authorize" in str(info.value)
