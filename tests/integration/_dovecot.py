"""Start, drive and stop a private Dovecot 2.3 for the integration tests."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pwd
import select
import shutil
import socket
import string
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gmail_xoauth2.testing._pki import PKI

log = logging.getLogger(__name__)

MAIL_USER = "gx2-testmail"
"""System user owning the Maildirs (scripts/install-test-deps.sh creates it)."""

USER_POOL = 500
"""How many addresses (user0@example.com ...) the userdb knows."""

_HERE = Path(__file__).parent
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 20.0


class DovecotUnavailable(RuntimeError):
    """This machine cannot run the private Dovecot; the message says why."""


def check_prerequisites() -> None:
    """Raise DovecotUnavailable unless root, Dovecot and the mail user are here."""
    missing = [
        tool
        for tool in ("dovecot", "doveadm")
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin") is None
    ]
    if missing:
        raise DovecotUnavailable(f"{' and '.join(missing)} not installed")
    if os.geteuid() != 0:
        raise DovecotUnavailable("the private Dovecot must be started as root")
    try:
        pwd.getpwnam(MAIL_USER)
    except KeyError:
        raise DovecotUnavailable(f"system user {MAIL_USER} does not exist") from None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 and 127.0.0.2 right now."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.2", port))
                except OSError:
                    continue
                return port


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one private Dovecot."""

    imap: int
    imaps: int
    pop3: int
    pop3s: int
    submission: int
    submissions: int


def _wait_pid_exit(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` exits (pidfd, no polling); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


class Dovecot:
    """One private Dovecot process tree with its own config, users and Maildirs.

    Args:
        pki: certificates for the server.
        tokeninfo_url: URL prefix the oauth2 passdb appends the token to.
        relay_port: port of the SMTP sink on 127.0.0.1 for submission.
        root: a directory that the Dovecot users can traverse.
    """

    def __init__(
        self, *, pki: PKI, tokeninfo_url: str, relay_port: int, root: Path
    ) -> None:
        self.pki = pki
        self.root = root
        self.config = root / "dovecot.conf"
        self.lmtp_socket = str(root / "run" / "lmtp")
        self.ports = Ports(*(free_port() for _ in range(6)))
        self.tokeninfo_url = tokeninfo_url
        self.relay_port = relay_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()
        self._stderr: list[str] = []
        self._reader: threading.Thread | None = None
        self._serial = itertools.count()

    # -- set-up -----------------------------------------------------------------

    def _write_files(self) -> None:
        mail = pwd.getpwnam(MAIL_USER)
        values = {
            "root": str(self.root),
            "instance": f"gx2-test-{self.ports.imap}",
            "cert_file": str(self.pki.cert_file),
            "key_file": str(self.pki.key_file),
            "mail_uid": str(mail.pw_uid),
            "mail_gid": str(mail.pw_gid),
            "imap_port": str(self.ports.imap),
            "imaps_port": str(self.ports.imaps),
            "pop3_port": str(self.ports.pop3),
            "pop3s_port": str(self.ports.pop3s),
            "submission_port": str(self.ports.submission),
            "submissions_port": str(self.ports.submissions),
            "relay_port": str(self.relay_port),
            "tokeninfo_url": self.tokeninfo_url,
        }
        for name in ("dovecot.conf", "dovecot-oauth2.conf.ext"):
            template = string.Template((_HERE / f"{name}.in").read_text())
            (self.root / name).write_text(template.substitute(values))
        (self.root / "users").write_text(
            "".join(f"user{n}@example.com::::::\n" for n in range(USER_POOL))
        )
        for path in (self.root / "mail", self.root / "mail" / "example.com"):
            path.mkdir()
            os.chown(path, mail.pw_uid, mail.pw_gid)

    def new_user(self) -> str:
        """Hand out the next address of the userdb, with an empty Maildir.

        The passwd-file userdb lists ``USER_POOL`` addresses from the start:
        Dovecot re-reads the file at most once a second, so users added while
        the tests run would be unknown for up to a second.
        """
        n = next(self._serial)
        if n >= USER_POOL:
            raise RuntimeError(f"all {USER_POOL} test users are taken; raise USER_POOL")
        user = f"user{n}@example.com"
        mail = pwd.getpwnam(MAIL_USER)
        maildir = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for path in (maildir.parent, maildir, *maildir.iterdir()):
            os.chown(path, mail.pw_uid, mail.pw_gid)
        return user

    def start(self) -> None:
        """Write the config and start Dovecot in the foreground as our child.

        Raises:
            RuntimeError: Dovecot exited or did not report start-up in time.
        """
        self._write_files()
        check = subprocess.run(
            ["doveconf", "-c", str(self.config), "-n"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejected the test config:\n{check.stderr}")
        self._proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(
            target=self._read_stderr, name="dovecot-stderr", daemon=True
        )
        self._reader.start()
        # The master logs "starting up" once its listeners are bound.
        if not self._started.wait(_START_TIMEOUT) or self._proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"Dovecot did not start:\n{self.log_tail()}")

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        with self._proc.stderr:
            for raw in self._proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stderr.append(line)
                if "starting up" in line:
                    self._started.set()
        self._started.set()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Dovecot's log, for failure messages."""
        return "\n".join(self._stderr[-lines:])

    def stop(self) -> None:
        """Stop the master by its pid (SIGTERM, then SIGKILL) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join()

    # -- driving ------------------------------------------------------------------

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm`` against this instance and return its stdout."""
        done = subprocess.run(
            ["doveadm", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed ({done.returncode}): {done.stderr}"
            )
        return done.stdout

    def session_pids(self, user: str) -> list[int]:
        """Pids of the mail processes serving ``user`` now (``doveadm who``)."""
        out = self.doveadm("who", "-1", user)
        pids: list[int] = []
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == user:
                found = fields[2].strip("()").split()
                pids.extend(int(pid) for pid in found if pid.isdigit())
        return pids

    def kick(self, user: str) -> int:
        """End all of ``user``'s sessions and return once their processes exited.

        Returns:
            how many processes were ended.
        """
        pids = self.session_pids(user)
        self.doveadm("kick", user)
        for pid in pids:
            if not _wait_pid_exit(pid, _STOP_TIMEOUT):
                raise RuntimeError(f"session process {pid} of {user} outlived kick")
        return len(pids)

    def maildir(self, user: str, mailbox: str = "INBOX") -> Path:
        """The Maildir folder of ``user``'s ``mailbox``."""
        local, _, domain = user.partition("@")
        base = self.root / "mail" / domain / local / "Maildir"
        return base if mailbox == "INBOX" else base / f".{mailbox}"

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """The raw messages in ``user``'s ``mailbox``, read from the Maildir files."""
        folder = self.maildir(user, mailbox)
        files = [
            path
            for sub in ("new", "cur")
            if (folder / sub).is_dir()
            for path in (folder / sub).iterdir()
        ]
        return [path.read_bytes() for path in sorted(files, key=lambda p: p.name)]


@contextlib.contextmanager
def scratch_root() -> Iterator[Path]:
    """A new directory the Dovecot users can traverse; removed after.

    pytest's own temporary directories are private to the user running the
    tests (mode 0700), which Dovecot's unprivileged processes cannot enter.
    """
    root = Path(tempfile.mkdtemp(prefix="gx2-dovecot-"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_dovecot(
    root: Path, *, pki: PKI, tokeninfo_url: str, relay_port: int
) -> Iterator[Dovecot]:
    """A started private Dovecot living in ``root``; always stopped by pid after."""
    server = Dovecot(
        pki=pki, tokeninfo_url=tokeninfo_url, relay_port=relay_port, root=root
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
