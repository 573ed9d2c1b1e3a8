"""Find a run of free loopback ports, for the fixed-port mode of the fake Gmail."""

from __future__ import annotations

import contextlib
import socket


def free_port_base(count: int = 5, host: str = "127.0.0.1") -> int:
    """A port N such that N .. N+count-1 are free right now on ``host``."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1]
        if base + count - 1 > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
            except OSError:
                continue
        return base
    raise AssertionError(f"no {count} consecutive free ports on {host}")
