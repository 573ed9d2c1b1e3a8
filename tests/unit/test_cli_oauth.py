"""The OAuth side of the command: authorize without a browser, token, revoke."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from _auth_helpers import USER, open_url

from gmail_xoauth2 import cli
from gmail_xoauth2._store import format_expiry
from gmail_xoauth2.testing.google import FakeGoogle


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        fake.add_user(USER)
        yield fake


class _Watched:
    """A stderr that signals once a line holding a URL has been written."""

    def __init__(self) -> None:
        self.text = ""
        self.url_shown = threading.Event()

    def write(self, text: str) -> int:
        self.text += text
        if "http://" in self.text:
            self.url_shown.set()
        return len(text)

    def flush(self) -> None:
        pass


def test_authorize_no_browser_prints_the_url_and_waits_for_the_redirect(
    google: FakeGoogle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import webbrowser

    def no_browser(*args: object, **kwargs: object) -> bool:
        raise AssertionError("--no-browser opened a browser")

    monkeypatch.setattr(webbrowser, "open", no_browser)
    stderr = _Watched()
    monkeypatch.setattr(sys, "stderr", stderr)
    secrets = google.write_client_secrets_file(tmp_path / "client.json")
    token_file = tmp_path / "t.json"
    status: list[int] = []
    argv = ["authorize", "--client-secrets", str(secrets), "--no-browser"]
    command = threading.Thread(
        target=lambda: status.append(
            cli.main([*argv, "--token-file", str(token_file), "--user", USER])
        )
    )
    command.start()
    try:
        assert stderr.url_shown.wait(timeout=30)
        [url] = [
            line.strip()
            for line in stderr.text.splitlines()
            if line.strip().startswith("http://")
        ]
        assert url.startswith(google.auth_uri + "?")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        port = urllib.parse.urlsplit(query["redirect_uri"][0]).port
        assert f"ssh -L {port}:127.0.0.1:{port}" in stderr.text
        assert command.is_alive()  # waiting for the redirect
        open_url(url)  # the browser on the other machine
    finally:
        command.join(timeout=30)
    assert status == [0]
    data = json.loads(token_file.read_text())
    assert google.lookup(data["token"]).email == USER  # type: ignore[union-attr]
    assert os.stat(token_file).st_mode & 0o777 == 0o600
    assert data["refresh_token"] not in stderr.text + capsys.readouterr().out


def _token_file(path: Path, token_uri: str) -> Path:
    data = {
        "token": "ya29.never-printed",
        "refresh_token": "1//refresh-never-sent",
        "token_uri": token_uri,
        "client_id": "1-fake.apps.googleusercontent.com",
        "client_secret": "GOCSPX-never-printed",
        "scopes": ["https://mail.google.com/"],
        "expiry": format_expiry(datetime.now(UTC) + timedelta(minutes=30)),
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def test_revoke_never_sends_the_refresh_token_over_plain_http(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def post(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the refresh token was sent to {args[0]}")

    monkeypatch.setattr(requests, "post", post)
    path = _token_file(tmp_path / "t.json", "http://oauth.example.net/token")
    assert cli.main(["revoke", "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "https" in err
    for secret in ("1//refresh-never-sent", "ya29.never-printed", "GOCSPX-never"):
        assert secret not in err
    assert path.exists()


def test_revoke_keeps_the_file_when_google_fails(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER)
    google.fail_next(503, path="/revoke")
    assert cli.main(["revoke", "--token-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "kept" in err
    assert path.exists()


def test_token_with_garbage_from_the_endpoint_is_one_clear_error(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER, expired=True)
    google.fail_next(200, body="<html>Hotel Wi-Fi: please sign in</html>")
    assert cli.main(["token", "--token-file", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gmail-xoauth2: error: the token endpoint")
    assert captured.err.count("\n") == 1
    assert "Wi-Fi" not in captured.err


def test_token_equals_form_is_served_from_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path / "t.json", "http://127.0.0.1:9/token")
    assert cli.main(["token", f"--token-file={path}"]) == 0
    assert capsys.readouterr().out == "ya29.never-printed\n"
