"""Backfill progress: a rich bar on a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger("dexnode.backfill")


class Progress(Protocol):
    def advance(self, blocks: int, transactions: int, logs: int) -> None: ...

    def set_load(self, workers: int, batch: int) -> None: ...

    def close(self) -> None: ...


class _Counts:
    def __init__(self, total: int) -> None:
        self.total = total
        self.blocks = 0
        self.transactions = 0
        self.logs = 0
        self.workers = 0
        self.batch = 0
        self.started = time.perf_counter()

    def add(self, blocks: int, transactions: int, logs: int) -> None:
        self.blocks += blocks
        self.transactions += transactions
        self.logs += logs

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-6)

    def rates(self) -> tuple[float, float, float]:
        s = self.elapsed
        return self.blocks / s, self.transactions / s, self.logs / s

    def eta(self) -> str:
        rate = self.blocks / self.elapsed
        if not self.blocks or rate <= 0:
            return "?"
        left = int((self.total - self.blocks) / rate)
        return f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"


def _short(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 10_000 else f"{rate:,.0f}"


class LogProgress:
    """One log line every ``interval`` seconds and one at the end."""

    def __init__(self, total: int, *, interval: float = 10.0) -> None:
        self.counts = _Counts(total)
        self.interval = interval
        self._last = time.perf_counter()

    def advance(self, blocks: int, transactions: int, logs: int) -> None:
        self.counts.add(blocks, transactions, logs)
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            log.info(self.line())

    def set_load(self, workers: int, batch: int) -> None:
        self.counts.workers, self.counts.batch = workers, batch

    def line(self) -> str:
        c = self.counts
        bps, tps, lps = c.rates()
        pct = 100.0 * c.blocks / c.total if c.total else 100.0
        return (
            f"backfill {c.blocks:,}/{c.total:,} blocks ({pct:.1f}%), {bps:,.1f} blocks/s, {tps:,.0f} txs/s,"
            f" {lps:,.0f} logs/s, {c.workers} chunks in flight, rpc batch {c.batch}, ETA {c.eta()}"
        )

    def close(self) -> None:
        log.info(self.line())


class RichProgress:
    """A live bar on stderr: blocks done of total, blocks/s, txs/s, logs/s, load, ETA."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as Bar

        self.counts = _Counts(total)
        self.bar = Bar(
            TextColumn("backfill"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=Console(stderr=True),
            refresh_per_second=4,
        )
        self.task = self.bar.add_task("backfill", total=total, rates="", eta="?")
        self.bar.start()

    def advance(self, blocks: int, transactions: int, logs: int) -> None:
        c = self.counts
        c.add(blocks, transactions, logs)
        bps, tps, lps = c.rates()
        rates = f"{_short(bps)} blocks/s {_short(tps)} txs/s {_short(lps)} logs/s"
        self.bar.update(self.task, completed=c.blocks, rates=rates, eta=c.eta())

    def set_load(self, workers: int, batch: int) -> None:
        self.counts.workers, self.counts.batch = workers, batch

    def close(self) -> None:
        self.bar.stop()


def make_progress(total: int, *, tty: bool | None = None, interval: float = 10.0) -> Progress:
    """The rich bar when stderr is a terminal, log lines otherwise."""
    if tty is None:
        tty = sys.stderr.isatty()
    return RichProgress(total) if tty else LogProgress(total, interval=interval)
