"""Scenario 1: IMAP login to the authenticated state through the latency proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from clients import IMAP_LOGINS, Endpoint
from harness import OURS, Report, Sample, Table, interleave
from latency_proxy import LatencyProxy

__all__ = ["DELAYS", "count_flights", "run"]

DELAYS = (0.0, 0.010, 0.040)


def _login_once(
    proxy: LatencyProxy, endpoint: Endpoint, login: Callable[[Endpoint], Any]
) -> Sample:
    proxy.reset()
    start = time.perf_counter()
    conn = login(endpoint)
    seconds = time.perf_counter() - start
    flights = proxy.flights
    conn.logout()
    return Sample(seconds, flights)


def count_flights(endpoint: Endpoint) -> int | None:
    """One login of ours through an undelayed proxy: its client flights."""
    with LatencyProxy((endpoint.host, endpoint.port)) as proxy:
        via = replace(endpoint, host=proxy.host, port=proxy.port)
        return _login_once(proxy, via, IMAP_LOGINS[OURS]).flights


def run(
    report: Report, server: str, endpoint: Endpoint, *, runs: int, capabilities: bool
) -> dict[float, Table]:
    """Time each client's login at each one-way delay; return the tables."""
    greeting = "carries" if capabilities else "does not carry"
    tables = {}
    with LatencyProxy((endpoint.host, endpoint.port)) as proxy:
        via = replace(endpoint, host=proxy.host, port=proxy.port)
        for delay in DELAYS:
            proxy.delay = delay
            variants = {
                name: (lambda login=login: _login_once(proxy, via, login))
                for name, login in IMAP_LOGINS.items()
            }
            tables[delay] = report.add(
                Table(
                    f"IMAP login, {server}, {delay * 1000:.0f} ms one-way",
                    interleave(variants, runs),
                    note=f"The greeting {greeting} capabilities. Flights: "
                    "times the client waited for the server (TLS handshake included).",
                )
            )
    slow = tables[DELAYS[-1]]
    ms = f"{DELAYS[-1] * 1000:.0f} ms"
    if capabilities:
        ratio = slow.ratio("imaplib")
        report.verdict(
            f"IMAP login at {ms} one-way ({server}): <= 0.7x imaplib's time",
            ratio <= 0.7,
            f"{ratio:.2f}x; flights {slow.flights(OURS)} vs {slow.flights('imaplib')}",
        )
    else:
        ours, base = slow.flights(OURS), slow.flights("imaplib")
        assert ours is not None and base is not None
        report.verdict(
            f"IMAP login ({server}, greeting without capabilities): "
            "flights <= imaplib's - 1",
            ours <= base - 1,
            f"{ours} vs {base} flights; time {slow.ratio('imaplib'):.2f}x at {ms}",
        )
    return tables
