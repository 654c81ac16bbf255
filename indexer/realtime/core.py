"""The realtime core, without I/O: (stored chain window, head hint) → ``Block | Reorg | Finalize``.

The shape of Ponder's sync-realtime (``handleBlock`` / ``reconcileReorg`` / ``finalize``) written as
a sans-I/O state machine: ``ChainWindow.sync(head)`` is a generator that yields two kinds of steps —

- a *request* the driver must answer by ``send``-ing the node's reply back: ``ByNumber`` (the
  node's canonical block at a height, the truth), ``ByHash`` (a parent while walking back),
  ``NodeHead`` (the node's own head number, since a hint may be ahead of this backend);
- an *event* (``Block``, ``Reorg``, ``Finalize``), answered with ``None`` once the driver has
  delivered it.

The window moves only when the driver comes back for the step after an event: a driver that fails
while delivering (receipts cannot be fetched, the node dies) drops the generator, and the next sync
starts from the same window — nothing is skipped, nothing emitted twice. No node, no database, no
event loop: the unit tests run it against synthetic chains (``tests/unit/test_realtime_core.py``).

What it keeps (issue 10): heads are hints (a known hash, or another hash at a stored height that
the node's canonical block by number does not confirm, changes nothing); blocks above the tip are
fetched by number, in order, each checked against its parent; a parent mismatch walks back by hash
to the common ancestor — through holes in the window, and below the window's first block to the
node's canonical block there, whose hash must be the parent's — and the new branch is confirmed
canonical at the first orphaned height before anything is orphaned; a reorg more than
``max_reorg_depth`` below the tip raises ``ReorgTooDeep``. A block ``confirmations`` below the tip
is final: one ``Finalize`` names the newest such block each time it moves.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import FatalError, RetryableError
from sinks.postgres import BlockRef

log = logging.getLogger("dexnode.follower")


class ReorgTooDeep(FatalError):
    pass


class NodeChainMoved(RetryableError):
    """The node's answers do not make one chain (mid-reorg, or backends that disagree): sync again."""


@dataclass(frozen=True, slots=True)
class Hint:
    """A head: only a hint that the chain moved (late, duplicate, from another backend's branch)."""

    number: int
    hash: str | None


@dataclass(frozen=True, slots=True)
class ByNumber:
    number: int
    full: bool = True  # with transactions (a block to index), or the header only (a check)


@dataclass(frozen=True, slots=True)
class ByHash:
    hash: str


@dataclass(frozen=True, slots=True)
class NodeHead:
    pass


Request = ByNumber | ByHash | NodeHead


@dataclass(frozen=True, slots=True)
class Fetched:
    """The node's answer to ``ByNumber``/``ByHash``: the block's ref and the driver's own payload."""

    ref: BlockRef
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Block:
    ref: BlockRef
    payload: Any  # what the driver fetched (the raw block): the core never looks inside


@dataclass(frozen=True, slots=True)
class Reorg:
    ancestor: BlockRef
    orphaned: tuple[BlockRef, ...]  # ascending
    new: tuple[Block, ...]  # ascending, from ancestor.number + 1


@dataclass(frozen=True, slots=True)
class Finalize:
    ref: BlockRef  # the newest block now ``confirmations`` deep: it and everything below are final


Event = Block | Reorg | Finalize
Step = Request | Event
Sync = Generator[
    Step, Any, None
]  # sends back: Fetched for ByNumber/ByHash, int for NodeHead, None for events


class ChainWindow:
    def __init__(
        self,
        start: Sequence[BlockRef] = (),
        *,
        from_block: int | None = None,
        max_reorg_depth: int = 64,
        confirmations: int | None = None,
    ) -> None:
        """``start``: the stored chain's newest blocks (ascending, holes allowed), empty on a fresh
        database; then the first block is ``from_block`` (default: the first hint's height).
        ``confirmations`` None: no ``Finalize`` events."""
        self.chain: dict[int, BlockRef] = {ref.number: ref for ref in start}
        self.from_block = from_block
        self.max_reorg_depth = max_reorg_depth
        self.confirmations = confirmations
        # blocks stored before this process are final up to their own depth: announced at the first move
        self.finalized: int | None = None
        self._prune()

    @property
    def tip(self) -> BlockRef | None:
        return self.chain[max(self.chain)] if self.chain else None

    def sync(self, head: Hint, *, bounded: bool = False) -> Sync:
        """Steps that bring the window up to ``head.number`` (or the node's own head, if lower).
        ``bounded``: ask the node's head even for the next block (after a failure the hint may lie)."""
        if not self.chain:
            first = self.from_block if self.from_block is not None else head.number
            if head.number < first:
                return
            yield from self._accept((yield ByNumber(first)))
        tip = self._tip()
        if head.hash is not None and any(ref.hash == head.hash for ref in self.chain.values()):
            return
        if head.number <= tip.number:
            stored = self.chain.get(head.number)
            if stored is None or head.hash is None or stored.hash == head.hash:
                return
            # another hash at a stored height: a reorg only if the node's canonical block says so
            canonical: Fetched = yield ByNumber(head.number)
            if canonical.ref.hash == stored.hash:
                log.info("head %d %s is not canonical: ignored", head.number, head.hash[:10])
                return
            yield from self._reorg_from(canonical)
            target: int = yield NodeHead()  # the new branch above, without waiting for a head
        else:
            target = head.number
            if bounded or head.number > tip.number + 1:  # a hint may be ahead of (or lie to) this backend
                target = min(target, (yield NodeHead()))
        number = self._tip().number + 1
        while number <= target:
            fetched: Fetched = yield ByNumber(number)
            current = self._tip()
            if fetched.ref.number == current.number + 1 and fetched.ref.parent_hash == current.hash:
                yield from self._accept(fetched)
            else:
                yield from self._reorg_from(fetched)
            number = self._tip().number + 1

    def _tip(self) -> BlockRef:
        tip = self.tip
        assert tip is not None, "the window holds at least the first block once synced"
        return tip

    def _accept(self, fetched: Fetched) -> Sync:
        yield Block(fetched.ref, fetched.payload)
        self.chain[fetched.ref.number] = fetched.ref  # delivered: the window moves
        self._prune()
        yield from self._finalize()

    def _reorg_from(self, fetched: Fetched) -> Sync:
        """Walk back from ``fetched`` (not on the window's chain) to the common ancestor."""
        tip = self._tip()
        first_stored = min(self.chain)
        branch = [fetched]
        while True:
            ref = branch[0].ref
            if tip.number - (ref.number - 1) > self.max_reorg_depth:
                raise ReorgTooDeep(
                    f"reorg deeper than the maximum of {self.max_reorg_depth} blocks below {tip.number} "
                    f"(no common ancestor found down to block {ref.number}); stopping rather than "
                    "forking the data — raise DEXNODE_MAX_REORG_DEPTH or resync"
                )
            parent = self.chain.get(ref.number - 1)
            if parent is not None and parent.hash == ref.parent_hash:
                ancestor = parent
                break
            if ref.number - 1 < first_stored:  # below what we hold: the node's canonical block is the truth
                header: Fetched = yield ByNumber(ref.number - 1, full=False)
                if header.ref.hash != ref.parent_hash:
                    raise NodeChainMoved(
                        f"the node's block {header.ref.number} is {header.ref.hash[:10]}, not the parent"
                        f" {ref.parent_hash[:10]} of block {ref.number}: its chain moved, syncing again"
                    )
                ancestor = header.ref
                break
            branch.insert(0, (yield ByHash(ref.parent_hash)))  # a hole, or an orphaned block
        orphaned = tuple(self.chain[n] for n in sorted(self.chain) if n > ancestor.number)
        if orphaned:
            # a backend on a side branch, or one that lags, must not undo ours
            first_new = branch[0].ref
            canonical: Fetched = yield ByNumber(first_new.number, full=False)
            if canonical.ref.hash != first_new.hash:
                raise NodeChainMoved(
                    f"block {first_new.number} {first_new.hash[:10]} is not canonical (the node has"
                    f" {canonical.ref.hash[:10]}): not orphaning anything, syncing again"
                )
        yield Reorg(ancestor, orphaned, tuple(Block(f.ref, f.payload) for f in branch))
        for number in [n for n in self.chain if n > ancestor.number]:
            del self.chain[number]
        for f in branch:
            self.chain[f.ref.number] = f.ref
        self._prune()
        log.warning(
            "reorg at %d: %d block(s) orphaned, %d new (ancestor %s)",
            ancestor.number + 1,
            len(orphaned),
            len(branch),
            ancestor.hash[:10],
        )
        yield from self._finalize()

    def _finalize(self) -> Sync:
        """One ``Finalize`` when the newest block ``confirmations`` deep moved up (a hole there: the
        newest block the window holds below that depth)."""
        if self.confirmations is None or not self.chain:
            return
        depth = max(self.chain) - self.confirmations
        if self.finalized is not None and depth <= self.finalized:
            return
        below = [n for n in self.chain if n <= depth]
        if not below:
            return
        ref = self.chain[max(below)]
        yield Finalize(ref)
        self.finalized = depth

    def _prune(self) -> None:
        """Keep the blocks a reorg within ``max_reorg_depth`` can reach (the tip and that many below),
        and the one ``Finalize`` will name when ``confirmations`` is the deeper of the two."""
        if not self.chain:
            return
        floor = max(self.chain) - max(self.max_reorg_depth, self.confirmations or 0)
        for number in [n for n in self.chain if n < floor]:
            del self.chain[number]
