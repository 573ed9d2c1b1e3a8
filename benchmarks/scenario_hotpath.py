"""Scenario 7: the IMAP reply loop next to imaplib and a raw socket (no parsing).

Two replies, each read by ``gmail_xoauth2.IMAP4``, by ``imaplib.IMAP4_SSL`` and
by a raw TLS socket that reads the same bytes up to the tagged line without
looking at them (the floor any parser sits on):

- a NOOP answered with 1,000,000 untagged ``* n EXISTS`` lines by
  :mod:`flood_server`, a server in its own process that sends a pre-built block;
- ``FETCH 1:* (RFC822)`` of 5,000 messages of about 1 KB from the private Dovecot.

Only the command is timed: each client logs in (and selects) once, before.
"""

from __future__ import annotations

import base64
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients import Endpoint, login_imaplib, login_ours
from flood_server import flood_block, flood_process
from harness import OURS, Report, Sample, Table, interleave
from scenario_throughput import make_message
from servers import DovecotBench

from gmail_xoauth2 import xoauth2_response
from gmail_xoauth2.testing._pki import make_pki

__all__ = ["FLOOD_LINES", "RAW", "RawSession", "run_fetch", "run_flood"]

FLOOD_LINES = 1_000_000
FETCH_MESSAGES = 5_000
RAW = "raw TLS socket"

_FLOOD_TARGET = 1.2
_FETCH_TARGET = 1.0
_CHUNK = 256 * 1024
_TAIL = 1024  # bytes kept to find the tagged line; longer than any status line
_USER = "flood@example.com"
_TOKEN = "ya29.flood-benchmark-token"


class RawSession:
    """IMAP by hand over TLS: log in with XOAUTH2 (SASL-IR), then send commands.

    :meth:`command` reads the reply into one reused buffer until the last line
    received is the command's tagged line. It never looks at the lines before
    it, so it costs what TLS and the socket cost and nothing more.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        sock = socket.create_connection((endpoint.host, endpoint.port))
        self._sock = endpoint.context.wrap_socket(sock, server_hostname=endpoint.host)
        self._buffer = memoryview(bytearray(_CHUNK))
        self._tags = 0
        try:
            self.read_until(b"* ")  # the greeting
            raw = xoauth2_response(endpoint.user, endpoint.token)
            self.command(b"AUTHENTICATE XOAUTH2 " + base64.b64encode(raw))
        except BaseException:
            self._sock.close()
            raise

    def command(self, line: bytes) -> int:
        """Send ``line`` with a new tag; return the bytes of the reply.

        Raises:
            RuntimeError: the tagged line is not OK.
        """
        self._tags += 1
        tag = b"r%d" % self._tags
        self._sock.sendall(tag + b" " + line + b"\r\n")
        size, last = self.read_until(tag + b" ")
        if not last.startswith(tag + b" OK"):
            raise RuntimeError(f"{line[:20]!r}... answered {last!r}")
        return size

    def read_until(self, prefix: bytes) -> tuple[int, bytes]:
        """Read until the data ends with a whole line that starts with ``prefix``.

        Returns the bytes read and that last line.
        """
        view, size, tail = self._buffer, 0, b""
        while True:
            n = self._sock.recv_into(view)
            if not n:
                raise ConnectionError(f"EOF after {size} bytes")
            size += n
            if n >= _TAIL:
                tail = bytes(view[n - _TAIL : n])
            else:
                tail = (tail + bytes(view[:n]))[-_TAIL:]
            if tail.endswith(b"\r\n"):
                last = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]
                if last.startswith(prefix):
                    return size, last

    def logout(self) -> None:
        self._tags += 1
        try:
            self._sock.sendall(b"r%d LOGOUT\r\n" % self._tags)
        finally:
            self._sock.close()


class _Clock:
    """Wall time for the table, and the measuring thread's CPU time beside it.

    On a shared machine another process can take the CPU for part of a run of
    several seconds; the CPU time this thread used does not count that wait,
    so its ratio is the steadier one when the wall times are noisy.
    """

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = {}

    def run(
        self, name: str, func: Callable[[], Any], check: Callable[[Any], None]
    ) -> Sample:
        """Time ``func``; then, outside the clock, ``check`` its result."""
        cpu, start = time.thread_time(), time.perf_counter()
        result = func()
        seconds = time.perf_counter() - start
        self.cpu.setdefault(name, []).append(time.thread_time() - cpu)
        check(result)
        return Sample(seconds)

    def measure(
        self,
        report: Report,
        title: str,
        variants: dict[str, Callable[[], Sample]],
        *,
        runs: int,
        warmup: int,
        note: str,
    ) -> Table:
        """Interleave the variants; print the table with the CPU times under it."""
        table = Table(title, interleave(variants, runs, warmup=warmup))
        cpu = {name: statistics.median(self.cpu[name][warmup:]) for name in variants}
        times = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in cpu.items())
        table.note = (
            f"{note} {RAW} / imaplib: {_raw_ratio(table)} time. CPU time of the "
            f"client thread (median): {times}; {OURS} / imaplib "
            f"{self.cpu_ratio(OURS, 'imaplib', warmup):.2f}x."
        )
        return report.add(table)

    def cpu_ratio(self, name: str, baseline: str, warmup: int) -> float:
        medians = [statistics.median(self.cpu[n][warmup:]) for n in (name, baseline)]
        return medians[0] / medians[1]


def _raw_ratio(table: Table) -> str:
    ratio = table.median(RAW) / table.median("imaplib")
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.4f}x"


def _logout_all(conns: dict[str, Any]) -> None:
    for conn in conns.values():
        conn.logout()


def run_flood(
    report: Report, *, runs: int, warmup: int = 1, count: int = FLOOD_LINES
) -> Table:
    """Time one NOOP answered with ``count`` EXISTS lines, per client.

    Each client is logged in before the first round, so a warm-up round buys
    little here; ``--quick`` skips it (a round takes seconds).
    """
    last = str(count).encode()
    flood = len(flood_block(count))
    clock = _Clock()

    def parsed(conn: Any, name: str) -> Sample:
        def check(result: Any) -> None:
            # Take the lines out, as a caller would (imaplib's response()), so
            # every run starts from an empty list.
            exists = conn.untagged_responses.pop("EXISTS", None)
            if result[0] != "OK" or not exists or exists[-1] != last:
                tail = exists[-1:] if exists else None
                raise RuntimeError(f"{name}: NOOP {result[0]}, last EXISTS {tail}")

        return clock.run(name, conn.noop, check)

    def raw(session: RawSession) -> Sample:
        def check(got: int) -> None:
            if got <= flood:
                raise RuntimeError(f"{RAW}: {got} bytes, the flood alone is {flood}")

        return clock.run(RAW, lambda: session.command(b"NOOP"), check)

    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp))
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        with flood_process(pki, _USER, _TOKEN, count=count) as (address, stats):
            endpoint = Endpoint(*address, context, _USER, _TOKEN)
            ours, base = login_ours(endpoint), login_imaplib(endpoint)
            session = RawSession(endpoint)
            conns = {OURS: ours, "imaplib": base, RAW: session}
            try:
                table = clock.measure(
                    report,
                    f"IMAP: one NOOP answered with {count:,} untagged EXISTS lines",
                    {
                        OURS: lambda: parsed(ours, OURS),
                        "imaplib": lambda: parsed(base, "imaplib"),
                        RAW: lambda: raw(session),
                    },
                    runs=runs,
                    warmup=warmup,
                    note="Loopback TLS; the server runs in its own process and sends a "
                    "pre-built block. Logged in once per client; timed: the NOOP.",
                )
            finally:
                _logout_all(conns)
    ratio = table.ratio("imaplib")
    report.verdict(
        f"Untagged flood ({count:,} EXISTS): <= {_FLOOD_TARGET}x imaplib's time",
        ratio <= _FLOOD_TARGET,
        f"{ratio:.3f}x (CPU {clock.cpu_ratio(OURS, 'imaplib', warmup):.2f}x; "
        f"{RAW}: {_raw_ratio(table)}); NOOPs served: {stats.get('noops')}",
    )
    return table


def _top_up(dovecot: DovecotBench, count: int) -> None:
    """Deliver messages until the INBOX holds ``count``, counting scenario 3's."""
    have = sum(1 for sub in ("new", "cur") for _ in (dovecot.maildir / sub).iterdir())
    user = dovecot.endpoint.user
    # Scenario 3's messages, numbered on from there; building each with
    # email.message costs milliseconds, so only the numbered lines change.
    first = make_message(user, user, 0)
    subject, message_id = b"Subject: benchmark message 0\n", b"<bench-0@example.com>"
    assert subject in first and message_id in first
    dovecot.fill(
        first.replace(subject, b"Subject: benchmark message %d\n" % n).replace(
            message_id, b"<bench-%d@example.com>" % n
        )
        for n in range(have, count)
    )


def run_fetch(
    report: Report, dovecot: DovecotBench, *, runs: int, count: int = FETCH_MESSAGES
) -> Table:
    """Time ``FETCH 1:* (RFC822)`` of a ``count``-message INBOX, per client."""
    _top_up(dovecot, count)
    endpoint = dovecot.endpoint
    ours, base = login_ours(endpoint), login_imaplib(endpoint)
    session = RawSession(endpoint)
    conns = {OURS: ours, "imaplib": base, RAW: session}
    clock = _Clock()
    try:
        exists = int(ours.select("INBOX", readonly=True)[1][0])
        base.select("INBOX", readonly=True)
        session.command(b"EXAMINE INBOX")

        def parsed(conn: Any, name: str) -> Sample:
            def check(result: Any) -> None:
                got = sum(1 for item in result[1] if isinstance(item, tuple))
                if result[0] != "OK" or got != exists:
                    raise RuntimeError(f"{name}: FETCH {result[0]}, {got} messages")

            return clock.run(name, lambda: conn.fetch("1:*", "(RFC822)"), check)

        def raw() -> Sample:
            def check(got: int) -> None:
                if got < exists * 1000:
                    raise RuntimeError(f"{RAW}: {got} bytes for {exists} messages")

            return clock.run(RAW, lambda: session.command(b"FETCH 1:* (RFC822)"), check)

        table = clock.measure(
            report,
            f"IMAP: FETCH 1:* (RFC822) of {exists:,} messages of about 1 KB, Dovecot",
            {
                OURS: lambda: parsed(ours, OURS),
                "imaplib": lambda: parsed(base, "imaplib"),
                RAW: raw,
            },
            runs=runs,
            warmup=1,
            note="Logged in and mailbox selected (read-only) once per client; "
            "timed: the FETCH.",
        )
    finally:
        _logout_all(conns)
    ratio = table.ratio("imaplib")
    report.verdict(
        f"FETCH of {exists:,} messages (Dovecot): <= {_FETCH_TARGET}x imaplib's time",
        ratio <= _FETCH_TARGET,
        f"{ratio:.3f}x (CPU {clock.cpu_ratio(OURS, 'imaplib', 1):.2f}x; "
        f"{RAW}: {_raw_ratio(table)})",
    )
    return table
