"""Tests for the ``gmail-xoauth2`` command: parsing, tokens, errors, check, revoke."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gmail_xoauth2 import _cli_tokens, cli
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._store import format_expiry
from gmail_xoauth2.testing.gmail import FakeGmail
from gmail_xoauth2.testing.google import FakeGoogle

USER = "alice@example.com"
SECRET_TOKEN = "ya29.cached-token-for-the-fast-path"


def write_token_file(
    path: Path, *, token: str = SECRET_TOKEN, valid_for: timedelta, mode: int = 0o600
) -> Path:
    data = {
        "token": token,
        "refresh_token": "1//refresh-token-never-printed",
        "token_uri": "http://127.0.0.1:9/token",
        "client_id": "1-fake.apps.googleusercontent.com",
        "client_secret": "GOCSPX-never-printed",
        "scopes": ["https://mail.google.com/"],
        "expiry": format_expiry(datetime.now(UTC) + valid_for),
    }
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        fake.add_user(USER)
        yield fake


# --- parsing ---


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: gmail-xoauth2" in capsys.readouterr().err


def test_unknown_mechanism_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(
        ["string", "--token-file", "t.json", "--user", USER, "--mechanism", "PLAIN"]
    )
    assert status == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["fake-gmail", "--port-base", "70000"])
    assert status == 2
    assert "70000 is not between 0 and 65535" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import gmail_xoauth2

    assert cli.main(["--version"]) == 0
    assert (
        capsys.readouterr().out.strip() == f"gmail-xoauth2 {gmail_xoauth2.__version__}"
    )


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("authorize", "token", "string", "check", "revoke", "fake-gmail"):
        assert command in out
    assert "demo" in out


# --- token and string ---


def test_token_prints_a_cached_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    assert cli.main(["token", "--token-file", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == SECRET_TOKEN + "\n"
    assert captured.err == ""


def test_string_prints_the_xoauth2_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    assert cli.main(["string", "--token-file", str(path), "--user", USER]) == 0
    out = capsys.readouterr().out
    assert base64.b64decode(out.strip()) == (
        f"user={USER}\x01auth=Bearer {SECRET_TOKEN}\x01\x01".encode()
    )


def test_string_prints_the_oauthbearer_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    argv = ["string", "--token-file", str(path), "--user", USER]
    assert cli.main([*argv, "--mechanism", "oauthbearer"]) == 0
    out = capsys.readouterr().out
    assert base64.b64decode(out.strip()) == (
        f"n,a={USER},\x01auth=Bearer {SECRET_TOKEN}\x01\x01".encode()
    )


def test_missing_token_file_says_to_authorize(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.json"
    assert cli.main(["token", "--token-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gmail-xoauth2: error: ")
    assert str(path) in captured.err
    assert "gmail-xoauth2 authorize" in captured.err
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1


def test_group_readable_token_file_gets_the_chmod_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(
        tmp_path / "t.json", valid_for=timedelta(minutes=30), mode=0o640
    )
    assert cli.main(["token", "--token-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"chmod 600 {path}" in captured.err
    assert SECRET_TOKEN not in captured.err
    assert "Traceback" not in captured.err


def test_corrupt_token_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"token": "ya29.half-written')
    path.chmod(0o600)
    assert cli.main(["token", "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err
    assert "ya29" not in err


FAST_PATH_PROBE = """
import sys
from gmail_xoauth2.cli import main
status = main(["token", "--token-file", sys.argv[1]])
heavy = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"google", "requests", "urllib3", "ssl", "imaplib",
                              "smtplib", "poplib", "http", "email"}
    or name in {"gmail_xoauth2.auth", "gmail_xoauth2.imap", "gmail_xoauth2.pop",
                "gmail_xoauth2.smtp", "gmail_xoauth2.testing"}
)
print("HEAVY", heavy, file=sys.stderr)
sys.exit(status)
"""


def test_token_fast_path_imports_nothing_heavy(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    result = subprocess.run(
        [sys.executable, "-c", FAST_PATH_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECRET_TOKEN + "\n"
    assert "HEAVY []" in result.stderr


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    result = subprocess.run(
        [sys.executable, "-m", "gmail_xoauth2", "token", "--token-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, SECRET_TOKEN + "\n")


# --- revoke ---


def test_revoke_uri_sits_beside_the_token_uri() -> None:
    assert cli.revoke_uri_for("https://oauth2.googleapis.com/token") == (
        "https://oauth2.googleapis.com/revoke"
    )
    assert cli.revoke_uri_for("http://127.0.0.1:8080/token") == (
        "http://127.0.0.1:8080/revoke"
    )
    assert cli.revoke_uri_for(None) == "https://oauth2.googleapis.com/revoke"


def test_revoke_revokes_at_google_and_deletes_the_file(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER)
    access = json.loads(path.read_text())["token"]
    assert google.lookup(access) is not None
    assert cli.main(["revoke", "--token-file", str(path)]) == 0
    assert google.lookup(access) is None
    assert not path.exists()
    assert google.request_count("/revoke") == 1
    out = capsys.readouterr().out
    assert out == f"Revoked the token and deleted {path}.\n"


def test_revoke_keeps_the_file_when_google_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=30))
    assert cli.main(["revoke", "--token-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "the token file was kept" in err
    assert "never-printed" not in err
    assert path.exists()


def test_revoke_of_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["revoke", "--token-file", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_token_file_is_never_echoed_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(
        tmp_path / "t.json", valid_for=timedelta(minutes=30), mode=0o604
    )
    for argv in (
        ["token", "--token-file", str(path)],
        ["string", "--token-file", str(path), "--user", USER],
        ["revoke", "--token-file", str(path)],
    ):
        assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for secret in (SECRET_TOKEN, "never-printed"):
        assert secret not in captured.err
    assert os.stat(path).st_mode & 0o777 == 0o604


# --- refresh, revoked tokens, authorize ---


def test_token_refreshes_an_expired_file_and_saves_it(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER, expired=True)
    old = json.loads(path.read_text())["token"]
    assert cli.main(["token", "--token-file", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed != old
    assert google.lookup(printed) is not None
    assert json.loads(path.read_text())["token"] == printed
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert google.request_count("/token", grant_type="refresh_token") == 1
    # The next call is served from the file.
    assert cli.main(["token", "--token-file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == printed
    assert google.request_count("/token", grant_type="refresh_token") == 1


def test_token_force_refresh_replaces_a_token_that_looks_valid(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file says the token is good for an hour, but a server rejected it.
    path = google.write_authorized_user_file(tmp_path / "t.json", USER)
    old = json.loads(path.read_text())["token"]
    assert cli.main(["token", "--token-file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == old  # the fast path: no refresh
    assert google.request_count("/token", grant_type="refresh_token") == 0
    assert cli.main(["token", "--token-file", str(path), "--force-refresh"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed != old
    assert google.lookup(printed) is not None
    assert json.loads(path.read_text())["token"] == printed
    assert google.request_count("/token", grant_type="refresh_token") == 1
    # The next call is served from the file again.
    assert cli.main(["token", "--token-file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == printed
    assert google.request_count("/token", grant_type="refresh_token") == 1


def test_token_force_refresh_of_a_revoked_grant_says_to_authorize(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER)
    google.revoke(USER)
    assert cli.main(["token", "--token-file", str(path), "--force-refresh"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "gmail-xoauth2 authorize" in captured.err
    assert captured.err.count("\n") == 1


def test_token_file_under_a_literal_tilde_is_refreshed_in_place(
    google: FakeGoogle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Mail programs pass the argument unexpanded ("~/..." in a config file).
    monkeypatch.setenv("HOME", str(tmp_path))
    path = google.write_authorized_user_file(tmp_path / "t.json", USER, expired=True)
    assert cli.main(["token", "--token-file", "~/t.json"]) == 0
    printed = capsys.readouterr().out.strip()
    assert google.lookup(printed) is not None
    assert json.loads(path.read_text())["token"] == printed


def test_revoked_refresh_token_says_to_authorize_again(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER, expired=True)
    google.revoke(USER)
    assert cli.main(["token", "--token-file", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid_grant" in captured.err
    assert "7 days" in captured.err
    assert "gmail-xoauth2 authorize" in captured.err
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1


def test_unreachable_token_endpoint_is_one_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(
        _cli_tokens,
        "_token_backoff",
        lambda: Backoff(base=0.5, cap=2.0, attempts=3, sleep=slept.append),
    )
    path = write_token_file(tmp_path / "t.json", valid_for=timedelta(minutes=-5))
    assert cli.main(["token", "--token-file", str(path)]) == 1
    assert len(slept) == 3  # retried with backoff, then gave up
    err = capsys.readouterr().err
    assert err.startswith("gmail-xoauth2: error: ")
    assert err.count("\n") == 1
    assert "never-printed" not in err and SECRET_TOKEN not in err


def test_authorize_runs_the_loopback_flow(
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import webbrowser

    import requests

    visited: list[str] = []

    def browser(url: str, *args: object, **kwargs: object) -> bool:
        visited.append(url)
        requests.get(url, timeout=10).close()  # consents and follows the redirect
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    secrets = google.write_client_secrets_file(tmp_path / "client.json")
    token_file = tmp_path / "sub" / "t.json"
    argv = ["authorize", "--client-secrets", str(secrets), "--token-file"]
    assert cli.main([*argv, str(token_file), "--user", USER]) == 0
    assert len(visited) == 1
    assert google.auth_requests()[0]["login_hint"] == USER
    assert os.stat(token_file).st_mode & 0o777 == 0o600
    data = json.loads(token_file.read_text())
    assert google.lookup(data["token"]).email == USER  # type: ignore[union-attr]
    out = capsys.readouterr().out
    assert out.startswith(f"Saved {token_file} (mode 0600).")
    assert data["token"] not in out and data["refresh_token"] not in out


def test_authorize_without_client_secrets_says_where_to_get_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["authorize", "--client-secrets", str(tmp_path / "nope.json")]
    assert cli.main([*argv, "--token-file", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Google Cloud console" in err


# --- check ---


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(USER, "bob@example.com")) as fake:
        yield fake


def check_argv(gmail: FakeGmail, token_file: Path, *extra: str) -> list[str]:
    return [
        "check",
        "--token-file",
        str(token_file),
        "--host",
        gmail.host,
        "--imap-port",
        str(gmail.imap_port),
        "--pop-port",
        str(gmail.pop_port),
        "--smtp-port",
        str(gmail.smtp_port),
        "--cafile",
        gmail.ca_file,
        *extra,
    ]


def test_check_all_three_protocols(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    assert cli.main(check_argv(gmail, path, "--user", USER)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    # Gmail's greeting has no capabilities: CAPABILITY, then AUTHENTICATE with SASL-IR.
    assert lines[0].split()[:5] == ["imap", "ok", "XOAUTH2", "2", "round"]
    assert lines[0].endswith(f"{gmail.host}:{gmail.imap_port}")
    # One-line AUTH XOAUTH2 with the initial response.
    assert lines[1].split()[:5] == ["pop", "ok", "XOAUTH2", "1", "round"]
    # EHLO, then AUTH with the initial response.
    assert lines[2].split()[:5] == ["smtp", "ok", "XOAUTH2", "2", "round"]
    assert all(line.split()[7] == "ms" for line in lines)


def test_check_oauthbearer_over_starttls(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", USER, "--smtp", "--starttls")
    argv[argv.index("--smtp-port") + 1] = str(gmail.submission_port)
    assert cli.main([*argv, "--mechanism", "OAUTHBEARER"]) == 0
    assert capsys.readouterr().out.split()[:3] == ["smtp", "ok", "OAUTHBEARER"]


def api_rejection(gmail: FakeGmail, protocol: str, token: str, user: str) -> str:
    """What the library says when ``token`` is used to log in as ``user``."""
    from gmail_xoauth2 import IMAP4, POP3, SMTP, AuthenticationFailed
    from gmail_xoauth2._tokens import StaticTokenProvider

    cls, port = {
        "imap": (IMAP4, gmail.imap_port),
        "pop": (POP3, gmail.pop_port),
        "smtp": (SMTP, gmail.smtp_port),
    }[protocol]
    with pytest.raises(AuthenticationFailed) as info:
        cls(  # type: ignore[operator]
            user,
            StaticTokenProvider(token),
            gmail.host,
            port,
            ssl_context=gmail.ssl_context(),
        )
    return str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
def test_check_reports_a_rejection_as_the_api_does(
    gmail: FakeGmail,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    protocol: str,
) -> None:
    # Alice's token, presented as Bob: Gmail's error challenge, then the refusal.
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", "bob@example.com", f"--{protocol}")
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].split()[:3] == [protocol, "failed", "XOAUTH2"]
    token = json.loads(path.read_text())["token"]
    reason = out[1].strip()
    # The same words, but for the id of the SMTP session Gmail quotes.
    api = api_rejection(gmail, protocol, token, "bob@example.com")
    session = re.compile(r"fake\w+gmx")
    assert session.sub("ID", reason) == session.sub("ID", api)
    assert "(status 400, scope https://mail.google.com/)" in reason
    assert "the token was authorized for another account than bob@example.com" in (
        reason
    )
    assert token not in "\n".join(out)


def test_check_without_the_ca_reports_the_certificate(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", USER, "--smtp")
    del argv[argv.index("--cafile") : argv.index("--cafile") + 2]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["smtp", "failed", "XOAUTH2", "0"]
    assert "certificate" in out[1]


def test_check_refused_port(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", USER, "--pop")
    argv[argv.index("--pop-port") + 1] = "9"
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["pop", "failed"]
    assert out[1].strip().startswith("could not connect")
    assert out[1].endswith("; check the host and port")


def test_check_rejection_over_smtp_is_one_line(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Gmail's 535 reply spans two lines (535-5.7.8 ... / 535 5.7.8 ...); the reason
    # printed under the summary stays on one.
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", "bob@example.com", "--smtp")
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].split()[:3] == ["smtp", "failed", "XOAUTH2"]
    assert "Learn more at 5.7.8 https://support.google.com/mail/" in out[1]
    assert out[1].endswith("or log in as the account that authorized it")


def test_check_without_the_ca_says_to_pass_cafile(
    gmail: FakeGmail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", USER)
    del argv[argv.index("--cafile") : argv.index("--cafile") + 2]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    for reason in out[1::2]:
        assert "no token was sent" in reason
        assert reason.endswith("; pass --cafile PEM if the server uses a private CA")


@pytest.mark.parametrize(
    ("protocol", "wrong_port"),
    [("imap", "pop_port"), ("pop", "smtp_port"), ("smtp", "imap_port")],
)
def test_check_against_another_protocols_port_says_what_to_check(
    gmail: FakeGmail,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    protocol: str,
    wrong_port: str,
) -> None:
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", USER, f"--{protocol}")
    argv[argv.index(f"--{protocol}-port") + 1] = str(getattr(gmail, wrong_port))
    assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].split()[:2] == [protocol, "failed"]
    assert "run again" not in out[1]
    assert out[1].endswith("; check the host, the port and --starttls")


def test_check_prints_each_protocol_as_soon_as_it_is_known(
    gmail: FakeGmail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gmail_xoauth2 import _check

    class Recorder(io.StringIO):
        """Standard output that records what had been flushed at each login."""

        def __init__(self) -> None:
            super().__init__()
            self.flushed = ""
            self.seen_at_login: list[str] = []

        def flush(self) -> None:
            self.flushed = self.getvalue()

    out = Recorder()
    real = _check.check_login

    def check_login(protocol: str, *args: object, **kwargs: object) -> object:
        out.seen_at_login.append(out.flushed)
        return real(protocol, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_check, "check_login", check_login)
    monkeypatch.setattr(sys, "stdout", out)
    path = gmail.google.write_authorized_user_file(tmp_path / "t.json", USER)
    argv = check_argv(gmail, path, "--user", "bob@example.com", "--imap", "--pop")
    assert cli.main([*argv, "--smtp"]) == 1
    before_imap, before_pop, before_smtp = out.seen_at_login
    assert before_imap == ""
    # The IMAP lines (summary and reason) were out before POP's login began.
    assert [line.split()[0] for line in before_pop.splitlines()[::2]] == ["imap"]
    assert len(before_pop.splitlines()) == 2
    assert [line.split()[0] for line in before_smtp.splitlines()[::2]] == [
        "imap",
        "pop",
    ]
    assert out.flushed == out.getvalue()


def test_check_timeout_help_says_what_it_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--timeout SECONDS the longest any one network operation may take" in (
        help_text
    )
    assert "each wait for a server's reply" in help_text


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_check_timeout_must_be_a_positive_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", "--token-file", "t.json", "--user", USER, "--timeout", value]
    assert cli.main(argv) == 2
    assert "is not a positive number" in capsys.readouterr().err


def test_check_timeout_says_what_to_check() -> None:
    from gmail_xoauth2._check import check_advice
    from gmail_xoauth2.errors import Timeout

    exc = Timeout("127.0.0.1:993 did not answer within 30.0s")
    assert check_advice(exc, "127.0.0.1:993") == (
        "127.0.0.1:993 did not answer within 30.0s; check the host, the port "
        "and --starttls"
    )


# --- demo and fake-gmail ---


def test_demo_runs_the_tour(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == ""
    for expected in (
        "1. Started the fake Gmail: IMAP :",
        "2. Authorized alice@example.com on the consent page (PKCE)",
        "3. IMAP: logged in with XOAUTH2; INBOX has 2 messages",
        'message 1 says: "Everything here lives in memory, on 127.0.0.1."',
        '4. SMTP: sent "Sent by the demo" to alice@example.com',
        "5. Found it: IMAP SEARCH 1 match, POP message 3 of 3",
        "  S: * BYE Session expired, please login again.",
        "6. IMAP SEARCH ALL: 3 messages, no error seen",
        "behind the scenes: 1 reconnect, 1 token refresh, INBOX selected again",
        "Done in ",
    ):
        assert expected in out
    assert all(line.endswith(" ms") for line in out.splitlines() if line[:2] == "1.")
    for secret_prefix in ("ya29.", "1//", "GOCSPX-", "dXNlcj"):
        assert secret_prefix not in out


def read_until_ready(proc: subprocess.Popen[str]) -> dict[str, str]:
    assert proc.stdout is not None
    fields: dict[str, str] = {}
    for line in proc.stdout:
        if line.strip() == "Ready.":
            return fields
        name, _, value = line.strip().partition("  ")
        if value:
            fields.setdefault(name.strip(), value.strip().split("  ")[0])
    raise AssertionError("fake-gmail exited before it was ready")


def test_fake_gmail_serves_until_interrupted(tmp_path: Path) -> None:
    import signal

    with subprocess.Popen(
        [sys.executable, "-m", "gmail_xoauth2", "fake-gmail"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            fields = read_until_ready(proc)
            token_file = fields["token file"]
            assert os.stat(token_file).st_mode & 0o777 == 0o600
            argv = [
                "check",
                "--token-file",
                token_file,
                "--user",
                USER,
                "--host",
                fields["host"],
                "--imap-port",
                fields["IMAP"],
                "--pop-port",
                fields["POP3"],
                "--smtp-port",
                fields["SMTP"],
                "--cafile",
                fields["CA file"],
            ]
            assert cli.main(argv) == 0
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == "Stopped.\n"
    assert not os.path.exists(token_file)


def test_fake_gmail_port_base(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from _ports import free_port_base

    from gmail_xoauth2.testing._control import serve_fake_gmail

    base = free_port_base()
    stop = threading.Event()
    stop.set()  # print the banner, then return at once
    serve_fake_gmail(port_base=base, out=sys.stdout, stop=stop)
    out = capsys.readouterr().out
    assert "Ready." in out
    # The name the certificate covers for mbsync and offlineimap, not 127.0.0.1.
    assert "  host        localhost  (listening on 127.0.0.1 only)\n" in out
    assert f"imaps://localhost:{base}/INBOX" in out
    assert f"  control     http://127.0.0.1:{base + 4}/_control\n" in out
    assert (
        f"  export GMAIL_XOAUTH2_FAKE_CONTROL=http://127.0.0.1:{base + 4}/_control\n"
        in out
    )
    assert f"IMAP        {base}  " in out
    assert f"submission  {base + 3}  " in out


@pytest.mark.parametrize("base", ["0", "65532", "65535"])
def test_fake_gmail_port_base_out_of_range_is_a_usage_error(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fake-gmail", "--port-base", base]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "between 1 and 65531" in err


def test_fake_gmail_port_base_in_use_says_to_choose_another(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    from _ports import free_port_base

    base = free_port_base()
    with socket.socket() as busy:
        # As the fake's own listeners do: a port left in TIME_WAIT by an earlier
        # test must not make this bind fail.
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", base + 4))
        busy.listen()
        assert cli.main(["fake-gmail", "--port-base", str(base)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"gmail-xoauth2: error: a port from {base} to {base + 4} is already in use; "
        "choose another --port-base, or leave it out to use free ports\n"
    )
