"""RLP and Merkle-Patricia trie roots against published vectors, pyrlp, and real mainnet roots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rlp
from hypothesis import given
from hypothesis import strategies as st

from tests.trie import (
    EMPTY_TRIE_ROOT,
    Encoded,
    RlpItem,
    header_hash,
    ordered_trie_root,
    receipts_root,
    rlp_encode,
    trie_root,
    withdrawals_root,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
ETL = FIXTURES / "ethereum-etl"
needs_fixtures = pytest.mark.usefixtures("fixtures_dir")  # fails (never skips) without the recordings


LOREM = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit"


@pytest.mark.parametrize(
    ("item", "encoded"),
    [  # the examples of the RLP specification (ethereum.org "Recursive-length prefix")
        (b"dog", "83646f67"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        (b"", "80"),
        ([], "c0"),
        (0, "80"),
        (b"\x00", "00"),
        (b"\x0f", "0f"),
        (15, "0f"),
        (1024, "820400"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (LOREM, "b838" + LOREM.hex()),  # 56 bytes: the first long string
    ],
)  # fmt: skip
def test_rlp_spec_examples(item: RlpItem, encoded: str) -> None:
    assert rlp_encode(item).hex() == encoded


rlp_items = st.recursive(
    st.binary(max_size=80) | st.integers(min_value=0, max_value=2**300),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


@given(rlp_items)
def test_rlp_matches_pyrlp(item: Any) -> None:
    assert rlp_encode(item) == rlp.encode(item)


def test_encoded_is_embedded_verbatim() -> None:
    assert rlp_encode([Encoded(rlp_encode([b"a", b"b"])), b"c"]) == rlp.encode([[b"a", b"b"], b"c"])


def test_rlp_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        rlp_encode(-1)


def test_trie_known_roots() -> None:
    assert ordered_trie_root([]) == EMPTY_TRIE_ROOT
    # the "dogs" example of the Patricia trie documentation: extension, branch with value, leaves
    dogs = [(b"doe", b"reindeer"), (b"dog", b"puppy"), (b"dogglesworth", b"cat")]
    assert trie_root(dogs).hex() == "8aad789dff2f538bca5d8ea56e8abe10f4c7ba3a5dea95fea4cd6e7c3a1168d3"
    assert trie_root(reversed(dogs)) == trie_root(dogs)  # order of insertion does not matter
    with pytest.raises(ValueError, match="duplicate"):
        trie_root([(b"a", b"1"), (b"a", b"2")])


def load(path: Path) -> Any:
    data = json.loads(path.read_text())
    return data.get("result", data) if isinstance(data, dict) else data


@needs_fixtures
@pytest.mark.parametrize(
    "path",
    [
        "test_export_blocks_job/block_without_transactions/web3_response.eth_getBlockByNumber_0x0_true.json",
        "test_export_blocks_job/blocks_with_transactions/web3_response.eth_getBlockByNumber_0xb872_true.json",
        "test_export_blocks_job/blocks_with_transactions/web3_response.eth_getBlockByNumber_0xb873_true.json",
        "test_export_blocks_job/block_with_logs/web3_response.eth_getBlockByNumber_0x76250_true.json",
        "test_stream/blocks_1755634_1755635/web3_response.eth_getBlockByNumber_0x1ac9f2_true.json",
        "test_stream/blocks_1755634_1755635/web3_response.eth_getBlockByNumber_0x1ac9f3_true.json",
        "test_stream/blocks_2112234_2112234/web3_response.eth_getBlockByNumber_0x203aea_false.json",
        "../mainnet-block-21925176-helios/block.json",  # Cancun: base fee, withdrawals, blob fields
    ],
)
def test_header_hash_of_real_blocks(path: str) -> None:
    block = load(ETL / path)
    assert header_hash(block) == block["hash"]
    tampered = dict(block, gasUsed=hex(int(block["gasUsed"], 16) + 1))
    assert header_hash(tampered) != block["hash"]


@needs_fixtures
@pytest.mark.parametrize(
    ("block_path", "receipts_dir"),
    [  # pre-Byzantium receipts: the state root instead of a status
        (
            "test_export_blocks_job/block_with_logs/web3_response.eth_getBlockByNumber_0x76250_true.json",
            "test_export_receipts_job/receipts_with_logs",
        ),
        (
            "test_stream/blocks_1755634_1755635/web3_response.eth_getBlockByNumber_0x1ac9f3_true.json",
            "test_stream/blocks_1755634_1755635",
        ),
    ],
)
def test_receipts_root_of_pre_byzantium_blocks(block_path: str, receipts_dir: str) -> None:
    block = load(ETL / block_path)
    receipts = [
        load(ETL / receipts_dir / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json")
        for tx in block["transactions"]
    ]
    assert receipts_root(receipts) == block["receiptsRoot"]
    assert receipts_root(receipts[::-1]) != block["receiptsRoot"]


@needs_fixtures
def test_withdrawals_root_from_ethereum_etl_export() -> None:
    """ethereum-etl's exported withdrawals (decimal) of two Shanghai blocks hash to their root."""
    path = ETL / "test_export_blocks_job/blocks_with_transactions_and_withdrawals/expected_blocks.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        withdrawals = [
            {
                "index": hex(w["index"]),
                "validatorIndex": hex(w["validator_index"]),
                "address": w["address"],
                "amount": hex(w["amount"]),
            }
            for w in row["withdrawals"]
        ]
        assert len(withdrawals) == 16
        assert withdrawals_root(withdrawals) == row["withdrawals_root"]
