"""A cancelled CEX pipeline stops, even when its cancellation arrives in the same loop turn as an item.

Python 3.11's ``asyncio.wait_for`` returns the awaited result when that result and a cancellation arrive
together, and drops the cancellation: a loop built on it then runs on after ``cancel()`` (``dexnode cex``
never stops on Ctrl-C; ``test_cex_raw`` hung in ``await pipeline`` under load). Synthetic: the feed's
only connection points at a closed local port and keeps retrying, so the pipeline sits waiting on the
feed's queue; the item and the cancel are handed over in one turn, as a loaded machine does by chance.
"""

from __future__ import annotations

import asyncio

import pytest

from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from cex.pipeline import run_cex_pipeline
from cex.sync import Resync
from core.retry import RetryPolicy
from records.codec import Record

pytestmark = pytest.mark.unit


class Collect:
    def __init__(self) -> None:
        self.items: list[Record | Resync] = []

    async def write(self, items: list[Record | Resync]) -> None:
        self.items.extend(items)

    async def close(self) -> None:
        return None


async def test_a_cancel_that_arrives_with_an_item_stops_the_pipeline_and_the_item_is_written() -> None:
    feed = FeedHandler(Okx(ws_url="ws://127.0.0.1:9"), ["BTC-USDT"], ["book"],
                       retry=RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.05))  # fmt: skip
    sink = Collect()
    for _ in range(20):  # each round: the item and the cancel in the same turn of the loop
        sink.items.clear()
        pipeline = asyncio.ensure_future(run_cex_pipeline(feed, [sink]))
        await asyncio.sleep(0.05)  # waiting on the feed's queue (nothing arrives: the port is closed)
        item = Resync("okx", "BTC-USDT", "stale", None)
        feed.queue.put_nowait(item)
        pipeline.cancel()
        done, _ = await asyncio.wait([pipeline], timeout=5)
        assert done, "the pipeline ran on after cancel()"
        assert pipeline.cancelled()
        assert sink.items == [item]  # drained before the cancel: written, not lost
