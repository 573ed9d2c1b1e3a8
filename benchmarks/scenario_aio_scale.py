"""Scenario 10: gmail_xoauth2.aio at scale, N accounts with one IDLE connection each.

The server is the fake Gmail in a process of its own (``aio_server.py``), not
Dovecot: the mass session end is Gmail's (every token expired and every
session ended with it, refreshed at the fake Google, whose refreshes are
counted per account), which Dovecot cannot do (it neither ends a session when
its token expires nor counts refreshes), and Dovecot's IMAP service runs a
process per connection by default, so 1,000 of them would share the two
cores with the client. Each client runs in a fresh interpreter
(``aio_client.py``), so its RSS is its own.

1. RSS per idle connection, all N in IDLE: aio.IMAP4 against imaplib and
   the sync IMAP4 with a thread per connection, and against asyncio's own TLS
   transport (``asyncio.open_connection(ssl=...)``) with its default
   256 KiB buffer and with 16 KiB.
2. N accounts (a GoogleTokenProvider each) brought online by ``watch()``
   with ``handshakes=Semaphore(k)``: time, the client's peak CPU.
3. Every provider refreshed at once with N connections in IDLE: event-loop
   lag (the refresh runs in the loop's default executor).
4. Mass session end: every token expired and every session ended on the
   server at once, one message delivered to each INBOX meanwhile: time until
   all N are back in IDLE with the message reported, refreshes per account,
   messages reported per account, event-loop lag.
5. One connection: login flights (latency proxy) and FETCH throughput, aio
   against sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aio_server import scale_users
from harness import Report, Sample, interleave, timed
from latency_proxy import LatencyProxy

from gmail_xoauth2 import IMAP4, StaticTokenProvider
from gmail_xoauth2.aio import IMAP4 as AioIMAP4

__all__ = ["HANDSHAKES", "run"]

HANDSHAKES = 8
"""Connections that may connect, handshake and authenticate at once."""
REFRESH_WORKERS = 2
"""The second scale run: the loop's default executor limited to this."""
LOGIN_DELAY = 0.010
SINGLE = ("aio", "sync", "sync, compress=False")
RSS_VARIANTS = {
    "aio.IMAP4 (watch)": "aio",
    "threads + imaplib (IDLE by hand)": "imaplib",
    "threads + sync IMAP4 (watch)": "threads",
    "asyncio TLS transport, 256 KiB buffer": "asyncio-tls",
    "asyncio TLS transport, 16 KiB buffer": "asyncio-tls-16k",
}
_HERE = Path(__file__).parent


@contextlib.contextmanager
def fake_gmail(n: int, messages: int) -> Iterator[dict[str, Any]]:
    """The fake Gmail with ``n`` accounts, in a child process."""
    with subprocess.Popen(
        [sys.executable, str(_HERE / "aio_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps({"n": n, "messages": messages}) + "\n")
            child.stdin.flush()
            yield json.loads(child.stdout.readline())
        finally:
            child.stdin.close()
            child.wait(timeout=120)


def _client(server: dict[str, Any], n: int, **args: Any) -> dict[str, Any]:
    users = scale_users(n)
    request = {
        "host": server["host"],
        "port": server["port"],
        "ca_file": server["ca_file"],
        "control_port": server["control_port"],
        "users": users,
        "tokens": {u: server["tokens"][u] for u in users},
        "files": {u: server["files"][u] for u in users},
        **args,
    }
    done = subprocess.run(
        [sys.executable, str(_HERE / "aio_client.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"aio_client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(
    report: Report, *, n: int, messages: int, login_runs: int, fetch_runs: int
) -> None:
    """Every part of the scenario against one fake Gmail with ``n`` accounts."""
    print(
        f"Server: the fake Gmail in its own process, {n} accounts; each client "
        "in a fresh interpreter. Not Dovecot: see the scenario's docstring.\n"
    )
    with fake_gmail(n, messages) as server:
        _memory(report, server, n)
        scale = _client(server, n, mode="scale", k=HANDSHAKES)
        tuned = _client(server, n, mode="scale", k=HANDSHAKES, workers=REFRESH_WORKERS)
        _scale(report, n, scale, tuned)
        _single(report, server, messages, login_runs, fetch_runs)


def _memory(report: Report, server: dict[str, Any], n: int) -> None:
    results: dict[str, dict[str, Any]] = {}
    for name, variant in RSS_VARIANTS.items():
        try:
            results[name] = _client(
                server, n, mode="rss", variant=variant, k=HANDSHAKES
            )
        except RuntimeError as exc:
            results[name] = {"failed": str(exc).strip().splitlines()[-1]}
    ours = results["aio.IMAP4 (watch)"]["per_conn_kib"]
    print(
        f"#### RSS per idle connection, {n} connections in IDLE\n\n"
        "| client | RSS per connection | RSS added | aio / this |\n"
        "|---|---|---|---|"
    )
    for name, got in results.items():
        if "failed" in got:
            print(f"| {name} | failed: {got['failed']} | | |")
            continue
        per = got["per_conn_kib"]
        added = (got["after_kib"] - got["before_kib"]) / 1024
        ratio = "" if name.startswith("aio.") else f"{ours / per:.2f}x"
        print(f"| {name} | {_kb(per)} | {added:.1f} MiB | {ratio} |")
    print(
        "\nRSS (VmRSS) with all connections in IDLE minus RSS with the first "
        "one in IDLE, over the others; one fresh interpreter per client. "
        "KB = 1,000 bytes.\n"
    )
    threads = results["threads + imaplib (IDLE by hand)"]["per_conn_kib"]
    default = results["asyncio TLS transport, 256 KiB buffer"]["per_conn_kib"]
    report.verdict(
        f"RSS per idle connection, aio.IMAP4, N={n}: <= 50 KB",
        ours * 1.024 <= 50,
        f"{_kb(ours)} ({ours / threads:.2f}x threads+imaplib, "
        f"{ours / default:.2f}x asyncio's TLS transport)",
    )


def _kb(kib: float) -> str:
    return f"{kib * 1.024:.1f} KB"


def _scale(
    report: Report, n: int, scale: dict[str, Any], tuned: dict[str, Any]
) -> None:
    k = scale["k"]
    print(
        f"#### {n} accounts, aio.IMAP4.watch(), handshakes=Semaphore({k})\n\n"
        f"| measure | default executor | executor of {REFRESH_WORKERS} threads |\n"
        "|---|---|---|"
    )
    rows = [
        ("all online (in IDLE)", lambda r: f"{r['online_seconds']:.1f} s"),
        (
            "client CPU while coming online, peak / mean",
            lambda r: (
                f"{r['online_cpu']['peak_pct']:.0f}% / "
                f"{r['online_cpu']['mean_pct']:.0f}%"
            ),
        ),
        (
            "server CPU while coming online",
            lambda r: f"{r['online_server_cpu_pct']:.0f}%",
        ),
        ("loop lag coming online, p50 / p99", lambda r: _lag(r["online_lag"])),
        (
            "RSS per account (provider included)",
            lambda r: _kb(r["rss_per_account_kib"]),
        ),
        (
            f"{n} forced refreshes under load",
            lambda r: f"{r['refresh_seconds']:.1f} s",
        ),
        ("loop lag during the refreshes, p50 / p99", lambda r: _lag(r["refresh_lag"])),
        (
            "mass end: all back in IDLE, message reported",
            lambda r: f"{r['recovery_seconds']:.1f} s",
        ),
        ("mass end: loop lag, p50 / p99", lambda r: _lag(r["recovery_lag"])),
        (
            "mass end: client CPU peak / mean, server CPU",
            lambda r: (
                f"{r['recovery_cpu']['peak_pct']:.0f}% / "
                f"{r['recovery_cpu']['mean_pct']:.0f}%, "
                f"{r['recovery_server_cpu_pct']:.0f}%"
            ),
        ),
        (
            "mass end: refreshes per account",
            lambda r: _histogram(r["recovery_refreshes"]),
        ),
        (
            "mass end: delivered message reported, per account",
            lambda r: _histogram(r["reported"]) + f", {r['other_events']} other",
        ),
    ]
    for label, cell in rows:
        print(f"| {label} | {cell(scale)} | {cell(tuned)} |")
    print(
        "\nLag: how late `asyncio.sleep(0.01)` woke, sampled by a task for the "
        "whole run. CPU: this process, all threads, per 0.25 s window (100% = "
        f"one core of {_cpus()}). Refreshes counted by the fake Google per "
        "account. Histograms read `count x accounts`.\n"
    )
    report.verdict(
        f"{n} accounts online with handshakes=Semaphore({k}): time and peak CPU",
        scale["online_seconds"] <= 300,
        f"{scale['online_seconds']:.1f} s, client CPU peak "
        f"{scale['online_cpu']['peak_pct']:.0f}%",
    )
    report.verdict(
        f"Mass session end, N={n}: all back in IDLE within 30 s",
        scale["recovery_seconds"] <= 30,
        f"{scale['recovery_seconds']:.1f} s",
    )
    report.verdict(
        "Mass session end: exactly one refresh per account",
        scale["recovery_refreshes"] == {"1": n},
        _histogram(scale["recovery_refreshes"]),
    )
    report.verdict(
        "Mass session end: each delivered message reported exactly once",
        scale["reported"] == {"1": n} and scale["other_events"] == 0,
        _histogram(scale["reported"]) + f", {scale['other_events']} other events",
    )
    p99 = scale["recovery_lag"]["p99_ms"]
    report.verdict(
        "Mass session end: event-loop lag p99 <= 100 ms",
        p99 <= 100,
        f"{p99:.1f} ms (p50 {scale['recovery_lag']['p50_ms']:.1f} ms)",
    )
    p99 = scale["refresh_lag"]["p99_ms"]
    report.verdict(
        f"Event-loop lag during {n} refreshes under load: p99 <= 10 ms",
        p99 <= 10,
        f"{p99:.1f} ms with the default executor; "
        f"{tuned['refresh_lag']['p99_ms']:.1f} ms with {REFRESH_WORKERS} threads",
    )


def _lag(lag: dict[str, float]) -> str:
    return f"{lag['p50_ms']:.1f} / {lag['p99_ms']:.1f} ms"


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} x {count}" for value, count in sorted(counts.items()))


def _cpus() -> str:
    import os

    return f"{os.cpu_count()}"


# -- one connection -------------------------------------------------------------


def _single(
    report: Report,
    server: dict[str, Any],
    messages: int,
    login_runs: int,
    fetch_runs: int,
) -> None:
    context = ssl.create_default_context(cafile=server["ca_file"])
    user, token = server["fetch_user"], server["fetch_token"]
    with asyncio.Runner() as runner:

        def sync_login(host: str, port: int, *, compress: bool = True) -> IMAP4:
            return IMAP4(
                user,
                StaticTokenProvider(token),
                host,
                port,
                ssl_context=context,
                compress=compress,
            )

        def aio_login(host: str, port: int) -> AioIMAP4:
            imap = AioIMAP4(
                user, StaticTokenProvider(token), host, port, ssl_context=context
            )
            return runner.run(imap.connect())

        with LatencyProxy((server["host"], server["port"]), delay=LOGIN_DELAY) as proxy:

            def login(kind: str) -> Sample:
                proxy.reset()
                start = time.perf_counter()
                if kind != "aio":
                    conn: Any = sync_login(
                        proxy.host, proxy.port, compress=kind == "sync"
                    )
                else:
                    conn = aio_login(proxy.host, proxy.port)
                sample = Sample(time.perf_counter() - start, proxy.flights)
                if kind != "aio":
                    conn.logout()
                else:
                    runner.run(conn.logout())
                return sample

            logins = interleave(
                {name: (lambda n=name: login(n)) for name in SINGLE},
                login_runs,
            )
        syncs = {
            name: sync_login(server["host"], server["port"], compress=name == "sync")
            for name in SINGLE[1:]
        }
        aio = aio_login(server["host"], server["port"])
        for conn in syncs.values():
            conn.select("INBOX", readonly=True)
        runner.run(aio.select("INBOX", readonly=True))

        def fetch_sync(name: str) -> Sample:
            return timed(lambda: _check(syncs[name].fetch("1:*", "(RFC822)"), messages))

        def fetch_aio() -> None:
            _check(runner.run(aio.fetch("1:*", "(RFC822)")), messages)

        fetches = interleave(
            {
                "aio": lambda: timed(fetch_aio),
                **{n: (lambda n=n: fetch_sync(n)) for n in SINGLE[1:]},
            },
            fetch_runs,
        )
        for conn in syncs.values():
            conn.logout()
        runner.run(aio.logout())
    _single_table(report, logins, fetches, messages)


def _check(reply: tuple[str, list[Any]], count: int) -> None:
    typ, data = reply
    got = sum(1 for item in data if isinstance(item, tuple))
    if typ != "OK" or got != count:
        raise RuntimeError(f"fetched {got} messages ({typ}), expected {count}")


def _single_table(
    report: Report,
    logins: dict[str, list[Sample]],
    fetches: dict[str, list[Sample]],
    messages: int,
) -> None:
    import statistics

    def median(samples: list[Sample]) -> float:
        return statistics.median(s.seconds for s in samples)

    def flights(samples: list[Sample]) -> int:
        return round(statistics.median(s.flights or 0 for s in samples))

    ms = f"{LOGIN_DELAY * 1000:.0f} ms"
    rate = {name: messages / median(s) for name, s in fetches.items()}
    print(
        "#### One connection: login and FETCH, aio.IMAP4 vs sync IMAP4\n\n"
        f"| client | login flights | login at {ms} one-way | "
        f"FETCH 1:* of {messages:,} msgs | msg/s |\n|---|---|---|---|---|"
    )
    for name in SINGLE:
        print(
            f"| {name} | {flights(logins[name])} | "
            f"{median(logins[name]) * 1000:.0f} ms | "
            f"{median(fetches[name]) * 1000:.0f} ms | {rate[name]:,.0f} |"
        )
    runs = min(len(s) for s in (*logins.values(), *fetches.values()))
    print(
        f"\nMedians of {runs}+ interleaved runs; login to the authenticated "
        "state through the latency proxy (flights: times the client waited), "
        "FETCH on loopback over one logged-in connection each. The sync IMAP4 "
        "turns COMPRESS=DEFLATE on by default (one more flight); aio.IMAP4 does "
        "not offer it.\n"
    )
    ours, base = flights(logins["aio"]), flights(logins["sync"])
    report.verdict(
        "One connection: aio login flights <= sync's",
        ours <= base,
        f"{ours} vs {base} flights",
    )
    ratio = rate["aio"] / rate["sync"]
    report.verdict(
        "One connection: aio FETCH throughput >= sync's",
        ratio >= 1.0,
        f"{ratio:.2f}x ({rate['aio']:,.0f} vs {rate['sync']:,.0f} msg/s)",
    )
