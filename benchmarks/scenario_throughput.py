"""Scenarios 2 and 3: sending 200 messages over SMTP, fetching 5,000 over IMAP."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from clients import IMAP_LOGINS, Endpoint, smtp_ours, smtp_smtplib
from harness import OURS, Report, Sample, Table, interleave, timed

__all__ = ["make_message", "run_fetch", "run_send"]


def make_message(sender: str, recipient: str, n: int, size: int = 1024) -> bytes:
    """A plain-text message of about ``size`` bytes."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"benchmark message {n}"
    msg["Message-ID"] = f"<bench-{n}@example.com>"
    line = "The quick brown fox jumps over the lazy dog, again and again.\n"
    head = len(bytes(msg))
    msg.set_content(line * max(1, (size - head - 60) // len(line)))
    return bytes(msg)


def run_send(
    report: Report, smtp: Endpoint, recipient: str, *, runs: int, count: int = 200
) -> Table:
    """Log in and send ``count`` messages over one connection, per client."""
    body = make_message(smtp.user, recipient, 0)

    def send_all(connect: Callable[[Endpoint], Any]) -> Sample:
        def work() -> None:
            conn = connect(smtp)
            for _ in range(count):
                conn.sendmail(smtp.user, [recipient], body)
            conn.quit()

        return timed(work)

    table = report.add(
        Table(
            f"SMTP: log in and send {count} messages of 1 KB over one connection",
            interleave(
                {
                    OURS: lambda: send_all(smtp_ours),
                    "smtplib": lambda: send_all(smtp_smtplib),
                },
                runs,
            ),
            work=count,
        )
    )
    ratio = table.ratio("smtplib")
    report.verdict(
        "Sending: >= 0.95x smtplib's throughput", ratio >= 0.95, f"{ratio:.2f}x"
    )
    return table


def _fetch_imaplib(conn: Any) -> int:
    conn.select("INBOX", readonly=True)
    typ, data = conn.fetch("1:*", "(RFC822)")
    assert typ == "OK"
    return sum(1 for item in data if isinstance(item, tuple))


def _fetch_imapclient(client: Any) -> int:
    client.select_folder("INBOX", readonly=True)
    # IMAPClient 3+ filters the reply by the ids asked for, so "1:*" fails;
    # its documented way is SEARCH, then FETCH of the ids found.
    return len(client.fetch(client.search("ALL"), ["RFC822"]))


def _fetch_imap_tools(box: Any) -> int:
    box.folder.set("INBOX", readonly=True)
    return sum(1 for _ in box.fetch(mark_seen=False, bulk=True))


_FETCHERS: dict[str, Callable[[Any], int]] = {
    OURS: _fetch_imaplib,
    "imaplib": _fetch_imaplib,
    "IMAPClient": _fetch_imapclient,
    "imap_tools": _fetch_imap_tools,
}


def run_fetch(
    report: Report, server: str, imap: Endpoint, *, runs: int, count: int
) -> Table:
    """Fetch every body of a ``count``-message INBOX, per client (login excluded)."""
    conns = {name: login(imap) for name, login in IMAP_LOGINS.items()}

    def fetch(name: str) -> Sample:
        start = time.perf_counter()
        got = _FETCHERS[name](conns[name])
        seconds = time.perf_counter() - start
        if got != count:
            raise RuntimeError(f"{name} fetched {got} messages, expected {count}")
        return Sample(seconds)

    try:
        table = report.add(
            Table(
                f"IMAP: fetch all bodies of {count:,} messages of about 1 KB, {server}",
                interleave({name: (lambda n=name: fetch(n)) for name in conns}, runs),
                work=count,
                note="Logged in once per client; timed: SELECT and one FETCH of "
                "every message (IMAPClient and imap_tools: SEARCH, then one UID FETCH "
                "of the UIDs found; imap_tools with bulk=True).",
            )
        )
    finally:
        for conn in conns.values():
            conn.logout()
    base = table.ratio("imaplib")
    others = {name: table.ratio(name) for name in ("IMAPClient", "imap_tools")}
    report.verdict(
        f"Fetch ({server}): >= 0.95x imaplib's throughput", base >= 0.95, f"{base:.2f}x"
    )
    report.verdict(
        f"Fetch ({server}): faster than IMAPClient and imap_tools",
        all(r > 1 for r in others.values()),
        ", ".join(f"{r:.2f}x {name}" for name, r in others.items()),
    )
    return table
