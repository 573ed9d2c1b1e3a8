"""Scenario 4: from a server-side session end to the next command's result."""

from __future__ import annotations

import imaplib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from clients import Endpoint, login_imaplib, login_ours
from harness import OURS, Report, Sample, Table, interleave
from latency_proxy import LatencyProxy

__all__ = ["run"]


class _HandRolled:
    """imaplib with the reconnect loop its users write themselves."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self.conn = self._connect()

    def _connect(self) -> imaplib.IMAP4_SSL:
        conn = login_imaplib(self._endpoint)
        conn.select("INBOX", readonly=True)
        return conn

    def search(self) -> list[bytes]:
        try:
            typ, data = self.conn.search(None, "ALL")
        except (imaplib.IMAP4.abort, OSError):
            # "'abort' exceptions imply the connection should be reset, and
            # the command re-tried" (imaplib's docstring).
            self.conn.shutdown()
            self.conn = self._connect()
            typ, data = self.conn.search(None, "ALL")
        assert typ == "OK"
        return list(data)

    def logout(self) -> None:
        self.conn.logout()


class _Ours:
    def __init__(self, endpoint: Endpoint) -> None:
        self.conn = login_ours(endpoint)
        self.conn.select("INBOX", readonly=True)

    def search(self) -> list[bytes]:
        typ, data = self.conn.search(None, "ALL")
        assert typ == "OK"
        return list(data)

    def logout(self) -> None:
        self.conn.logout()


def _recover(
    proxy: LatencyProxy, client: Any, end_session: Callable[[], None]
) -> Sample:
    proxy.reset()
    start = time.perf_counter()
    end_session()
    client.search()
    seconds = time.perf_counter() - start
    return Sample(seconds, proxy.flights)


def run(
    report: Report,
    server: str,
    endpoints: dict[str, Endpoint],
    end_sessions: Callable[[str], None],
    *,
    login_flights: int | None,
    runs: int,
    delay: float = 0.040,
) -> Table:
    """``endpoints`` maps OURS and "imaplib" to different users, so ending one
    client's session leaves the other's alone."""
    proxies = {
        name: LatencyProxy((e.host, e.port), delay=delay)
        for name, e in endpoints.items()
    }
    clients: dict[str, Any] = {}
    try:
        clients[OURS] = _Ours(
            replace(endpoints[OURS], host="127.0.0.1", port=proxies[OURS].port)
        )
        clients["imaplib"] = _HandRolled(
            replace(
                endpoints["imaplib"], host="127.0.0.1", port=proxies["imaplib"].port
            )
        )
        variants = {
            name: (
                lambda name=name: _recover(
                    proxies[name],
                    clients[name],
                    lambda: end_sessions(endpoints[name].user),
                )
            )
            for name in clients
        }
        table = report.add(
            Table(
                f"IMAP recovery after a session end, {server}, "
                f"{delay * 1000:.0f} ms one-way",
                interleave(variants, runs),
                note="Timed from the server ending the session to the result of "
                "the next SEARCH: reconnect, log in, re-SELECT, SEARCH. imaplib: "
                "the reconnect loop its users write (catch abort, log in, SELECT, "
                "retry).",
            )
        )
    finally:
        for client in clients.values():
            client.logout()
        for proxy in proxies.values():
            proxy.close()
    ours = table.flights(OURS)
    if login_flights is None or ours is None:
        report.verdict(
            "Recovery: <= one login's flights + re-SELECT + command",
            None,
            "not counted",
        )
    else:
        limit = login_flights + 2
        report.verdict(
            "Recovery after a session end: "
            "<= one login's flights + re-SELECT + command",
            ours <= limit,
            f"{ours} flights (limit {login_flights} + 2 = {limit}); "
            f"time {table.ratio('imaplib'):.2f}x imaplib's hand-rolled loop",
        )
    return table
