"""Scenario 10's client: N IMAP connections in IDLE in one fresh process.

Run by scenario_aio_scale with a JSON object on stdin (never a token on the
command line); prints one JSON object. Each run is its own interpreter, so
its RSS holds only this client and its N connections (the server is another
process). ``mode`` is:

``rss``
    N connections of one ``variant`` brought into IDLE; the RSS they added,
    per connection. Variants: ``aio`` (gmail_xoauth2.aio.IMAP4, each watching
    its INBOX in a task), ``threads`` (the sync gmail_xoauth2.IMAP4, each
    watching in a thread), ``imaplib`` (imaplib.IMAP4_SSL in IDLE by hand,
    a thread reading each), ``asyncio-tls`` and ``asyncio-tls-16k``
    (``asyncio.open_connection(ssl=...)``, logged in and in IDLE by hand, a
    task reading each; the second with ``SSLProtocol.max_size`` at 16 KiB).
``scale``
    N aio.IMAP4 watches, one GoogleTokenProvider per account, brought online
    with ``handshakes=Semaphore(k)``; then every provider refreshed at once
    under that load; then the server's mass session end (tokens expired,
    sessions ended, a message delivered to each INBOX). Event-loop lag is
    sampled throughout by a task timing ``asyncio.sleep(0.01)``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import gc
import json
import os
import resource
import ssl
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TICK = 0.01


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Control:
    """The server's control port, over a plain asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader, self._writer = reader, writer
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, port: int) -> Control:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def ask(self, op: str, **fields: Any) -> Any:
        async with self._lock:
            self._writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            answer = json.loads(await self._reader.readline())
        if "error" in answer:
            raise RuntimeError(f"server control {op}: {answer['error']}")
        return answer["ok"]

    async def wait_idle(self, n: int, since: int, timeout: float) -> float:
        """Poll until ``n`` connections newer than ``since`` are in IDLE."""
        start = time.perf_counter()
        while await self.ask("idle", since=since) < n:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"fewer than {n} connections in IDLE in {timeout}s")
            await asyncio.sleep(0.05)
        return time.perf_counter()


class Ticker:
    """Event-loop lag: how late each ``asyncio.sleep(TICK)`` wakes."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            self.samples.append((before, time.perf_counter() - before - TICK))

    def between(self, start: float, end: float) -> dict[str, float]:
        lags = sorted(lag for at, lag in self.samples if start <= at <= end)
        if not lags:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
        return {
            "p50_ms": 1000 * statistics.median(lags),
            "p99_ms": 1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))],
            "max_ms": 1000 * lags[-1],
            "samples": len(lags),
        }


class CpuSampler:
    """This process's CPU (all threads) per 0.25 s window of wall time."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float, float]] = []  # start, end, percent
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        while True:
            await asyncio.sleep(0.25)
            now, used = time.perf_counter(), time.process_time()
            self.windows.append((wall, now, 100 * (used - cpu) / (now - wall)))
            wall, cpu = now, used

    def between(self, start: float, end: float) -> dict[str, float]:
        inside = [p for s, e, p in self.windows if s >= start and e <= end]
        return {
            "peak_pct": max(inside, default=0.0),
            "mean_pct": statistics.fmean(inside) if inside else 0.0,
        }


# -- mode rss ------------------------------------------------------------------


async def _aio_watch(imap: Any, events: dict[str, list[Any]]) -> None:
    async with imap.watch("INBOX") as watcher:
        async for event in watcher:
            events.setdefault(imap.user, []).append((event, time.perf_counter()))


async def _raw_idle(
    host: str, port: int, context: ssl.SSLContext, user: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Log in and enter IDLE by hand over asyncio's own TLS transport."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host
    )
    await reader.readline()  # greeting
    sasl = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
    for tag, line in (
        (b"a1", b"a1 AUTHENTICATE XOAUTH2 " + sasl),
        (b"a2", b"a2 SELECT INBOX"),
    ):
        writer.write(line + b"\r\n")
        while not (reply := await reader.readline()).startswith(tag):
            if not reply:
                raise ConnectionError("closed during login")
        if not reply.startswith(tag + b" OK"):
            raise ConnectionError(reply.decode(errors="replace"))
    writer.write(b"a3 IDLE\r\n")
    while not (await reader.readline()).startswith(b"+"):
        pass
    return reader, writer


async def _read_forever(reader: asyncio.StreamReader) -> None:
    while await reader.readline():
        pass


async def _rss_async(args: dict[str, Any]) -> dict[str, Any]:
    variant = args["variant"]
    host, port = args["host"], args["port"]
    users: list[str] = args["users"]
    tokens: dict[str, str] = args["tokens"]
    context = ssl.create_default_context(cafile=args["ca_file"])
    control = await Control.open(args["control_port"])
    since = await control.ask("mark")
    limit = asyncio.Semaphore(args["k"])
    keep: list[Any] = []
    events: dict[str, list[Any]] = {}
    if variant == "asyncio-tls-16k":
        asyncio.sslproto.SSLProtocol.max_size = 16 * 1024  # type: ignore[attr-defined]

    if variant == "aio":
        from gmail_xoauth2 import StaticTokenProvider
        from gmail_xoauth2.aio import IMAP4

        async def one(user: str) -> None:
            imap = IMAP4(
                user,
                StaticTokenProvider(tokens[user]),
                host,
                port,
                ssl_context=context,
                handshakes=limit,
            )
            keep.append(imap)
            keep.append(asyncio.create_task(_aio_watch(imap, events)))
    else:

        async def one(user: str) -> None:
            async with limit:
                reader, writer = await _raw_idle(
                    host, port, context, user, tokens[user]
                )
            keep.append((reader, writer))
            keep.append(asyncio.create_task(_read_forever(reader)))

    await one(users[0])
    await control.wait_idle(1, since, 60)
    await asyncio.sleep(0.5)
    gc.collect()
    before = rss_kib()
    start = time.perf_counter()
    await asyncio.gather(*(one(user) for user in users[1:]))
    done = await control.wait_idle(len(users), since, 600)
    await asyncio.sleep(1.0)
    gc.collect()
    after = rss_kib()
    return {
        "before_kib": before,
        "after_kib": after,
        "online_seconds": done - start,
        "per_conn_kib": (after - before) / (len(users) - 1),
    }


def _rss_threads(args: dict[str, Any]) -> dict[str, Any]:
    from gmail_xoauth2 import IMAP4, StaticTokenProvider

    host, port = args["host"], args["port"]
    users: list[str] = args["users"]
    tokens: dict[str, str] = args["tokens"]
    context = ssl.create_default_context(cafile=args["ca_file"])
    limit = threading.Semaphore(args["k"])
    errors: list[BaseException] = []

    def one(user: str) -> None:
        try:
            if args["variant"] == "imaplib":
                _imaplib_idle(user)
                return
            with limit:
                imap = IMAP4(
                    user,
                    StaticTokenProvider(tokens[user]),
                    host,
                    port,
                    ssl_context=context,
                )
            with imap.watch("INBOX") as watcher:
                for _ in watcher:
                    pass
        except BaseException as exc:  # reported by the parent
            errors.append(exc)

    def _imaplib_idle(user: str) -> None:
        import imaplib

        from gmail_xoauth2 import xoauth2_response

        raw = xoauth2_response(user, tokens[user])
        with limit:
            conn = imaplib.IMAP4_SSL(host, port, ssl_context=context)
            conn.authenticate("XOAUTH2", lambda _challenge: raw)
            conn.select("INBOX")
            conn.send(conn._new_tag() + b" IDLE\r\n")  # type: ignore[attr-defined]
            conn.readline()  # "+ idling"
        while conn.readline():
            pass

    async def control_call(op: str, **fields: Any) -> Any:
        control = await Control.open(args["control_port"])
        try:
            return await control.ask(op, **fields)
        finally:
            control._writer.close()

    def ask(op: str, **fields: Any) -> Any:
        return asyncio.run(control_call(op, **fields))

    def wait_idle(n: int, since: int, timeout: float) -> float:
        start = time.perf_counter()
        while ask("idle", since=since) < n:
            if errors:
                raise errors[0]
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"fewer than {n} connections in IDLE")
            time.sleep(0.05)
        return time.perf_counter()

    since = ask("mark")
    threading.Thread(target=one, args=(users[0],), daemon=True).start()
    wait_idle(1, since, 60)
    time.sleep(0.5)
    gc.collect()
    before = rss_kib()
    start = time.perf_counter()
    for user in users[1:]:
        threading.Thread(target=one, args=(user,), daemon=True).start()
    done = wait_idle(len(users), since, 600)
    time.sleep(1.0)
    gc.collect()
    after = rss_kib()
    return {
        "before_kib": before,
        "after_kib": after,
        "online_seconds": done - start,
        "per_conn_kib": (after - before) / (len(users) - 1),
    }


# -- mode scale ------------------------------------------------------------------


async def _scale(args: dict[str, Any]) -> dict[str, Any]:
    from gmail_xoauth2.aio import IMAP4
    from gmail_xoauth2.auth import GoogleTokenProvider

    host, port = args["host"], args["port"]
    users: list[str] = args["users"]
    files: dict[str, str] = args["files"]
    n = len(users)
    context = ssl.create_default_context(cafile=args["ca_file"])
    if args.get("workers"):
        # Fewer threads for the refreshes: less GIL contention with the loop.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=args["workers"])
        )
    control = await Control.open(args["control_port"])
    ticker, cpu = Ticker(), CpuSampler()
    ticker.start()
    cpu.start()
    providers = {
        user: GoogleTokenProvider.from_authorized_user_file(files[user])
        for user in users
    }
    limit = asyncio.Semaphore(args["k"])
    events: dict[str, list[Any]] = {}
    tasks = []
    await asyncio.sleep(0.5)
    gc.collect()
    rss_before = rss_kib()
    since = await control.ask("mark")
    refreshes_0 = await control.ask("refreshes")

    # Bring every account online.
    server_cpu = await control.ask("cpu")
    start = time.perf_counter()
    for user in users:
        imap = IMAP4(
            user, providers[user], host, port, ssl_context=context, handshakes=limit
        )
        tasks.append(asyncio.create_task(_aio_watch(imap, events)))
    online = await control.wait_idle(n, since, 600)
    online_server = _percent(await control.ask("cpu") - server_cpu, online - start)
    online_lag = ticker.between(start, online)
    online_cpu = cpu.between(start, online)
    await asyncio.sleep(1.0)
    gc.collect()
    rss_online = rss_kib()
    refreshes_1 = await control.ask("refreshes")

    # Every provider refreshed at once, with all N connections in IDLE.
    await asyncio.sleep(0.5)
    refresh_start = time.perf_counter()
    await asyncio.gather(
        *(p.token_async(force_refresh=True) for p in providers.values())
    )
    refresh_end = time.perf_counter()
    refresh_lag = ticker.between(refresh_start, refresh_end)
    refreshes_2 = await control.ask("refreshes")

    # Gmail's session end for everyone at once, mail arriving meanwhile.
    await asyncio.sleep(0.5)
    since = await control.ask("mark")
    server_cpu = await control.ask("cpu")
    end_start = time.perf_counter()
    ended = await control.ask("mass-end", seq=1)
    uids: dict[str, int] = ended["uids"]

    def reported() -> bool:
        return all(
            any(e.uid == uids[u] for e, at in events.get(u, []) if at >= end_start)
            for u in users
        )

    while not reported():
        if time.perf_counter() - end_start > 600:
            break
        await asyncio.sleep(0.05)
    messages_at = time.perf_counter()
    idle_at = await control.wait_idle(n, since, 600)
    recovered = max(messages_at, idle_at)
    recovery_server = _percent(
        await control.ask("cpu") - server_cpu, recovered - end_start
    )
    recovery_lag = ticker.between(end_start, recovered)
    recovery_cpu = cpu.between(end_start, recovered)
    await asyncio.sleep(2.0)  # late duplicates would show up here
    refreshes_3 = await control.ask("refreshes")
    after_end = {
        u: [e for e, at in events.get(u, []) if at >= end_start] for u in users
    }
    for task in tasks:
        task.cancel()
    return {
        "n": n,
        "k": args["k"],
        "online_seconds": online - start,
        "online_cpu": online_cpu,
        "online_lag": online_lag,
        "online_server_cpu_pct": online_server,
        "rss_per_account_kib": (rss_online - rss_before) / n,
        "online_refreshes": _deltas(refreshes_0, refreshes_1),
        "refresh_seconds": refresh_end - refresh_start,
        "refresh_lag": refresh_lag,
        "refresh_counts": _deltas(refreshes_1, refreshes_2),
        "end": {k: v for k, v in ended.items() if k != "uids"},
        "messages_seconds": messages_at - end_start,
        "idle_seconds": idle_at - end_start,
        "recovery_seconds": recovered - end_start,
        "recovery_lag": recovery_lag,
        "recovery_cpu": recovery_cpu,
        "recovery_server_cpu_pct": recovery_server,
        "recovery_refreshes": _deltas(refreshes_2, refreshes_3),
        "reported": _histogram(
            sum(1 for e in got if e.uid == uids[u]) for u, got in after_end.items()
        ),
        "other_events": sum(
            1 for u, got in after_end.items() for e in got if e.uid != uids[u]
        ),
    }


def _percent(cpu: float, wall: float) -> float:
    return 100 * cpu / wall if wall > 0 else 0.0


def _deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """How many accounts saw each number of refreshes: {"1": 1000}."""
    return _histogram(after[u] - before[u] for u in after)


def _histogram(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _finish(result: dict[str, Any]) -> None:
    """Print the result and leave at once, from inside the loop or a thread.

    Closing N connections one by one (or cancelling N watches, each wanting
    to send DONE) is not what is measured; the server just sees EOF.
    """
    json.dump(result, sys.stdout)
    sys.stdout.flush()
    os._exit(0)


async def _run(mode: Any, args: dict[str, Any]) -> None:
    _finish(await mode(args))


def main() -> int:
    args = json.load(sys.stdin)
    _raise_fd_limit()
    if args["mode"] == "scale":
        asyncio.run(_run(_scale, args))
    elif args["variant"] in ("threads", "imaplib"):
        _finish(_rss_threads(args))
    else:
        asyncio.run(_run(_rss_async, args))
    return 1


if __name__ == "__main__":
    sys.exit(main())
