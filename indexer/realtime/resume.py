"""Before a restarted follower goes on: is the stored chain the node's chain, or a branch off it that a
reorg replaced while the follower was down, or another chain (a wrong URL, a wrong network)?

The stored window (its newest blocks) is compared with the node's canonical blocks by number. When its
oldest block is not the node's, the stored chain is walked back through its parents, by hash, on the
node (a node keeps the blocks of recent side branches): at each height below, the node's canonical
block is compared with the stored chain's ancestor there. Where they meet, the stored chain is a branch
off the node's: the follower replaces it (``indexer.realtime.core``: a walk back below the window ends
at the node's canonical block). No meeting point within ``max_reorg_depth`` below the stored tip, or an
ancestor the node does not know, is refused with a ``FatalError`` that says what to check and to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.errors import FatalError
from indexer.chain.rpc import RpcClient
from indexer.chain.rpc_errors import NotAvailableYet
from sinks.postgres import BlockRef

log = logging.getLogger("dexnode.follower")

_WRONG_CHAIN = "is DEXNODE_RPC_HTTP the chain this database indexed?"


def _ref(block: dict[str, object]) -> BlockRef:
    return BlockRef(
        int(str(block["number"]), 16), str(block["hash"]).lower(), str(block["parentHash"]).lower()
    )


async def check_resume(rpc: RpcClient, chain: Sequence[BlockRef], *, max_reorg_depth: int) -> BlockRef | None:
    """Raise ``FatalError`` unless the follower can resume on the node's chain from ``chain`` (the stored
    window, ascending). → the node's block the stored chain branches off below its oldest block (the
    follower then orphans everything stored above it), or None when the oldest stored block is the node's
    (a reorg inside the window, if any, is the follower's business)."""
    if not chain:
        return None
    oldest, newest = chain[0], chain[-1]
    head = await rpc.block_number()
    if head < oldest.number:
        raise FatalError(
            f"the node's head is block {head}, below the database's blocks {oldest.number}..{newest.number}:"
            " is DEXNODE_RPC_HTTP the chain this database indexed (or is the node still syncing)?"
        )
    canonical = _ref(await rpc.get_block_by_number(oldest.number, full_txs=False))
    if canonical.hash == oldest.hash:
        return None
    ours = oldest
    while True:
        number = ours.number - 1
        if number < 0:
            raise FatalError(
                f"the node's genesis block differs from the database's chain (its block {oldest.number} is"
                f" {canonical.hash[:12]}, the database has {oldest.hash[:12]}): {_WRONG_CHAIN}"
            )
        if newest.number - number > max_reorg_depth:
            raise FatalError(
                f"the database's blocks {oldest.number}..{newest.number} are not on the node's chain, and no"
                f" common block was found down to block {number + 1}, the maximum reorg depth"
                f" ({max_reorg_depth}) below {newest.number}: {_WRONG_CHAIN} If it is (a reorg that deep),"
                " raise DEXNODE_MAX_REORG_DEPTH (--max-reorg-depth) and start again, or index into an"
                " empty database"
            )
        node_block = _ref(await rpc.get_block_by_number(number, full_txs=False))
        if node_block.hash == ours.parent_hash:
            log.warning(
                "the stored blocks %d..%d are a branch off the node's chain at block %d %s (a reorg while"
                " the follower was down): the follower replaces them",
                oldest.number,
                newest.number,
                node_block.number,
                node_block.hash[:10],
            )
            return node_block
        try:
            parent: dict[str, object] | None = await rpc.get_block_by_hash(ours.parent_hash, full_txs=False)
        except NotAvailableYet:  # null through all of the client's tries: the node does not know it
            parent = None
        if not parent and len(chain) == 1:  # one block proves nothing either way: the follower decides
            log.warning("the stored block %d is not the node's: the follower replaces it", oldest.number)
            return None
        if not parent:
            raise FatalError(
                f"the node's block {oldest.number} is {canonical.hash[:12]}, the database has"
                f" {oldest.hash[:12]} (tip {newest.number}), and the node does not know the stored chain's"
                f" block {ours.parent_hash[:12]} at {number}: {_WRONG_CHAIN} If it is (a reorg the node no"
                " longer keeps), index into an empty database or resync from a block below the reorg"
            )
        ours = _ref(parent)
