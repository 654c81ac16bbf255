"""What the pipeline consumes: the chain's events, as the realtime follower yields them — a new canonical
block, a reorg (the orphaned refs and the whole new branch, applied atomically), or a block now
``confirmations`` deep (final: ``confirmed.*`` publishes up to it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from indexer.chain.extract import ExtractedBlock
from sinks.postgres import BlockRef


@dataclass(frozen=True, slots=True)
class NewBlock:
    extracted: ExtractedBlock
    fetch_ms: float  # time spent waiting on the node for this block (header + receipts)
    head_seen_at: float  # time.perf_counter() when the head hint that led here arrived
    extract_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Reorg:
    ancestor: BlockRef
    orphaned: tuple[BlockRef, ...]  # ascending
    new: tuple[NewBlock, ...]  # ascending, starting at ancestor.number + 1

    @property
    def depth(self) -> int:
        return len(self.orphaned)


@dataclass(frozen=True, slots=True)
class Finalized:
    block: BlockRef  # this block and every block below it are final


ChainEvent = NewBlock | Reorg  # the events that carry records
FollowerEvent = ChainEvent | Finalized


class EventSource(Protocol):
    """Anything that yields chain events in order (the follower)."""

    def events(self) -> AsyncIterator[FollowerEvent]: ...
