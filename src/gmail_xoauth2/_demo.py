"""``gmail-xoauth2 demo`` and ``fake-gmail``: the fake Gmail, shown and served.

The demo needs no account and no network: everything runs on 127.0.0.1 against
:class:`~gmail_xoauth2.testing.FakeGmail`, through the same code paths a real
program takes (the loopback consent flow, IMAP, SMTP and POP logins, a session
ended by Gmail, a token refresh).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TextIO

__all__ = ["run_demo"]

DEMO_USER = "alice@example.com"
_OTHER_USER = "bob@example.com"

_WELCOME = (
    (
        "Fake Gmail <welcome@example.com>",
        "Welcome to the fake Gmail",
        "Everything here lives in memory, on 127.0.0.1.",
    ),
    ("Bob <bob@example.com>", "Lunch on Friday?", "The usual place at noon?"),
)


class _Report:
    """What a step prints: a headline, then indented details."""

    def __init__(self) -> None:
        self.headline = ""
        self.details: list[str] = []


class _Steps:
    """Numbered steps with their duration, printed as they finish."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._number = 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self) -> Iterator[_Report]:
        """Time the block, then print the report it filled in."""
        self._number += 1
        report = _Report()
        start = time.perf_counter()
        yield report
        elapsed = (time.perf_counter() - start) * 1000
        head = f"{self._number}. {report.headline}"
        self.say(f"{head:<70}{elapsed:>6.0f} ms")
        for line in report.details:
            self.say(f"     {line}")

    def say(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()


def _message(sender: str, recipient: str, subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain="fake-gmail.example")
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def _summary(raw: bytes) -> tuple[str, str, str]:
    """The sender's name, the subject and the first line of the body."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    sender = parsed["From"]
    addresses = getattr(sender, "addresses", ())
    name = addresses[0].display_name or addresses[0].addr_spec if addresses else ""
    body = parsed.get_body(preferencelist=("plain",))
    text = body.get_content().strip().splitlines()[0] if body is not None else ""
    return name, str(parsed.get("Subject", "")), text


def _consent(url: str) -> None:
    """Play the browser: follow the consent URL to the loopback redirect."""
    import requests

    response = requests.get(url, timeout=30)
    response.raise_for_status()
    response.close()


def run_demo(out: TextIO, *, hour: timedelta = timedelta(hours=1)) -> int:
    """Run the tour, printing to ``out``; return the exit status (0 on success)."""
    from . import IMAP4, POP3, SMTP
    from .auth import authorize
    from .testing.clock import ManualClock
    from .testing.gmail import FakeGmail

    steps = _Steps(out)
    steps.say("gmail-xoauth2 demo: Gmail over IMAP, POP and SMTP with OAuth 2.0,")
    steps.say("against a fake Gmail on 127.0.0.1 (no account, no network).")
    steps.say()
    clock = ManualClock()
    with contextlib.ExitStack() as stack:
        with steps.step() as report:
            gmail = stack.enter_context(
                FakeGmail(users=(DEMO_USER, _OTHER_USER), clock=clock)
            )
            for sender, subject, body in _WELCOME:
                gmail.deliver(DEMO_USER, _message(sender, DEMO_USER, subject, body))
            report.headline = (
                f"Started the fake Gmail: IMAP :{gmail.imap_port}, "
                f"POP :{gmail.pop_port}, SMTP :{gmail.smtp_port}"
            )
        context = gmail.ssl_context()
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))

        with steps.step() as report:
            secrets = gmail.google.write_client_secrets_file(workdir / "client.json")
            token_file = workdir / "token.json"
            tokens = authorize(
                secrets,
                token_file,
                login_hint=DEMO_USER,
                open_url=_consent,
                clock=clock,
            )
            report.headline = f"Authorized {DEMO_USER} on the consent page (PKCE)"
            report.details.append(f"token file {token_file} (mode 0600)")

        with steps.step() as report:
            imap = IMAP4(
                DEMO_USER,
                tokens,
                gmail.host,
                gmail.imap_port,
                ssl_context=context,
                clock=clock,
            )
            stack.callback(_quietly, imap.logout)
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "ALL")
            numbers = data[0].split()
            report.headline = (
                f"IMAP: logged in with XOAUTH2; INBOX has {len(numbers)} messages"
            )
            first_line = ""
            for number in numbers:
                _, fetched = imap.fetch(number, "(BODY.PEEK[])")
                sender, subject, text = _summary(_first_literal(fetched))
                first_line = first_line or f'message 1 says: "{text}"'
                report.details.append(f"{number.decode():>3}  {sender:<12} {subject}")
            report.details.append(first_line)

        subject = "Sent by the demo"
        with steps.step() as report:
            with SMTP(
                DEMO_USER,
                tokens,
                gmail.host,
                gmail.smtp_port,
                ssl_context=context,
                clock=clock,
            ) as smtp:
                smtp.send_message(
                    email.message_from_bytes(
                        _message(DEMO_USER, DEMO_USER, subject, "Hello, me."),
                        policy=email.policy.default,
                    )
                )
            report.headline = f'SMTP: sent "{subject}" to {DEMO_USER}'

        with steps.step() as report:
            _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            found_imap = len(data[0].split())
            with POP3(
                DEMO_USER,
                tokens,
                gmail.host,
                gmail.pop_port,
                ssl_context=context,
                clock=clock,
            ) as pop:
                count, _ = pop.stat()
                _, top, _ = pop.top(count, 0)
                found_pop = any(subject.encode() in line for line in top)
            report.headline = (
                f"Found it: IMAP SEARCH {found_imap} match, "
                f"POP message {count} of {count}{'' if found_pop else ' (NOT FOUND)'}"
            )

        refreshes = gmail.google.request_count("/token", grant_type="refresh_token")
        connections = gmail.connection_count("imap")
        steps.say()
        steps.say("An hour passes: the fake's clock jumps ahead (nobody waits), so")
        steps.say("the access token expires and the fake Gmail ends the session:")
        seen = len(gmail.transcript("imap"))
        clock.advance(hour)
        for line in gmail.transcript("imap")[seen:]:
            if line.direction == "S" and line.data.startswith(b"* BYE"):
                steps.say(f"  S: {line.data.decode('ascii', 'replace')}")
        steps.say()
        with steps.step() as report:
            _, data = imap.search(None, "ALL")
            total = len(data[0].split())
            new_refreshes = (
                gmail.google.request_count("/token", grant_type="refresh_token")
                - refreshes
            )
            reconnects = gmail.connection_count("imap") - connections
            report.headline = f"IMAP SEARCH ALL: {total} messages, no error seen"
            report.details.append(
                f"behind the scenes: {_count(reconnects, 'reconnect')}, "
                f"{_count(new_refreshes, 'token refresh')}, INBOX selected again"
            )
        ok = found_imap == 1 and found_pop and total == len(numbers) + 1
        ok = ok and reconnects >= 1 and new_refreshes >= 1
    steps.say()
    elapsed = time.perf_counter() - steps.started
    steps.say(f"{'Done' if ok else 'FAILED'} in {elapsed:.1f} s.")
    steps.say("With your own account: gmail-xoauth2 authorize --help, and the docs'")
    steps.say("Getting started page for the one-time Google Cloud set-up.")
    return 0 if ok else 1


def _count(number: int, noun: str) -> str:
    plural = "es" if noun.endswith("sh") else "s"
    return f"{number} {noun}{'' if number == 1 else plural}"


def _first_literal(fetched: Sequence[object]) -> bytes:
    for item in fetched:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return b""


def _quietly(func: object) -> None:
    with contextlib.suppress(Exception):
        if callable(func):
            func()
