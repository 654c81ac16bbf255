"""Blob (type 3) and set-code (type 4, EIP-7702) transactions and the Prague block header, field by field.

No recorded mainnet answer in ``../shared/fixtures`` carries a type-3 or type-4 transaction or a
``requestsHash``: the helios block 21925176 (Cancun) has 190 type-2 and 12 legacy transactions, hashes only,
and ``blobGasUsed`` 0; the ethereum-etl blocks are from 2015-2018. So the node answers below are written by
hand in the JSON-RPC shapes of the execution-apis specification (github.com/ethereum/execution-apis,
``src/schemas/transaction.yaml``: ``Transaction4844Signed``, ``Transaction7702Signed`` and
``AuthorizationList`` {chainId, nonce, address, yParity, r, s}; ``src/schemas/receipt.yaml``:
``blobGasUsed``, ``blobGasPrice``; ``src/schemas/block.yaml``: ``requestsHash``, EIP-7685). The values
are arbitrary but shaped as a node sends them: quantities without leading zeros, mixed-case addresses.
Every expected value is written out literally here, not computed by the code under test.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from indexer.chain.extract import extract_block
from records import Authorization, Transaction, from_json, to_dict, to_json

pytestmark = pytest.mark.unit

BLOCK_HASH = "0x" + "ab" * 32
TX3 = "0x" + "03" * 32
TX4 = "0x" + "04" * 32
SENDER = "0x00000000000000000000000000000000000000a1"
ZERO_BLOOM = "0x" + "00" * 256

PRAGUE_BLOCK: dict[str, Any] = {
    "number": "0x1606fba",  # 23097274
    "hash": BLOCK_HASH,
    "parentHash": "0x" + "aa" * 32,
    "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
    "miner": "0x95222290DD7278Aa3Ddd389Cc1E1d165CC4BAfe5",
    "stateRoot": "0x" + "5a" * 32,
    "transactionsRoot": "0x" + "7a" * 32,
    "receiptsRoot": "0x" + "4a" * 32,
    "logsBloom": ZERO_BLOOM,
    "difficulty": "0x0",
    "gasLimit": "0x2255100",
    "gasUsed": "0x11170",
    "timestamp": "0x6890a5f7",
    "extraData": "0x",
    "mixHash": "0x" + "3c" * 32,
    "nonce": "0x0000000000000000",
    "baseFeePerGas": "0x1dcd6500",
    "withdrawalsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
    "blobGasUsed": "0x40000",
    "excessBlobGas": "0x0",
    "parentBeaconBlockRoot": "0x" + "be" * 32,
    "requestsHash": "0xE3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    "size": "0x4d2",
    "uncles": [],
    "withdrawals": [],
    "transactions": [
        {  # Transaction4844Signed + TransactionInfo
            "type": "0x3",
            "chainId": "0x1",
            "nonce": "0x1b",
            "to": "0xFF00000000000000000000000000000000000010",
            "gas": "0x5208",
            "value": "0x0",
            "input": "0x",
            "maxPriorityFeePerGas": "0x3b9aca00",
            "maxFeePerGas": "0x2540be400",
            "maxFeePerBlobGas": "0x77359400",
            "gasPrice": "0x59682f00",
            "accessList": [],
            "blobVersionedHashes": [
                "0x01A7C4F1E2D3B4A5968778695A4B3C2D1E0F1A2B3C4D5E6F708192A3B4C5D6E7",
                "0x0100000000000000000000000000000000000000000000000000000000000002",
            ],
            "yParity": "0x0",
            "v": "0x0",
            "r": "0x9d2c5b8e1f3a4b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e",
            "s": "0x1f2e3d4c5b6a79880706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
            "blockHash": BLOCK_HASH,
            "blockNumber": "0x1606fba",
            "from": "0x00000000000000000000000000000000000000A1",
            "hash": TX3,
            "transactionIndex": "0x0",
        },
        {  # Transaction7702Signed + TransactionInfo
            "type": "0x4",
            "chainId": "0x1",
            "nonce": "0x7",
            "to": "0x00000000000000000000000000000000000000A1",
            "gas": "0x186a0",
            "value": "0x0",
            "input": "0xa9059cbb",
            "maxPriorityFeePerGas": "0x1",
            "maxFeePerGas": "0x3b9aca00",
            "gasPrice": "0x1dcd6501",
            "accessList": [],
            "authorizationList": [
                {
                    "chainId": "0x1",
                    "address": "0x63C0C19A282A1B52B07DD5A65B58948A07DAE32B",
                    "nonce": "0x8",
                    "yParity": "0x1",
                    "r": "0xc4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f",
                    "s": "0x5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",  # 62 digits
                },
                {
                    "chainId": "0x0",  # valid on any chain
                    "address": "0x0000000000000000000000000000000000000000",  # clears a delegation
                    "nonce": "0x0",
                    "yParity": "0x0",
                    "r": "0x1",
                    "s": "0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0",
                },
            ],
            "yParity": "0x1",
            "v": "0x1",
            "r": "0x2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80910",
            "s": "0x3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2",
            "blockHash": BLOCK_HASH,
            "blockNumber": "0x1606fba",
            "from": "0x00000000000000000000000000000000000000A1",
            "hash": TX4,
            "transactionIndex": "0x1",
        },
    ],
}

PRAGUE_RECEIPTS: list[dict[str, Any]] = [
    {
        "type": "0x3",
        "transactionHash": TX3,
        "transactionIndex": "0x0",
        "blockHash": BLOCK_HASH,
        "blockNumber": "0x1606fba",
        "from": "0x00000000000000000000000000000000000000a1",
        "to": "0xff00000000000000000000000000000000000010",
        "cumulativeGasUsed": "0x5208",
        "gasUsed": "0x5208",
        "contractAddress": None,
        "logs": [],
        "logsBloom": ZERO_BLOOM,
        "status": "0x1",
        "effectiveGasPrice": "0x59682f00",
        "blobGasUsed": "0x40000",
        "blobGasPrice": "0x3",
    },
    {
        "type": "0x4",
        "transactionHash": TX4,
        "transactionIndex": "0x1",
        "blockHash": BLOCK_HASH,
        "blockNumber": "0x1606fba",
        "from": "0x00000000000000000000000000000000000000a1",
        "to": "0x00000000000000000000000000000000000000a1",
        "cumulativeGasUsed": "0x11170",
        "gasUsed": "0xbf68",
        "contractAddress": None,
        "logs": [],
        "logsBloom": ZERO_BLOOM,
        "status": "0x1",
        "effectiveGasPrice": "0x1dcd6501",
    },
]

AUTHORIZATIONS = (
    Authorization(
        chain_id=1,
        address="0x63c0c19a282a1b52b07dd5a65b58948a07dae32b",
        nonce=8,
        y_parity=1,
        r="0xc4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f",
        s="0x005e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
    ),
    Authorization(
        chain_id=0,
        address="0x0000000000000000000000000000000000000000",
        nonce=0,
        y_parity=0,
        r="0x0000000000000000000000000000000000000000000000000000000000000001",
        s="0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0",
    ),
)

WANT_TX3 = Transaction(
    hash=TX3, block_number=23097274, block_hash=BLOCK_HASH, block_timestamp=1754310135, transaction_index=0,
    nonce=27, from_address=SENDER, to_address="0xff00000000000000000000000000000000000010", value=0,
    gas=21000, gas_price=1_500_000_000, input="0x", max_fee_per_gas=10_000_000_000,
    max_priority_fee_per_gas=1_000_000_000, max_fee_per_blob_gas=2_000_000_000,
    blob_versioned_hashes=(
        "0x01a7c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e7",
        "0x0100000000000000000000000000000000000000000000000000000000000002",
    ),
    type=3, status=1, root=None, gas_used=21000, cumulative_gas_used=21000, effective_gas_price=1_500_000_000,
    contract_address=None, blob_gas_used=262144, blob_gas_price=3, authorization_list=None,
)  # fmt: skip

WANT_TX4 = Transaction(
    hash=TX4, block_number=23097274, block_hash=BLOCK_HASH, block_timestamp=1754310135, transaction_index=1,
    nonce=7, from_address=SENDER, to_address=SENDER, value=0, gas=100_000, gas_price=500_000_001,
    input="0xa9059cbb", max_fee_per_gas=1_000_000_000, max_priority_fee_per_gas=1, max_fee_per_blob_gas=None,
    blob_versioned_hashes=None, type=4, status=1, root=None, gas_used=49000, cumulative_gas_used=70000,
    effective_gas_price=500_000_001, contract_address=None, blob_gas_used=None, blob_gas_price=None,
    authorization_list=AUTHORIZATIONS,
)  # fmt: skip


def test_prague_block_header() -> None:
    block = extract_block(PRAGUE_BLOCK, PRAGUE_RECEIPTS).block
    assert block.requests_hash == "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (block.number, block.timestamp, block.transaction_count) == (23097274, 1754310135, 2)
    assert (block.blob_gas_used, block.excess_blob_gas) == (262144, 0)
    assert block.parent_beacon_block_root == "0x" + "be" * 32
    assert block.withdrawals == ()


def test_blob_and_set_code_transactions_every_field() -> None:
    txs = extract_block(PRAGUE_BLOCK, PRAGUE_RECEIPTS).transactions
    assert txs == (WANT_TX3, WANT_TX4)


def test_a_block_without_requests_hash_or_authorizations_has_nulls() -> None:
    cancun = copy.deepcopy(PRAGUE_BLOCK)
    del cancun["requestsHash"]
    del cancun["transactions"][1]["authorizationList"]
    extracted = extract_block(cancun, PRAGUE_RECEIPTS)
    assert extracted.block.requests_hash is None
    assert extracted.transactions[1].authorization_list is None


def test_json_form_of_authorizations_and_requests_hash() -> None:
    extracted = extract_block(PRAGUE_BLOCK, PRAGUE_RECEIPTS)
    doc = to_dict(extracted.transactions[1])["data"]
    assert doc["authorization_list"] == [
        {
            "chain_id": "1",  # uint256: a decimal string, like every U256
            "address": "0x63c0c19a282a1b52b07dd5a65b58948a07dae32b",
            "nonce": 8,
            "y_parity": 1,
            "r": "0xc4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f",
            "s": "0x005e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
        },
        {
            "chain_id": "0",
            "address": "0x0000000000000000000000000000000000000000",
            "nonce": 0,
            "y_parity": 0,
            "r": "0x0000000000000000000000000000000000000000000000000000000000000001",
            "s": "0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0",
        },
    ]
    assert to_dict(extracted.transactions[0])["data"]["authorization_list"] is None
    assert to_dict(extracted.block)["data"]["requests_hash"] == (
        "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for record in (extracted.block, *extracted.transactions):
        assert from_json(to_json(record)) == record
