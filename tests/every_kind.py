"""One synthetic record of every chain kind in one block, with the values that are hard to store exactly:
U256 amounts past 2^64, exact decimals with trailing zeros, nested withdrawals and EIP-7702
authorizations, nulls where a field may be null. Written by hand, not by the code under test."""

from __future__ import annotations

from decimal import Decimal

from records import (
    Authorization,
    Block,
    DexLiquidity,
    DexTrade,
    Log,
    Pool,
    Reorg,
    Token,
    TokenTransfer,
    Transaction,
    Withdrawal,
)
from records.batch import Batch

NUMBER = 1_000
BLOCK_HASH = "0x" + "b1" * 32
PARENT_HASH = "0x" + "a0" * 32
TX_HASH = "0x" + "7a" * 32
# a token per field that names one, so the reader's every way to a token is needed to read it back;
# the last one nothing in the block names: not read back with the block
T = [f"0x{i:040x}" for i in range(1, 9)]
POOL = "0x" + "90" * 20  # created in the block
TRADED_POOL, LIQUIDITY_POOL = "0x" + "91" * 20, "0x" + "92" * 20  # created before the indexed chain
FACTORY = "0x" + "fa" * 20
SENDER = "0x" + "5e" * 20
BIG = 2**255 + 12345  # a U256 no float or int64 holds

BLOCK = Block(
    number=NUMBER, hash=BLOCK_HASH, parent_hash=PARENT_HASH, nonce="0x0000000000000000",
    sha3_uncles="0x" + "1d" * 32, logs_bloom="0x" + "00" * 256, transactions_root="0x" + "01" * 32,
    state_root="0x" + "02" * 32, receipts_root="0x" + "03" * 32, miner="0x" + "c0" * 20, difficulty=0,
    total_difficulty=BIG, extra_data="0xd883", size=1234, gas_limit=30_000_000, gas_used=21_000,
    base_fee_per_gas=7, timestamp=1_700_000_000, transaction_count=1, withdrawals_root="0x" + "04" * 32,
    withdrawals=(Withdrawal(5, 77, "0x" + "e0" * 20, 32_000_000_000),), blob_gas_used=131072,
    excess_blob_gas=0, parent_beacon_block_root="0x" + "05" * 32, requests_hash="0x" + "06" * 32,
)  # fmt: skip
TRANSACTION = Transaction(
    hash=TX_HASH, block_number=NUMBER, block_hash=BLOCK_HASH, block_timestamp=1_700_000_000,
    transaction_index=0, nonce=2**64 - 1, from_address=SENDER, to_address=POOL, value=BIG, gas=100_000,
    gas_price=None, input="0x12345678", max_fee_per_gas=10**12, max_priority_fee_per_gas=1,
    max_fee_per_blob_gas=None, blob_versioned_hashes=None, type=4, status=1, root=None, gas_used=21_000,
    cumulative_gas_used=21_000, effective_gas_price=8, contract_address=None, blob_gas_used=None,
    blob_gas_price=None,
    authorization_list=(Authorization(1, "0x" + "ab" * 20, 3, 1, "0x" + "00" * 31 + "01", "0x" + "7f" * 32),),
)  # fmt: skip
LOG = Log(NUMBER, BLOCK_HASH, TX_HASH, 0, 3, POOL, "0x" + "00" * 64, "0x" + "dd" * 32, None, None, None)
TRANSFER = TokenTransfer(
    token_address=T[0], from_address=SENDER, to_address=POOL, value=BIG, token_id=None,
    standard="erc20", operator=None, block_number=NUMBER, block_hash=BLOCK_HASH, transaction_hash=TX_HASH,
    transaction_index=0, log_index=3, batch_index=2,
)  # fmt: skip
TOKENS = (
    Token(T[0], "AAA", "Token A", 18, "call"),
    *(Token(t, f"T{i}", f"Token {i}", 6, "bytes32") for i, t in enumerate(T[1:-1], 1)),
    Token(T[-1], None, None, None, "unknown", "execution reverted"),
)
POOLS = (
    Pool(
        address=POOL, protocol="uniswap", version="3", exchange="uniswap-v3", factory=FACTORY, token0=T[1],
        token1=T[2], fee=3000, tick_spacing=60, created_block_number=NUMBER, created_block_hash=BLOCK_HASH,
        created_transaction_hash=TX_HASH, created_log_index=1,
    ),
    Pool(TRADED_POOL, "uniswap", "2", "sushiswap", None, T[3], T[4], None, None, None, None, None, None),
    Pool(LIQUIDITY_POOL, "unknown", "3", "unknown", None, T[5], T[6], 500, 10, None, None, None, None),
)  # fmt: skip
POOL_RECORD = POOLS[0]  # the pool created in the block
TRADE = DexTrade(
    block_number=NUMBER, block_time=1_700_000_000, block_hash=BLOCK_HASH, transaction_hash=TX_HASH,
    transaction_index=0, log_index=4, protocol="uniswap", version="3", exchange="uniswap-v3",
    pool_address=TRADED_POOL, taker=SENDER, maker=None, token_bought_address=T[3], token_sold_address=T[4],
    token_bought_symbol="AAA", token_sold_symbol=None, amount_bought_raw=BIG, amount_sold_raw=10,
    amount_bought=Decimal("57896044618658097711785492504343953926634992332820282019728.792003956564831234"),
    amount_sold=None, price=Decimal("0.000100"), tx_from=SENDER, tx_to=None,
)  # fmt: skip
LIQUIDITY = DexLiquidity(
    block_number=NUMBER, block_time=1_700_000_000, block_hash=BLOCK_HASH, transaction_hash=TX_HASH,
    transaction_index=0, log_index=5, protocol="uniswap", version="3", exchange="uniswap-v3",
    pool_address=LIQUIDITY_POOL, event="mint", event_type="add", token0=T[5], token1=T[6], amount0_raw=BIG,
    amount1_raw=0, amount0=Decimal("1.50"), amount1=None, owner=SENDER, sender=None, liquidity=2**128,
    tick_lower=-887220, tick_upper=887220,
)  # fmt: skip
# the reorg that orphans the block (the new branch is not fetched yet)
REORG = Reorg(NUMBER - 1, PARENT_HASH, 1, (BLOCK_HASH,), (), 1_700_000_000_000_000)


def every_kind_batch(stream: str = "test") -> Batch:
    return Batch(
        stream,
        [BLOCK],
        {
            Transaction: [TRANSACTION],
            Log: [LOG],
            TokenTransfer: [TRANSFER],
            Token: list(TOKENS),
            Pool: list(POOLS),
            DexTrade: [TRADE],
            DexLiquidity: [LIQUIDITY],
        },
    )


# the keys docs/kafka.md's table gives each record (and Postgres's natural keys), by topic kind
EXPECTED_KEYS = {
    "blocks": [str(NUMBER)],
    "transactions": [TX_HASH],
    "logs": [f"{BLOCK_HASH}:3"],
    "token_transfers": [f"{BLOCK_HASH}:3:2"],
    "tokens": T,
    "pools": [POOL, TRADED_POOL, LIQUIDITY_POOL],
    "dex_trades": [f"{BLOCK_HASH}:4"],
    "dex_liquidity": [f"{BLOCK_HASH}:5"],
}
# what a reorg of the block reverts: not tokens, not the pools no indexed block created (Postgres keeps them)
EXPECTED_REVERT_KEYS = {k: v for k, v in EXPECTED_KEYS.items() if k != "tokens"} | {"pools": [POOL]}
