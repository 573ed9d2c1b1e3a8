"""Run every script in examples/ against the fake Gmail, as a user would run it."""

from __future__ import annotations

import email
import email.message
import email.policy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gmail_xoauth2.testing.gmail import FakeGmail

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(ALICE, BOB)) as fake:
        yield fake


@pytest.fixture
def token_file(gmail: FakeGmail, tmp_path: Path) -> Path:
    return gmail.google.write_authorized_user_file(tmp_path / "token.json", ALICE)


def message(subject: str, sender: str = BOB, to: str = ALICE) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\n{subject} body\r\n"
    ).encode()


def imap_args(gmail: FakeGmail) -> list[str]:
    return [
        "--host",
        gmail.host,
        "--port",
        str(gmail.imap_port),
        "--cafile",
        gmail.ca_file,
    ]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_every_example_is_tested() -> None:
    tested = {
        "read_newest.py",
        "send_with_attachment.py",
        "watch_inbox.py",
        "watch_many_async.py",
        "archive_mailbox.py",
        "with_imapclient.py",
        "with_imap_tools.py",
        "download_attachments.py",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_read_newest(gmail: FakeGmail, token_file: Path) -> None:
    for subject in ("first", "second", "third"):
        gmail.deliver(ALICE, message(subject))
    result = run(
        "read_newest.py",
        "--token-file",
        str(token_file),
        "--user",
        ALICE,
        "--count",
        "2",
        *imap_args(gmail),
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "INBOX: 3 messages"
    assert [line.rsplit("  ", 1)[-1] for line in lines[1:]] == ["third", "second"]
    assert BOB in lines[1]


def test_send_with_attachment(
    gmail: FakeGmail, token_file: Path, tmp_path: Path
) -> None:
    attachment = tmp_path / "report.pdf"
    attachment.write_bytes(b"%PDF-1.4 not really\x00\xff")
    result = run(
        "send_with_attachment.py",
        "--token-file",
        str(token_file),
        "--user",
        ALICE,
        "--to",
        BOB,
        "--subject",
        "The report",
        "--attach",
        str(attachment),
        "--host",
        gmail.host,
        "--port",
        str(gmail.smtp_port),
        "--cafile",
        gmail.ca_file,
    )
    assert result.stdout == f"Sent 'The report' to {BOB} (report.pdf)\n"
    [raw] = gmail.messages(BOB)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "The report"
    [part] = list(msg.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_filename() == "report.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == attachment.read_bytes()


def test_send_with_attachment_over_starttls(gmail: FakeGmail, token_file: Path) -> None:
    run(
        "send_with_attachment.py",
        "--token-file",
        str(token_file),
        "--user",
        ALICE,
        "--to",
        BOB,
        "--host",
        gmail.host,
        "--port",
        str(gmail.submission_port),
        "--starttls",
        "--cafile",
        gmail.ca_file,
    )
    assert len(gmail.messages(BOB)) == 1


def test_watch_inbox_survives_a_session_end(gmail: FakeGmail, token_file: Path) -> None:
    gmail.deliver(ALICE, message("old news"))
    argv = [sys.executable, str(EXAMPLES / "watch_inbox.py")]
    argv += ["--token-file", str(token_file), "--user", ALICE, "--max-messages", "2"]
    with subprocess.Popen(
        [*argv, *imap_args(gmail)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == f"Watching the INBOX of {ALICE}\n"
        gmail.deliver(ALICE, message("first new"))
        assert proc.stdout.readline() == f"new message 2: {BOB} - first new\n"
        # Gmail ends the session (as when the token expires); the watcher goes on.
        assert gmail.end_sessions(ALICE, "imap") >= 1
        gmail.deliver(ALICE, message("second new"))
        assert proc.stdout.readline() == f"new message 3: {BOB} - second new\n"
        assert proc.stdout.readline() == "Stopped after 2 new message(s).\n"
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, stderr
    assert gmail.connection_count("imap") >= 2


def test_watch_many_async_reports_each_message_once_across_session_ends(
    gmail: FakeGmail, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    for user in (ALICE, BOB):
        gmail.google.write_authorized_user_file(tokens / f"{user}.json", user)
    gmail.deliver(ALICE, message("old news"))
    client = gmail.google.write_client_secrets_file(tmp_path / "client.json")
    argv = [sys.executable, str(EXAMPLES / "watch_many_async.py"), ALICE, BOB]
    argv += ["--tokens", str(tokens), "--client", str(client)]
    argv += ["--handshakes", "1", "--max-messages", "3", *imap_args(gmail)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "Watching 2 accounts\n"
        gmail.deliver(BOB, message("to bob", sender=ALICE, to=BOB))
        assert proc.stdout.readline() == f"{BOB}: new message 1: {ALICE} - to bob\n"
        # Gmail ends both sessions; each watch reconnects and goes on.
        assert gmail.end_sessions(ALICE, "imap") >= 1
        assert gmail.end_sessions(BOB, "imap") >= 1
        gmail.deliver(ALICE, message("to alice"))
        assert proc.stdout.readline() == f"{ALICE}: new message 2: {BOB} - to alice\n"
        gmail.deliver(BOB, message("again", sender=ALICE, to=BOB))
        assert proc.stdout.readline() == f"{BOB}: new message 2: {ALICE} - again\n"
        assert proc.stdout.readline() == "Stopped after 3 new message(s).\n"
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, stderr
    assert gmail.connection_count("imap") >= 4


def test_archive_mailbox_with_a_service_account(
    gmail: FakeGmail, tmp_path: Path
) -> None:
    key = gmail.google.write_service_account_file(tmp_path / "sa.json")
    for subject in ("one", "two"):
        gmail.deliver(ALICE, message(subject))
    out = tmp_path / "archive"
    argv = ["--service-account", str(key), "--user", ALICE, "--out", str(out)]
    argv += ["--mailbox", "INBOX", *imap_args(gmail)]
    first = run("archive_mailbox.py", *argv)
    assert first.stdout == f"INBOX: 2 new, 2 in all, under {out}\n"
    [folder] = out.iterdir()
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["0000000001.eml", "0000000002.eml"]
    assert files[0].read_bytes() == gmail.messages(ALICE)[0]
    gmail.deliver(ALICE, message("three"))
    second = run("archive_mailbox.py", *argv)
    assert second.stdout == f"INBOX: 1 new, 3 in all, under {out}\n"
    assert gmail.google.request_count("/token", grant_type=JWT_BEARER) == 2


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_with_imapclient(gmail: FakeGmail, token_file: Path) -> None:
    gmail.deliver(ALICE, message("unseen one"))
    argv = ["--token-file", str(token_file), "--user", ALICE, *imap_args(gmail)]
    result = run("with_imapclient.py", *argv)
    assert result.stdout == "1 unseen one\n"


def test_with_imap_tools(gmail: FakeGmail, token_file: Path) -> None:
    for subject in ("older", "newer"):
        gmail.deliver(ALICE, message(subject))
    argv = ["--token-file", str(token_file), "--user", ALICE, *imap_args(gmail)]
    lines = run("with_imap_tools.py", *argv).stdout.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["newer", "older"]
    assert all(BOB in line for line in lines)


def test_download_attachments(
    gmail: FakeGmail, token_file: Path, tmp_path: Path
) -> None:
    invoice = email.message.EmailMessage()
    invoice["From"], invoice["To"], invoice["Subject"] = BOB, ALICE, "Facture réglée"
    invoice.set_content("attached")
    invoice.add_attachment(b"%PDF-1.4\x00", "application", "pdf", filename="f.pdf")
    invoice.add_attachment("a,b\n", filename="../../données.csv")
    gmail.deliver(ALICE, message("no attachment"))
    gmail.deliver(ALICE, bytes(invoice))
    out = tmp_path / "out"
    argv = ["--token-file", str(token_file), "--user", ALICE, "--out", str(out)]
    query = "has:attachment subject:réglée"
    result = run("download_attachments.py", *argv, "--query", query, *imap_args(gmail))
    assert result.stdout.splitlines() == [f"{out}/2-f.pdf", f"{out}/2-données.csv"]
    assert (out / "2-f.pdf").read_bytes() == b"%PDF-1.4\x00"
    assert (out / "2-données.csv").read_text() == "a,b\n"
