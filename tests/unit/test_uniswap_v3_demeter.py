"""Uniswap v3: every raw log of three mainnet pools (2024-01-05) against demeter-fetch's decoded rows.

``../shared/fixtures/uniswap/v3-demeter-fetch``: ``*.raw.csv`` are the pools' real logs, ``*.pool.tick.csv``
demeter-fetch's decoding of them (see ``uniswap/PROVENANCE.md``). Every column of every row is compared:
the per-event fields with dexnode's decoded events, demeter-fetch's bookkeeping columns (carried-forward
sqrtPriceX96/tick, its running liquidity estimate) recomputed from them by its documented rule, and the
records (DexTrade / DexLiquidity) the protocol layer builds from the same logs.
"""

from __future__ import annotations

import ast
import calendar
import csv
import time
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest

from decoders.events import Malformed
from decoders.uniswap import FAST_DECODERS
from protocols.base import Context
from protocols.registry import default_registry
from records import DexLiquidity, DexTrade, Log, Pool, Token

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
DEMETER = FIXTURES / "uniswap" / "v3-demeter-fetch"

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fixtures_dir")]  # fails without the fixtures

USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
OSQTH = "0xf1b99e3e573a1a9c5e6b2ce818b617f0e664e86b"
DECIMALS = {USDC: 6, WETH: 18, OSQTH: 18}
TOKENS = {
    USDC: Token(USDC, "USDC", "USD Coin", 6, "call"),
    WETH: Token(WETH, "WETH", "Wrapped Ether", 18, "call"),
    OSQTH: Token(OSQTH, "oSQTH", "Opyn Squeeth", 18, "call"),
}
# pool → (token0, token1, fee, rows per event type from PROVENANCE.md)
POOLS = {
    "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640": (USDC, WETH, 500, (6046, 54, 69, 65)),
    "0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8": (USDC, WETH, 3000, (267, 4, 17, 16)),
    "0x82c427adfdf2d245ec51d8046b41c4ee87f0d29c": (WETH, OSQTH, 3000, (41, 1, 1, 1)),
}
SWAP, MINT, BURN, COLLECT = (
    "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67",
    "0x7a53080ba414158be7ec69b987b5fb7d07dee101fe85488f0853ae16239d0bde",
    "0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c",
    "0x70935338e69775456a85ddef226c395fb668b63fa0115f5f20610b388e6ca9c0",
)
TX_TYPE = {SWAP: "SWAP", MINT: "MINT", BURN: "BURN", COLLECT: "COLLECT"}
TX_FROM = "0x" + "ee" * 20  # the CSVs have no transaction senders; a stand-in the records must carry


def _opt(parse: Any) -> Any:
    return lambda text: None if text == "" else parse(text)


def _tick(text: str) -> int:
    value = float(text)  # demeter-fetch writes ticks as floats ("199032.0")
    assert value.is_integer(), text
    return int(value)


# How each pool.tick.csv column is read: integers as ints, tick columns per PROVENANCE (floats), blanks None.
COLUMNS: dict[str, Any] = {
    "block_number": int,
    "block_timestamp": str,
    "tx_type": str,
    "transaction_hash": str,
    "tx_index": int,
    "log_index": int,
    "sender": str,
    "receipt": _opt(str),
    "amount0": int,
    "amount1": int,
    "total_liquidity": int,
    "total_liquidity_delta": int,
    "sqrtPriceX96": _opt(int),
    "current_tick": _opt(_tick),
    "tick_lower": _opt(_tick),
    "tick_upper": _opt(_tick),
    "liquidity": _opt(int),
}


def block_hash(number: int) -> str:
    return f"0x{number:064x}"  # the CSVs have no block hashes; records key on one, so a stand-in


def read_pool(address: str) -> tuple[list[Log], list[dict[str, Any]], dict[str, int]]:
    prefix = DEMETER / f"ethereum-{address}-2024-01-05"
    logs, times = [], {}
    with open(f"{prefix}.raw.csv", newline="") as f:
        for row in csv.DictReader(f):
            topics = ast.literal_eval(row["topics"]) + [None] * 4
            number = int(row["block_number"])
            logs.append(
                Log(number, block_hash(number), row["transaction_hash"], int(row["transaction_index"]),
                    int(row["log_index"]), address, row["data"], *topics[:4])
            )  # fmt: skip
            stamp = time.strptime(row["block_timestamp"], "%Y-%m-%d %H:%M:%S")
            times[block_hash(number)] = calendar.timegm(stamp)
    with open(f"{prefix}.pool.tick.csv", newline="") as f:
        expected = [{k: COLUMNS[k](v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert list(expected[0]) == list(COLUMNS)
    return logs, expected, times


def exact(raw: int, decimals: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return Decimal(raw) / Decimal(10) ** decimals


@pytest.mark.parametrize("address", list(POOLS))
def test_every_log_matches_demeter_rows(address: str) -> None:
    token0, token1, fee, counts = POOLS[address]
    logs, expected, times = read_pool(address)
    assert len(logs) == len(expected) == sum(counts)
    assert [(r["transaction_hash"], r["log_index"]) for r in expected] == [
        (log.transaction_hash, log.log_index) for log in logs
    ]
    pool = Pool(address, "uniswap", "3", "uniswap-v3", "0x1f98431c8ad98523631ae4a59f267346ea31f984",
                token0, token1, fee, None, None, None, None, None)  # fmt: skip
    ctx = Context({address: pool}, TOKENS, times, {log.transaction_hash: (TX_FROM, address) for log in logs})
    registry = default_registry()

    last_liquidity = last_sqrt_price = last_tick = None
    mismatches: list[str] = []
    for log, want in zip(logs, expected, strict=True):
        event = FAST_DECODERS[log.topic0](log)  # type: ignore[index]
        assert not isinstance(event, Malformed), (log, event)
        kind = TX_TYPE[log.topic0]  # type: ignore[index]
        got: dict[str, Any] = {
            "block_number": log.block_number,
            "block_timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(times[log.block_hash])),
            "tx_type": kind,
            "transaction_hash": log.transaction_hash,
            "tx_index": log.transaction_index,
            "log_index": log.log_index,
            "receipt": None,
            "amount0": event.amount0,
            "amount1": event.amount1,
            "total_liquidity_delta": 0,
            "tick_lower": None,
            "tick_upper": None,
            "liquidity": None,
        }
        if kind == "SWAP":
            last_liquidity, last_sqrt_price, last_tick = event.liquidity, event.sqrt_price_x96, event.tick
            got.update(sender=event.sender, receipt=event.recipient)
        else:
            # demeter-fetch's bookkeeping (PROVENANCE.md): the last swap's state, plus ±liquidity when the
            # position's range strictly contains the carried-forward tick.
            got.update(tick_lower=event.tick_lower, tick_upper=event.tick_upper)
            if kind == "MINT":
                got.update(sender=event.sender, liquidity=event.amount)
            elif kind == "BURN":
                got.update(sender=event.owner, liquidity=event.amount)
            else:
                got.update(sender=event.owner, receipt=event.recipient)
            if kind != "COLLECT" and event.tick_lower < last_tick < event.tick_upper:
                got["total_liquidity_delta"] = event.amount if kind == "MINT" else -event.amount
        got["total_liquidity"] = last_liquidity + got["total_liquidity_delta"]
        got.update(sqrtPriceX96=last_sqrt_price, current_tick=last_tick)
        mismatches += [
            f"{log.transaction_hash}/{log.log_index} {k}: got {got[k]!r}, want {v!r}"
            for k, v in want.items()
            if got[k] != v or type(got[k]) is not type(v)
        ]
        mismatches += check_record(registry.lookup(log.topic0).handle(log, ctx), log, want, pool)  # type: ignore[union-attr]
    assert mismatches == [], f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    seen = [sum(1 for r in expected if r["tx_type"] == k) for k in ("SWAP", "MINT", "BURN", "COLLECT")]
    assert tuple(seen) == counts


def check_record(record: object, log: Log, want: dict[str, Any], pool: Pool) -> list[str]:
    """The protocol layer's record for one row, against the row (sides and amounts from its columns)."""
    decimals = DECIMALS
    keys = (record.block_number, record.block_hash, record.transaction_hash, record.log_index)  # type: ignore[attr-defined]
    if keys != (log.block_number, log.block_hash, log.transaction_hash, log.log_index):
        return [f"{log.log_index}: record keys {keys}"]
    if want["tx_type"] == "SWAP":
        assert isinstance(record, DexTrade), record
        a0, a1 = want["amount0"], want["amount1"]
        # Dune (uniswap_compatible_v3_trades): amount0 < 0 -> bought |amount0| token0, sold |amount1|
        # token1; else bought |amount1| token1, sold |amount0| token0
        if a0 < 0:
            bought, bought_raw, sold, sold_raw = pool.token0, abs(a0), pool.token1, abs(a1)
        else:
            bought, bought_raw, sold, sold_raw = pool.token1, abs(a1), pool.token0, abs(a0)
        amount_sold, amount_bought = exact(sold_raw, decimals[sold]), exact(bought_raw, decimals[bought])
        with localcontext() as c:
            c.prec = 38
            price = amount_sold / amount_bought if bought_raw else None
        expect = {
            "taker": want["receipt"], "maker": None, "pool_address": pool.address,  # Dune: v3 maker NULL
            "token_sold_address": sold, "token_bought_address": bought,
            "token_sold_symbol": TOKENS[sold].symbol, "token_bought_symbol": TOKENS[bought].symbol,
            "amount_sold_raw": sold_raw, "amount_bought_raw": bought_raw,
            "amount_sold": amount_sold, "amount_bought": amount_bought, "price": price,
            "protocol": "uniswap", "version": "3", "exchange": "uniswap-v3",
            "tx_from": TX_FROM, "tx_to": pool.address, "transaction_index": want["tx_index"],
        }  # fmt: skip
    else:
        assert isinstance(record, DexLiquidity), record
        kind = want["tx_type"]
        expect = {
            "event": kind.lower(), "event_type": "add" if kind == "MINT" else "remove",
            "token0": pool.token0, "token1": pool.token1,
            "amount0_raw": want["amount0"], "amount1_raw": want["amount1"],
            "amount0": exact(want["amount0"], decimals[pool.token0]),
            "amount1": exact(want["amount1"], decimals[pool.token1]),
            "sender": want["sender"] if kind == "MINT" else None,
            "liquidity": want["liquidity"],
            "tick_lower": want["tick_lower"], "tick_upper": want["tick_upper"],
        }  # fmt: skip
        if kind != "MINT":
            expect["owner"] = want["sender"]  # demeter's sender column is the owner for Burn/Collect
    return [
        f"{log.transaction_hash}/{log.log_index} record {k}: got {getattr(record, k)!r}, want {v!r}"
        for k, v in expect.items()
        if getattr(record, k) != v or (v is not None and type(getattr(record, k)) is not type(v))
    ]


def test_execution_price_is_near_the_pool_price() -> None:
    """Sides and decimals end to end: a swap's price (sold per bought, human units) is within a few per
    cent of the pool's own price after the swap (sqrtPriceX96), in the right orientation. Inverting the
    sides or the decimals would be off by a factor of ~2270² (USDC/WETH) or 10^12."""
    for address, (token0, token1, fee, _) in POOLS.items():
        logs, expected, times = read_pool(address)
        pool = Pool(address, "uniswap", "3", "uniswap-v3", None, token0, token1, fee,
                    None, None, None, None, None)  # fmt: skip
        ctx = Context({address: pool}, TOKENS, times, {log.transaction_hash: (TX_FROM, None) for log in logs})
        d0, d1 = DECIMALS[token0], DECIMALS[token1]
        checked = 0
        registry = default_registry()
        for log, want in zip(logs, expected, strict=True):
            if want["tx_type"] != "SWAP" or min(abs(want["amount0"]), abs(want["amount1"])) < 10**5:
                continue  # dust swaps are all rounding
            trade = registry.lookup(SWAP).handle(log, ctx)  # type: ignore[union-attr]
            assert isinstance(trade, DexTrade) and trade.price is not None
            with localcontext() as c:
                c.prec = 60
                token1_per_token0 = (Decimal(want["sqrtPriceX96"]) / 2**96) ** 2 * Decimal(10) ** (d0 - d1)
                sold_token1 = trade.token_sold_address == token1
                pool_price = token1_per_token0 if sold_token1 else 1 / token1_per_token0
                ratio = trade.price / pool_price
            assert Decimal("0.95") < ratio < Decimal("1.05"), (log.transaction_hash, trade.price, pool_price)
            checked += 1
        assert checked > 30
