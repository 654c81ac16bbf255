"""Mainnet block 21925176 (post-Cancun) with all 202 receipts and 463 logs, from a16z/helios.

There is no independent export for this block, so the checks are the ones a node could make itself:
counts, contiguous log indexes, gas, the receipts/withdrawals roots and the header hash recomputed,
the header's logs bloom rebuilt from our extracted logs, and our token transfers compared field by
field with an eth-abi decode of the same raw logs. See ``PROVENANCE.md`` in the fixture folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_hash.auto import keccak

from core.errors import FatalError
from decoders.transfers import TRANSFER_SINGLE_TOPIC, TRANSFER_TOPIC
from indexer.chain.extract import ExtractedBlock, InconsistentBlockError, extract_block, extract_receipts_only
from records import Withdrawal
from tests.trie import header_hash, receipts_root, withdrawals_root

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fixtures_dir")]  # fails without the fixtures


@pytest.fixture(scope="module")
def header() -> dict[str, Any]:
    return json.loads((HELIOS / "block.json").read_text())


@pytest.fixture(scope="module")
def receipts() -> list[dict[str, Any]]:
    return json.loads((HELIOS / "receipts.json").read_text())


@pytest.fixture(scope="module")
def extracted(header: dict[str, Any], receipts: list[dict[str, Any]]) -> ExtractedBlock:
    return extract_receipts_only(header, receipts)


def test_block_fields(extracted: ExtractedBlock, header: dict[str, Any]) -> None:
    block = extracted.block
    assert (block.number, block.hash) == (21925176, header["hash"])
    assert block.timestamp == 1740508595  # 2025-02-25 18:36:35 UTC
    assert block.transaction_count == 202
    assert block.base_fee_per_gas == int(header["baseFeePerGas"], 16)
    assert (block.blob_gas_used, block.excess_blob_gas) == (0, 0x4780000)
    assert block.parent_beacon_block_root == header["parentBeaconBlockRoot"]
    assert "requestsHash" not in header and block.requests_hash is None  # Cancun, before Prague
    assert block.withdrawals_root == header["withdrawalsRoot"]
    assert block.withdrawals is not None and len(block.withdrawals) == 16
    assert block.withdrawals[0] == Withdrawal(
        index=0x4A9E66B,
        validator_index=0x85DD2,
        address="0xb9d7934878b5fb9610b3fe8a5e441e8fad7e293f",
        amount=0x121A6A9,
    )
    assert block.total_difficulty is None  # a post-merge node no longer returns it
    assert extracted.transactions == ()  # hashes-only header: no transaction records


def test_counts_log_indexes_and_gas(
    extracted: ExtractedBlock, header: dict[str, Any], receipts: list[dict[str, Any]]
) -> None:
    assert len(receipts) == len(header["transactions"]) == 202
    assert len(extracted.logs) == 463
    assert [lg.log_index for lg in extracted.logs] == list(range(463))
    assert int(header["gasUsed"], 16) == int(receipts[-1]["cumulativeGasUsed"], 16) == 16311024
    assert sum(int(r["gasUsed"], 16) for r in receipts) == 16311024
    assert {lg.block_hash for lg in extracted.logs} == {header["hash"]}
    by_tx = {h: i for i, h in enumerate(header["transactions"])}
    assert all(by_tx[lg.transaction_hash] == lg.transaction_index for lg in extracted.logs)


def test_roots_and_header_hash(header: dict[str, Any], receipts: list[dict[str, Any]]) -> None:
    assert receipts_root(receipts) == header["receiptsRoot"]
    assert withdrawals_root(header["withdrawals"]) == header["withdrawalsRoot"]
    assert header_hash(header) == header["hash"]


def bloom_of(items: list[bytes]) -> int:
    bloom = 0
    for item in items:
        digest = keccak(item)
        for i in (0, 2, 4):
            bloom |= 1 << (int.from_bytes(digest[i : i + 2], "big") & 0x7FF)
    return bloom


def test_logs_bloom_from_extracted_logs(extracted: ExtractedBlock, header: dict[str, Any]) -> None:
    items = []
    for lg in extracted.logs:
        items.append(bytes.fromhex(lg.address[2:]))
        items += [bytes.fromhex(t[2:]) for t in (lg.topic0, lg.topic1, lg.topic2, lg.topic3) if t is not None]
    assert bloom_of(items) == int(header["logsBloom"], 16)


def abi_address(topic: str) -> str:
    (address,) = abi_decode(["address"], bytes.fromhex(topic[2:]))
    return str(address).lower()


def test_token_transfers_match_eth_abi(extracted: ExtractedBlock, receipts: list[dict[str, Any]]) -> None:
    raw_logs = {int(lg["logIndex"], 16): lg for r in receipts for lg in r["logs"]}
    expected = []
    for index, lg in sorted(raw_logs.items()):
        topics, data = lg["topics"], bytes.fromhex(lg["data"][2:])
        base = {"token_address": lg["address"], "log_index": index, "transaction_hash": lg["transactionHash"]}
        if topics[0] == TRANSFER_TOPIC and len(topics) == 3:
            (value,) = abi_decode(["uint256"], data)
            parties = {"from_address": abi_address(topics[1]), "to_address": abi_address(topics[2])}
            expected.append(
                base | parties | {"value": value, "token_id": None, "standard": "erc20", "operator": None}
            )
        elif topics[0] == TRANSFER_TOPIC and len(topics) == 4:
            assert data == b""
            (token_id,) = abi_decode(["uint256"], bytes.fromhex(topics[3][2:]))
            parties = {"from_address": abi_address(topics[1]), "to_address": abi_address(topics[2])}
            expected.append(
                base | parties | {"value": 1, "token_id": token_id, "standard": "erc721", "operator": None}
            )
        elif topics[0] == TRANSFER_SINGLE_TOPIC:
            token_id, value = abi_decode(["uint256", "uint256"], data)
            parties = {
                "operator": abi_address(topics[1]),
                "from_address": abi_address(topics[2]),
                "to_address": abi_address(topics[3]),
            }
            expected.append(base | parties | {"value": value, "token_id": token_id, "standard": "erc1155"})
    assert extracted.skipped_transfers == 0
    assert len(extracted.token_transfers) == len(expected) == 234
    standards = [t.standard for t in extracted.token_transfers]
    assert (standards.count("erc20"), standards.count("erc721"), standards.count("erc1155")) == (225, 8, 1)
    for transfer, want in zip(extracted.token_transfers, expected, strict=True):
        for field, value in want.items():
            assert getattr(transfer, field) == value, (field, transfer)
        assert transfer.block_number == 21925176 and transfer.batch_index == 0
        assert transfer.transaction_index == int(raw_logs[transfer.log_index]["transactionIndex"], 16)


# -- the consistency checks reject a mismatched pair -----------------------------------------------


def test_hashes_only_block_needs_the_receipts_only_path(
    header: dict[str, Any], receipts: list[dict[str, Any]]
) -> None:
    with pytest.raises(FatalError, match="hashes only"):
        extract_block(header, receipts)


def tampered(receipts: list[dict[str, Any]], edit: str) -> list[dict[str, Any]]:
    out = copy.deepcopy(receipts)
    if edit == "missing receipt":
        del out[100]
    elif edit == "swapped receipts":
        out[3], out[4] = out[4], out[3]
    elif edit == "receipt from another block":
        out[7]["blockHash"] = "0x" + "11" * 32
    elif edit == "receipt block number":
        out[7]["blockNumber"] = hex(21925177)
    elif edit == "log from another block":
        out[0]["logs"][1]["blockHash"] = "0x" + "22" * 32
    elif edit == "log of another tx":
        out[0]["logs"][1]["transactionHash"] = out[1]["transactionHash"]
    elif edit == "duplicate log index":
        out[0]["logs"][1]["logIndex"] = out[0]["logs"][0]["logIndex"]
    elif edit == "removed log":
        out[0]["logs"][1]["removed"] = True
    return out


@pytest.mark.parametrize(
    "edit",
    [
        "missing receipt",
        "swapped receipts",
        "receipt from another block",
        "receipt block number",
        "log from another block",
        "log of another tx",
        "duplicate log index",
        "removed log",
    ],
)
def test_inconsistent_receipts_rejected(
    header: dict[str, Any], receipts: list[dict[str, Any]], edit: str
) -> None:
    with pytest.raises(InconsistentBlockError):
        extract_receipts_only(header, tampered(receipts, edit))
