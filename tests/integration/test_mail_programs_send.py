"""neomutt, git send-email (through msmtp) and curl do their job as their recipe shows.

Each configuration is the recipe page's own code block (see ``_recipes``) with
only the user, host, port, CA file and recipient substituted; the token file
sits where the recipe says, under a private HOME, so no user configuration is
read. The recipe's ``gmail-xoauth2 token`` runs as written, found first on PATH
as a wrapper that records the wall time of each call.

Each program runs twice against the fake Gmail: once as is, once after the
hour has passed (the fake expires the token and the token file says so too),
when the token command must refresh. Then, with the grant revoked, the program
fails with the message its recipe quotes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gmail_xoauth2.testing.gmail import FakeGmail

from ._recipes import RECIPES, code_block
from .conftest import REQUIRE_ENV

USER = "alice@example.com"
FRIEND = "bob@example.com"
TIMEOUT = 30


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (sudo scripts/install-test-deps.sh)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@dataclass
class Home:
    """A private HOME: the recipe's token file, PATH with the timing wrapper."""

    path: Path
    env: dict[str, str]
    token_file: Path
    timings: Path

    def run(
        self, argv: list[str], *, stdin: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            cwd=cwd or self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def token_calls(self) -> list[float]:
        """Wall time of each ``gmail-xoauth2 token`` call so far, in milliseconds."""
        if not self.timings.exists():
            return []
        calls = []
        for line in self.timings.read_text().splitlines():
            start, end = line.split()[:2]
            calls.append((int(end) - int(start)) / 1e6)
        return calls

    def cached_token(self) -> str:
        token: str = json.loads(self.token_file.read_text())["token"]
        return token


def make_home(tmp_path: Path, token_file_name: str) -> Home:
    home = tmp_path / "home"
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    timings = tmp_path / "token-calls"
    # The recipe's bare `gmail-xoauth2` finds this first; it times the real one.
    script = wrapper / "gmail-xoauth2"
    script.write_text(
        "#!/bin/sh\n"
        "start=$(date +%s%N)\n"
        f'{shlex.quote(sys.executable)} -m gmail_xoauth2 "$@"\n'
        "status=$?\n"
        f'echo "$start $(date +%s%N) $status" >> {shlex.quote(str(timings))}\n'
        'exit "$status"\n'
    )
    script.chmod(0o755)
    token_file = home / token_file_name
    token_file.parent.mkdir(parents=True)
    env = {
        "HOME": str(home),
        "PATH": f"{wrapper}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "TERM": "dumb",  # git send-email's Perl dies differently without one
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "A U Thor",
        "GIT_AUTHOR_EMAIL": USER,
        "GIT_COMMITTER_NAME": "A U Thor",
        "GIT_COMMITTER_EMAIL": USER,
    }
    return Home(home, env, token_file, timings)


def let_the_hour_pass(gmail: FakeGmail, home: Home) -> str:
    """Expire the token at the fake and in the token file; return the old token."""
    old = home.cached_token()
    gmail.expire_tokens(USER)
    data = json.loads(home.token_file.read_text())
    past = datetime.now(UTC) - timedelta(seconds=1)
    data["expiry"] = past.replace(tzinfo=None).isoformat() + "Z"
    home.token_file.write_text(json.dumps(data))
    return old


def recipe_says(page: str, text: str) -> None:
    """The recipe quotes ``text`` (the program's own words) verbatim."""
    flat = " ".join((RECIPES / f"{page}.rst").read_text().split())
    assert " ".join(text.split()) in flat, f"{page}.rst does not quote {text!r}"


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(USER, FRIEND)) as fake:
        yield fake


def report(
    record_property: pytest.RecordProperty, program: str, home: Home, runs: int
) -> None:
    calls = [f"{ms:.0f}" for ms in home.token_calls()]
    record_property("token_call_ms", ",".join(calls))
    print(f"\n{program}: {runs} runs, gmail-xoauth2 token calls (ms): {calls}")


# --- neomutt ---


def neomutt_home(gmail: FakeGmail, tmp_path: Path) -> Home:
    block = code_block("neomutt", "text", "smtp_oauth_refresh_command")
    home = make_home(tmp_path, f".config/gmail-xoauth2/{USER}.json")
    gmail.google.write_authorized_user_file(home.token_file, USER)
    muttrc = home.path / ".config" / "neomutt" / "neomuttrc"
    muttrc.parent.mkdir(parents=True)
    text = block.substitute(
        {
            "you@gmail.com": USER,
            "imap.gmail.com:993": f"localhost:{gmail.imap_port}",
            "smtp.gmail.com:465": f"localhost:{gmail.smtp_port}",
        }
    )
    # GnuTLS's CA setting: the only line not in the recipe.
    muttrc.write_text(text + f'set ssl_ca_certificates_file = "{gmail.ca_file}"\n')
    return home


def neomutt_send(home: Home, subject: str) -> subprocess.CompletedProcess[str]:
    """The recipe's batch-mode command; neomutt reads ~/.config/neomutt/neomuttrc."""
    need("neomutt")
    command = code_block("neomutt", "sh", "neomutt -s").substitute(
        {"'test'": shlex.quote(subject), "friend@example.org": FRIEND}
    )
    return home.run(["sh", "-c", command])


def test_neomutt_sends_and_refreshes_after_the_hour(
    gmail: FakeGmail, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    home = neomutt_home(gmail, tmp_path)
    for run, subject in enumerate(["neomutt first", "neomutt after expiry"]):
        if run:
            old = let_the_hour_pass(gmail, home)
        result = neomutt_send(home, subject)
        assert result.returncode == 0, result.stderr
        delivered = gmail.messages(FRIEND)[-1]
        assert f"Subject: {subject}".encode() in delivered
        assert (
            f"Subject: {subject}".encode()
            in gmail.messages(USER, "[Gmail]/Sent Mail")[-1]
        )
    assert home.cached_token() != old
    # Batch mode skips the IMAP Fcc; Gmail files its own copy (asserted above).
    recipe_says("neomutt", "Fcc to an IMAP mailbox is not supported in batch mode")
    assert "Fcc to an IMAP mailbox is not supported in batch mode" in result.stderr
    report(record_property, "neomutt", home, 2)


def test_neomutt_says_why_a_revoked_token_is_refused(
    gmail: FakeGmail, tmp_path: Path
) -> None:
    home = neomutt_home(gmail, tmp_path)
    gmail.revoke(USER)
    result = neomutt_send(home, "never sent")
    assert result.returncode == 1
    assert gmail.messages(FRIEND) == []
    output = result.stdout + result.stderr
    for words in [
        "SMTP session failed: 334 eyJzdGF0dXMiOiI0MDAi",
        "SMTP session failed: 535 5.7.8  https://support.google.com/mail/?p=BadCredentials",
        "No authenticators available",
        "Could not send the message",
    ]:
        assert words in output
        recipe_says("neomutt", words)


# --- git send-email, through msmtp ---


def git_home(gmail: FakeGmail, tmp_path: Path) -> tuple[Home, Path]:
    """~/.msmtprc from the msmtp recipe, ~/.gitconfig from git's, a repo."""
    home = make_home(tmp_path, f".config/gmail-xoauth2/{USER}.json")
    gmail.google.write_authorized_user_file(home.token_file, USER)
    msmtprc = home.path / ".msmtprc"
    msmtprc.write_text(
        code_block("msmtp", "text", "passwordeval").substitute(
            {
                "you@gmail.com": USER,
                "/etc/ssl/certs/ca-certificates.crt": gmail.ca_file,
                "host smtp.gmail.com": "host localhost",
                "port 465": f"port {gmail.smtp_port}",
            }
        )
    )
    msmtprc.chmod(0o600)
    gitconfig = code_block("git-send-email", "ini", "sendmailCmd")
    (home.path / ".gitconfig").write_text(gitconfig.substitute({"you@gmail.com": USER}))
    repo = home.path / "repo"
    repo.mkdir()
    git = need("git")
    for argv in (
        ["init", "-q"],
        ["add", "README"],
        ["commit", "-q", "-m", "Add a README"],
    ):
        if argv[0] == "add":
            (repo / "README").write_text("Sent with git send-email.\n")
        done = home.run([git, *argv], cwd=repo)
        assert done.returncode == 0, done.stderr
    return home, repo


def git_send_email(home: Home, repo: Path) -> subprocess.CompletedProcess[str]:
    """The recipe's command, on the patch `git format-patch -1` makes."""
    patch = home.run([need("git"), "format-patch", "-1"], cwd=repo)
    assert patch.returncode == 0, patch.stderr
    command = code_block("git-send-email", "sh", "git send-email").substitute(
        {"list@example.org": FRIEND, " -1": " " + patch.stdout.strip()}
    )
    need("msmtp")
    return home.run(["sh", "-c", command], cwd=repo)


def test_git_send_email_sends_through_msmtp_and_refreshes_after_the_hour(
    gmail: FakeGmail, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    home, repo = git_home(gmail, tmp_path)
    for run in range(2):
        if run:
            old = let_the_hour_pass(gmail, home)
        result = git_send_email(home, repo)
        assert result.returncode == 0, result.stderr
        assert "Result: OK" in result.stdout
        delivered = gmail.messages(FRIEND)[-1]
        assert b"Subject: [PATCH] Add a README" in delivered
        assert b"X-Mailer: git-send-email" in delivered
        assert b"+Sent with git send-email." in delivered
    assert len(gmail.messages(FRIEND)) == 2
    assert home.cached_token() != old
    report(record_property, "git send-email", home, 2)


def test_git_send_email_says_why_a_revoked_token_is_refused(
    gmail: FakeGmail, tmp_path: Path
) -> None:
    home, repo = git_home(gmail, tmp_path)
    gmail.revoke(USER)
    result = git_send_email(home, repo)
    assert result.returncode != 0
    assert gmail.messages(FRIEND) == []
    for words in [
        "msmtp: authentication failed (method OAUTHBEARER)",
        "msmtp: server message: 535-5.7.8 Username and Password not accepted.",
        "msmtp: could not send mail (account gmail from",
        "Died at /usr/lib/git-core/git-send-email line",
    ]:
        assert words in result.stderr
        recipe_says("git-send-email", words)
        if words.startswith("msmtp"):
            recipe_says("msmtp", words)


# --- curl ---


def curl_home(gmail: FakeGmail, tmp_path: Path) -> Home:
    home = make_home(tmp_path, "token.json")  # the recipe's relative token.json
    gmail.google.write_authorized_user_file(home.token_file, USER)
    home.env["CURL_CA_BUNDLE"] = gmail.ca_file
    (home.path / "message.eml").write_text(
        f"From: {USER}\r\nTo: {FRIEND}\r\nSubject: sent by curl\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nhello\r\n"
    )
    return home


def curl_recipe(gmail: FakeGmail, job: str) -> str:
    """The recipe's token line and search, then the block holding ``job``."""
    user = {"you@gmail.com": USER}
    imap = {**user, "imap.gmail.com": f"localhost:{gmail.imap_port}"}
    search = code_block("curl", "sh", "INBOX?UNSEEN").substitute(imap)
    if job == "INBOX?UNSEEN":
        return search
    if job == "smtps://":
        smtp = {**user, "friend@example.org": FRIEND}
        smtp["smtp.gmail.com:465"] = f"localhost:{gmail.smtp_port}"
        return search + code_block("curl", "sh", job).substitute(smtp)
    return search + code_block("curl", "sh", job).substitute(imap)


def test_curl_searches_fetches_sends_and_refreshes_after_the_hour(
    gmail: FakeGmail, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    need("curl")
    home = curl_home(gmail, tmp_path)
    for run in range(2):
        if run:
            old = let_the_hour_pass(gmail, home)
        new = f"From: {FRIEND}\r\nSubject: for curl\r\n\r\nhi\r\n".encode()
        uid = gmail.deliver(USER, new)
        search = home.run(["sh", "-ec", curl_recipe(gmail, "INBOX?UNSEEN")])
        assert search.returncode == 0, search.stderr
        # Only the new message: fetching message 1 in the first run marked it read.
        assert search.stdout.splitlines() == [f"* SEARCH {uid}"]
        fetched = home.run(["sh", "-ec", curl_recipe(gmail, "INBOX;MAILINDEX=1")])
        assert fetched.returncode == 0, fetched.stderr
        assert "Subject: for curl" in fetched.stdout
        sent = home.run(["sh", "-ec", curl_recipe(gmail, "smtps://")])
        assert sent.returncode == 0, sent.stderr
        assert b"Subject: sent by curl" in gmail.messages(FRIEND)[-1]
    assert len(gmail.messages(FRIEND)) == 2
    assert home.cached_token() != old
    report(record_property, "curl", home, 6)


def test_curl_new_finds_nothing_on_gmail(gmail: FakeGmail, tmp_path: Path) -> None:
    need("curl")
    home = curl_home(gmail, tmp_path)
    gmail.deliver(USER, f"From: {FRIEND}\r\nSubject: unread\r\n\r\nhi\r\n".encode())
    command = curl_recipe(gmail, "INBOX?UNSEEN").replace("?UNSEEN", "?NEW")
    search = home.run(["sh", "-ec", command])
    assert search.returncode == 0, search.stderr
    assert search.stdout.splitlines() == ["* SEARCH"]  # Gmail never sets \Recent


def test_curl_says_why_a_revoked_token_is_refused(
    gmail: FakeGmail, tmp_path: Path
) -> None:
    need("curl")
    home = curl_home(gmail, tmp_path)
    gmail.revoke(USER)
    for job in ("INBOX?UNSEEN", "smtps://"):
        result = home.run(["sh", "-ec", curl_recipe(gmail, job)])
        assert result.returncode == 67  # CURLE_LOGIN_DENIED
        assert result.stderr.splitlines()[-1] == "curl: (67) Login denied"
    recipe_says("curl", "curl: (67) Login denied")
    assert gmail.messages(FRIEND) == []
