"""One simulated host of a fleet: a process with one provider and N worker threads.

Run as a script, it builds ONE ``GoogleTokenProvider`` from a shared store (a
Redis URL, or a token file for the processes of one host) on a manual clock of
its own, prints ``ready``, then answers each line ``at <ISO time>`` read from
stdin: it moves its clock to that time, lets every worker call ``token()`` at
once (behind a barrier) and prints one JSON line::

    {"tokens": [<the distinct tokens>], "slowest_us": 812, "errors": []}

The parent drives simulated time and reads the answers; the only thing the
hosts share is the store. :class:`FleetChild` is the parent's side, used by
``test_redis_fleet.py`` and ``benchmarks/scenario_token_stores.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gmail_xoauth2.stores import TokenStore

CHILD = Path(__file__).resolve()
_REPLY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Answer:
    """What one host's workers got at one step."""

    tokens: list[str]  # the distinct tokens, sorted
    slowest_us: int  # the longest token() call, in microseconds


class FleetChild:
    """The parent's handle on one child host: start, step, read, stop by PID.

    Args:
        home: the child's private directory (its HOME, TMPDIR and cwd).
        start: the simulated time its clock starts at (aware).
        user: the account.
        redis_url: the shared Redis (or ``token_file``: a shared token file).
        workers: threads calling ``token()`` at each step.
        lock_ttl: the Redis lock's expiry, in seconds.
    """

    def __init__(
        self,
        home: Path,
        start: datetime,
        user: str,
        *,
        redis_url: str | None = None,
        token_file: Path | None = None,
        workers: int = 8,
        lock_ttl: float | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(CHILD), "--start", start.isoformat()]
        args += ["--user", user, "--workers", str(workers)]
        if redis_url is not None:
            args += ["--redis", redis_url]
        if token_file is not None:
            args += ["--file", str(token_file)]
        if lock_ttl is not None:
            args += ["--lock-ttl", str(lock_ttl)]
        env = {
            **os.environ,
            "HOME": str(home),
            "TMPDIR": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".state"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._stderr = open(home / "stderr.txt", "w+b")  # closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=home,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"child {self.pid} said nothing for {timeout:g} s{self._tail()}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError(f"child {self.pid} exited{self._tail()}")
        return line

    def _tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")[-3000:]
        return f":\n{text}" if text else ""

    def ready(self, timeout: float = _REPLY_TIMEOUT) -> None:
        """Wait until the child has built its provider and started its workers."""
        line = self._line(timeout)
        if line != "ready":
            raise AssertionError(f"child {self.pid} said {line!r}{self._tail()}")

    def ask(self, at: datetime) -> None:
        """Tell the child to set its clock to ``at`` and have every worker ask."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"at {at.isoformat()}\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = _REPLY_TIMEOUT) -> Answer:
        """The child's answer to the last :meth:`ask` (its workers' errors raised)."""
        reply = json.loads(self._line(timeout))
        if reply["errors"]:
            raise AssertionError(f"child {self.pid}: {reply['errors']}{self._tail()}")
        return Answer(list(reply["tokens"]), int(reply["slowest_us"]))

    def stop(self) -> None:
        """Close its stdin (it exits), reap it (SIGKILL by PID if it hangs)."""
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()


# -- the child ----------------------------------------------------------------


def _store(args: argparse.Namespace) -> TokenStore:
    from gmail_xoauth2 import RedisTokenStore, TokenFile

    if args.redis is None:
        return TokenFile(args.file)
    if args.lock_ttl is None:
        return RedisTokenStore(args.redis, account=args.user)
    return RedisTokenStore(args.redis, account=args.user, lock_ttl=args.lock_ttl)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--redis")
    parser.add_argument("--file")
    parser.add_argument("--lock-ttl", type=float)
    args = parser.parse_args()

    from gmail_xoauth2 import GoogleTokenProvider
    from gmail_xoauth2.testing.clock import ManualClock

    clock = ManualClock(datetime.fromisoformat(args.start))
    provider = GoogleTokenProvider.for_user(_store(args), args.user, clock=clock)
    go = threading.Barrier(args.workers + 1)
    done = threading.Barrier(args.workers + 1)
    results: list[tuple[str, int] | str] = [""] * args.workers
    stopping = threading.Event()

    def worker(index: int) -> None:
        while True:
            go.wait()
            if stopping.is_set():
                return
            started = time.perf_counter_ns()
            try:
                token = provider.token()
            except Exception as exc:
                results[index] = f"{type(exc).__name__}: {exc}"
            else:
                results[index] = (token, (time.perf_counter_ns() - started) // 1000)
            done.wait()

    threads = [
        threading.Thread(target=worker, args=(n,), daemon=True)
        for n in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for line in sys.stdin:
        verb, _, when = line.strip().partition(" ")
        if verb != "at":
            raise SystemExit(f"unknown command {line!r}")
        clock.advance(datetime.fromisoformat(when) - clock())
        go.wait()
        done.wait()
        tokens = sorted({r[0] for r in results if isinstance(r, tuple)})
        slowest = max((r[1] for r in results if isinstance(r, tuple)), default=0)
        errors = [r for r in results if isinstance(r, str)]
        print(
            json.dumps({"tokens": tokens, "slowest_us": slowest, "errors": errors}),
            flush=True,
        )
    stopping.set()
    go.wait()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
