"""Uniswap v4: a recorded mainnet Swap, and Initialize/ModifyLiquidity on payloads encoded with
eth-abi, through the registry; every value compared with an independent eth-abi decode, the pool id
with keccak256 of its key, the liquidity amounts with exact rational arithmetic."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.events import Malformed
from decoders.uniswap_v4 import V4_EVENTS, V4_SWAP, decode_v4_modify_liquidity, decode_v4_swap
from protocols.base import Context
from protocols.registry import default_registry
from protocols.skips import NO_POOL_STATE, UNCONFIGURED_FACTORY, UNKNOWN_POOL, Skip
from protocols.uniswap.v4 import ETH, NATIVE, Slot0, V4Venue, principal, sqrt_price_at_tick
from records import DexLiquidity, DexTrade, Log, Pool, Token

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "uniswap-v4"
MANAGER = "0x000000000004444c5dc75cb358380d2e3de08a90"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
HOOK = "0x0000000aa232009084bd71a5797d089aa4edfad4"
NO_HOOK = "0x" + "00" * 20
TOKENS = {
    USDC: Token(USDC, "USDC", "USD Coin", 6, "call"),
    WETH: Token(WETH, "WETH", "Wrapped Ether", 18, "call"),
}
REGISTRY = default_registry()
BLOCK, TX = "0x" + "11" * 32, "0x" + "22" * 32
ROUTER = "0x" + "cc" * 20
SWAP_TYPES = ["int128", "int128", "uint160", "uint128", "int24", "uint24"]


def recorded() -> Log:
    (raw,) = json.loads((DATA / "mainnet_swap_logs.json").read_text())
    return Log(
        int(raw["blockNumber"], 16),
        raw["blockHash"],
        raw["transactionHash"],
        int(raw["transactionIndex"], 16),
        int(raw["logIndex"], 16),
        raw["address"],
        raw["data"],
        *raw["topics"],
        None,
    )


def pool_id(c0: str, c1: str, fee: int, spacing: int, hooks: str) -> str:
    key = encode(["address", "address", "uint24", "int24", "address"], [c0, c1, fee, spacing, hooks])
    return "0x" + keccak(key).hex()


def event_log(
    name: str, topics: list[tuple[str, Any]], data: list[tuple[str, Any]], address: str = MANAGER
) -> Log:
    abi = next(e for e in V4_EVENTS if e.name == name)
    words: list[str | None] = [abi.topic0, *("0x" + encode([t], [v]).hex() for t, v in topics)]
    words += [None] * (4 - len(words))
    payload = "0x" + encode([t for t, _ in data], [v for _, v in data]).hex()
    return Log(100, BLOCK, TX, 3, 7, address, payload, *words)


def moved(entry: Log, address: str) -> Log:
    """The same log emitted by another contract."""
    return Log(
        100, BLOCK, TX, 3, 7, address, entry.data, entry.topic0, entry.topic1, entry.topic2, entry.topic3
    )


def context(*pools: Pool, state: dict[str, Any] | None = None) -> Context:
    return Context(
        {p.address: p for p in pools},
        {**TOKENS, NATIVE: ETH},
        {BLOCK: 1_700_000_000},
        {TX: ("0x" + "ee" * 20, ROUTER)},
        state if state is not None else {},
    )


def initialize(c0: str, c1: str, fee: int, spacing: int, hooks: str, sqrt_price: int, tick: int) -> Log:
    pid = bytes.fromhex(pool_id(c0, c1, fee, spacing, hooks)[2:])
    return event_log(
        "Initialize",
        [("bytes32", pid), ("address", c0), ("address", c1)],
        [("uint24", fee), ("int24", spacing), ("address", hooks), ("uint160", sqrt_price), ("int24", tick)],
    )


def swap_log(pid: str, amounts: list[int], price: int = 2**96, liquidity: int = 10**18) -> Log:
    values = [*amounts, price, liquidity, -5, 500]
    return event_log(
        "Swap",
        [("bytes32", bytes.fromhex(pid[2:])), ("address", ROUTER)],
        list(zip(SWAP_TYPES, values, strict=True)),
    )


def modify_log(pid: str, lower: int, upper: int, delta: int, salt: bytes = b"\x01" * 32) -> Log:
    return event_log(
        "ModifyLiquidity",
        [("bytes32", bytes.fromhex(pid[2:])), ("address", ROUTER)],
        [("int24", lower), ("int24", upper), ("int256", delta), ("bytes32", salt)],
    )


def handle(entry: Log, ctx: Context) -> Any:
    handler = REGISTRY.lookup(entry.topic0)
    assert handler is not None
    return handler.handle(entry, ctx)


def test_the_recorded_pool_id_is_its_key() -> None:
    assert recorded().topic1 == pool_id(USDC, WETH, 0x800000, 10, HOOK)


def test_recorded_mainnet_swap_decodes_as_eth_abi_does() -> None:
    entry = recorded()
    want = decode(SWAP_TYPES, bytes.fromhex(entry.data[2:]))
    got = decode_v4_swap(entry)
    assert not isinstance(got, Malformed)
    assert (got.id, got.sender) == (entry.topic1, "0x" + (entry.topic2 or "")[26:])
    assert (got.amount0, got.amount1, got.sqrt_price_x96, got.liquidity, got.tick, got.fee) == want


def test_recorded_mainnet_swap_is_a_trade_with_v4_signs() -> None:
    entry = recorded()
    amount0, amount1, sqrt_price, _, tick, _ = decode(SWAP_TYPES, bytes.fromhex(entry.data[2:]))
    assert amount0 > 0 > amount1  # the swapper received USDC and paid WETH
    created = handle(initialize(USDC, WETH, 0x800000, 10, HOOK, 2**96, 0), context())
    assert isinstance(created, Pool) and created.address == entry.topic1
    ctx = context(created)
    raw = json.loads((DATA / "mainnet_swap_logs.json").read_text())[0]
    ctx = Context(
        ctx.pools,
        ctx.tokens,
        {entry.block_hash: int(raw["blockTimestamp"], 16)},
        {entry.transaction_hash: ("0x" + "ee" * 20, None)},  # the sender is not in the recording
        ctx.state,
    )
    trade = REGISTRY.decode([entry], ctx).records[0]
    assert isinstance(trade, DexTrade)
    assert (trade.pool_address, trade.protocol, trade.version, trade.exchange) == (
        entry.topic1,
        "uniswap",
        "4",
        "uniswap-v4",
    )
    assert (trade.token_bought_address, trade.amount_bought_raw) == (USDC, amount0)
    assert (trade.token_sold_address, trade.amount_sold_raw) == (WETH, -amount1)
    assert trade.amount_bought == Decimal(amount0).scaleb(-6)
    assert trade.amount_sold == Decimal(-amount1).scaleb(-18)
    sender = "0x" + (entry.topic2 or "")[26:]  # whoever called the PoolManager's swap
    assert (trade.taker, trade.maker, trade.block_number, trade.log_index) == (sender, None, 24885035, 1)
    assert trade.block_time == 1776253931  # the recording's blockTimestamp, 0x69df7beb
    moved_to = ctx.state[entry.topic1]
    assert (moved_to.sqrt_price_x96, moved_to.tick) == (sqrt_price, tick)  # the price the pool moved to


def test_initialize_makes_the_pool_with_hooks_dynamic_fee_and_native_eth() -> None:
    ctx = context()
    created = handle(initialize(NATIVE, USDC, 0x800000, 60, HOOK, 3 * 2**96, 21972), ctx)
    assert created == Pool(
        pool_id(NATIVE, USDC, 0x800000, 60, HOOK), "uniswap", "4", "uniswap-v4", MANAGER, NATIVE, USDC,
        0x800000, 60, 100, BLOCK, TX, 7, contract=MANAGER, tokens=(NATIVE, USDC), hooks=HOOK,
    )  # fmt: skip
    assert (ctx.state[created.address].sqrt_price_x96, ctx.state[created.address].tick) == (3 * 2**96, 21972)
    assert REGISTRY.static_tokens[NATIVE] == Token(NATIVE, "ETH", "Ether", 18, "native")
    other = moved(initialize(NATIVE, USDC, 500, 10, NO_HOOK, 2**96, 0), "0x" + "99" * 20)
    assert handle(other, context()) == Skip(UNCONFIGURED_FACTORY, "0x" + "99" * 20)


def test_native_eth_swap_and_a_swap_from_another_contract() -> None:
    pool = handle(initialize(NATIVE, USDC, 500, 10, NO_HOOK, 2**96, 0), context())
    swap = swap_log(pool.address, [-2 * 10**18, 5000 * 10**6])  # pays 2 ETH, receives 5000 USDC
    trade = handle(swap, context(pool))
    assert isinstance(trade, DexTrade)
    assert (trade.token_sold_address, trade.token_sold_symbol, trade.amount_sold) == (
        NATIVE,
        "ETH",
        Decimal(2),
    )
    assert (trade.token_bought_address, trade.amount_bought) == (USDC, Decimal("5000.000000"))
    assert trade.price == Decimal("0.0004")  # ETH per USDC
    outcome = handle(moved(swap, "0x" + "99" * 20), context(pool))
    assert isinstance(outcome, Skip) and outcome.reason == UNKNOWN_POOL
    assert handle(swap, context()) == Skip(UNKNOWN_POOL)


def exact_principal(sqrt_price: int, tick: int, lower: int, upper: int, delta: int) -> tuple[int, int]:
    """Δx = L·(1/√Pa − 1/√Pb)·2^96, Δy = L·(√Pb − √Pa)/2^96 over the part of the range the price is
    in, as exact rationals; rounded up when adding, down when removing (v4-core Pool.modifyLiquidity)."""
    a, b, amount = sqrt_price_at_tick(lower), sqrt_price_at_tick(upper), abs(delta)
    rnd = ceil if delta > 0 else floor

    def x(p: int, q: int) -> int:
        return rnd(Fraction(amount * 2**96 * (q - p), p * q))

    def y(p: int, q: int) -> int:
        return rnd(Fraction(amount * (q - p), 2**96))

    if tick < lower:
        return x(a, b), 0
    if tick < upper:
        return x(sqrt_price, b), y(a, sqrt_price)
    return 0, y(a, b)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-887272, 887271),
    st.integers(1, 5000),
    st.integers(-(2**127) + 1, 2**127 - 1),
    st.integers(0, 2**32),
)
def test_liquidity_amounts_are_the_exact_rounded_rationals(
    lower: int, width: int, delta: int, pick: int
) -> None:
    upper = min(lower + width, 887272)
    tick = max(-887272, min(887271, lower - 3 + pick % (upper - lower + 6)))
    price = sqrt_price_at_tick(tick)
    assert principal(price, tick, lower, upper, delta) == exact_principal(price, tick, lower, upper, delta)


@pytest.mark.parametrize("tick", [-887272, -500_000, -1, 0, 1, 69_081, 500_000, 887272])
def test_tick_math_matches_the_real_square_root(tick: int) -> None:
    exact = Fraction(10001, 10000) ** tick  # (sqrt(1.0001^tick))², so it stays rational
    got = sqrt_price_at_tick(tick)
    # TickMath's own error is below 1e-12; the result is an integer, so it also rounds by < 1/got
    assert abs(Fraction(got * got, 2**192) / exact - 1) < Fraction(1, 10**12) + Fraction(4, got)


def test_tick_math_bounds_are_v4_cores() -> None:
    assert sqrt_price_at_tick(-887272) == 4295128739  # TickMath.MIN_SQRT_PRICE
    assert sqrt_price_at_tick(887272) == 1461446703485210103287273052203988822378723970342  # MAX_SQRT_PRICE
    assert sqrt_price_at_tick(0) == 2**96


def test_modify_liquidity_uses_the_price_at_that_log() -> None:
    price = sqrt_price_at_tick(200_010)
    pool = handle(initialize(USDC, WETH, 3000, 60, NO_HOOK, price, 200_010), context())
    add = modify_log(pool.address, 199_980, 200_040, 10**15)
    assert handle(add, context(pool)) == Skip(
        NO_POOL_STATE, f"pool {pool.address}: price unknown before this log"
    )
    record = handle(add, context(pool, state={pool.address: Slot0(price, 200_010)}))
    assert isinstance(record, DexLiquidity)
    amount0, amount1 = exact_principal(price, 200_010, 199_980, 200_040, 10**15)
    assert amount0 > 0 and amount1 > 0  # in range: both tokens
    assert (record.event, record.event_type) == ("modify_liquidity", "add")
    assert (record.amount0_raw, record.amount1_raw) == (amount0, amount1)
    assert (record.liquidity, record.tick_lower, record.tick_upper, record.owner) == (
        10**15,
        199_980,
        200_040,
        ROUTER,
    )
    assert record.amount0 == Decimal(amount0).scaleb(-6) and record.amount1 == Decimal(amount1).scaleb(-18)
    below = sqrt_price_at_tick(199_000)
    out = handle(
        modify_log(pool.address, 199_980, 200_040, -(10**15)),
        context(pool, state={pool.address: Slot0(below, 199_000)}),
    )
    assert (
        isinstance(out, DexLiquidity) and out.event_type == "remove" and out.amount1_raw == 0
    )  # below the range
    assert out.amount0_raw == exact_principal(below, 199_000, 199_980, 200_040, -(10**15))[0]


def test_swaps_move_the_price_later_liquidity_events_see() -> None:
    pool = handle(initialize(USDC, WETH, 3000, 60, NO_HOOK, sqrt_price_at_tick(0), 0), context())
    moved_to = sqrt_price_at_tick(120)
    ctx = context(pool, state={pool.address: Slot0(sqrt_price_at_tick(0), 0)})
    swap = event_log(
        "Swap",
        [("bytes32", bytes.fromhex(pool.address[2:])), ("address", ROUTER)],
        list(zip(SWAP_TYPES, [-(10**6), 10**15, moved_to, 10**18, 120, 3000], strict=True)),
    )
    decoded = REGISTRY.decode([swap, modify_log(pool.address, 60, 180, 10**12)], ctx)
    liquidity = decoded.records[1]
    assert isinstance(liquidity, DexLiquidity)
    assert (liquidity.amount0_raw, liquidity.amount1_raw) == exact_principal(moved_to, 120, 60, 180, 10**12)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.integers(-(2**127), 2**127 - 1),
    st.integers(-(2**127), 2**127 - 1),
    st.integers(0, 2**160 - 1),
    st.integers(0, 2**128 - 1),
    st.integers(-(2**23), 2**23 - 1),
    st.integers(0, 2**24 - 1),
)
def test_fast_swap_decoder_agrees_with_eth_abi(
    pid: bytes, a0: int, a1: int, price: int, liq: int, tick: int, fee: int
) -> None:
    values = [a0, a1, price, liq, tick, fee]
    entry = event_log(
        "Swap", [("bytes32", pid), ("address", ROUTER)], list(zip(SWAP_TYPES, values, strict=True))
    )
    assert tuple(decode_v4_swap(entry)) == (
        "0x" + pid.hex(),
        ROUTER,
        *decode(SWAP_TYPES, bytes.fromhex(entry.data[2:])),
    )


WORD = 64


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-2],  # a byte short
        lambda d: d + "00",  # a byte long
        lambda d: d[:2] + "7" + "f" * 63 + d[2 + WORD :],  # amount0 above int128
        lambda d: d[: 2 + WORD * 2] + "01" + "00" * 31 + d[2 + WORD * 3 :],  # sqrtPriceX96 above uint160
        lambda d: d[: 2 + WORD * 4] + "00" * 28 + "01000000" + d[2 + WORD * 5 :],  # tick above int24
        lambda d: d[: 2 + WORD * 5] + "0" * 56 + "ffffffff",  # fee above uint24
        lambda d: d[:10] + "zz" + d[12:],  # not hex
    ],
)
def test_malformed_swaps_are_skipped_not_raised(mutate: Any) -> None:
    good = swap_log("0x" + "07" * 32, [5, -5])
    bad = Log(100, BLOCK, TX, 3, 7, MANAGER, mutate(good.data), good.topic0, good.topic1, good.topic2, None)
    assert isinstance(decode_v4_swap(bad), Malformed)
    outcome = handle(bad, context())
    assert isinstance(outcome, Skip) and outcome.reason == "malformed"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**23), 2**23 - 2),
    st.integers(1, 1000),
    st.integers(-(2**255), 2**255 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_fast_modify_liquidity_decoder_agrees_with_eth_abi(
    lower: int, width: int, delta: int, salt: bytes
) -> None:
    upper = min(lower + width, 2**23 - 1)
    pid = "0x" + "05" * 32
    entry = modify_log(pid, lower, upper, delta, salt)
    want = decode(["int24", "int24", "int256", "bytes32"], bytes.fromhex(entry.data[2:]))
    assert tuple(decode_v4_modify_liquidity(entry)) == (pid, ROUTER, *want[:3], "0x" + want[3].hex())
    assert isinstance(decode_v4_modify_liquidity(modify_log(pid, upper, lower, delta, salt)), Malformed)


def test_a_pool_manager_is_configured_like_a_factory() -> None:
    other = "0x" + "42" * 20
    registry = default_registry({"uniswap-v4": [V4Venue(other, "my-v4")]})
    entry = initialize(USDC, WETH, 500, 10, NO_HOOK, 2**96, 0)
    created = registry.decode([moved(entry, other)], context()).records
    assert [(p.exchange, p.contract) for p in created if isinstance(p, Pool)] == [("my-v4", other)]
    assert registry.decode([entry], context()).counts["skip.unconfigured_factory"] == 1


HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
WETH_DEPOSIT = (
    "0xe1fffcc4923d04b559f4d29a8bfc6cda04eb5b0d3c460751c2402c5c5cc9109c"  # Deposit(address,uint256)
)


def rpc_log(raw: dict[str, Any]) -> Log:
    topics = [*raw["topics"], *[None] * (4 - len(raw["topics"]))]
    return Log(
        int(raw["blockNumber"], 16),
        raw["blockHash"],
        raw["transactionHash"],
        int(raw["transactionIndex"], 16),
        int(raw["logIndex"], 16),
        raw["address"],
        raw["data"],
        *topics,
    )


def test_mainnet_v4_swaps_agree_with_the_tokens_paid_into_the_pool_manager() -> None:
    """Block 21925176 (../shared/fixtures, helios): two v4 swaps selling an ERC-20 for native ETH. The
    ERC-20 Transfer into the PoolManager in the same transaction is what the swapper paid; the ETH it
    got is not in any log, but its router wraps it into WETH right after (at most what it received)."""
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    block = json.loads((HELIOS / "block.json").read_text())
    manager_topic = "0x" + MANAGER[2:].rjust(64, "0")
    checked = 0
    for receipt in receipts:
        logs = [rpc_log(raw) for raw in receipt["logs"]]
        for entry in (lg for lg in logs if lg.topic0 == V4_SWAP.topic0):
            ((token_in, paid),) = [
                (lg.address, int(lg.data, 16))
                for lg in logs
                if lg.topic0 == TRANSFER and lg.topic2 == manager_topic
            ]
            (wrapped,) = [int(lg.data, 16) for lg in logs if lg.topic0 == WETH_DEPOSIT and lg.address == WETH]
            amount0, amount1, *_ = decode(SWAP_TYPES, bytes.fromhex(entry.data[2:]))
            none = (None,) * 6  # fee, tick spacing, creation: not in this block
            pool_id_ = entry.topic1 or ""
            pool = Pool(
                pool_id_,
                "uniswap",
                "4",
                "uniswap-v4",
                MANAGER,
                NATIVE,
                token_in,
                *none,
                MANAGER,
                (NATIVE, token_in),
            )
            ctx = Context(
                {pool.address: pool},
                {NATIVE: ETH, token_in: Token(token_in, "X", "X", 6, "call")},
                {entry.block_hash: int(block["timestamp"], 16)},
                {entry.transaction_hash: (receipt["from"], receipt["to"])},
            )
            (trade,) = REGISTRY.decode([entry], ctx).records
            assert isinstance(trade, DexTrade)
            assert (trade.token_sold_address, trade.amount_sold_raw) == (token_in, paid)  # the balance change
            assert -amount1 == paid  # v4's sign: negative = what the swapper paid in
            assert (trade.token_bought_address, trade.token_bought_symbol) == (NATIVE, "ETH")
            assert trade.amount_bought_raw == amount0 >= wrapped  # the router wrapped what it got (or less)
            assert trade.amount_bought == Decimal(amount0).scaleb(-18)
            assert (trade.pool_address, trade.tx_from, trade.block_number) == (
                entry.topic1,
                receipt["from"],
                21925176,
            )
            checked += 1
    assert checked == 2
