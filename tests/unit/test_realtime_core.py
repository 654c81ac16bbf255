"""The realtime core on synthetic chains: no node, no database, no event loop.

``Node`` is a chain the test builds (blocks by hash, the canonical one by height) and answers the
core's requests from it; every expectation is read from that synthetic chain, never from the core.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from indexer.realtime.core import (
    Block,
    ByHash,
    ByNumber,
    ChainWindow,
    Event,
    Fetched,
    Finalize,
    Hint,
    NodeChainMoved,
    NodeHead,
    Reorg,
    ReorgTooDeep,
)
from sinks.postgres import BlockRef

pytestmark = pytest.mark.unit


def block_hash(branch: str, number: int) -> str:
    return "0x" + hashlib.sha256(f"{branch}:{number}".encode()).hexdigest()


@dataclass
class Node:
    """Blocks by hash; ``canonical`` by height. ``requests`` records what the core asked."""

    by_hash: dict[str, BlockRef] = field(default_factory=dict)
    canonical: dict[int, BlockRef] = field(default_factory=dict)
    requests: list[object] = field(default_factory=list)
    head_override: int | None = None  # a backend that lags behind the hints

    def grow(self, branch: str, start: int, end: int) -> list[BlockRef]:
        """Blocks ``start..end`` of ``branch``, on top of the canonical block ``start - 1``; canonical."""
        parent = self.canonical[start - 1].hash if start > 0 else "0x" + "00" * 32
        out = []
        for n in range(start, end + 1):
            ref = BlockRef(n, block_hash(branch, n), parent)
            self.by_hash[ref.hash] = ref
            self.canonical[n] = ref
            out.append(ref)
            parent = ref.hash
        for n in [n for n in self.canonical if n > end]:
            del self.canonical[n]
        return out

    @property
    def head(self) -> int:
        return self.head_override if self.head_override is not None else max(self.canonical)

    def answer(self, step: object) -> object:
        self.requests.append(step)
        if isinstance(step, ByNumber):
            ref = self.canonical[step.number]
            return Fetched(ref, ("payload", ref.hash))
        if isinstance(step, ByHash):
            ref = self.by_hash[step.hash]
            return Fetched(ref, ("payload", ref.hash))
        assert isinstance(step, NodeHead)
        return self.head


def run(window: ChainWindow, node: Node, hint: Hint, *, fail_at_event: int | None = None) -> list[Event]:
    """Drive one sync like the follower does; ``fail_at_event``: the driver dies delivering that one."""
    steps = window.sync(hint)
    events: list[Event] = []
    answer: object = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration:
            return events
        if isinstance(step, Block | Reorg | Finalize):
            if fail_at_event == len(events):
                steps.close()
                return events
            events.append(step)
            answer = None
        else:
            answer = node.answer(step)


def window_of(node: Node, numbers: range | list[int], **kw: int | None) -> ChainWindow:
    return ChainWindow([node.canonical[n] for n in numbers], **kw)  # type: ignore[arg-type]


def hint(node: Node, number: int) -> Hint:
    return Hint(number, node.canonical[number].hash)


def test_a_head_above_the_tip_fetches_every_block_in_order_by_number() -> None:
    node = Node()
    node.grow("a", 0, 8)
    window = window_of(node, range(0, 4))
    events = run(window, node, hint(node, 8))
    assert events == [Block(node.canonical[n], ("payload", node.canonical[n].hash)) for n in range(4, 9)]
    assert window.chain == {n: node.canonical[n] for n in range(0, 9)}


def test_a_known_head_asks_nothing_and_a_side_hint_at_a_stored_height_orphans_nothing() -> None:
    node = Node()
    node.grow("a", 0, 6)
    window = window_of(node, range(0, 7))
    assert run(window, node, hint(node, 4)) == []
    assert node.requests == []
    side = Hint(5, block_hash("side", 5))  # another backend's side block, never canonical here
    assert run(window, node, side) == []
    assert node.requests == [ByNumber(5)]  # confirmed by number, and the stored block is canonical
    assert window.chain == {n: node.canonical[n] for n in range(0, 7)}


def test_a_late_hint_for_a_replaced_height_reorgs_and_brings_the_new_branch_up_to_the_node_head() -> None:
    node = Node()
    node.grow("a", 0, 6)
    window = window_of(node, range(0, 7))
    old = [node.canonical[n] for n in (5, 6)]
    new = node.grow("b", 5, 8)  # blocks 5..8 on b: the hint names only 5
    events = run(window, node, Hint(5, new[0].hash))
    ancestor = node.canonical[4]
    assert events == [
        Reorg(ancestor, tuple(old), tuple(Block(r, ("payload", r.hash)) for r in new[:1])),
        *[Block(r, ("payload", r.hash)) for r in new[1:]],
    ]
    assert window.chain == {n: node.canonical[n] for n in range(0, 9)}


def test_a_parent_mismatch_walks_back_by_hash_through_holes_and_confirms_before_orphaning() -> None:
    node = Node()
    node.grow("a", 0, 10)
    window = window_of(node, [0, 1, 2, 3, 4, 7, 8, 9, 10])  # holes at 5 and 6 (a backfill below)
    old = [node.canonical[n] for n in (7, 8, 9, 10)]
    new = node.grow("b", 6, 11)  # forks right above 5, a hole
    events = run(window, node, hint(node, 11))
    # the walk fetches 5 by hash through the hole; the stored 4 is its parent: the ancestor, and the
    # new branch refills the hole at 5
    branch = [node.canonical[5], *new]
    assert events == [
        Reorg(node.canonical[4], tuple(old), tuple(Block(r, ("payload", r.hash)) for r in branch))
    ]
    assert ByHash(node.canonical[5].hash) in node.requests
    assert ByNumber(5, full=False) in node.requests  # the new branch's first block, confirmed canonical
    assert window.chain == {n: node.canonical[n] for n in [0, 1, 2, 3, 4, *range(5, 12)]}


def test_below_the_stored_window_the_node_s_canonical_block_is_the_ancestor() -> None:
    node = Node()
    node.grow("a", 0, 20)
    window = ChainWindow([node.canonical[20]])  # a fresh start at the head: one block held
    new = node.grow("b", 20, 21)
    events = run(window, node, hint(node, 21))
    assert events == [
        Reorg(node.canonical[19], (BlockRef(20, block_hash("a", 20), node.canonical[19].hash),),
              tuple(Block(r, ("payload", r.hash)) for r in new))
    ]  # fmt: skip
    assert ByNumber(19, full=False) in node.requests


def test_a_side_branch_the_node_does_not_confirm_orphans_nothing() -> None:
    node = Node()
    node.grow("a", 0, 6)
    window = window_of(node, range(0, 7))
    side = node.grow("side", 5, 7)
    node.grow("a", 5, 7)  # the backend's canonical chain is a again: only block 7 of side was served
    node.canonical[7] = side[2]  # one lagging answer by number hands out the side block
    with pytest.raises(NodeChainMoved, match="not canonical"):
        run(window, node, Hint(7, side[2].hash))
    assert window.chain == {n: BlockRef(n, block_hash("a", n), node.by_hash[block_hash("a", n)].parent_hash)
                            for n in range(0, 7)}  # fmt: skip


def test_a_reorg_deeper_than_the_maximum_raises_and_changes_nothing() -> None:
    node = Node()
    node.grow("a", 0, 10)
    window = window_of(node, range(0, 11), max_reorg_depth=3)
    before = dict(window.chain)
    node.grow("b", 6, 11)  # ancestor 5: 5 below the tip 10
    with pytest.raises(ReorgTooDeep, match="maximum of 3"):
        run(window, node, hint(node, 11))
    assert window.chain == before


def test_the_window_keeps_max_reorg_depth_blocks_below_the_tip() -> None:
    node = Node()
    node.grow("a", 0, 30)
    window = window_of(node, range(0, 5), max_reorg_depth=4)
    run(window, node, hint(node, 30))
    assert window.chain == {n: node.canonical[n] for n in range(26, 31)}


def test_a_hint_ahead_of_a_lagging_backend_stops_at_the_node_head() -> None:
    node = Node()
    node.grow("a", 0, 9)
    window = window_of(node, range(0, 3))
    node.head_override = 6
    events = run(window, node, Hint(9, None))
    assert [e.ref.number for e in events if isinstance(e, Block)] == [3, 4, 5, 6]


def test_finalize_names_the_block_confirmations_deep_each_time_it_moves() -> None:
    node = Node()
    node.grow("a", 0, 12)
    window = window_of(node, range(0, 6), confirmations=3)
    events = run(window, node, hint(node, 8))
    assert events == [
        Block(node.canonical[6], ("payload", node.canonical[6].hash)),
        Finalize(node.canonical[3]),
        Block(node.canonical[7], ("payload", node.canonical[7].hash)),
        Finalize(node.canonical[4]),
        Block(node.canonical[8], ("payload", node.canonical[8].hash)),
        Finalize(node.canonical[5]),
    ]
    old = [node.canonical[n] for n in (7, 8)]
    new = node.grow("b", 7, 9)
    events = run(window, node, hint(node, 9))  # tip 8 → 9 through a reorg: 6 is final now
    assert events == [
        Reorg(node.canonical[6], tuple(old), tuple(Block(r, ("payload", r.hash)) for r in new)),
        Finalize(node.canonical[6]),
    ]


def test_a_driver_that_fails_delivering_an_event_finds_the_window_unmoved() -> None:
    node = Node()
    node.grow("a", 0, 8)
    window = window_of(node, range(0, 4), confirmations=2)
    delivered = run(window, node, hint(node, 8), fail_at_event=2)  # block 4, finalize 2, then dies on 5
    assert [type(e) for e in delivered] == [Block, Finalize]
    assert window.chain == {n: node.canonical[n] for n in range(0, 5)}
    again = run(window, node, hint(node, 8))  # the same hint, synced again: block 5 on, nothing twice
    assert [e.ref.number for e in again if isinstance(e, Block)] == [5, 6, 7, 8]
    assert [e.ref.number for e in again if isinstance(e, Finalize)] == [3, 4, 5, 6]


def test_a_fresh_window_starts_at_from_block_or_the_hint() -> None:
    node = Node()
    node.grow("a", 0, 5)
    window = ChainWindow([], from_block=2)
    events = run(window, node, hint(node, 4))
    assert [e.ref for e in events if isinstance(e, Block)] == [node.canonical[n] for n in (2, 3, 4)]
    fresh = ChainWindow([])
    assert [e.ref for e in run(fresh, node, hint(node, 5)) if isinstance(e, Block)] == [node.canonical[5]]
