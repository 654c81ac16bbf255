"""RLP, Merkle-Patricia trie roots and header hashes: recompute what a block header commits to.

Tests use it as an oracle that shares no code with the indexer: the receipts a node returned (or a
fixture recorded) hash to the header's ``receiptsRoot``, the header fields to the block hash. The
indexer itself does not check roots before storing: ``receipts_root`` costs ~6 ms of CPU on a
202-transaction mainnet block (2.8x extracting that block's records), against a backfill CPU
budget of a few ms per block; its consistency checks (``indexer.chain.extract``) catch answers from
mixed backends for the price of comparisons.
Input is the JSON-RPC form (hex strings); only encoding, no decoding, and whole-trie roots built in
one pass (no proofs, no updates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Union

from eth_hash.auto import keccak

RlpItem = Union[bytes, int, "Encoded", Sequence["RlpItem"]]

EMPTY_TRIE_ROOT = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"


class Encoded(bytes):
    """Bytes that are already RLP: embedded as they are (a trie node shorter than 32 bytes)."""


def _length_prefix(length: int, short_base: int) -> bytes:
    if length < 56:
        return bytes((short_base + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((short_base + 55 + len(size),)) + size


def rlp_encode(item: RlpItem) -> bytes:
    """RLP of bytes, a non-negative int (big-endian, no leading zeros) or a (nested) sequence."""
    if isinstance(item, Encoded):
        return bytes(item)
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP cannot encode a negative integer")
        return rlp_encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    payload = b"".join(rlp_encode(x) for x in item)
    return _length_prefix(len(payload), 0xC0) + payload


def hex_bytes(value: str | None) -> bytes:
    """``0x``-hex data (hash, address, bloom, input) to bytes; null to empty."""
    if value is None:
        return b""
    return bytes.fromhex(value[2:] if value.startswith(("0x", "0X")) else value)


def hex_int(value: str | None) -> int:
    """A JSON-RPC quantity to int (null counts as 0, as an absent optional scalar is RLP-empty)."""
    return 0 if value is None else int(value, 16)


# ---------------------------------------------------------------------------------------------
# Merkle-Patricia trie root (Ethereum yellow paper, appendix D)


def _nibbles(key: bytes) -> bytes:
    out = bytearray()
    for b in key:
        out.append(b >> 4)
        out.append(b & 0x0F)
    return bytes(out)


def _hex_prefix(nibbles: bytes, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    prefix = bytes((flag + 1,)) if len(nibbles) % 2 else bytes((flag, 0))
    nibbles = prefix + nibbles
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _reference(node: bytes) -> RlpItem:
    """How a parent refers to a child node: inline when its RLP is shorter than 32 bytes."""
    return Encoded(node) if len(node) < 32 else keccak(node)


def _build(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """RLP of the node holding ``items`` (sorted nibble keys, all sharing ``key[:depth]``)."""
    if len(items) == 1:
        key, value = items[0]
        return rlp_encode([_hex_prefix(key[depth:], True), value])
    first, last = items[0][0], items[-1][0]
    # items are sorted, so the prefix common to all of them is the one shared by the first and last
    end = depth
    while end < len(first) and end < len(last) and first[end] == last[end]:
        end += 1
    if end > depth:
        child = _build(items, end)
        return rlp_encode([_hex_prefix(first[depth:end], False), _reference(child)])
    branch: list[RlpItem] = [b""] * 17
    start = 0
    if len(items[0][0]) == depth:  # a key that ends here: its value sits in the branch itself
        branch[16] = items[0][1]
        start = 1
    i = start
    while i < len(items):
        nibble = items[i][0][depth]
        j = i
        while j < len(items) and items[j][0][depth] == nibble:
            j += 1
        branch[nibble] = _reference(_build(items[i:j], depth + 1))
        i = j
    return rlp_encode(branch)


def trie_root(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Root hash of the trie holding ``pairs`` (keys unique, values non-empty)."""
    items = sorted((_nibbles(k), v) for k, v in pairs)
    for (a, _), (b, _) in pairwise(items):
        if a == b:
            raise ValueError("duplicate trie key")
    if not items:
        return keccak(rlp_encode(b""))
    return keccak(_build(items, 0))


def ordered_trie_root(values: Sequence[bytes]) -> str:
    """Root of the trie a block uses for its transactions, receipts and withdrawals (key rlp(i))."""
    return "0x" + trie_root((rlp_encode(i), v) for i, v in enumerate(values)).hex()


# ---------------------------------------------------------------------------------------------
# What blocks commit to


def receipt_trie_value(receipt: Mapping[str, Any]) -> bytes:
    """Consensus encoding of a JSON-RPC receipt: ``type || rlp([status|root, cumGas, bloom, logs])``.

    Pre-Byzantium receipts carry the post-transaction state ``root`` instead of ``status``;
    typed receipts (EIP-2718) are prefixed with their type byte, legacy ones are bare RLP.
    """
    status = receipt.get("status")
    outcome: RlpItem = hex_int(status) if status is not None else hex_bytes(receipt.get("root"))
    logs: list[RlpItem] = [
        [hex_bytes(log["address"]), [hex_bytes(t) for t in log["topics"]], hex_bytes(log["data"])]
        for log in receipt["logs"]
    ]
    body = rlp_encode([outcome, hex_int(receipt["cumulativeGasUsed"]), hex_bytes(receipt["logsBloom"]), logs])
    tx_type = hex_int(receipt.get("type"))
    return body if tx_type == 0 else bytes((tx_type,)) + body


def receipts_root(receipts: Sequence[Mapping[str, Any]]) -> str:
    return ordered_trie_root([receipt_trie_value(r) for r in receipts])


def withdrawals_root(withdrawals: Sequence[Mapping[str, Any]]) -> str:
    return ordered_trie_root(
        [
            rlp_encode(
                [
                    hex_int(w["index"]),
                    hex_int(w["validatorIndex"]),
                    hex_bytes(w["address"]),
                    hex_int(w["amount"]),
                ]
            )
            for w in withdrawals
        ]
    )


# Header fields in consensus order; the ones after ``nonce`` were appended by forks and are
# present exactly when the node returns them (London, Shanghai, Cancun, Prague).
_HEADER_FIELDS: tuple[tuple[str, bool], ...] = (
    ("parentHash", False),
    ("sha3Uncles", False),
    ("miner", False),
    ("stateRoot", False),
    ("transactionsRoot", False),
    ("receiptsRoot", False),
    ("logsBloom", False),
    ("difficulty", True),
    ("number", True),
    ("gasLimit", True),
    ("gasUsed", True),
    ("timestamp", True),
    ("extraData", False),
    ("mixHash", False),
    ("nonce", False),
)
_FORK_FIELDS: tuple[tuple[str, bool], ...] = (
    ("baseFeePerGas", True),
    ("withdrawalsRoot", False),
    ("blobGasUsed", True),
    ("excessBlobGas", True),
    ("parentBeaconBlockRoot", False),
    ("requestsHash", False),
)


def header_hash(block: Mapping[str, Any]) -> str:
    """keccak256 of the RLP header rebuilt from a JSON-RPC block: must equal ``block["hash"]``."""
    fields: list[RlpItem] = []
    for name, is_quantity in _HEADER_FIELDS:
        value = block[name]
        fields.append(hex_int(value) if is_quantity else hex_bytes(value))
    for name, is_quantity in _FORK_FIELDS:
        value = block.get(name)
        if value is None:
            break  # forks are cumulative: a missing field means none of the later ones exist
        fields.append(hex_int(value) if is_quantity else hex_bytes(value))
    return "0x" + keccak(rlp_encode(fields)).hex()
