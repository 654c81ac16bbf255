"""The one sink interface (``write(batch)``, ``close()``), and the composite that writes to several.

The ``Batch`` a sink receives lives in ``records.batch`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from records.batch import Batch

__all__ = ["Batch", "CompositeSink", "Sink"]


class Sink(Protocol):
    async def write(self, batch: Batch) -> None:
        """Make the batch durable (and the reorg in it, if any). Raises on failure; nothing half-done."""

    async def close(self) -> None: ...


class CompositeSink:
    """Sinks in order, each one's write done before the next sees the batch: a sink listed after
    Postgres only sees committed batches (``sinks.kafka`` puts its head sink first, on purpose)."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    async def write(self, batch: Batch) -> None:
        for sink in self.sinks:
            await sink.write(batch)

    async def close(self) -> None:
        for sink in reversed(self.sinks):
            await sink.close()
