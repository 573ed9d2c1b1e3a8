"""authorize(): the loopback flow end to end, and no secret in any log line."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import stat
import urllib.error
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import google.oauth2.credentials
import pytest
from _auth_helpers import START, USER, open_url

from gmail_xoauth2 import GoogleTokenProvider, authorize
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._oauth import LoopbackReceiver, show_url
from gmail_xoauth2.errors import (
    ConfigurationError,
    Timeout,
    TokenError,
    TokenRevokedError,
    UnsupportedFlow,
)
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle


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


def test_authorize_runs_the_loopback_flow_end_to_end(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock, backoff: Backoff
) -> None:
    fake.add_user("bob@example.com")
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    token_path = tmp_path / "dir" / "token.json"
    provider = authorize(
        secrets_file,
        token_path,
        login_hint="bob@example.com",
        open_url=open_url,
        clock=clock,
        backoff=backoff,
    )
    token = provider.token()
    info = fake.lookup(token)
    assert info is not None and info.email == "bob@example.com"
    assert provider.expiry == START + timedelta(seconds=3599)
    [request] = fake.auth_requests()
    assert request["access_type"] == "offline"
    assert request["prompt"] == "consent"
    assert request["login_hint"] == "bob@example.com"
    assert request["code_challenge_method"] == "S256"
    assert request["redirect_uri"].startswith("http://127.0.0.1:")
    assert fake.request_count(grant_type="authorization_code") == 1
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    loaded = google.oauth2.credentials.Credentials.from_authorized_user_file(
        str(token_path)
    )
    assert loaded.token == token
    assert loaded.refresh_token.startswith("1//")
    # The saved file keeps working: refresh through it.
    clock.advance(timedelta(hours=1))
    again = GoogleTokenProvider.from_authorized_user_file(
        token_path, clock=clock, backoff=backoff
    )
    assert fake.lookup(again.token()).email == "bob@example.com"  # type: ignore[union-attr]


def test_authorize_reports_a_refusal(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")

    def deny(url: str) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        redirect = query["redirect_uri"][0]
        state = query["state"][0]
        open_url(f"{redirect}?error=access_denied&state={state}")

    with pytest.raises(
        TokenError, match=r"not granted in the browser \(access_denied\)"
    ) as info:
        authorize(secrets_file, tmp_path / "token.json", open_url=deny, clock=clock)
    assert not (tmp_path / "token.json").exists()
    # Testing mode blocks every account not listed as a test user this way.
    assert "test user" in str(info.value)


def test_authorize_on_a_port_in_use_says_to_choose_another(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError) as info:
            authorize(
                secrets_file,
                tmp_path / "token.json",
                port=port,
                open_url=lambda url: pytest.fail("no URL without a listener"),
            )
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "choose another port" in str(info.value)
    assert fake.auth_requests() == []


def test_a_failing_code_exchange_names_the_status(
    fake: FakeGoogle, tmp_path: Path, clock: ManualClock
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    fake.fail_next(503)
    with pytest.raises(TokenError) as info:
        authorize(secrets_file, tmp_path / "token.json", open_url=open_url, clock=clock)
    assert "HTTP 503" in str(info.value)
    assert "run authorize again" in str(info.value)
    assert info.value.retryable
    assert fake.request_count(grant_type="authorization_code") == 1  # never twice
    assert not (tmp_path / "token.json").exists()


def test_authorize_times_out_without_a_redirect(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    with pytest.raises(Timeout, match="no authorization arrived"):
        authorize(
            secrets_file, tmp_path / "token.json", open_url=lambda url: None, timeout=0
        )


@pytest.mark.parametrize("flow", ["oob", "urn:ietf:wg:oauth:2.0:oob", "OOB"])
def test_the_out_of_band_flow_is_refused_with_the_reason(
    flow: str, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedFlow) as info:
        authorize(tmp_path / "client.json", tmp_path / "token.json", flow=flow)
    assert "2022" in str(info.value)
    assert "loopback" in str(info.value)


def test_the_device_flow_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFlow) as info:
        authorize(tmp_path / "client.json", tmp_path / "token.json", flow="device")
    assert "rejects Gmail scopes" in str(info.value)


def test_a_web_client_secrets_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    path.write_text(json.dumps({"web": {"client_id": "x", "client_secret": "y"}}))
    with pytest.raises(ConfigurationError, match="Desktop app"):
        authorize(path, tmp_path / "token.json", open_url=lambda url: None)


def test_without_a_browser_the_url_and_the_ssh_hint_are_printed() -> None:
    out = io.StringIO()
    show_url("https://accounts.example/auth?x=1", 8765, False, None, out)
    text = out.getvalue()
    assert "    https://accounts.example/auth?x=1\n" in text
    assert "ssh -L 8765:127.0.0.1:8765" in text


def test_the_loopback_receiver_ignores_strays_and_forged_state() -> None:
    with LoopbackReceiver() as receiver:
        receiver.start("good-state")
        base = receiver.redirect_uri
        for url, status in (
            (base + "favicon.ico", 404),
            (base + "?code=c&state=bad-state", 400),
        ):
            with pytest.raises(urllib.error.HTTPError) as info:
                open_url(url)
            assert info.value.code == status
            info.value.close()
        open_url(base + "?code=c&state=good-state")
        assert receiver.wait(0) == {"code": "c", "state": "good-state"}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        # The message and every extra field (google-auth logs request bodies
        # and responses as extras).
        return "\n".join(
            f"{r.name} {r.getMessage()} {r.__dict__!r}" for r in self.records
        )


@pytest.fixture
def capture() -> Iterator[_Capture]:
    handler = _Capture()
    names = [
        "",
        "google",
        "google_auth_oauthlib",
        "urllib3",
        "requests_oauthlib",
        "oauthlib",
        "gmail_xoauth2",
    ]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield handler
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(secret, safe=""),
    ]


def test_no_secret_in_debug_logs_reprs_or_errors(
    fake: FakeGoogle,
    tmp_path: Path,
    clock: ManualClock,
    backoff: Backoff,
    capture: _Capture,
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    token_path = tmp_path / "token.json"
    output = io.StringIO()
    shown: list[str] = []
    provider = authorize(
        secrets_file,
        token_path,
        login_hint=USER,
        open_url=open_url,
        output=output,
        clock=clock,
        backoff=backoff,
    )
    shown.append(repr(provider))
    provider.token()
    clock.advance(timedelta(hours=1))
    fake.fail_next(503)
    provider.token()  # a full refresh, with one retry
    provider.token(force_refresh=True)
    fake.revoke(USER)
    with pytest.raises(TokenRevokedError) as revoked:
        provider.token(force_refresh=True)
    shown += [str(revoked.value), repr(revoked.value), repr(provider)]
    fake.fail_next(503, count=10)
    clock.advance(timedelta(hours=1))
    with pytest.raises(TokenError) as unavailable:
        GoogleTokenProvider.from_authorized_user_file(
            token_path, clock=clock, backoff=backoff
        ).token()
    shown += [str(unavailable.value), repr(unavailable.value), output.getvalue()]

    logged = capture.text()
    names = {record.name for record in capture.records}
    # The capture saw the libraries talk, so the search below means something.
    assert "urllib3.connectionpool" in names
    assert "google.auth.transport.requests" in names
    assert "gmail_xoauth2.auth" in names
    saved = json.loads(token_path.read_text())
    assert saved["token"] in fake._access
    secrets = [
        *fake._access,  # every access token the fake minted
        *fake._grants,  # every refresh token
        fake.client_secret,
    ]
    assert len(secrets) == 5  # 3 access tokens, 1 refresh token, 1 client secret
    for secret in secrets:
        for form in _forms(secret):
            assert form not in logged
            for text in shown:
                assert form not in text


def test_an_unwritable_token_file_is_refused_before_the_browser_opens(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    not_a_directory = tmp_path / "notes.txt"
    not_a_directory.write_text("")
    with pytest.raises(ConfigurationError, match="cannot create directory"):
        authorize(
            secrets_file,
            not_a_directory / "token.json",
            open_url=lambda url: pytest.fail("the consent page was opened"),
        )
    assert fake.auth_requests() == []
