"""The live block follower: an async generator of ``NewBlock | Reorg`` events.

A head (websocket ``newHeads`` or a poll) is only a hint that the chain moved: it can be late, a
duplicate, from a side branch another backend saw, or carry a hash this backend never serves. The
node's canonical block *by number* and the parent-hash check are the truth. The follower keeps the
unfinalised chain (number → (number, hash, parent_hash)) in memory — loaded from Postgres at start,
so it resumes from the stored tip after a restart; the window may have holes (a backfill still
filling below the follower) — and on each hint:

- a head it already has (same hash) is ignored;
- a head above its tip: fetch the missing blocks by number, in order, each checked against its
  parent (up to the node's own head: a hint never makes it wait for a block that does not exist);
- a head at or below the tip with another hash: ask the node which block is canonical at that
  height; if it is the stored one the head was a side or stale hint and nothing happens;
- a block whose parent hash is not the stored block at number - 1: walk back by hash to the
  common ancestor (through holes in the window; below the first stored block the ancestor is the
  node's canonical block at that height, whose hash must match), confirm with the node that the
  new branch is canonical at the first orphaned height, and emit one ``Reorg`` with the orphaned
  refs and the whole new branch (blocks + receipts), to be applied atomically;
- a reorg deeper than ``max_reorg_depth`` below the tip raises ``ReorgTooDeep`` (fatal: never
  silently fork).

Heads come from ``indexer.realtime.heads``; if the websocket is lost, silent or absent, it polls the head at
the chain's block time, and the gap fill above guarantees no block is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from core.errors import FatalError, RetryableError
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.events import FollowerEvent, NewBlock, Reorg
from indexer.realtime.heads import Head
from sinks.postgres import BlockRef

__all__ = ["Follower", "FollowerEvent", "NewBlock", "NodeChainMoved", "Reorg", "ReorgTooDeep"]

log = logging.getLogger("dexnode.follower")


class ReorgTooDeep(FatalError):
    pass


class NodeChainMoved(RetryableError):
    """The node's answers do not make one chain (mid-reorg, or backends that disagree): sync again."""


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
        """``start``: the stored chain's newest blocks (ascending, holes allowed), empty on a fresh
        database; then the first block fetched is ``from_block`` (default: the node's head at start)."""
        self.rpc = rpc
        self.heads = heads
        self.max_reorg_depth = max_reorg_depth
        self.max_backoff = max_backoff
        self.chain: dict[int, BlockRef] = {}
        for ref in start:
            self.chain[ref.number] = ref
        self._prune()
        self.from_block = from_block

    @property
    def tip(self) -> BlockRef | None:
        return self.chain[max(self.chain)] if self.chain else None

    def _stored(self, number: int) -> BlockRef | None:
        return self.chain.get(number)

    def _prune(self) -> None:
        """Keep the blocks a reorg within ``max_reorg_depth`` can reach (the tip and that many below)."""
        if not self.chain:
            return
        floor = max(self.chain) - self.max_reorg_depth
        for number in [n for n in self.chain if n < floor]:
            del self.chain[number]

    async def events(self) -> AsyncIterator[FollowerEvent]:
        """Events for every head hint. A node that fails (unreachable, rate-limiting past the RPC
        client's own retries, answering inconsistently) is waited out with backoff: the same head is
        synced again, and since the state only moves on success, nothing is skipped or repeated."""
        failures = 0
        async for head in self.heads:
            while True:
                try:
                    async for event in self.sync_to(head, bounded=failures > 0):
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

    async def sync_to(self, head: Head, *, bounded: bool = False) -> AsyncIterator[FollowerEvent]:
        """Bring the stored chain up to ``head.number`` (or the node's own head, if lower)."""
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
        if head.hash is not None and any(ref.hash == head.hash for ref in self.chain.values()):
            return
        if head.number <= tip.number:
            stored = self._stored(head.number)
            if stored is None or head.hash is None or stored.hash == head.hash:
                return
            # another hash at a stored height: a reorg only if the node's canonical block says so
            block = await self.rpc.get_block_by_number(head.number)
            if block["hash"].lower() == stored.hash:
                log.info("head %d %s is not canonical: ignored", head.number, head.hash[:10])
                return
            yield await self._reorg_from(block, seen_at)
            target = await self.rpc.block_number()  # the new branch above, without waiting for a head
        else:
            target = head.number
            if bounded or head.number > tip.number + 1:  # a hint may be ahead of (or lie to) this backend
                target = min(target, await self.rpc.block_number())
        current = self.tip
        assert current is not None
        number = current.number + 1
        while number <= target:
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
        ref = _ref(blocks[0])
        self.chain[ref.number] = ref
        self._prune()
        return new

    async def _node_ancestor(self, child: BlockRef) -> BlockRef:
        """Below the first stored block: the node's canonical block at ``child.number - 1``, which
        must be ``child``'s parent (else the node's chain moved while we walked: try again)."""
        header = await self.rpc.get_block_by_number(child.number - 1, full_txs=False)
        ancestor = _ref(header)
        if ancestor.hash != child.parent_hash:
            raise NodeChainMoved(
                f"the node's block {ancestor.number} is {ancestor.hash[:10]}, not the parent"
                f" {child.parent_hash[:10]} of block {child.number}: its chain moved, syncing again"
            )
        return ancestor

    async def _reorg_from(self, block: dict[str, Any], seen_at: float) -> Reorg:
        """Walk back from ``block`` (not on our chain) to the common ancestor."""
        tip = self.tip
        assert tip is not None
        first_stored = min(self.chain)
        branch = [block]
        while True:
            ref = _ref(branch[0])
            if tip.number - (ref.number - 1) > self.max_reorg_depth:
                raise ReorgTooDeep(
                    f"reorg deeper than the maximum of {self.max_reorg_depth} blocks below {tip.number} "
                    f"(no common ancestor found down to block {ref.number}); stopping rather than "
                    "forking the data — raise DEXNODE_MAX_REORG_DEPTH or resync"
                )
            parent = self._stored(ref.number - 1)
            if parent is not None and parent.hash == ref.parent_hash:
                ancestor = parent
                break
            if ref.number - 1 < first_stored:  # below what we hold: the node has the ancestor
                ancestor = await self._node_ancestor(ref)
                break
            branch.insert(0, await self.rpc.get_block_by_hash(ref.parent_hash))  # a hole, or orphaned
        orphaned = tuple(self.chain[n] for n in sorted(self.chain) if n > ancestor.number)
        if orphaned:
            await self._confirm_canonical(branch[0])
        new = await self._fetch_extracted(branch, seen_at)
        for number in [n for n in self.chain if n > ancestor.number]:
            del self.chain[number]
        for b in branch:
            ref = _ref(b)
            self.chain[ref.number] = ref
        self._prune()
        log.warning(
            "reorg at %d: %d block(s) orphaned, %d new (ancestor %s)",
            ancestor.number + 1,
            len(orphaned),
            len(branch),
            ancestor.hash[:10],
        )
        return Reorg(ancestor, orphaned, tuple(new))

    async def _confirm_canonical(self, first_new: dict[str, Any]) -> None:
        """Before orphaning stored blocks: the node's canonical block at the first orphaned height
        must be the new branch's (a backend on a side branch, or one that lags, must not undo ours)."""
        number = int(first_new["number"], 16)
        canonical = await self.rpc.get_block_by_number(number, full_txs=False)
        if canonical["hash"].lower() != first_new["hash"].lower():
            raise NodeChainMoved(
                f"block {number} {first_new['hash'][:10]} is not canonical (the node has"
                f" {canonical['hash'][:10]}): not orphaning anything, syncing again"
            )
