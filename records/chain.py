"""On-chain records: what the indexer extracts from blocks and receipts, and what protocols decode.

Addresses and hashes are lower-case ``0x`` hex strings. ``U256`` ints are JSON decimal strings.
Every block-derived record carries ``block_hash`` so a reorg can delete it by block, and a sortable
checkpoint (block_number, transaction_index, log_index) so consumers can order it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from records.codec import U256, Record, register


@dataclass(frozen=True, slots=True)
class Withdrawal(Record):
    """A beacon-chain withdrawal inside a block (amount in gwei, as the node gives it)."""

    index: int
    validator_index: int
    address: str
    amount: U256


@dataclass(frozen=True, slots=True)
class Authorization(Record):
    """One entry of a type-4 (EIP-7702) transaction's ``authorizationList``: the authority (the signer,
    not in the JSON-RPC object) lets ``address``'s code run for its account.

    ``chain_id`` is 0 for "any chain". ``r`` and ``s`` are 32-byte lower-case hex (``0x`` + 64 digits),
    whatever leading zeros the node's quantity form stripped, so the same signature always prints the same.
    """

    chain_id: U256
    address: str
    nonce: int
    y_parity: int
    r: str
    s: str


@register
@dataclass(frozen=True, slots=True)
class Block(Record):
    TYPE = "block"

    number: int
    hash: str
    parent_hash: str
    nonce: str | None
    sha3_uncles: str | None
    logs_bloom: str | None
    transactions_root: str | None
    state_root: str | None
    receipts_root: str | None
    miner: str | None
    difficulty: U256 | None
    total_difficulty: U256 | None
    extra_data: str | None
    size: int | None
    gas_limit: int
    gas_used: int
    base_fee_per_gas: U256 | None
    timestamp: int
    transaction_count: int
    withdrawals_root: str | None = None
    withdrawals: tuple[Withdrawal, ...] | None = None
    blob_gas_used: int | None = None
    excess_blob_gas: int | None = None
    parent_beacon_block_root: str | None = None
    requests_hash: str | None = None  # EIP-7685 (Prague): commitment to the block's execution requests


@register
@dataclass(frozen=True, slots=True)
class Transaction(Record):
    """A transaction with its receipt fields (status is null before Byzantium, where root is set)."""

    TYPE = "transaction"

    hash: str
    block_number: int
    block_hash: str
    block_timestamp: int
    transaction_index: int
    nonce: int
    from_address: str
    to_address: str | None
    value: U256
    gas: int
    gas_price: U256 | None
    input: str
    max_fee_per_gas: U256 | None
    max_priority_fee_per_gas: U256 | None
    max_fee_per_blob_gas: U256 | None
    blob_versioned_hashes: tuple[str, ...] | None
    type: int | None
    status: int | None
    root: str | None
    gas_used: int | None
    cumulative_gas_used: int | None
    effective_gas_price: U256 | None
    contract_address: str | None
    blob_gas_used: int | None = None
    blob_gas_price: U256 | None = None
    authorization_list: tuple[Authorization, ...] | None = None  # type 4 (EIP-7702) only


@register
@dataclass(frozen=True, slots=True)
class Log(Record):
    TYPE = "log"

    block_number: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int
    address: str
    data: str
    topic0: str | None
    topic1: str | None
    topic2: str | None
    topic3: str | None


@register
@dataclass(frozen=True, slots=True)
class TokenTransfer(Record):
    """One token movement. An ERC-1155 ``TransferBatch`` log gives one record per id (``batch_index``)."""

    TYPE = "token_transfer"

    token_address: str
    from_address: str
    to_address: str
    value: U256
    token_id: U256 | None
    standard: str  # erc20 | erc721 | erc1155
    operator: str | None
    block_number: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int
    batch_index: int = 0


@register
@dataclass(frozen=True, slots=True)
class Token(Record):
    """Token metadata as read from the chain; ``error`` says why a field is null."""

    TYPE = "token"

    address: str
    symbol: str | None
    name: str | None
    decimals: int | None
    source: str  # how it was read: "call" (string), "bytes32", "unknown"
    error: str | None = None


@register
@dataclass(frozen=True, slots=True)
class Pool(Record):
    """A pool, keyed by its protocol's pool id: ``address`` is the pool's contract address (Uniswap
    v2/v3, 42 characters) or its 32-byte id (Uniswap v4 PoolId, Balancer poolId, 66 characters); a
    trade's ``pool_address`` holds the same id. ``contract`` emits the pool's events (the pool itself,
    v4's PoolManager, Balancer's Vault). ``tokens`` lists every token in the protocol's order;
    ``token0``/``token1`` are its first two. The last three fields have defaults for rows written
    before they existed (v2/v3: contract = address, tokens = (token0, token1))."""

    TYPE = "pool"

    address: str
    protocol: str  # uniswap, balancer, or "unknown" for a Uniswap-shaped contract no known factory created
    version: str  # "2", "3", "4"
    exchange: str  # label: uniswap-v2, sushiswap, uniswap-v3, uniswap-v4, balancer-v2
    factory: str | None
    token0: str
    token1: str
    fee: int | None  # hundredths of a bip; v4 dynamic-fee pools: 0x800000 (the fee is in each Swap)
    tick_spacing: int | None
    created_block_number: int | None
    created_block_hash: str | None
    created_transaction_hash: str | None
    created_log_index: int | None
    contract: str | None = None
    tokens: tuple[str, ...] = ()
    hooks: str | None = None  # Uniswap v4 hooks contract (0x0…0: none)


@register
@dataclass(frozen=True, slots=True)
class DexTrade(Record):
    """A swap in the Dune ``dex.trades`` shape; exact amounts are null when decimals are unknown."""

    TYPE = "dex_trade"

    block_number: int
    block_time: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int
    protocol: str
    version: str
    exchange: str
    pool_address: str
    taker: str
    maker: str | None  # the pool for v2 (as Dune), null for v3 (as Dune)
    token_bought_address: str
    token_sold_address: str
    token_bought_symbol: str | None
    token_sold_symbol: str | None
    amount_bought_raw: U256
    amount_sold_raw: U256
    amount_bought: Decimal | None
    amount_sold: Decimal | None
    price: Decimal | None
    tx_from: str
    tx_to: str | None


@dataclass(frozen=True, slots=True)
class TokenAmount(Record):
    """One token's amount in a liquidity event (raw, and exact when its decimals are known)."""

    token: str
    amount_raw: U256
    amount: Decimal | None


@register
@dataclass(frozen=True, slots=True)
class DexLiquidity(Record):
    """A liquidity event: ``event`` is the pool's event (mint/burn/collect), ``event_type`` add/remove."""

    TYPE = "dex_liquidity"

    block_number: int
    block_time: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int
    protocol: str
    version: str
    exchange: str
    pool_address: str
    event: str
    event_type: str
    token0: str
    token1: str
    amount0_raw: U256
    amount1_raw: U256
    amount0: Decimal | None
    amount1: Decimal | None
    owner: str | None
    sender: str | None
    liquidity: U256 | None
    tick_lower: int | None
    tick_upper: int | None
    amounts: tuple[TokenAmount, ...] = ()  # every token, for pools with more than two (Balancer)


@register
@dataclass(frozen=True, slots=True)
class Reorg(Record):
    """A reorg the follower detected and applied: the orphaned branch and the one that replaced it."""

    TYPE = "reorg"

    common_ancestor_number: int
    common_ancestor_hash: str
    depth: int
    orphaned_hashes: tuple[str, ...]
    new_hashes: tuple[str, ...]
    detected_at: int  # µs since the epoch


@register
@dataclass(frozen=True, slots=True)
class Revert(Record):
    """Kafka ``head.*`` revert: the record with this key, from this orphaned block, is no longer canonical."""

    TYPE = "revert"

    block_number: int
    block_hash: str
    record_type: str
    key: str
