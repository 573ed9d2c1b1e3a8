"""mbsync, offlineimap3 and getmail6 fetch mail as their recipes configure them.

Each configuration is the recipe page's own code block, with only the user,
host, port, CA file, token file and Maildir substituted (see ``_recipes``). The
recipe's ``gmail-xoauth2 token`` runs as written, found on PATH through a
wrapper that times each call. After a first fetch an hour passes (the fake
Google expires the access tokens and the token file's expiry is behind us),
new mail arrives, and the next fetch must get it with a refreshed token.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gmail_xoauth2.testing.gmail import FakeGmail

from ._recipes import code_block
from .conftest import REQUIRE_ENV, MailServer

USER = "alice@example.com"
RUN_TIMEOUT = 30  # seconds, per program run
# The unprivileged user of the Dovecot tests (scripts/install-test-deps.sh).
MAIL_USER = "gx2-testmail"
VENV_BIN = Path(sys.executable).parent


def python_for(owner: pwd.struct_passwd) -> tuple[str, dict[str, str]]:
    """A Python that ``owner`` may run with this venv's packages, and its env.

    The venv's own interpreter when every directory up to it is open to
    others (CI); else the system Python of the same version, pointed at the
    venv's packages (a venv made from a Python under /root, say).
    """
    real = Path(os.path.realpath(sys.executable))
    if owner.pw_uid == os.getuid() or all(
        p.stat().st_mode & 0o001 for p in (real, *real.parents)
    ):
        return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None:
        need(version)
    source = Path(__file__).resolve().parents[2] / "src"
    packages = sysconfig.get_paths()["purelib"]
    return str(system), {"PYTHONPATH": f"{source}{os.pathsep}{packages}"}


def need(program: str) -> str:
    path = shutil.which(program, path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    if path is None:
        message = f"{program} is not installed (sudo scripts/install-test-deps.sh)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def message(subject: str) -> bytes:
    return (
        f"From: bob@example.com\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nFor a mail program.\r\n"
    ).encode()


@dataclass
class Home:
    """A private home for one program run: token file, configs, Maildir, timings.

    Owned by ``owner`` (root, or the unprivileged user for programs that refuse
    root) and readable by no one else.
    """

    path: Path
    token_file: Path
    maildir: Path
    owner: pwd.struct_passwd
    python: str
    python_env: dict[str, str]
    _timings: Path

    def chown(self, path: Path) -> Path:
        os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        return path

    def write(self, name: str, text: str) -> Path:
        path = self.path / name
        path.write_text(text)
        path.chmod(0o600)
        return self.chown(path)

    def env(self) -> dict[str, str]:
        # The recipe's bare `gmail-xoauth2` is found first in wrapper/.
        path = f"{self.path / 'wrapper'}{os.pathsep}{os.environ['PATH']}"
        return {**os.environ, **self.python_env, "HOME": str(self.path), "PATH": path}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        owner = {} if self.owner.pw_uid == os.getuid() else self._as_owner()
        return subprocess.run(
            argv,
            cwd=self.path,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
            **owner,  # type: ignore[arg-type]
        )

    def run_until(self, line: str, *argv: str) -> tuple[str, int | None]:
        """Run until ``line`` is printed (or the program exits); then stop it.

        Returns:
            what it printed up to there, and its exit status if it had exited.
        """
        owner = {} if self.owner.pw_uid == os.getuid() else self._as_owner()
        proc = subprocess.Popen(
            argv,
            cwd=self.path,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **owner,  # type: ignore[arg-type]
        )
        watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
        watchdog.start()
        printed = []
        try:
            assert proc.stdout is not None
            for got in proc.stdout:
                printed.append(got)
                if line in got:
                    break
        finally:
            watchdog.cancel()
            status = proc.poll()
            if status is None:
                proc.kill()
            proc.wait(RUN_TIMEOUT)
            if proc.stdout is not None:
                proc.stdout.close()
        return "".join(printed), status

    def _as_owner(self) -> dict[str, object]:
        return {
            "user": self.owner.pw_uid,
            "group": self.owner.pw_gid,
            "extra_groups": [],
        }

    def maildir_files(self, folder: str = "") -> list[Path]:
        base = self.maildir / folder
        return sorted(
            path
            for sub in ("new", "cur")
            if (base / sub).is_dir()
            for path in (base / sub).iterdir()
        )

    def token_calls(self) -> list[tuple[int, int]]:
        """(milliseconds, exit status) of each ``gmail-xoauth2 token`` call."""
        if not self._timings.exists():
            return []
        return [
            (int(ms), int(status))
            for ms, status in (
                line.split() for line in self._timings.read_text().splitlines()
            )
        ]

    def an_hour_passes(self, gmail_expire: object) -> None:
        """The access token expires at Google and, per its file, here too."""
        assert callable(gmail_expire)
        gmail_expire()
        data = json.loads(self.token_file.read_text())
        data["expiry"] = "2000-01-01T00:00:00Z"
        self.token_file.write_text(json.dumps(data))  # keeps mode and owner
        self.assert_token_file_private()

    def assert_token_file_private(self) -> None:
        info = self.token_file.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert (info.st_uid, info.st_gid) == (self.owner.pw_uid, self.owner.pw_gid)


def make_home(write_token_file: object, *, unprivileged: bool) -> Iterator[Home]:
    assert callable(write_token_file)
    owner = pwd.getpwnam(MAIL_USER) if unprivileged else pwd.getpwuid(os.getuid())
    python, python_env = python_for(owner)
    path = Path(tempfile.mkdtemp(prefix="gx2-mail-program-"))
    try:
        timings = path / "token-calls"
        wrapper = path / "wrapper"
        wrapper.mkdir()
        script = wrapper / "gmail-xoauth2"
        script.write_text(
            "#!/bin/sh\n"
            "start=$(date +%s%N)\n"
            f'"{python}" -m gmail_xoauth2 "$@"\n'
            "status=$?\n"
            f'echo "$(( ($(date +%s%N) - start) / 1000000 )) $status" >> "{timings}"\n'
            "exit $status\n"
        )
        script.chmod(0o755)
        token_file = path / "token.json"
        write_token_file(token_file)
        maildir = path / "Mail" / "gmail"
        home = Home(path, token_file, maildir, owner, python, python_env, timings)
        for item in (path, wrapper, token_file):
            home.chown(item)
        path.chmod(0o700)
        home.assert_token_file_private()
        yield home
    finally:
        shutil.rmtree(path, ignore_errors=True)


def report(home: Home, program: str, job: str) -> None:
    calls = home.token_calls()
    times = ", ".join(f"{ms} ms" for ms, _ in calls)
    print(f"\n[matrix] {program} {job}: gmail-xoauth2 token calls: {times}")


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(USER, "bob@example.com")) as fake:
        yield fake


@pytest.fixture
def home(gmail: FakeGmail) -> Iterator[Home]:
    yield from make_home(
        lambda path: gmail.google.write_authorized_user_file(path, USER),
        unprivileged=False,
    )


# --- mbsync (isync) ---


def mbsync_config(home: Home, *, user: str, port: int, ca_file: str | Path) -> Path:
    text = code_block("mbsync", "text", "IMAPAccount").substitute(
        {
            "~/.config/gmail-xoauth2/you@gmail.com.json": str(home.token_file),
            "you@gmail.com": user,
            "imap.gmail.com": "localhost",
            "Port 993": f"Port {port}",
            "/etc/ssl/certs/ca-certificates.crt": str(ca_file),
            "~/Mail/gmail/": f"{home.maildir}/",
        }
    )
    home.maildir.mkdir(parents=True)  # the recipe's mkdir -p ~/Mail/gmail
    return home.write("mbsyncrc", text)


def mbsync(home: Home, config: Path) -> subprocess.CompletedProcess[str]:
    return home.run(need("mbsync"), "-c", str(config), "gmail")


def test_mbsync_syncs_the_inbox_across_an_expired_token(
    gmail: FakeGmail, home: Home
) -> None:
    config = mbsync_config(home, user=USER, port=gmail.imap_port, ca_file=gmail.ca_file)
    gmail.deliver(USER, message("first"))
    first = mbsync(home, config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(home.maildir_files("Inbox")) == 1
    # The fake offers COMPRESS=DEFLATE as Gmail does, and now accepts it.
    assert "COMPRESS" not in first.stdout + first.stderr

    home.an_hour_passes(lambda: gmail.expire_tokens(USER))
    gmail.deliver(USER, message("after an hour"))
    second = mbsync(home, config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(home.maildir_files("Inbox")) == 2
    assert [status for _, status in home.token_calls()] == [0, 0]
    home.assert_token_file_private()
    report(home, "mbsync", "sync INBOX (fake Gmail)")


def test_mbsync_names_a_rejected_token(gmail: FakeGmail, home: Home) -> None:
    config = mbsync_config(home, user=USER, port=gmail.imap_port, ca_file=gmail.ca_file)
    # Google refuses the token the file still holds as valid.
    gmail.expire_tokens(USER)
    error = "Error: IMAP wants more steps despite successful SASL authentication."
    printed, _ = home.run_until(error, need("mbsync"), "-c", str(config), "gmail")
    assert error in printed


def dovecot_deliver(mail_server: MailServer, user: str, raw: bytes) -> None:
    subprocess.run(
        ["doveadm", "-c", str(mail_server.dovecot.config), "save", "-u", user],
        input=raw,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )


def test_mbsync_syncs_from_dovecot_across_an_expired_token(
    mail_server: MailServer, user: str
) -> None:
    for home in make_home(
        lambda path: mail_server.google.write_authorized_user_file(path, user),
        unprivileged=False,
    ):
        config = mbsync_config(
            home, user=user, port=mail_server.ports.imaps, ca_file=mail_server.ca_file
        )
        dovecot_deliver(mail_server, user, message("first"))
        first = mbsync(home, config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert len(home.maildir_files("Inbox")) == 1

        home.an_hour_passes(lambda: mail_server.google.expire_tokens(user))
        dovecot_deliver(mail_server, user, message("after an hour"))
        second = mbsync(home, config)
        assert second.returncode == 0, second.stdout + second.stderr
        assert len(home.maildir_files("Inbox")) == 2
        assert [status for _, status in home.token_calls()] == [0, 0]
        home.assert_token_file_private()
        report(home, "mbsync", "sync INBOX (Dovecot)")


# --- offlineimap3 ---


def offlineimap_config(home: Home, gmail: FakeGmail) -> Path:
    helper = code_block("offlineimap", "python", "def gmail_token").text
    pythonfile = home.write("offlineimap.py", helper)
    text = code_block("offlineimap", "ini", "[Account gmail]").substitute(
        {
            "~/.offlineimap.py": str(pythonfile),
            "~/Mail/gmail": str(home.maildir),
            "/home/you/.config/gmail-xoauth2/you@gmail.com.json": str(home.token_file),
            # type = Gmail means imap.gmail.com:993 unless told otherwise.
            "remoteuser = you@gmail.com": (
                f"remoteuser = {USER}\nremotehost = localhost\n"
                f"remoteport = {gmail.imap_port}"
            ),
            "sslcacertfile = OS-DEFAULT": f"sslcacertfile = {gmail.ca_file}",
        }
    )
    return home.write("offlineimaprc", text)


def offlineimap_once(home: Home, config: Path) -> subprocess.CompletedProcess[str]:
    # The recipe's service: ExecStart=/usr/bin/offlineimap -o -u basic
    service = code_block("offlineimap", "ini", "ExecStart=").text
    [argv] = [
        line.removeprefix("ExecStart=").split()
        for line in service.splitlines()
        if line.startswith("ExecStart=")
    ]
    assert argv[1:] == ["-o", "-u", "basic"]
    return home.run(need("offlineimap"), *argv[1:], "-c", str(config))


def test_offlineimap_one_shot_syncs_across_an_expired_token(
    gmail: FakeGmail, home: Home
) -> None:
    config = offlineimap_config(home, gmail)
    gmail.deliver(USER, message("first"))
    first = offlineimap_once(home, config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(home.maildir_files("INBOX")) == 1

    home.an_hour_passes(lambda: gmail.expire_tokens(USER))
    gmail.deliver(USER, message("after an hour"))
    second = offlineimap_once(home, config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(home.maildir_files("INBOX")) == 2
    assert [status for _, status in home.token_calls()] == [0, 0]
    home.assert_token_file_private()
    report(home, "offlineimap3", "one-shot sync (fake Gmail)")


def test_offlineimap_names_a_rejected_token(gmail: FakeGmail, home: Home) -> None:
    config = offlineimap_config(home, gmail)
    gmail.expire_tokens(USER)
    result = offlineimap_once(home, config)
    assert result.returncode != 0
    assert "[AUTHENTICATIONFAILED] Invalid credentials" in result.stdout + result.stderr


# --- getmail6 ---


REJECTED_BY_GETMAIL = {
    "imap": "credential/login error ([AUTHENTICATIONFAILED] Invalid credentials",
    "pop": "operation error (POP error (b'-ERR [AUTH] Invalid credentials.')",
}


@pytest.fixture
def unprivileged_home(gmail: FakeGmail) -> Iterator[Home]:
    yield from make_home(
        lambda path: gmail.google.write_authorized_user_file(path, USER),
        unprivileged=True,
    )


def getmail_config(home: Home, gmail: FakeGmail, protocol: str) -> Path:
    # The fake's CA sits in its private directory; the user needs a copy.
    ca_file = home.chown(Path(shutil.copy(gmail.ca_file, home.path / "ca.pem")))
    replacements = {
        "/home/you/.config/gmail-xoauth2/you@gmail.com.json": str(home.token_file),
        "you@gmail.com": USER,
        "imap.gmail.com": "localhost",
        "port = 993": f"port = {gmail.imap_port}",
        "/etc/ssl/certs/ca-certificates.crt": str(ca_file),
        "~/Mail/gmail/": f"{home.maildir}/",
    }
    if protocol == "pop":
        # As the recipe says: the POP3 retriever, and no mailboxes.
        replacements["type = SimpleIMAPSSLRetriever"] = "type = SimplePOP3SSLRetriever"
        replacements[f"port = {gmail.imap_port}"] = f"port = {gmail.pop_port}"
        replacements['mailboxes = ("INBOX",)\n'] = ""
    text = code_block("getmail6", "ini", "[retriever]").substitute(replacements)
    # The recipe's mkdir -p ~/Mail/gmail/cur ~/Mail/gmail/new ~/Mail/gmail/tmp
    for sub in ("cur", "new", "tmp"):
        (home.maildir / sub).mkdir(parents=True)
    for path in (home.maildir.parent, home.maildir, *home.maildir.iterdir()):
        home.chown(path)
    return home.write("getmailrc", text)


def getmail(home: Home, config: Path) -> subprocess.CompletedProcess[str]:
    # The venv's script, run by a Python the unprivileged user may run.
    script = need("getmail")
    return home.run(
        home.python, script, "--getmaildir", str(home.path), "--rcfile", str(config)
    )


@pytest.mark.parametrize("protocol", ["imap", "pop"])
def test_getmail_retrieves_across_an_expired_token(
    gmail: FakeGmail, unprivileged_home: Home, protocol: str
) -> None:
    home = unprivileged_home
    config = getmail_config(home, gmail, protocol)
    gmail.deliver(USER, message("first"))
    first = getmail(home, config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(home.maildir_files()) == 1
    # getmail6 reads Gmail's X-GM-* FETCH items; it says so if it cannot.
    assert "Could not parse google imap extensions" not in first.stdout + first.stderr

    home.an_hour_passes(lambda: gmail.expire_tokens(USER))
    gmail.deliver(USER, message("after an hour"))
    second = getmail(home, config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(home.maildir_files()) == 2
    assert [status for _, status in home.token_calls()] == [0, 0]
    home.assert_token_file_private()
    report(home, "getmail6", f"retrieve over {protocol.upper()} (fake Gmail)")


@pytest.mark.parametrize("protocol", ["imap", "pop"])
def test_getmail_names_a_rejected_token(
    gmail: FakeGmail, unprivileged_home: Home, protocol: str
) -> None:
    home = unprivileged_home
    config = getmail_config(home, gmail, protocol)
    gmail.expire_tokens(USER)
    result = getmail(home, config)
    assert result.returncode != 0
    assert REJECTED_BY_GETMAIL[protocol] in result.stdout + result.stderr
