"""Scenario 5: what tokens cost: refreshes at the endpoint, and the CLI's start-up."""

from __future__ import annotations

import base64
import imaplib
import poplib
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients import imaplib_authobject, smtplib_authobject
from harness import OURS, Report, Sample, Table, interleave, timed

from gmail_xoauth2 import IMAP4, MAIL_SCOPE, POP3, SMTP, xoauth2_response
from gmail_xoauth2.testing.clock import ManualClock

__all__ = ["run_cli", "run_refreshes"]

THREADS = 16
LIFETIMES = 3
LIFETIME_SECONDS = 3600


def _message(user: str, n: int) -> bytes:
    return (
        f"From: {user}\r\nTo: {user}\r\nSubject: token benchmark {n}\r\n\r\nhello\r\n"
    ).encode()


class _OursThread:
    """One thread's IMAP, POP and SMTP connections on the shared provider."""

    def __init__(self, fake: Any, user: str, provider: Any) -> None:
        ctx, host = fake.ssl_context(), fake.host
        kw: dict[str, Any] = {"ssl_context": ctx, "clock": fake.clock}
        self.user = user
        self.imap = IMAP4(user, provider, host, fake.imap_port, **kw)
        self.imap.select("INBOX", readonly=True)
        self.pop = POP3(user, provider, host, fake.pop_port, **kw)
        self.smtp = SMTP(user, provider, host, fake.smtp_port, **kw)

    def work(self, n: int) -> None:
        self.imap.search(None, "ALL")
        self.pop.stat()
        self.smtp.sendmail(self.user, [self.user], _message(self.user, n))

    def close(self) -> None:
        self.imap.logout()
        self.pop.quit()
        self.smtp.quit()


class _PerConnectionThread:
    """The usual code: one google-auth Credentials per connection, and a
    refresh whenever a connection has to log in again."""

    def __init__(self, fake: Any, user: str, make_credentials: Callable[[], Any]):
        from google.auth.transport.requests import Request

        self.fake, self.user = fake, user
        self.request = Request()
        self.creds = {p: make_credentials() for p in ("imap", "pop", "smtp")}
        self.conns: dict[str, Any] = {}

    def _token(self, protocol: str) -> str:
        creds = self.creds[protocol]
        creds.refresh(self.request)
        return str(creds.token)

    def _connect(self) -> None:
        fake, user, ctx = self.fake, self.user, self.fake.ssl_context()
        imap = imaplib.IMAP4_SSL(fake.host, fake.imap_port, ssl_context=ctx)
        imap.authenticate("XOAUTH2", imaplib_authobject(user, self._token("imap")))
        imap.select("INBOX", readonly=True)
        pop = poplib.POP3_SSL(fake.host, fake.pop_port, context=ctx)
        ir = base64.b64encode(xoauth2_response(user, self._token("pop"))).decode()
        pop._shortcmd("AUTH XOAUTH2 " + ir)
        smtp = smtplib.SMTP_SSL(fake.host, fake.smtp_port, context=ctx)
        smtp.ehlo()
        smtp.auth("XOAUTH2", smtplib_authobject(user, self._token("smtp")))
        self.conns = {"imap": imap, "pop": pop, "smtp": smtp}

    def _drop(self) -> None:
        for conn in self.conns.values():
            try:
                conn.close()
            except Exception:
                pass

    def work(self, n: int) -> None:
        # Every lifetime starts with the server having ended the sessions.
        self._drop()
        self._connect()
        self.conns["imap"].search(None, "ALL")
        self.conns["pop"].stat()
        self.conns["smtp"].sendmail(self.user, [self.user], _message(self.user, n))

    def close(self) -> None:
        self.conns["imap"].logout()
        self.conns["pop"].quit()
        self.conns["smtp"].quit()


def _lifetimes(fake: Any, make_thread: Callable[[], Any]) -> list[int]:
    """Run THREADS threads over LIFETIMES token lifetimes; refreshes per lifetime."""
    google = fake.google
    # Gmail allows 15 IMAP connections per account; the scenario needs 16.
    fake.backend.session_limits["imap"] = THREADS
    errors: list[BaseException] = []
    done = threading.Barrier(THREADS + 1)
    go = threading.Barrier(THREADS + 1)

    def worker() -> None:
        client = None
        try:
            for lifetime in range(LIFETIMES):
                if client is None:
                    client = make_thread()
                client.work(lifetime)
                done.wait()
                go.wait()
        except BaseException as exc:
            errors.append(exc)
            done.abort()
            go.abort()
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    per_lifetime = []
    before = google.request_count("/token", grant_type="refresh_token")
    for thread in threads:
        thread.start()
    try:
        for lifetime in range(LIFETIMES):
            done.wait()
            now = google.request_count("/token", grant_type="refresh_token")
            per_lifetime.append(now - before)
            before = now
            if lifetime < LIFETIMES - 1:
                # The tokens expire: the fake ends every session at once.
                fake.clock.advance(LIFETIME_SECONDS)
            go.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return per_lifetime


def _ours(fake: Any, user: str, tmp: str) -> Callable[[], Any]:
    from gmail_xoauth2 import GoogleTokenProvider

    # Start with an expired token, so every lifetime needs a new one.
    path = Path(tmp) / "token.json"
    fake.google.write_authorized_user_file(path, user, expired=True)
    provider = GoogleTokenProvider.from_authorized_user_file(path, clock=fake.clock)
    return lambda: _OursThread(fake, user, provider)


def _per_connection(fake: Any, user: str, tmp: str) -> Callable[[], Any]:
    from google.oauth2.credentials import Credentials

    google = fake.google
    refresh_token = google.issue_refresh_token(user)

    def credentials() -> Any:
        return Credentials(
            None,
            refresh_token=refresh_token,
            token_uri=google.token_uri,
            client_id=google.client_id,
            client_secret=google.client_secret,
            scopes=[MAIL_SCOPE],
        )

    return lambda: _PerConnectionThread(fake, user, credentials)


def run_refreshes(
    report: Report, fake_factory: Callable[..., Any]
) -> dict[str, list[int]]:
    """Count refreshes at the fake token endpoint for both designs."""
    user = "tokens@example.com"
    designs = {OURS: _ours, "google-auth per connection": _per_connection}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, design in designs.items():
            with fake_factory(users=(user,), clock=ManualClock()) as fake:
                results[name] = _lifetimes(fake, design(fake, user, tmp))
    print(
        f"#### Token refreshes: {THREADS} threads x IMAP+POP+SMTP, "
        f"{LIFETIMES} token lifetimes\n\n"
        "| design | refreshes per lifetime | total |\n|---|---|---|"
    )
    for name, counts in results.items():
        print(f"| {name} | {', '.join(map(str, counts))} | {sum(counts)} |")
    print(
        "\nCounted at the fake Google's token endpoint; the clock is simulated. "
        "Per connection: each connection refreshes when it has to log in again. "
        f"The fake's limit of 15 IMAP connections per account is raised to {THREADS} "
        "here (Gmail would refuse the 16th).\n"
    )
    ours = results[OURS]
    report.verdict(
        "Token refreshes: exactly one per token lifetime for the whole process",
        ours == [1] * LIFETIMES,
        f"{ours} (per connection: {results['google-auth per connection']})",
    )
    return results


def run_cli(report: Report, fake_google: Any, *, runs: int) -> Table:
    """``gmail-xoauth2 token`` with a valid cached token vs an empty interpreter."""
    script = shutil.which("gmail-xoauth2") or str(
        Path(sys.executable).parent / "gmail-xoauth2"
    )
    user = fake_google.add_user("cli@example.com")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "token.json"
        fake_google.write_authorized_user_file(path, user)
        token_cmd = [script, "token", "--token-file", str(path)]
        empty_cmd = [sys.executable, "-c", "pass"]

        def call(cmd: list[str]) -> Sample:
            return timed(
                lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            )

        table = report.add(
            Table(
                "`gmail-xoauth2 token` with a valid cached token",
                interleave(
                    {
                        OURS: lambda: call(token_cmd),
                        "python -c pass": lambda: call(empty_cmd),
                    },
                    runs,
                ),
                note="Wall time of the whole process (subprocess.run, no shell).",
            )
        )
    ratio = table.ratio("python -c pass")
    report.verdict(
        "`gmail-xoauth2 token` (valid cached token): <= 3x `python3 -c pass`",
        ratio <= 3,
        f"{ratio:.2f}x",
    )
    return table
