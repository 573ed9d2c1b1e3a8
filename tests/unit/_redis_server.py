"""A private redis-server on a free loopback port, started and stopped by PID.

Debian's ``redis-server`` (installed by ``scripts/install-test-deps.sh``) runs as
our child with no persistence, in a scratch directory. ``stop()`` and ``start()``
again on the same port let tests take Redis away and bring it back. Without the
binary the tests skip, saying how to install it; with
``GMAIL_XOAUTH2_REQUIRE_INTEGRATION=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "GMAIL_XOAUTH2_REQUIRE_INTEGRATION"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server child process.

    Args:
        directory: its working directory (nothing is persisted there).
        port: the loopback port (0: a free one, kept across restarts).
        password: ``requirepass`` (None: no password).
    """

    def __init__(
        self, directory: Path, *, port: int = 0, password: str | None = None
    ) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: list[str] = []

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start it and return once it accepts connections.

        Raises:
            RuntimeError: it exited or did not get ready in time.
        """
        binary = _binary()
        assert binary is not None
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "notice",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready = threading.Event()
        thread = threading.Thread(
            target=self._read, args=(self._proc, ready), daemon=True
        )
        thread.start()
        if not ready.wait(_START_TIMEOUT) or self._proc.poll() is not None:
            tail = "\n".join(self._log[-20:])
            self.stop()
            raise RuntimeError(f"redis-server did not start:\n{tail}")

    def _read(self, proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self._log.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
        ready.set()

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after a while), reaped; a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _binary() -> str | None:
    return shutil.which("redis-server", path=os.environ.get("PATH", "") + ":/usr/bin")


def redis_or_skip() -> None:
    """Skip (or fail in CI) when redis-server is not installed."""
    if _binary():
        return
    message = "redis-server is not installed; run `sudo scripts/install-test-deps.sh`"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh private Redis for one test."""
    redis_or_skip()
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory) as server:
        yield server
