"""``dexnode follow``: the live follower into Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from core.database import open_database
from core.redact import mask_url, mask_urls_in
from core.settings import Settings
from indexer.backfill.store import contiguous_end, missing_indexes
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_for
from indexer.pipeline.events import EventSource, Finalized, FollowerEvent
from indexer.pipeline.pipeline import FOLLOW_STREAM, consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from indexer.realtime.resume import check_resume
from migrations import runner
from sinks.base import Sink
from sinks.kafka import with_kafka
from sinks.postgres import BlockRef, PostgresSink

log = logging.getLogger("dexnode.follow")


async def start_chain(sink: PostgresSink, depth: int) -> list[BlockRef]:
    """Where to resume: the follower's cursor; else the end of the contiguous backfilled range that
    starts at the lowest backfilled block — not the newest stored block, which lies beyond a gap
    when a backfill was stopped (or still runs) with chunks missing below it; else the newest block.
    The blocks above that end are fetched by the follower itself (those the backfill stored too are
    idempotent upserts), so nothing is skipped and nothing stored twice."""
    cursor = await sink.cursor(FOLLOW_STREAM)
    if cursor is not None:
        return await sink.recent_blocks(cursor.number, depth)
    top = await contiguous_end(sink.pool)
    if top is None:
        top = await sink.pool.fetchval("SELECT max(number) FROM blocks")
    if top is None:
        return []
    return await sink.recent_blocks(int(top), depth)


async def warn_if_indexes_missing(sink: PostgresSink) -> bool:
    """A first backfill defers the secondary indexes by default; one killed (or still running) leaves
    them missing, and every query on a large table is a sequential scan until they are built."""
    dropped = await missing_indexes(sink.pool)
    if dropped:
        log.warning(
            "%d secondary indexes are missing (a backfill dropped them and has not finished): queries"
            " are slow until `dexnode backfill` (any range, even one already done) rebuilds them",
            len(dropped),
        )
    return bool(dropped)


async def check_chain(rpc: RpcClient, chain: list[BlockRef], max_reorg_depth: int = 64) -> None:
    """Refuse to follow a different chain than the one stored (wrong URL, wrong network); a stored chain
    a reorg replaced while the follower was down, even below the stored window, is resolved on the node
    within ``max_reorg_depth`` (``indexer.realtime.resume``)."""
    await check_resume(rpc, chain, max_reorg_depth=max_reorg_depth)


async def follow(settings: Settings, *, from_block: int | None, quiet: bool, silence_timeout: float) -> None:
    async with open_database(settings) as db:
        await runner.upgrade(db.sqlalchemy_url)
        sink = await PostgresSink.connect(db.dsn)
        writer = with_kafka(settings, sink)  # Kafka head before Postgres, confirmed after
        try:
            if writer is not sink:
                log.info("Kafka: producing to %s", mask_urls_in(settings.kafka_bootstrap_servers or ""))
            async with RpcClient(
                settings.rpc_http,
                max_batch_size=settings.rpc_batch_size,
                max_response_bytes=settings.rpc_max_response_bytes,
            ) as rpc:
                await follow_into(
                    settings,
                    rpc,
                    sink,
                    writer,
                    from_block=from_block,
                    quiet=quiet,
                    silence_timeout=silence_timeout,
                )
        finally:
            await writer.close()


async def follow_into(
    settings: Settings,
    rpc: RpcClient,
    sink: PostgresSink,
    writer: Sink,
    *,
    from_block: int | None,
    quiet: bool,
    silence_timeout: float,
    stop: asyncio.Event | None = None,
    on_start: Callable[[], None] | None = None,
) -> None:
    """The follower over an open database and node: resume where the database stands, check it is the
    node's chain, then write every event through ``writer`` (the Postgres sink, alone or composed with
    Kafka and the live hub) until ``stop`` is set (``follow`` and ``run`` share this).

    With ``stop``, no new head is taken once it is set, but an event already received is written to the
    end (one transaction), so the cursor is the last stored block when this returns. ``on_start()`` is
    called once the checks are done and the first head is awaited (before that, nothing is written)."""
    chain_id = await rpc.chain_id()
    chain = await start_chain(sink, settings.max_reorg_depth + 1)
    await check_chain(rpc, chain, settings.max_reorg_depth)
    if chain:
        log.info("chain %d: resuming after block %d (%s)", chain_id, chain[-1].number, chain[-1].hash[:10])
        if from_block is not None and from_block != chain[-1].number + 1:
            log.warning("--from-block %d ignored: the stored cursor decides where to resume", from_block)
    else:
        where = f"block {from_block}" if from_block is not None else "the current head"
        log.info("chain %d: empty database, starting at %s", chain_id, where)
    await warn_if_indexes_missing(sink)
    ws_url = settings.heads_ws_url
    log.info(
        "node %s, heads from %s",
        mask_url(settings.rpc_http),
        mask_url(ws_url) if ws_url else "polling (no websocket URL set)",
    )
    heads = HeadStream(ws_url, rpc, silence_timeout=silence_timeout)
    follower = Follower(
        rpc,
        heads,
        start=chain,
        from_block=from_block,
        max_reorg_depth=settings.max_reorg_depth,
        confirmations=settings.confirmations,  # Finalize: confirmed.* (when Kafka is on)
    )
    enrich = DexEnricher(rpc, sink.pool, registry_for(settings))
    source: EventSource = follower if stop is None else Until(follower, stop)
    if on_start is not None:
        on_start()
    await consume(source, writer, quiet=quiet, enrich=enrich)


class Until:
    """A follower's events until ``stop`` is set: waiting for the next event is abandoned when it is
    (the head being fetched is dropped: nothing of it is stored), but an event handed out is written
    to the end before the next one is asked for, so stopping never leaves half a block. The
    ``Finalized`` events the follower has at hand when it stops (those of the last block written, for
    Kafka's ``confirmed.*``) still pass: they need no I/O."""

    def __init__(self, source: EventSource, stop: asyncio.Event) -> None:
        self.source = source
        self.stop = stop

    async def events(self) -> AsyncIterator[FollowerEvent]:
        events = aiter(self.source.events())
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait((following, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    await _abandon(following)
                    return
                try:
                    event = following.result()
                except StopAsyncIteration:
                    return
                yield event
            while isinstance(final := await _at_hand(events), Finalized):
                yield final
        finally:
            stopped.cancel()
            closing = getattr(events, "aclose", None)
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()


async def _at_hand(events: AsyncIterator[FollowerEvent]) -> FollowerEvent | None:
    """The next event if the source produces it without waiting on I/O, else None (the wait abandoned).
    One scheduling step is enough: after a block, the follower's core yields its ``Finalized`` events
    from memory before it asks the node for anything."""
    following = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)  # let the source take one step
    if not following.done():
        await _abandon(following)
        return None
    try:
        return following.result()
    except StopAsyncIteration:
        return None


async def _abandon(following: asyncio.Future[FollowerEvent]) -> None:
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await following
