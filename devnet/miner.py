"""Put planned transactions into blocks: send them from anvil's unlocked dev accounts with explicit
nonce, gas and fees (so nothing is estimated and a planned revert is still included), mine one block,
and check every receipt against the plan. Counts of what really happened go into ``counts``."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devnet.anvil import BLOCK_TIME
from devnet.rpc import DevnetError, Rpc

log = logging.getLogger(__name__)

GWEI = 10**9
# Blocks are filled by planned gas limits up to this, below anvil's 30M block gas limit.
BLOCK_GAS_BUDGET = 25_000_000


@dataclass
class Tx:
    """One planned transaction and the events it must produce if it succeeds.

    ``expect`` keys are dotted counter names (``swaps.uniswap-v2``, ``positions.minted``), added to the
    devnet's counts when the receipt says success. ``revert`` marks a transaction planned to fail.
    """

    sender: str
    to: str | None
    data: str = "0x"
    value: int = 0
    gas: int = 300_000
    expect: dict[str, int] = field(default_factory=dict)
    revert: bool = False
    legacy: bool = False
    tip: int = GWEI


@dataclass
class MinedBlock:
    number: int
    hash: str
    receipts: list[dict[str, Any]]


class Miner:
    def __init__(self, rpc: Rpc, accounts: list[str], counts: Counter[str] | None = None) -> None:
        self.rpc = rpc
        self.counts: Counter[str] = counts if counts is not None else Counter()
        nonces = rpc.batch([("eth_getTransactionCount", [a, "latest"]) for a in accounts])
        self.nonces = {a: int(n, 16) for a, n in zip(accounts, nonces, strict=True)}
        block = rpc.call("eth_getBlockByNumber", "latest", False)
        self.base_fee = int(block.get("baseFeePerGas") or "0x0", 16)

    def next_nonce(self, sender: str) -> int:
        return self.nonces[sender]

    def request(self, tx: Tx, nonce: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "from": tx.sender,
            "data": tx.data,
            "value": hex(tx.value),
            "gas": hex(tx.gas),
            "nonce": hex(nonce),
        }
        if tx.to is not None:
            request["to"] = tx.to
        # Fees follow the base fee so a long busy run never leaves a transaction underpriced.
        if tx.legacy:
            request["gasPrice"] = hex(2 * self.base_fee + tx.tip)
        else:
            request["maxFeePerGas"] = hex(max(50 * GWEI, 3 * self.base_fee + tx.tip))
            request["maxPriorityFeePerGas"] = hex(tx.tip)
        return request

    def mine(self, txs: list[Tx], *, strict: bool = False) -> MinedBlock:
        """Send ``txs`` in order and mine them into one block. ``strict``: an unplanned revert raises
        (setup), otherwise it is counted as ``unexpected_reverts`` and logged."""
        hashes = []
        for tx in txs:
            # One at a time, in order: anvil answers a JSON-RPC batch concurrently, and arrival order
            # is block order here (--order fifo), which must not vary between runs.
            hashes.append(self.rpc.call("eth_sendTransaction", self.request(tx, self.nonces[tx.sender])))
            self.nonces[tx.sender] += 1
        self.rpc.call("evm_mine")
        block, receipts = self.rpc.batch(
            [("eth_getBlockByNumber", ["latest", False]), ("eth_getBlockReceipts", ["latest"])]
        )
        mined = [r["transactionHash"] for r in receipts]
        if mined != hashes:
            raise DevnetError(
                f"block {int(block['number'], 16)} holds {len(mined)} of {len(hashes)} sent transactions "
                "(gas budget or nonce problem)"
            )
        self.base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
        self.counts["blocks"] += 1
        self.counts["transactions"] += len(txs)
        if not txs:
            self.counts["empty_blocks"] += 1
        for tx, receipt in zip(txs, receipts, strict=True):
            self._account(tx, receipt, strict)
        return MinedBlock(int(block["number"], 16), block["hash"], receipts)

    def mine_empty(self, count: int) -> None:
        self.rpc.call("anvil_mine", hex(count), hex(BLOCK_TIME))
        self.counts["blocks"] += count
        self.counts["empty_blocks"] += count

    def mine_all(self, txs: list[Tx], *, strict: bool = True) -> list[MinedBlock]:
        """Mine ``txs`` in order over as many blocks as the gas budget needs."""
        blocks = []
        chunk: list[Tx] = []
        gas = 0
        for tx in txs:
            if chunk and gas + tx.gas > BLOCK_GAS_BUDGET:
                blocks.append(self.mine(chunk, strict=strict))
                chunk, gas = [], 0
            chunk.append(tx)
            gas += tx.gas
        if chunk:
            blocks.append(self.mine(chunk, strict=strict))
        return blocks

    def _account(self, tx: Tx, receipt: dict[str, Any], strict: bool) -> None:
        ok = receipt["status"] == "0x1"
        if not ok:
            self.counts["reverted_transactions"] += 1
        if ok and not tx.revert:
            self.counts.update(tx.expect)
            return
        if not ok and tx.revert:
            self.counts["planned_reverts"] += 1
            return
        what = "succeeded" if ok else "reverted"
        message = (
            f"transaction {receipt['transactionHash']} in block {int(receipt['blockNumber'], 16)} "
            f"unexpectedly {what} (to {tx.to}, data {tx.data[:10]})"
        )
        if strict:
            raise DevnetError(message)
        log.warning(message)
        self.counts["unexpected_reverts" if not ok else "unexpected_successes"] += 1
