"""Scenario 6: peak RSS fetching one 25 MB message, each client in a fresh process."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from clients import Endpoint
from harness import OURS, Report

__all__ = ["MESSAGE_SIZE", "big_message", "run"]

MESSAGE_SIZE = 25 * 1024 * 1024
_CHILD = Path(__file__).with_name("memory_child.py")


def big_message(user: str) -> bytes:
    """A 25 MB message: headers and a base64-looking body of 76-character lines."""
    head = (
        f"From: {user}\r\nTo: {user}\r\nSubject: 25 MB\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    line = (
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    )
    return head + line * ((MESSAGE_SIZE - len(head)) // len(line))


def _child(client: str, endpoint: Endpoint, ca_file: str) -> dict[str, int]:
    args = {
        "client": client,
        "host": endpoint.host,
        "port": endpoint.port,
        "user": endpoint.user,
        "token": endpoint.token,
        "ca_file": ca_file,
    }
    done = subprocess.run(
        [sys.executable, str(_CHILD)],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def run(report: Report, endpoint: Endpoint, ca_file: str, *, runs: int) -> None:
    """Interleave fresh child processes; report median peaks."""
    peaks: dict[str, list[dict[str, int]]] = {OURS: [], "imaplib": []}
    for _ in range(runs):
        for client in peaks:
            peaks[client].append(_child(client, endpoint, ca_file))
    size = peaks[OURS][0]["size"]
    print(
        f"#### Peak RSS fetching one {size / 2**20:.1f} MiB message\n\n"
        "| client | peak RSS | before FETCH | FETCH added |\n|---|---|---|---|"
    )
    medians = {}
    for client, samples in peaks.items():
        peak = statistics.median(s["peak_kib"] for s in samples)
        before = statistics.median(s["before_kib"] for s in samples)
        medians[client] = peak
        print(
            f"| {client} | {peak / 1024:.1f} MiB | {before / 1024:.1f} MiB | "
            f"{(peak - before) / 1024:.1f} MiB |"
        )
    print(
        f"\nMedian of {runs} runs, each client in its own fresh interpreter; "
        "peak = VmHWM after the FETCH returned.\n"
    )
    ratio = medians[OURS] / medians["imaplib"]
    report.verdict(
        "Memory for a 25 MB message: <= imaplib's peak + 10%",
        ratio <= 1.10,
        f"{ratio:.2f}x ({medians[OURS] / 1024:.0f} vs "
        f"{medians['imaplib'] / 1024:.0f} MiB)",
    )
