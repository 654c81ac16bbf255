"""Backfill planning (done ranges, gaps, chunks) and the adaptive load controller: pure logic."""

from __future__ import annotations

import pytest

from indexer.backfill.load import AdaptiveLoad
from indexer.backfill.plan import BlockRange, gaps, merge, missing, plan, split

pytestmark = pytest.mark.unit

R = BlockRange


def test_merge_joins_overlapping_and_touching_ranges() -> None:
    assert merge([R(20, 29), R(0, 9), R(10, 14), R(12, 13), R(40, 40)]) == [R(0, 14), R(20, 29), R(40, 40)]
    assert merge([]) == []


def test_missing_is_what_done_does_not_cover() -> None:
    done = [R(0, 9), R(20, 29), R(35, 100)]
    assert missing(R(0, 40), done) == [R(10, 19), R(30, 34)]
    assert missing(R(5, 25), done) == [R(10, 19)]
    assert missing(R(0, 9), done) == []
    assert missing(R(101, 120), done) == [R(101, 120)]
    assert missing(R(0, 5), []) == [R(0, 5)]


def test_gaps_between_done_ranges() -> None:
    assert gaps([R(0, 9), R(20, 29), R(30, 39), R(50, 59)]) == [R(10, 19), R(40, 49)]
    assert gaps([R(3, 7)]) == []


def test_split_aligns_chunks_on_the_chunk_size() -> None:
    assert split([R(5, 25)], 10) == [R(5, 9), R(10, 19), R(20, 25)]
    assert split([R(0, 9), R(30, 31)], 10) == [R(0, 9), R(30, 31)]
    assert split([R(7, 7)], 100) == [R(7, 7)]
    with pytest.raises(ValueError):
        split([R(0, 1)], 0)


def test_plan_skips_done_chunks_and_fills_gaps_only() -> None:
    done = [R(0, 99), R(200, 299)]
    chunks = plan(R(0, 349), done, 100)
    assert chunks == [R(100, 199), R(300, 349)]
    covered = merge([*done, *chunks])
    assert covered == [R(0, 349)]  # no gap left
    assert sum(len(c) for c in chunks) + sum(len(d) for d in done) == 350  # no block twice


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError):
        R(5, 4)


def test_load_backs_off_on_retries_once_per_cooldown_and_grows_back_when_healthy() -> None:
    load = AdaptiveLoad(max_workers=8, max_batch=100, grow_after=2, cooldown=1.0)
    load.chunk_done(retries=0, client_batch=100, now=0.0)
    assert (load.workers, load.batch) == (8, 100)
    load.chunk_done(retries=3, client_batch=100, now=1.0)  # a 429 or a timeout somewhere
    assert (load.workers, load.batch) == (4, 50)
    load.chunk_done(retries=4, client_batch=50, now=1.5)  # the requests already in flight: no second cut
    assert (load.workers, load.batch) == (4, 50)
    load.chunk_done(retries=5, client_batch=50, now=2.6)
    assert (load.workers, load.batch) == (2, 25)
    assert load.backoffs == 2
    for t in range(4):  # healthy: +1 chunk and ×2 batch every grow_after chunks
        load.chunk_done(retries=5, client_batch=load.batch, now=3.0 + t)
    assert (load.workers, load.batch) == (4, 100)
    for t in range(20):
        load.chunk_done(retries=5, client_batch=load.batch, now=10.0 + t)
    assert (load.workers, load.batch) == (8, 100)  # never above the configured maxima


def test_a_node_batch_cap_becomes_a_ceiling() -> None:
    load = AdaptiveLoad(max_workers=4, max_batch=100, grow_after=1)
    load.chunk_done(retries=0, client_batch=25, now=0.0)  # the RPC client halved twice on refusals
    assert load.batch == 25 and load.node_cap == 25
    for t in range(5):
        load.chunk_done(retries=0, client_batch=load.batch, now=1.0 + t)
    assert load.batch == 25
    load.chunk_done(retries=1, client_batch=25, now=10.0)
    assert load.batch == 12
    for t in range(10):  # a node that keeps throttling: down to one chunk of one call, never zero
        load.chunk_done(retries=2 + t, client_batch=load.batch, now=20.0 + t * 2)
    assert (load.workers, load.batch) == (1, 1)
