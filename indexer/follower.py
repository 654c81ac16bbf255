"""The live block follower: an async generator of ``NewBlock | Reorg`` events.

The websocket ``newHeads`` notification is a hint that the head moved; the parent-hash check
is the truth. The follower keeps the unfinalised chain (number, hash, parent_hash) in memory —
loaded from Postgres at start, so it resumes from the stored tip after a restart — and on each
hint:

- a head it already has (same hash) is ignored;
- a head above its tip: fetch the missing blocks in order, each checked against its parent;
- a block whose parent hash is not the stored block at number - 1, or a head at or below the tip
  with an unknown hash: walk back by hash to the common ancestor and emit one ``Reorg`` with the
  orphaned refs and the whole new branch (blocks + receipts), to be applied atomically;
- a reorg deeper than ``max_reorg_depth`` raises ``ReorgTooDeep`` (fatal: never silently fork).

Heads come from ``indexer.heads``; if the websocket is lost or silent, it reconnects with
backoff and polls ``eth_blockNumber``, and the gap fill above guarantees no block is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from indexer.errors import FatalError, RetryableError
from indexer.extract import ExtractedBlock, extract_block
from indexer.heads import Head
from indexer.rpc import RpcClient
from sinks.postgres import BlockRef

log = logging.getLogger("dexnode.follower")


class ReorgTooDeep(FatalError):
    pass


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


FollowerEvent = NewBlock | Reorg


class HeadSource(Protocol):
    def __aiter__(self) -> AsyncIterator[Head]: ...


def _ref(block: dict[str, Any]) -> BlockRef:
    return BlockRef(int(block["number"], 16), block["hash"].lower(), block["parentHash"].lower())


class Follower:
    def __init__(
        self,
        rpc: RpcClient,
        heads: HeadSource,
        *,
        start: Sequence[BlockRef],
        from_block: int | None = None,
        max_reorg_depth: int = 64,
        max_backoff: float = 30.0,
    ) -> None:
        """``start``: the stored chain's newest blocks (ascending), empty on a fresh database;
        then the first block fetched is ``from_block`` (default: the node's head at start)."""
        self.rpc = rpc
        self.heads = heads
        self.max_reorg_depth = max_reorg_depth
        self.max_backoff = max_backoff
        self.chain: deque[BlockRef] = deque(start, maxlen=max_reorg_depth + 1)
        self.from_block = from_block

    @property
    def tip(self) -> BlockRef | None:
        return self.chain[-1] if self.chain else None

    def _stored(self, number: int) -> BlockRef | None:
        if not self.chain:
            return None
        offset = number - self.chain[0].number
        if 0 <= offset < len(self.chain):
            return self.chain[offset]
        return None

    async def events(self) -> AsyncIterator[FollowerEvent]:
        """Events for every head hint. A node that fails (unreachable, rate-limiting past the RPC
        client's own retries, answering inconsistently) is waited out with backoff: the same head is
        synced again, and since the state only moves on success, nothing is skipped or repeated."""
        failures = 0
        async for head in self.heads:
            while True:
                try:
                    async for event in self.sync_to(head):
                        yield event
                    failures = 0
                    break
                except RetryableError as exc:
                    failures += 1
                    delay = min(self.max_backoff, 0.5 * 2 ** min(failures, 8)) * (0.5 + random.random() / 2)
                    log.warning(
                        "node failed while syncing to block %d: %s; retrying in %.1fs",
                        head.number,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def sync_to(self, head: Head) -> AsyncIterator[FollowerEvent]:
        seen_at = head.seen_at
        if self.tip is None:
            first = self.from_block if self.from_block is not None else head.number
            if head.number < first:
                return
            t0 = time.perf_counter()
            block = await self.rpc.get_block_by_number(first)
            yield await self._accept([block], seen_at, (time.perf_counter() - t0) * 1000)
        tip = self.tip
        assert tip is not None
        if head.hash is not None and any(ref.hash == head.hash for ref in self.chain):
            return
        if head.number <= tip.number:
            stored = self._stored(head.number)
            if stored is None or head.hash is None or stored.hash == head.hash:
                return
            # a competing branch at or below our tip: walk back from the hinted block
            block = await self.rpc.get_block_by_hash(head.hash)
            yield await self._reorg_from(block, seen_at)
            return
        number = tip.number + 1
        while number <= head.number:
            t0 = time.perf_counter()
            block = await self.rpc.get_block_by_number(number)
            header_ms = (time.perf_counter() - t0) * 1000
            ref = _ref(block)
            current = self.tip
            assert current is not None
            if ref.number == current.number + 1 and ref.parent_hash == current.hash:
                yield await self._accept([block], seen_at, header_ms)
            else:
                yield await self._reorg_from(block, seen_at)
            tip = self.tip
            assert tip is not None
            number = tip.number + 1

    async def _fetch_extracted(
        self, blocks: list[dict[str, Any]], seen_at: float, header_ms: float = 0.0
    ) -> list[NewBlock]:
        t0 = time.perf_counter()
        receipts = await self.rpc.get_receipts_for_blocks(blocks)
        fetch_ms = ((time.perf_counter() - t0) * 1000 + header_ms) / len(blocks)
        out = []
        for block, block_receipts in zip(blocks, receipts, strict=True):
            t1 = time.perf_counter()
            extracted = extract_block(block, block_receipts)
            out.append(NewBlock(extracted, fetch_ms, seen_at, (time.perf_counter() - t1) * 1000))
        return out

    async def _accept(self, blocks: list[dict[str, Any]], seen_at: float, header_ms: float) -> NewBlock:
        for attempt in range(5):
            try:
                (new,) = await self._fetch_extracted(blocks, seen_at, header_ms)
                break
            except RetryableError as exc:  # receipts from another branch than the block: refetch
                if attempt == 4:
                    raise
                log.warning("block %s: %s; refetching", blocks[0].get("number"), exc)
                blocks = [await self.rpc.get_block_by_hash(blocks[0]["hash"])]
        self.chain.append(_ref(blocks[0]))
        return new

    async def _reorg_from(self, block: dict[str, Any], seen_at: float) -> Reorg:
        """Walk back from ``block`` (not on our chain) to the common ancestor."""
        branch = [block]
        while True:
            ref = _ref(branch[0])
            parent = self._stored(ref.number - 1)
            if parent is not None and parent.hash == ref.parent_hash:
                break
            tip = self.tip
            assert tip is not None
            if parent is None or tip.number - (ref.number - 1) > self.max_reorg_depth:
                raise ReorgTooDeep(
                    f"reorg deeper than the maximum of {self.max_reorg_depth} blocks below {tip.number} "
                    f"(no common ancestor found down to block {ref.number - 1}); stopping rather than "
                    "forking the data — raise DEXNODE_MAX_REORG_DEPTH or resync"
                )
            branch.insert(0, await self.rpc.get_block_by_hash(ref.parent_hash))
        ancestor = self._stored(_ref(branch[0]).number - 1)
        assert ancestor is not None
        orphaned = tuple(r for r in self.chain if r.number > ancestor.number)
        new = await self._fetch_extracted(branch, seen_at)
        while self.chain and self.chain[-1].number > ancestor.number:
            self.chain.pop()
        self.chain.extend(_ref(b) for b in branch)
        log.warning(
            "reorg at %d: %d block(s) orphaned, %d new (ancestor %s)",
            ancestor.number + 1,
            len(orphaned),
            len(branch),
            ancestor.hash[:10],
        )
        return Reorg(ancestor, orphaned, tuple(new))
