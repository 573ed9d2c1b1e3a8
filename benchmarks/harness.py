"""Interleaved runs, medians, ratios and target verdicts, printed as Markdown."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "OURS",
    "Report",
    "Sample",
    "Table",
    "Verdict",
    "interleave",
    "timed",
]

OURS = "gmail_xoauth2"


@dataclass
class Sample:
    """One run of one variant: its wall time and, when counted, its flights."""

    seconds: float
    flights: int | None = None


def timed(func: Callable[[], object]) -> Sample:
    """Run ``func`` once and return its wall time."""
    start = time.perf_counter()
    func()
    return Sample(time.perf_counter() - start)


def interleave(
    variants: Mapping[str, Callable[[], Sample]], runs: int, *, warmup: int = 1
) -> dict[str, list[Sample]]:
    """Run the variants in turn (A B C A B C ...) and collect their samples.

    Interleaving spreads the noise of a shared machine evenly over the variants,
    where running all of A then all of B would hand one of them a quiet minute.
    The first ``warmup`` rounds are discarded (imports, caches, TLS contexts).
    """
    results: dict[str, list[Sample]] = {name: [] for name in variants}
    for round_ in range(warmup + runs):
        for name, run in variants.items():
            sample = run()
            if round_ >= warmup:
                results[name].append(sample)
    return results


@dataclass
class Table:
    """One scenario's results: a row per client, compared with :data:`OURS`.

    Args:
        title: what was measured.
        samples: the samples of each client, ours first.
        work: units of work per run (messages); when set, the table shows a
            throughput and compares throughputs instead of times.
        unit: the name of one unit of work.
        note: a line printed under the table.
    """

    title: str
    samples: Mapping[str, Sequence[Sample]]
    work: int | None = None
    unit: str = "msg"
    note: str = ""

    def median(self, name: str) -> float:
        return statistics.median(s.seconds for s in self.samples[name])

    def flights(self, name: str) -> int | None:
        counted = [s.flights for s in self.samples[name] if s.flights is not None]
        return round(statistics.median(counted)) if counted else None

    def throughput(self, name: str) -> float:
        assert self.work is not None
        return self.work / self.median(name)

    def ratio(self, baseline: str) -> float:
        """Ours against ``baseline``: a time ratio, or a throughput ratio with work."""
        if self.work is not None:
            return self.throughput(OURS) / self.throughput(baseline)
        return self.median(OURS) / self.median(baseline)

    def render(self) -> str:
        with_flights = any(self.flights(name) is not None for name in self.samples)
        runs = min(len(s) for s in self.samples.values())
        head = ["client", "median"]
        if self.work is not None:
            head.append(f"{self.unit}/s")
        if with_flights:
            head.append("flights")
        kind = "throughput" if self.work is not None else "time"
        head.append(f"{OURS} {kind} / this")
        lines = [
            f"#### {self.title}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        for name in self.samples:
            cells = [name, _seconds(self.median(name))]
            if self.work is not None:
                cells.append(f"{self.throughput(name):,.0f}")
            if with_flights:
                cells.append(str(self.flights(name) if self.flights(name) else "-"))
            cells.append("" if name == OURS else f"{self.ratio(name):.2f}x")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Median of {runs} interleaved runs. {self.note}".rstrip())
        return "\n".join(lines)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


@dataclass
class Verdict:
    """A target from the spec and whether this run met it (None: not measured)."""

    target: str
    met: bool | None
    measured: str

    def render(self) -> str:
        word = {True: "MET", False: "MISSED", None: "SKIPPED"}[self.met]
        return f"| {self.target} | {self.measured} | **{word}** |"


@dataclass
class Report:
    """Everything one run printed, kept for the summary at the end."""

    tables: list[Table] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        print(f"\n### {title}\n", flush=True)

    def add(self, table: Table) -> Table:
        self.tables.append(table)
        print(table.render() + "\n", flush=True)
        return table

    def verdict(self, target: str, met: bool | None, measured: str) -> None:
        verdict = Verdict(target, met, measured)
        self.verdicts.append(verdict)
        print(f"- target: {target}: {measured} -> {verdict.render().split('**')[1]}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"- note: {text}", flush=True)

    def summary(self) -> str:
        lines = ["| target | measured | verdict |", "|---|---|---|"]
        lines += [v.render() for v in self.verdicts]
        return "\n".join(lines)
