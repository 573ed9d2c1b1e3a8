"""Scenario 8: COMPRESS=DEFLATE, over a 20 Mbit/s link and on loopback.

FETCH of every body of 5,000 text messages from the fake Gmail, with
compression (IMAP4's default) and without (``compress=False``): through the
latency proxy limited to 20 Mbit/s each way, where bytes cost time, and
straight on loopback, where compression only costs CPU. The fake Gmail runs
in a process of its own (``compress_server.py``), so its CPU is not the
client's, and the client's CPU is its own thread's (``time.thread_time``), not
the proxy's.
"""

from __future__ import annotations

import contextlib
import json
import random
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

from clients import Endpoint
from harness import OURS, Report, Sample, Table, interleave
from latency_proxy import LatencyProxy

from gmail_xoauth2.imap import IMAP4

__all__ = ["BANDWIDTH", "make_text_message", "run"]

BANDWIDTH = 20_000_000  # bits per second, each way
DELAY = 0.005  # seconds one way: a 10 ms round trip
PLAIN = "compress=False"

# Words of ordinary English mail; drawn at random, the text compresses about
# as well as real mail does (3-4x), not like one line repeated.
_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be "
    "at one have this from or had by hot word but what some we can out other "
    "were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no "
    "most people my over know water than call first who may down side been now "
    "find meeting invoice attached please thanks regards project update "
    "tomorrow Monday report review schedule budget team deadline client order"
).split()


def make_text_message(sender: str, n: int, size: int = 1024) -> bytes:
    """A plain-text message of about ``size`` bytes of English-like prose."""
    rng = random.Random(n)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = sender
    msg["Subject"] = f"compress benchmark message {n}"
    msg["Message-ID"] = f"<compress-{n}@example.com>"
    head = len(bytes(msg))
    words: list[str] = []
    length = 0
    while length < size - head - 60:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    msg.set_content("\n".join(lines) + "\n")
    return bytes(msg)


def _login(e: Endpoint, port: int, *, compress: bool) -> IMAP4:
    return IMAP4(
        e.user,
        lambda: e.token,
        e.host,
        port,
        ssl_context=e.context,
        timeout=60,
        compress=compress,
    )


def _fetch(conn: IMAP4, count: int) -> None:
    conn.select("INBOX", readonly=True)
    typ, data = conn.fetch("1:*", "(RFC822)")
    got = sum(1 for item in data if isinstance(item, tuple))
    if typ != "OK" or got != count:
        raise RuntimeError(f"fetched {got} messages ({typ}), expected {count}")


def _variants(
    e: Endpoint, port: int, count: int, on_done: Callable[[str, float], None]
) -> tuple[dict[str, Callable[[], Sample]], list[IMAP4]]:
    conns = {
        OURS: _login(e, port, compress=True),
        PLAIN: _login(e, port, compress=False),
    }
    assert conns[OURS].compressed and not conns[PLAIN].compressed

    def run(name: str) -> Sample:
        cpu = time.thread_time()
        start = time.perf_counter()
        _fetch(conns[name], count)
        seconds = time.perf_counter() - start
        on_done(name, time.thread_time() - cpu)
        return Sample(seconds)

    return {name: (lambda n=name: run(n)) for name in conns}, list(conns.values())


@contextlib.contextmanager
def fake_gmail(user: str, count: int) -> Iterator[Endpoint]:
    """The fake Gmail in a child process, ``count`` messages in ``user``'s INBOX."""
    script = Path(__file__).with_name("compress_server.py")
    with subprocess.Popen(
        [sys.executable, str(script), user, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            details = json.loads(child.stdout.readline())
            context = ssl.create_default_context(cafile=details["ca_file"])
            yield Endpoint(
                details["host"], details["port"], context, user, details["token"]
            )
        finally:
            child.stdin.close()
            child.wait(timeout=60)


def run(report: Report, user: str, *, runs: int, count: int) -> None:
    """Both tables and the verdict, ``count`` messages fetched each run."""
    with fake_gmail(user, count) as imap:
        _limited(report, imap, runs=runs, count=count)
        _loopback(report, imap, runs=runs, count=count)


def _limited(report: Report, imap: Endpoint, *, runs: int, count: int) -> None:
    down: dict[str, list[int]] = {OURS: [], PLAIN: []}
    with LatencyProxy(
        (imap.host, imap.port), delay=DELAY, bandwidth=BANDWIDTH
    ) as proxy:
        before: dict[str, int] = {}

        def count_bytes(name: str, _cpu: float) -> None:
            total = sum(c.bytes_down for c in proxy.connections)
            down[name].append(total - before.get("total", 0))
            before["total"] = total

        variants, conns = _variants(imap, proxy.port, count, count_bytes)
        before["total"] = sum(c.bytes_down for c in proxy.connections)
        try:
            table = report.add(
                Table(
                    f"IMAP: fetch all bodies of {count:,} text messages of about "
                    f"1 KB at {BANDWIDTH / 1e6:.0f} Mbit/s, {DELAY * 2000:.0f} ms "
                    "round trip, fake Gmail",
                    interleave(variants, runs),
                    work=count,
                    note="Logged in once per variant; timed: SELECT and one FETCH "
                    "1:* (RFC822). Bytes from the server per run: "
                    + ", ".join(
                        f"{name} {_median(down[name]) / 1e6:.2f} MB" for name in down
                    )
                    + ".",
                )
            )
        finally:
            for conn in conns:
                conn.logout()
    ratio = table.ratio(PLAIN)
    report.verdict(
        f"Fetch at {BANDWIDTH / 1e6:.0f} Mbit/s: COMPRESS >= 2x the throughput "
        "without it",
        ratio >= 2,
        f"{ratio:.2f}x",
    )


def _loopback(report: Report, imap: Endpoint, *, runs: int, count: int) -> None:
    cpu: dict[str, list[float]] = {OURS: [], PLAIN: []}
    variants, conns = _variants(
        imap, imap.port, count, lambda name, used: cpu[name].append(used)
    )
    try:
        samples = interleave(variants, runs)
    finally:
        for conn in conns:
            conn.logout()
    # The warm-up round's CPU is dropped as its time is.
    cpu = {name: used[-runs:] for name, used in cpu.items()}
    note = "Loopback, no proxy; timed: SELECT and one FETCH 1:* (RFC822)."
    report.add(
        Table(
            f"IMAP: the same fetch on loopback, wall time, fake Gmail ({count:,} "
            "messages)",
            samples,
            work=count,
            note=note,
        )
    )
    report.add(
        Table(
            "IMAP: the same fetch on loopback, the client's CPU time (its thread)",
            {name: [Sample(s) for s in used] for name, used in cpu.items()},
            note=note + " Ratio: CPU with COMPRESS / CPU without.",
        )
    )


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0
