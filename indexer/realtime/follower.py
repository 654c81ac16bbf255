"""The live block follower: the I/O driver around the pure realtime core (``indexer.realtime.core``).

An async generator of ``NewBlock | Reorg | Finalized`` events. For every head hint
(``indexer.realtime.heads``: websocket ``newHeads``, or polling at the chain's block time) it runs
the core's ``ChainWindow.sync``, answers the core's requests with the node (the canonical block by
number, a block by hash, the node's head), and turns the core's events into the pipeline's: a
``Block`` gets its receipts fetched and is extracted (``NewBlock``), a ``Reorg``'s new branch too,
a ``Finalize`` passes through (``Finalized``, which publishes ``confirmed.*``). Every decision —
heads are hints, canonical by number before orphaning, walking back below the stored window, holes,
the maximum reorg depth — is the core's, unit-tested without a node.

A block at a new height is asked with its receipts in one JSON-RPC batch (``eth_getBlockByNumber``
and ``eth_getBlockReceipts`` by number): one round trip to the node instead of two. The receipts are
only a guess until ``extract_block`` has checked that every receipt and log names this block's hash,
number and transactions; receipts of another branch (a reorg between the two entries), a null or a
short answer, or a node that refuses the method fall back to the receipts asked by the block's hash
as before, so the guess never decides what is stored.

A node that fails (unreachable, rate-limiting past the RPC client's own retries, answering
inconsistently) is waited out with the one ``RetryPolicy``, unbounded: the same head is synced again
from the same window, which the core moves only once an event was delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from core.errors import RetryableError
from core.retry import RetryPolicy
from indexer.chain.extract import InconsistentBlockError, extract_block
from indexer.chain.rpc import RpcClient, RpcFatalError
from indexer.pipeline.events import Finalized, FollowerEvent, NewBlock, Reorg
from indexer.pipeline.pipeline import RECORD_MAKERS
from indexer.realtime import core
from indexer.realtime.core import ChainWindow, NodeChainMoved, ReorgTooDeep
from indexer.realtime.heads import Head
from sinks.postgres import BlockRef

__all__ = ["Follower", "FollowerEvent", "NewBlock", "NodeChainMoved", "Reorg", "ReorgTooDeep"]

log = logging.getLogger("dexnode.follower")

RECEIPT_REFETCHES = RetryPolicy(attempts=5, base_delay=0.0, max_delay=0.0)  # another branch's receipts
# A null where receipts should be is a lagging backend or a block that just left the chain (a reorg
# between the block's fetch and its receipts'). Asked briefly first, then the block's place in the chain
# is checked: a block no longer canonical is not waited for (a reorg used to stall here ~13 s).
FIRST_RECEIPTS_TRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=0.5)


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
        confirmations: int | None = None,
        max_backoff: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``start``: the stored chain's newest blocks (ascending, holes allowed), empty on a fresh
        database; then the first block fetched is ``from_block`` (default: the node's head at start).
        ``confirmations``: emit ``Finalized`` for blocks that deep (None: never). ``retry``: how a
        failing node is waited out (default: unbounded, 1 s doubling up to ``max_backoff``)."""
        self.rpc = rpc
        self.heads = heads
        self.window = ChainWindow(
            start, from_block=from_block, max_reorg_depth=max_reorg_depth, confirmations=confirmations
        )
        self.retry = retry or RetryPolicy(attempts=0, base_delay=1.0, max_delay=max_backoff)
        # receipts by number in the block's own request; off once the node refuses that (for good)
        self.receipts_with_block = True
        self.receipts_guessed = 0  # blocks stored from the receipts asked with them (for benchmarks)

    @property
    def chain(self) -> dict[int, BlockRef]:
        return self.window.chain

    @property
    def tip(self) -> BlockRef | None:
        return self.window.tip

    async def events(self) -> AsyncIterator[FollowerEvent]:
        """Events for every head hint; a failing node is waited out and the head synced again."""
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
                    if self.retry.exhausted(failures):
                        raise
                    delay = self.retry.delay(failures, None)
                    log.warning(
                        "node failed while syncing to block %d: %s; retrying in %.1fs",
                        head.number,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def sync_to(self, head: Head, *, bounded: bool = False) -> AsyncIterator[FollowerEvent]:
        """Run the core's sync for one hint: answer its requests, deliver its events."""
        steps = self.window.sync(core.Hint(head.number, head.hash), bounded=bounded)
        answer: Any = None
        fetch_ms = 0.0  # the node's time for the request that led to the next block
        receipts: dict[str, list[dict[str, Any]]] = {}  # by block hash: asked with the block, unchecked
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            answer = None
            t0 = time.perf_counter()
            if isinstance(step, core.ByNumber):
                tip = self.window.tip
                if step.full and self.receipts_with_block and (tip is None or step.number > tip.number):
                    block, guess = await self._block_and_receipts(step.number)
                    if guess is not None:
                        receipts[block["hash"]] = guess
                else:
                    block = await self.rpc.get_block_by_number(step.number, full_txs=step.full)
                answer = self._fetched(block)
                fetch_ms = (time.perf_counter() - t0) * 1000
            elif isinstance(step, core.ByHash):
                answer = self._fetched(await self.rpc.get_block_by_hash(step.hash))
            elif isinstance(step, core.NodeHead):
                answer = await self.rpc.block_number()
            elif isinstance(step, core.Block):
                (new,) = await self._extracted([step.payload], head.seen_at, fetch_ms, receipts)
                yield new
            elif isinstance(step, core.Reorg):
                payloads = [b.payload for b in step.new]
                extracted = await self._extracted(payloads, head.seen_at, 0.0, receipts)
                yield Reorg(step.ancestor, step.orphaned, tuple(extracted))
            else:
                yield Finalized(step.ref)

    @staticmethod
    def _fetched(block: dict[str, Any]) -> core.Fetched:
        return core.Fetched(_ref(block), block)

    async def _block_and_receipts(self, number: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """Block ``number`` with its transactions and, from the same request, the receipts the node
        has at that number (None: not usable, asked by hash later). A null block (a backend not there
        yet) or a failed request is asked again the usual way, with the client's retries for a block."""
        try:
            block, receipts = await self.rpc.batch(
                [("eth_getBlockByNumber", [hex(number), True]), ("eth_getBlockReceipts", [hex(number)])]
            )
        except RpcFatalError as exc:  # the method or a number refused: receipts by hash from now on
            self.receipts_with_block = False
            log.info("receipts not asked with their block from now on (%s)", exc)
            block, receipts = None, None
        except RetryableError as exc:
            log.warning("block %d with its receipts: %s; asking the block alone", number, exc)
            block, receipts = None, None
        if block is None:
            return await self.rpc.get_block_by_number(number, full_txs=True), None
        return block, receipts if isinstance(receipts, list) else None

    async def _extracted(
        self,
        blocks: list[dict[str, Any]],
        seen_at: float,
        header_ms: float,
        guessed: dict[str, list[dict[str, Any]]] | None = None,
    ) -> list[NewBlock]:
        """Receipts for the blocks, and their records. Receipts asked with a block (``guessed``, by
        block hash) are used when ``extract_block`` finds them to be that block's; the others are asked
        by hash. Receipts from another branch than a block (a backend that moved between the two
        calls) are refetched with the block by its hash."""
        out: list[NewBlock | None] = [None] * len(blocks)
        for i, block in enumerate(blocks):
            receipts = (guessed or {}).get(block["hash"])
            if receipts is None:
                continue
            t1 = time.perf_counter()
            try:
                extracted = extract_block(block, receipts, RECORD_MAKERS)
            except InconsistentBlockError as exc:  # another branch's, or a lagging backend's: by hash
                log.info("block %s: receipts asked with it are not its own (%s)", block.get("number"), exc)
                continue
            self.receipts_guessed += 1
            out[i] = NewBlock(extracted, header_ms, seen_at, (time.perf_counter() - t1) * 1000)
        rest = [i for i, new in enumerate(out) if new is None]
        if rest:
            fetched = await self._fetch_all([blocks[i] for i in rest], seen_at, header_ms)
            for i, new in zip(rest, fetched, strict=True):
                out[i] = new
        return [new for new in out if new is not None]

    async def _fetch_all(
        self, blocks: list[dict[str, Any]], seen_at: float, header_ms: float
    ) -> list[NewBlock]:
        """Receipts asked by hash for the blocks, and their records (see ``_extracted``)."""
        tries = 0
        while True:
            try:
                quick = FIRST_RECEIPTS_TRY if tries == 0 else None
                return await self._fetch_extracted(blocks, seen_at, header_ms, quick)
            except RetryableError as exc:
                tries += 1
                if RECEIPT_REFETCHES.exhausted(tries):
                    raise
                await self._check_still_canonical(blocks)
                log.warning("block %s: %s; refetching", blocks[0].get("number"), exc)
                blocks = [await self.rpc.get_block_by_hash(b["hash"]) for b in blocks]

    async def _check_still_canonical(self, blocks: list[dict[str, Any]]) -> None:
        """Raise ``NodeChainMoved`` (the follower syncs again from the head at once) when a block is no
        longer the node's block at its number, or its number is past the node's chain."""
        numbers = [int(b["number"], 16) for b in blocks]
        try:
            canonical = await self.rpc.get_blocks(numbers, full_txs=False, retry=FIRST_RECEIPTS_TRY)
        except RetryableError as exc:
            raise NodeChainMoved(f"blocks {numbers[0]}..{numbers[-1]} not served by number: {exc}") from exc
        for block, now in zip(blocks, canonical, strict=True):
            if now["hash"] != block["hash"]:
                raise NodeChainMoved(
                    f"block {int(block['number'], 16)} {block['hash'][:10]} left the chain"
                    f" (now {now['hash'][:10]}) before its receipts were fetched"
                )

    async def _fetch_extracted(
        self, blocks: list[dict[str, Any]], seen_at: float, header_ms: float, retry: RetryPolicy | None
    ) -> list[NewBlock]:
        t0 = time.perf_counter()
        receipts = await self.rpc.get_receipts_for_blocks(blocks, retry=retry)
        fetch_ms = ((time.perf_counter() - t0) * 1000 + header_ms) / len(blocks)
        out = []
        for block, block_receipts in zip(blocks, receipts, strict=True):
            t1 = time.perf_counter()
            extracted = extract_block(block, block_receipts, RECORD_MAKERS)
            out.append(NewBlock(extracted, fetch_ms, seen_at, (time.perf_counter() - t1) * 1000))
        return out
