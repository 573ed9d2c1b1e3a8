"""Real mail programs (curl, msmtp) log in with the token ``gmail-xoauth2`` prints.

Against the private Dovecot (an independent server) and against the fake Gmail.
The token always comes from the command itself, run as a mail program runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gmail_xoauth2.testing.gmail import FakeGmail

from .conftest import REQUIRE_ENV, MailServer

MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# The command as a mail program's password command would run it.
TOKEN_COMMAND = [sys.executable, "-m", "gmail_xoauth2", "token", "--token-file"]


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (sudo scripts/install-test-deps.sh)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def printed_token(token_file: Path) -> str:
    result = subprocess.run(
        [*TOKEN_COMMAND, str(token_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("curl"), "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def message(sender: str, to: str, subject: str) -> str:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nSent by a real client.\r\n"
    )


def msmtp(config: Path, recipient: str, body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("msmtp"), "-C", str(config), "-a", "test", recipient],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def msmtp_config(
    tmp_path: Path,
    *,
    host: str,
    port: int,
    starttls: bool,
    ca_file: str | Path,
    user: str,
    auth: str,
    token_file: Path,
) -> Path:
    command = " ".join(f"'{part}'" for part in [*TOKEN_COMMAND, str(token_file)])
    config = tmp_path / "msmtprc"
    config.write_text(
        "\n".join(
            [
                "account test",
                f"host {host}",
                f"port {port}",
                "tls on",
                f"tls_starttls {'on' if starttls else 'off'}",
                f"tls_trust_file {ca_file}",
                f"auth {auth}",
                f"user {user}",
                f"from {user}",
                f'passwordeval "{command}"',
                f"logfile {tmp_path / 'msmtp.log'}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    return config


# --- against Dovecot ---


@pytest.fixture
def token_file(mail_server: MailServer, user: str, tmp_path: Path) -> Path:
    return mail_server.google.write_authorized_user_file(tmp_path / "t.json", user)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_curl_imap_lists_mailboxes(
    mail_server: MailServer, user: str, token_file: Path, mechanism: str
) -> None:
    token = printed_token(token_file)
    result = curl(
        "--cacert",
        str(mail_server.ca_file),
        "--user",
        user,
        "--oauth2-bearer",
        token,
        "--login-options",
        f"AUTH={mechanism}",
        f"imaps://{mail_server.host}:{mail_server.ports.imaps}/",
    )
    assert result.returncode == 0, result.stderr
    assert "INBOX" in result.stdout


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_curl_smtp_sends_and_curl_imap_reads_it(
    mail_server: MailServer,
    user: str,
    token_file: Path,
    mechanism: str,
    tmp_path: Path,
) -> None:
    token = printed_token(token_file)
    eml = tmp_path / "message.eml"
    eml.write_text(message(user, user, f"curl {mechanism}"))
    common = ["--cacert", str(mail_server.ca_file), "--user", user]
    common += ["--oauth2-bearer", token, "--login-options", f"AUTH={mechanism}"]
    sent = curl(
        *common,
        "--mail-from",
        user,
        "--mail-rcpt",
        user,
        "--upload-file",
        str(eml),
        f"smtps://{mail_server.host}:{mail_server.ports.submissions}",
    )
    assert sent.returncode == 0, sent.stderr
    [delivered] = mail_server.messages(user)
    assert f"Subject: curl {mechanism}".encode() in delivered
    fetched = curl(
        *common, f"imaps://{mail_server.host}:{mail_server.ports.imaps}/INBOX;UID=1"
    )
    assert fetched.returncode == 0, fetched.stderr
    assert f"Subject: curl {mechanism}" in fetched.stdout


def test_curl_is_refused_a_revoked_token(
    mail_server: MailServer, user: str, token_file: Path
) -> None:
    token = printed_token(token_file)
    mail_server.google.revoke(user)
    result = curl(
        "--cacert",
        str(mail_server.ca_file),
        "--user",
        user,
        "--oauth2-bearer",
        token,
        f"imaps://{mail_server.host}:{mail_server.ports.imaps}/",
    )
    assert result.returncode == 67  # CURLE_LOGIN_DENIED


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("starttls", [False, True], ids=["tls", "starttls"])
def test_msmtp_sends_with_passwordeval(
    mail_server: MailServer,
    user: str,
    token_file: Path,
    tmp_path: Path,
    auth: str,
    starttls: bool,
) -> None:
    config = msmtp_config(
        tmp_path,
        # 127.0.0.2: Dovecot enforces TLS before AUTH there (see the conftest).
        host=mail_server.starttls_host if starttls else mail_server.host,
        port=mail_server.ports.submission
        if starttls
        else mail_server.ports.submissions,
        starttls=starttls,
        ca_file=mail_server.ca_file,
        user=user,
        auth=auth,
        token_file=token_file,
    )
    subject = f"msmtp {auth} {'starttls' if starttls else 'tls'}"
    result = msmtp(config, user, message(user, user, subject))
    assert result.returncode == 0, result.stderr
    [delivered] = mail_server.messages(user)
    assert f"Subject: {subject}".encode() in delivered


def test_msmtp_reports_a_revoked_refresh_token(
    mail_server: MailServer, user: str, tmp_path: Path
) -> None:
    token_file = mail_server.google.write_authorized_user_file(
        tmp_path / "t.json", user, expired=True
    )
    mail_server.google.revoke(user)
    config = msmtp_config(
        tmp_path,
        host=mail_server.host,
        port=mail_server.ports.submissions,
        starttls=False,
        ca_file=mail_server.ca_file,
        user=user,
        auth="xoauth2",
        token_file=token_file,
    )
    result = msmtp(config, user, message(user, user, "never sent"))
    assert result.returncode != 0
    assert "gmail-xoauth2 authorize" in result.stderr
    assert mail_server.messages(user) == []


# --- against the fake Gmail ---


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=("alice@example.com", "bob@example.com")) as fake:
        yield fake


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_curl_against_the_fake_gmail(
    gmail: FakeGmail, tmp_path: Path, mechanism: str
) -> None:
    user = "alice@example.com"
    token = printed_token(
        gmail.google.write_authorized_user_file(tmp_path / "t.json", user)
    )
    eml = tmp_path / "message.eml"
    eml.write_text(message(user, "bob@example.com", f"curl {mechanism}"))
    common = ["--cacert", gmail.ca_file, "--user", user, "--oauth2-bearer", token]
    common += ["--login-options", f"AUTH={mechanism}"]
    sent = curl(
        *common,
        "--mail-from",
        user,
        "--mail-rcpt",
        "bob@example.com",
        "--upload-file",
        str(eml),
        f"smtps://{gmail.host}:{gmail.smtp_port}",
    )
    assert sent.returncode == 0, sent.stderr
    [delivered] = gmail.messages("bob@example.com")
    assert f"Subject: curl {mechanism}".encode() in delivered
    gmail.deliver(user, message("bob@example.com", user, "for curl").encode())
    listed = curl(*common, f"pop3s://{gmail.host}:{gmail.pop_port}/1")
    assert listed.returncode == 0, listed.stderr
    assert "Subject: for curl" in listed.stdout


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_msmtp_against_the_fake_gmail(
    gmail: FakeGmail, tmp_path: Path, auth: str
) -> None:
    user = "alice@example.com"
    token_file = gmail.google.write_authorized_user_file(tmp_path / "t.json", user)
    config = msmtp_config(
        tmp_path,
        host=gmail.host,
        port=gmail.submission_port,
        starttls=True,
        ca_file=gmail.ca_file,
        user=user,
        auth=auth,
        token_file=token_file,
    )
    result = msmtp(config, "bob@example.com", message(user, "bob@example.com", auth))
    assert result.returncode == 0, result.stderr
    [delivered] = gmail.messages("bob@example.com")
    assert f"Subject: {auth}".encode() in delivered
