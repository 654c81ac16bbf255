"""Balancer v2: five recorded mainnet Vault Swaps, and PoolRegistered/TokensRegistered/
PoolBalanceChanged on payloads encoded with eth-abi, through the registry; every value compared with
an independent eth-abi decode."""

from __future__ import annotations

import base64
import dataclasses
import json
from decimal import ROUND_HALF_EVEN, Decimal
from decimal import Context as DecimalContext
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.balancer_v2 import BALANCER_EVENTS, decode_balancer_swap
from decoders.events import Malformed
from protocols.balancer.v2 import BalancerVenue
from protocols.base import Context
from protocols.registry import default_registry
from protocols.skips import MALFORMED, UNCONFIGURED_FACTORY, UNKNOWN_POOL, Skip
from records import DexLiquidity, DexTrade, Log, Pool, Token
from records.chain import TokenAmount

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "balancer-v2"
VAULT = "0xba12222222228d8ba445958a75a0704d566bf2c8"
REGISTRY = default_registry()
BLOCK, TX = "0x" + "11" * 32, "0x" + "22" * 32
LP, TRADER = "0x" + "cc" * 20, "0x" + "ee" * 20
TOKENS = ["0x" + c * 40 for c in "abc"]
DECIMALS = {TOKENS[0]: 18, TOKENS[1]: 6, TOKENS[2]: 8}
POOL_ID = "0x" + "9a" * 20 + "0001" + "00" * 9 + "2a"  # pool address, specialization, nonce


def recorded() -> list[tuple[Log, dict[str, Any]]]:
    """The recorded logs as JSON-RPC gives them: the source keeps data base64-encoded and the token
    topics as bare addresses, so they are turned back into hex and 32-byte topics here."""
    out = []
    for i, entry in enumerate(json.loads((DATA / "mainnet_swap_logs.json").read_text())):
        raw = entry["log"]
        topics = [t if len(t) == 66 else "0x" + t[2:].rjust(64, "0") for t in raw["topics"]]
        data = "0x" + base64.b64decode(raw["data"]).hex()
        tx = entry["transaction"]["hash"]
        out.append((Log(100 + i, BLOCK, tx, 0, i, raw["address"], data, *topics), entry))
    return out


def event_log(
    name: str,
    topics: list[tuple[str, Any]],
    data: list[tuple[str, Any]],
    *,
    address: str = VAULT,
    index: int = 7,
) -> Log:
    abi = next(e for e in BALANCER_EVENTS if e.name == name)
    words: list[str | None] = [abi.topic0, *("0x" + encode([t], [v]).hex() for t, v in topics)]
    words += [None] * (4 - len(words))
    payload = "0x" + encode([t for t, _ in data], [v for _, v in data]).hex()
    return Log(100, BLOCK, TX, 3, index, address, payload, *words)


def pid(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def context(
    *pools: Pool, tokens: dict[str, Token] | None = None, txs: dict[str, Any] | None = None
) -> Context:
    known = (
        tokens if tokens is not None else {a: Token(a, f"T{d}", "t", d, "call") for a, d in DECIMALS.items()}
    )
    return Context({p.address: p for p in pools}, known, {BLOCK: 1_700_000_000}, txs or {TX: (TRADER, VAULT)})


def handle(entry: Log, ctx: Context) -> Any:
    handler = REGISTRY.lookup(entry.topic0)
    assert handler is not None
    return handler.handle(entry, ctx)


def registered(pool_id: str = POOL_ID, tokens: list[str] = TOKENS, address: str = VAULT) -> Pool:
    entry = event_log(
        "TokensRegistered",
        [("bytes32", pid(pool_id))],
        [("address[]", tokens), ("address[]", ["0x" + "00" * 20] * len(tokens))],
        address=address,
    )
    pool = handle(entry, context())
    assert isinstance(pool, Pool)
    return pool


def test_recorded_mainnet_swaps_decode_as_eth_abi_does() -> None:
    for entry, _ in recorded():
        amount_in, amount_out = decode(["uint256", "uint256"], bytes.fromhex(entry.data[2:]))
        got = decode_balancer_swap(entry)
        assert not isinstance(got, Malformed)
        token_in, token_out = (
            decode(["address"], bytes.fromhex(t[2:]))[0].lower() for t in (entry.topic2, entry.topic3)
        )  # type: ignore[index]
        assert tuple(got) == (entry.topic1, token_in, token_out, amount_in, amount_out)


def test_recorded_mainnet_swaps_are_trades_keyed_by_pool_id() -> None:
    for entry, source in recorded():
        token_in, token_out = ("0x" + (t or "")[26:] for t in (entry.topic2, entry.topic3))
        pool = Pool(
            entry.topic1 or "",
            "balancer",
            "2",
            "balancer-v2",
            VAULT,
            token_in,
            token_out,
            None,
            None,
            None,
            None,
            None,
            None,
            contract=VAULT,
            tokens=(token_in, token_out),
        )
        known = source["contract_address"]  # the one token whose decimals the recording gives
        ctx = context(
            pool,
            tokens={known: Token(known, None, None, source["token_decimals"], "call")},
            txs={entry.transaction_hash: (source["transaction"]["from"], source["transaction"]["to"])},
        )
        (trade,) = REGISTRY.decode([entry], ctx).records
        amount_in, amount_out = decode(["uint256", "uint256"], bytes.fromhex(entry.data[2:]))
        assert isinstance(trade, DexTrade)
        assert (trade.pool_address, trade.protocol, trade.version, trade.exchange) == (
            entry.topic1,
            "balancer",
            "2",
            "balancer-v2",
        )
        assert (trade.token_sold_address, trade.amount_sold_raw) == (token_in, amount_in)
        assert (trade.token_bought_address, trade.amount_bought_raw) == (token_out, amount_out)
        sender = source["transaction"]["from"]
        assert (trade.taker, trade.maker, trade.tx_from) == (sender, None, sender)
        scale = Decimal(1).scaleb(-source["token_decimals"])
        sold = Decimal(amount_in) * scale if token_in == known else None
        bought = Decimal(amount_out) * scale if token_out == known else None
        assert (trade.amount_sold, trade.amount_bought, trade.price) == (
            sold,
            bought,
            None,
        )  # one side unknown


def test_pool_registered_then_tokens_registered_make_one_pool_of_three_tokens() -> None:
    pool_registered = event_log(
        "PoolRegistered", [("bytes32", pid(POOL_ID)), ("address", "0x" + "9a" * 20)], [("uint8", 1)], index=5
    )
    tokens = event_log(
        "TokensRegistered",
        [("bytes32", pid(POOL_ID))],
        [("address[]", TOKENS), ("address[]", ["0x" + "00" * 20] * 3)],
        index=6,
    )
    assert handle(pool_registered, context()) is None  # validated, no pool yet
    decoded = REGISTRY.decode([pool_registered, tokens], context())
    assert decoded.records == [
        Pool(
            POOL_ID,
            "balancer",
            "2",
            "balancer-v2",
            VAULT,
            TOKENS[0],
            TOKENS[1],
            None,
            None,
            100,
            BLOCK,
            TX,
            6,
            contract=VAULT,
            tokens=tuple(TOKENS),
        )
    ]
    other_vault = event_log(
        "TokensRegistered",
        [("bytes32", pid(POOL_ID))],
        [("address[]", TOKENS), ("address[]", ["0x" + "00" * 20] * 3)],
        address="0x" + "77" * 20,
    )
    assert handle(other_vault, context()) == Skip(UNCONFIGURED_FACTORY, "0x" + "77" * 20)
    one = event_log(
        "TokensRegistered",
        [("bytes32", pid(POOL_ID))],
        [("address[]", TOKENS[:1]), ("address[]", ["0x" + "00" * 20])],
    )
    assert handle(one, context()) == Skip(MALFORMED, "TokensRegistered: a pool of 1 tokens")


def test_tokens_registered_again_extends_the_known_pool() -> None:
    pool = registered(tokens=TOKENS[:2])
    more = event_log(
        "TokensRegistered",
        [("bytes32", pid(POOL_ID))],
        [("address[]", TOKENS[2:]), ("address[]", ["0x" + "00" * 20])],
        index=9,
    )
    extended = handle(more, context(pool))
    assert extended == Pool(
        POOL_ID,
        "balancer",
        "2",
        "balancer-v2",
        VAULT,
        TOKENS[0],
        TOKENS[1],
        None,
        None,
        100,
        BLOCK,
        TX,
        7,
        contract=VAULT,
        tokens=tuple(TOKENS),
    )


def balance_changed(deltas: list[int], fees: list[int] | None = None, tokens: list[str] = TOKENS) -> Log:
    return event_log(
        "PoolBalanceChanged",
        [("bytes32", pid(POOL_ID)), ("address", LP)],
        [("address[]", tokens), ("int256[]", deltas), ("uint256[]", fees or [0] * len(deltas))],
    )


def test_a_join_and_an_exit_carry_every_tokens_amount() -> None:
    pool = registered()
    join = handle(balance_changed([10**18, 2_500_000, 0]), context(pool))
    assert isinstance(join, DexLiquidity)
    assert (join.event, join.event_type, join.pool_address, join.owner, join.sender) == (
        "join",
        "add",
        POOL_ID,
        LP,
        LP,
    )
    assert (join.token0, join.token1, join.amount0_raw, join.amount1_raw) == (
        TOKENS[0],
        TOKENS[1],
        10**18,
        2_500_000,
    )
    assert (join.amount0, join.amount1) == (Decimal("1.000000000000000000"), Decimal("2.500000"))
    assert join.amounts == (
        TokenAmount(TOKENS[0], 10**18, Decimal("1.000000000000000000")),
        TokenAmount(TOKENS[1], 2_500_000, Decimal("2.500000")),
        TokenAmount(TOKENS[2], 0, Decimal("0E-8")),
    )
    exit_ = handle(balance_changed([-5, -6, -(10**8)], fees=[1, 0, 0]), context(pool, tokens={}))
    assert isinstance(exit_, DexLiquidity) and (exit_.event, exit_.event_type) == ("exit", "remove")
    assert [(a.token, a.amount_raw, a.amount) for a in exit_.amounts] == [
        (TOKENS[0], 5, None),
        (TOKENS[1], 6, None),
        (TOKENS[2], 10**8, None),
    ]
    mixed = handle(balance_changed([1, -1, 0]), context(pool))
    assert isinstance(mixed, Skip) and mixed.reason == MALFORMED
    short = handle(balance_changed([1, 1], tokens=TOKENS), context(pool))
    assert isinstance(short, Skip) and short.reason == MALFORMED


def test_batch_swap_is_one_trade_per_hop() -> None:
    pool_a = registered()
    other_id = "0x" + "5b" * 20 + "0002" + "00" * 9 + "01"
    pool_b = registered(other_id, [TOKENS[1], TOKENS[2]])
    hop1 = event_log(
        "Swap",
        [("bytes32", pid(POOL_ID)), ("address", TOKENS[0]), ("address", TOKENS[1])],
        [("uint256", 10**18), ("uint256", 3_000_000)],
        index=1,
    )
    hop2 = event_log(
        "Swap",
        [("bytes32", pid(other_id)), ("address", TOKENS[1]), ("address", TOKENS[2])],
        [("uint256", 3_000_000), ("uint256", 12_345)],
        index=2,
    )
    trades = REGISTRY.decode([hop1, hop2], context(pool_a, pool_b)).records
    assert [
        (t.pool_address, t.token_sold_address, t.amount_sold_raw, t.token_bought_address, t.amount_bought_raw)
        for t in trades
    ] == [  # type: ignore[union-attr]
        (POOL_ID, TOKENS[0], 10**18, TOKENS[1], 3_000_000),
        (other_id, TOKENS[1], 3_000_000, TOKENS[2], 12_345),
    ]
    price = DecimalContext(prec=38, rounding=ROUND_HALF_EVEN).divide(
        Decimal("3.000000"), Decimal("0.00012345")
    )
    assert trades[1].price == price  # type: ignore[union-attr]
    assert [t.taker for t in trades] == [TRADER, TRADER]  # type: ignore[union-attr]


def test_unknown_pools_and_other_emitters_are_skipped() -> None:
    pool = registered()
    swap = event_log(
        "Swap",
        [("bytes32", pid(POOL_ID)), ("address", TOKENS[0]), ("address", TOKENS[1])],
        [("uint256", 1), ("uint256", 2)],
    )
    assert handle(swap, context()) == Skip(UNKNOWN_POOL)
    impostor = Log(
        100, BLOCK, TX, 3, 7, "0x" + "77" * 20, swap.data, swap.topic0, swap.topic1, swap.topic2, swap.topic3
    )
    outcome = handle(impostor, context(pool))
    assert isinstance(outcome, Skip) and outcome.reason == UNKNOWN_POOL


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**256 - 1),
)
def test_fast_swap_decoder_agrees_with_eth_abi(
    pool: bytes, t_in: bytes, t_out: bytes, a_in: int, a_out: int
) -> None:
    entry = event_log(
        "Swap",
        [("bytes32", pool), ("address", t_in), ("address", t_out)],
        [("uint256", a_in), ("uint256", a_out)],
    )
    assert tuple(decode_balancer_swap(entry)) == (
        "0x" + pool.hex(),
        "0x" + t_in.hex(),
        "0x" + t_out.hex(),
        *decode(["uint256", "uint256"], bytes.fromhex(entry.data[2:])),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"data": "0x" + "00" * 63},
        {"data": "0x" + "00" * 65},
        {"data": "0x" + "zz" * 64},
        {"topic3": None},
        {"topic2": "0x" + "ff" * 32},
    ],
)
def test_malformed_swaps_are_skipped_not_raised(change: dict[str, Any]) -> None:
    swap = event_log(
        "Swap",
        [("bytes32", pid(POOL_ID)), ("address", TOKENS[0]), ("address", TOKENS[1])],
        [("uint256", 1), ("uint256", 2)],
    )
    bad = dataclasses.replace(swap, **change)
    assert isinstance(decode_balancer_swap(bad), Malformed)
    outcome = handle(bad, context(registered()))
    assert isinstance(outcome, Skip) and outcome.reason == MALFORMED


def test_a_vault_is_configured_like_a_factory() -> None:
    other = "0x" + "42" * 20
    registry = default_registry({"balancer-v2": [BalancerVenue(other, "my-balancer")]})
    entry = event_log(
        "TokensRegistered",
        [("bytes32", pid(POOL_ID))],
        [("address[]", TOKENS), ("address[]", ["0x" + "00" * 20] * 3)],
        address=other,
    )
    (pool,) = registry.decode([entry], context()).records
    assert isinstance(pool, Pool) and (pool.exchange, pool.contract, pool.factory) == (
        "my-balancer",
        other,
        other,
    )


def test_a_pool_registered_before_the_indexed_range_is_asked_of_its_vault() -> None:
    swap = event_log(
        "Swap",
        [("bytes32", pid(POOL_ID)), ("address", TOKENS[0]), ("address", TOKENS[1])],
        [("uint256", 1), ("uint256", 2)],
    )
    (query,) = REGISTRY.unknown_pools([swap, swap], {})
    selector = "0x" + keccak(text="getPoolTokens(bytes32)")[:4].hex()
    assert [(c.name, c.to, c.data) for c in query.calls] == [("getPoolTokens", VAULT, selector + POOL_ID[2:])]
    answer = "0x" + encode(["address[]", "uint256[]", "uint256"], [TOKENS, [5, 6, 7], 99]).hex()
    pool = query.resolve({"getPoolTokens": answer})
    assert pool == Pool(POOL_ID, "balancer", "2", "balancer-v2", VAULT, TOKENS[0], TOKENS[1], None, None,
                        None, None, None, None, contract=VAULT, tokens=tuple(TOKENS))  # fmt: skip
    assert isinstance(pool, Pool) and query.verification_call(pool) is None  # the Vault is the registry
    reverted = query.resolve({"getPoolTokens": None})
    assert isinstance(reverted, Skip) and reverted.reason == "not_a_pool"
    (stranger,) = REGISTRY.unknown_pools([dataclasses.replace(swap, address="0x" + "77" * 20)], {})
    outcome = stranger.resolve({"getPoolTokens": answer})
    assert isinstance(outcome, Skip) and outcome.reason == "not_a_pool"
