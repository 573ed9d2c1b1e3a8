"""Scenario 10's server: the fake Gmail with N accounts, in a process of its own.

Run by scenario_aio_scale: ``python aio_server.py`` with a JSON object on
the first line of stdin (``n``, ``messages``). It prints one JSON line (ports,
CA file, a token and an authorized-user file per account) and serves until
its stdin closes.
Its ~1,000 connection threads and their TLS would otherwise share the
client's process, its RSS and its GIL.

A control port (loopback, one JSON object per line each way) lets the parent
and the client child drive it: ``mass-end`` (every access token expired, then
every IMAP session ended, then one message delivered to each account),
``idle`` (how many IMAP connections newer than ``since`` are in IDLE),
``mark`` (the newest connection id), ``refreshes`` (access tokens minted
per account by the token endpoint so far) and ``cpu`` (this process's CPU
seconds, to tell when the server is the bottleneck).
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scenario_throughput import make_message

from gmail_xoauth2.testing.gmail import FakeGmail

FETCH_USER = "fetch@example.com"


def scale_users(n: int) -> list[str]:
    return [f"user{i:04d}@example.com" for i in range(n)]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Control:
    """The control port's commands, run against one started FakeGmail."""

    def __init__(self, gmail: FakeGmail, users: list[str]) -> None:
        self.gmail = gmail
        self.users = users
        self._ops: dict[str, Callable[[dict[str, Any]], object]] = {
            "mass-end": self.mass_end,
            "idle": self.idle,
            "mark": self.mark,
            "refreshes": self.refreshes,
            "cpu": lambda request: time.process_time(),
        }

    def handle(self, request: dict[str, Any]) -> object:
        return self._ops[request["op"]](request)

    def mass_end(self, request: dict[str, Any]) -> object:
        """Gmail's hourly end for everyone at once, and mail during the outage."""
        gmail = self.gmail
        start = time.perf_counter()
        for user in self.users:
            gmail.google.expire_tokens(user)
        ended = 0
        for conn in gmail.backend.live_connections("imap"):
            if conn.grant is not None:
                conn.end_session("expired")
                ended += 1
        ended_at = time.perf_counter() - start
        uids = {}
        for user in self.users:
            message = make_message(user, user, int(request.get("seq", 0)))
            uids[user] = gmail.deliver(user, message)
        return {
            "ended": ended,
            "end_seconds": ended_at,
            "deliver_seconds": time.perf_counter() - start - ended_at,
            "uids": uids,
        }

    def idle(self, request: dict[str, Any]) -> object:
        since = int(request.get("since", 0))
        return sum(
            1
            for conn in self.gmail.backend.live_connections("imap")
            if conn.conn_id > since and getattr(conn, "_wake", None) is not None
        )

    def mark(self, request: dict[str, Any]) -> object:
        return max(
            (c.conn_id for c in self.gmail.backend.live_connections()), default=0
        )

    def refreshes(self, request: dict[str, Any]) -> object:
        """Access tokens minted per account (each refresh mints one)."""
        google = self.gmail.google
        counts = dict.fromkeys(self.users, 0)
        with google._lock:
            for access in google._access.values():
                if access.user in counts:
                    counts[access.user] += 1
        return counts


def _serve_control(listener: socket.socket, control: Control) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        threading.Thread(
            target=_control_conn, args=(sock, control), daemon=True
        ).start()


def _control_conn(sock: socket.socket, control: Control) -> None:
    with sock, sock.makefile("rwb") as stream:
        for line in stream:
            try:
                answer = {"ok": control.handle(json.loads(line))}
            except Exception as exc:  # the caller sees it
                answer = {"error": repr(exc)}
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()


def main() -> int:
    args = json.loads(sys.stdin.readline())
    _raise_fd_limit()
    users = scale_users(int(args["n"]))
    with FakeGmail((*users, FETCH_USER)) as gmail:
        for n in range(int(args["messages"])):
            gmail.deliver(FETCH_USER, make_message(FETCH_USER, FETCH_USER, n))
        directory = Path(gmail.ca_file).parent / "accounts"
        directory.mkdir()
        files = {}
        for user in users:
            path = directory / f"{user}.json"
            gmail.google.write_authorized_user_file(path, user)
            files[user] = str(path)
        control = Control(gmail, users)
        listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(
            target=_serve_control, args=(listener, control), daemon=True
        ).start()
        details = {
            "host": gmail.host,
            "port": gmail.imap_port,
            "ca_file": gmail.ca_file,
            "control_port": listener.getsockname()[1],
            "fetch_user": FETCH_USER,
            "fetch_token": gmail.mint_token(FETCH_USER),
            "tokens": {user: gmail.mint_token(user) for user in users},
            "files": files,
        }
        print(json.dumps(details), flush=True)
        sys.stdin.read()
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
