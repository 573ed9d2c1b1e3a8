"""Run every benchmark scenario and print Markdown tables and target verdicts.

Usage: ``python benchmarks/run.py [--quick] [--only 1,3]``. See README.md here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import scenario_aio_scale
import scenario_compress
import scenario_hotpath
import scenario_login
import scenario_memory
import scenario_recovery
import scenario_throughput
import scenario_token_stores
import scenario_tokens
from clients import Endpoint
from harness import OURS, Report
from servers import DovecotBench, dovecot_server

from gmail_xoauth2.testing.gmail import FakeGmail

USER = "bench@example.com"
RECIPIENT = "rcpt@example.com"
RECOVER = {OURS: "recover-a@example.com", "imaplib": "recover-b@example.com"}
BIG = "big@example.com"
USERS = (USER, RECIPIENT, *RECOVER.values(), BIG)
COMPRESS = "compress@example.com"  # scenario 8's fake Gmail is its own


@dataclass(frozen=True)
class Plan:
    """How many interleaved runs each scenario gets."""

    login: int
    send: int
    fetch: int
    messages: int
    recovery: int
    cli: int
    memory: int
    flood: int
    flood_warmup: int
    hot_fetch: int
    compress: int
    store_samples: int
    store_windows: int
    scale_accounts: int


QUICK = Plan(
    login=3,
    send=3,
    fetch=2,
    messages=2000,
    recovery=3,
    cli=10,
    memory=1,
    flood=2,
    flood_warmup=0,
    hot_fetch=5,
    compress=2,
    store_samples=300,
    store_windows=2,
    scale_accounts=200,
)
FULL = Plan(
    login=11,
    send=9,
    fetch=9,
    messages=5000,
    recovery=11,
    cli=21,
    memory=3,
    flood=5,
    flood_warmup=1,
    hot_fetch=15,
    compress=5,
    store_samples=2000,
    store_windows=4,
    scale_accounts=1000,
)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs"
    )


def _endpoint(fake: FakeGmail, user: str, port: int) -> Endpoint:
    return Endpoint(fake.host, port, fake.ssl_context(), user, fake.mint_token(user))


@contextlib.contextmanager
def _section(report: Report, title: str) -> Iterator[None]:
    report.section(title)
    start = time.perf_counter()
    yield
    print(f"_({time.perf_counter() - start:.1f} s)_", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (< 3 min)")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5,6,7,8,9,10",
        help="comma-separated scenario numbers",
    )
    parser.add_argument(
        "--no-dovecot", action="store_true", help="skip the Dovecot columns"
    )
    args = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",")}
    plan = QUICK if args.quick else FULL
    logging.basicConfig(level=logging.WARNING)
    report = Report()
    started = time.perf_counter()
    print(f"## Benchmark run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"Machine: {_machine()}. Plan: {'quick' if args.quick else 'full'}.")

    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeGmail(users=USERS))
        dovecot = _dovecot(stack, report, args.no_dovecot or not only & {1, 3, 7})
        imap = _endpoint(fake, USER, fake.imap_port)
        login_flights = None
        if 1 in only:
            with _section(report, "1. IMAP login"):
                tables = scenario_login.run(
                    report, "fake Gmail", imap, runs=plan.login, capabilities=False
                )
                login_flights = tables[scenario_login.DELAYS[-1]].flights(OURS)
                if dovecot is None:
                    report.verdict(_DOVECOT_LOGIN, None, "Dovecot not run")
                else:
                    scenario_login.run(
                        report,
                        "Dovecot",
                        dovecot.endpoint,
                        runs=plan.login,
                        capabilities=True,
                    )
        if 2 in only:
            with _section(report, "2. SMTP sending"):
                smtp = _endpoint(fake, USER, fake.smtp_port)
                scenario_throughput.run_send(report, smtp, RECIPIENT, runs=plan.send)
        if 3 in only:
            with _section(report, "3. IMAP fetch"):
                for n in range(plan.messages):
                    fake.deliver(USER, scenario_throughput.make_message(USER, USER, n))
                scenario_throughput.run_fetch(
                    report, "fake Gmail", imap, runs=plan.fetch, count=plan.messages
                )
                if dovecot is not None:
                    dovecot.fill(
                        scenario_throughput.make_message(dovecot.endpoint.user, USER, n)
                        for n in range(plan.messages)
                    )
                    scenario_throughput.run_fetch(
                        report,
                        "Dovecot",
                        dovecot.endpoint,
                        runs=plan.fetch,
                        count=plan.messages,
                    )
        if 4 in only:
            with _section(report, "4. Recovery after a session end"):
                if login_flights is None:
                    login_flights = scenario_login.count_flights(imap)
                endpoints = {}
                for name, user in RECOVER.items():
                    fake.deliver(user, scenario_throughput.make_message(user, user, 0))
                    endpoints[name] = _endpoint(fake, user, fake.imap_port)
                scenario_recovery.run(
                    report,
                    "fake Gmail",
                    endpoints,
                    lambda user: fake.end_sessions(user, "imap"),
                    login_flights=login_flights,
                    runs=plan.recovery,
                )
        if 5 in only:
            with _section(report, "5. Token cost"):
                scenario_tokens.run_refreshes(report, FakeGmail)
                scenario_tokens.run_cli(report, fake.google, runs=plan.cli)
        if 6 in only:
            with _section(report, "6. Memory"):
                fake.deliver(BIG, scenario_memory.big_message(BIG))
                scenario_memory.run(
                    report,
                    _endpoint(fake, BIG, fake.imap_port),
                    str(fake.ca_file),
                    runs=plan.memory,
                )
        if 7 in only:
            with _section(report, "7. IMAP hot path"):
                scenario_hotpath.run_flood(
                    report, runs=plan.flood, warmup=plan.flood_warmup
                )
                if dovecot is None:
                    report.verdict(_DOVECOT_FETCH, None, "Dovecot not run")
                else:
                    scenario_hotpath.run_fetch(report, dovecot, runs=plan.hot_fetch)
        if 8 in only:
            with _section(report, "8. COMPRESS=DEFLATE"):
                scenario_compress.run(
                    report, COMPRESS, runs=plan.compress, count=plan.messages
                )
        if 9 in only:
            with _section(report, "9. Token stores"):
                scenario_token_stores.run(
                    report, samples=plan.store_samples, windows=plan.store_windows
                )
        if 10 in only:
            with _section(report, "10. Asyncio at scale"):
                scenario_aio_scale.run(
                    report,
                    n=plan.scale_accounts,
                    messages=plan.messages,
                    login_runs=plan.login,
                    fetch_runs=plan.fetch,
                )

    print("\n### Targets\n")
    print(report.summary())
    for note in report.notes:
        print(f"\n- {note}")
    print(f"\nTotal: {time.perf_counter() - started:.0f} s")
    return 0


_DOVECOT_LOGIN = "IMAP login at 40 ms one-way (Dovecot): <= 0.7x imaplib's time"
_DOVECOT_FETCH = "FETCH of 5,000 messages (Dovecot): <= 1.0x imaplib's time"


def _dovecot(
    stack: contextlib.ExitStack, report: Report, skip: bool
) -> DovecotBench | None:
    """Start the private Dovecot unless skipped or impossible (then say why)."""
    if skip:
        return None
    dovecot = stack.enter_context(dovecot_server())
    if isinstance(dovecot, str):
        report.note(f"Dovecot columns skipped: {dovecot}")
        return None
    return dovecot


if __name__ == "__main__":
    sys.exit(main())
