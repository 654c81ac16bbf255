"""Real Uniswap v2/v3 logs from two mainnet recordings, decoded by dexnode and checked independently.

- ``ethereum-etl/test_stream/blocks_17173049_17173050/expected_logs.json`` (ethereum-etl's export) and
- ``mainnet-block-21925176-helios/receipts.json`` (a full ``eth_getBlockReceipts`` answer),
see ``uniswap/PROVENANCE.md``. Every Swap/Sync/Burn log is decoded with the fast decoders and compared
field by field with eth-abi decoding done here, from declarations written here. The records are checked
against the ERC-20 Transfers of the same transactions (ethereum-etl's own decoding for the first file):
the token a trade says was sold is the one transferred into the pool, with that exact amount.
"""

from __future__ import annotations

import json
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode

from decoders.events import Malformed
from decoders.uniswap import FAST_DECODERS
from protocols.base import Context
from protocols.registry import default_registry
from records import DexTrade, Log, Pool, Token

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
ETL = FIXTURES / "ethereum-etl" / "test_stream" / "blocks_17173049_17173050"
HELIOS = FIXTURES / "mainnet-block-21925176-helios"

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fixtures_dir")]  # fails without the fixtures

V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
V2_SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
V3_BURN = "0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c"
V4_SWAP = "0x40e9cecb9f5f1f1c5b9c97dec2917b7ee92e57ba5563708daca94dd84ad7112f"
V3_COLLECT = "0x70935338e69775456a85ddef226c395fb668b63fa0115f5f20610b388e6ca9c0"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
# Known mainnet token decimals, to check exact amounts where the traded token is one of these.
DECIMALS = {
    "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2": 18,  # WETH
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": 6,  # USDC
    "0xdac17f958d2ee523a2206206994597c13d831ec7": 6,  # USDT
    "0x6b175474e89094c44da98b954eedac495271d0f": 18,  # DAI
}


def _address(topic: str) -> str:
    return str(decode(["address"], bytes.fromhex(topic[2:]))[0]).lower()


def expected_event(log: Log) -> tuple[Any, ...]:
    """The event's fields in the order dexnode's decoded events carry them, decoded with eth-abi from the
    v2-core / v3-core declarations (repeated in the comments)."""
    data = bytes.fromhex(log.data[2:])
    topics: list[str] = [t for t in (log.topic1, log.topic2, log.topic3) if t is not None]
    if log.topic0 == V2_SWAP:
        # Swap(address indexed sender, uint amount0In, uint amount1In, uint amount0Out, uint amount1Out,
        #      address indexed to)
        return (_address(topics[0]), _address(topics[1]), *decode(["uint256"] * 4, data))
    if log.topic0 == V2_SYNC:  # Sync(uint112 reserve0, uint112 reserve1)
        return tuple(decode(["uint112", "uint112"], data))
    if log.topic0 == V3_SWAP:
        # Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1,
        #      uint160 sqrtPriceX96, uint128 liquidity, int24 tick)
        words = decode(["int256", "int256", "uint160", "uint128", "int24"], data)
        return (_address(topics[0]), _address(topics[1]), *words)
    ticks = [decode(["int24"], bytes.fromhex(t[2:]))[0] for t in topics[1:]]
    if log.topic0 == V3_BURN:
        # Burn(address indexed owner, int24 indexed tickLower, int24 indexed tickUpper, uint128 amount,
        #      uint256 amount0, uint256 amount1)
        return (_address(topics[0]), *ticks, *decode(["uint128", "uint256", "uint256"], data))
    if log.topic0 == V3_COLLECT:
        # Collect(address indexed owner, address recipient, int24 indexed tickLower, int24 indexed tickUpper,
        #         uint128 amount0, uint128 amount1)
        recipient, amount0, amount1 = decode(["address", "uint128", "uint128"], data)
        return (_address(topics[0]), recipient.lower(), *ticks, amount0, amount1)
    raise AssertionError(log.topic0)


def make_log(d: dict[str, Any]) -> Log:
    """A Log from ethereum-etl's JSON (plain ints) or a JSON-RPC receipt log (hex quantities)."""
    etl = "block_number" in d
    keys = ("block_number", "transaction_index", "log_index", "block_hash", "transaction_hash")
    rpc = ("blockNumber", "transactionIndex", "logIndex", "blockHash", "transactionHash")
    number, index, position, block_hash, tx_hash = (d[k] for k in (keys if etl else rpc))
    if not etl:
        number, index, position = int(number, 16), int(index, 16), int(position, 16)
    topics = d["topics"] + [None] * 4
    return Log(number, block_hash, tx_hash, index, position, d["address"], d["data"], *topics[:4])


Loaded = tuple[list[Log], dict[str, int], dict[str, tuple[str, str | None]], list[tuple[Any, ...]]]


def etl_logs() -> Loaded:
    logs, times = [], {}
    for line in (ETL / "expected_logs.json").read_text().splitlines():
        d = json.loads(line)
        logs.append(make_log(d))
        times[d["block_hash"]] = d["block_timestamp"]
    txs = {}
    for line in (ETL / "expected_transactions.json").read_text().splitlines():
        d = json.loads(line)
        txs[d["hash"]] = (d["from_address"], d["to_address"])
    transfers = []  # ethereum-etl's own decoding of the ERC-20 Transfers
    for line in (ETL / "expected_token_transfers.json").read_text().splitlines():
        d = json.loads(line)
        keys = ("transaction_hash", "token_address", "from_address", "to_address", "value")
        transfers.append(tuple(d[k] for k in keys))
    return logs, times, txs, transfers


def helios_logs() -> Loaded:
    block = json.loads((HELIOS / "block.json").read_text())
    logs, txs, transfers = [], {}, []
    for receipt in json.loads((HELIOS / "receipts.json").read_text()):
        txs[receipt["transactionHash"]] = (receipt["from"], receipt["to"])
        for d in receipt["logs"]:
            log = make_log(d)
            logs.append(log)
            if log.topic0 == TRANSFER and log.topic3 is None and len(log.data) == 66:
                value = decode(["uint256"], bytes.fromhex(log.data[2:]))[0]
                sender, to = _address(log.topic1 or ""), _address(log.topic2 or "")
                transfers.append((log.transaction_hash, log.address, sender, to, value))
    return logs, {block["hash"]: int(block["timestamp"], 16)}, txs, transfers


SOURCES = {
    # name: (loader, {topic0: count of logs}, swaps matching the Transfer cross-check (PROVENANCE.md))
    "ethereum-etl-17173049": (etl_logs, {V2_SWAP: 69, V2_SYNC: 69, V3_SWAP: 10}, 62 + 10),
    "helios-21925176": (
        helios_logs,
        {V2_SWAP: 24, V2_SYNC: 24, V3_SWAP: 13, V3_BURN: 4, V3_COLLECT: 3},
        19 + 12,
    ),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_fast_decoders_equal_eth_abi_on_every_real_log(source: str) -> None:
    loader, counts, _ = SOURCES[source]
    logs = loader()[0]
    seen: dict[str, int] = {}
    for log in logs:
        decoder = FAST_DECODERS.get(log.topic0)  # type: ignore[arg-type]
        if decoder is None:
            continue
        event = decoder(log)
        assert not isinstance(event, Malformed), (log, event)
        assert tuple(event) == expected_event(log), log
        seen[str(log.topic0)] = seen.get(str(log.topic0), 0) + 1
    assert seen == counts


def flows(log: Log) -> tuple[str, list[int], list[int]]:
    """(taker, amounts into the pool per token, amounts out) from the eth-abi decoding above."""
    fields = expected_event(log)
    if log.topic0 == V2_SWAP:
        return fields[1], [fields[2], fields[3]], [fields[4], fields[5]]
    a0, a1 = fields[2], fields[3]
    return fields[1], [max(a0, 0), max(a1, 0)], [max(-a0, 0), max(-a1, 0)]


@pytest.mark.parametrize("source", list(SOURCES))
def test_trades_agree_with_the_token_transfers(source: str) -> None:
    loader, _, matching = SOURCES[source]
    logs, times, txs, transfers = loader()
    swaps = [log for log in logs if log.topic0 in (V2_SWAP, V3_SWAP)]

    def transfer(tx: str, value: int, *, to: str | None = None, sender: str | None = None) -> str | None:
        tokens = {t[1] for t in transfers if t[0] == tx and t[4] == value and (t[3] == to or t[2] == sender)}
        return tokens.pop() if len(tokens) == 1 else None

    # Pools whose token0/token1 the Transfers reveal: every non-zero flow matches one Transfer.
    pools: dict[str, Pool] = {}
    expect: dict[tuple[str, int], tuple[str, str, int, int, str]] = {}
    for log in swaps:
        taker, ins, outs = flows(log)
        tokens_in = [transfer(log.transaction_hash, a, to=log.address) if a else "" for a in ins]
        tokens_out = [transfer(log.transaction_hash, a, sender=log.address) if a else "" for a in outs]
        found = [t for t in tokens_in + tokens_out if t is not None]
        if len(found) < 4:  # some flow has no single matching Transfer
            continue
        pair = (found[0] or found[2], found[1] or found[3])  # token0, token1
        assert pair[0] < pair[1]  # Uniswap orders a pool's tokens by address
        version = "2" if log.topic0 == V2_SWAP else "3"
        pools[log.address] = Pool(log.address, "uniswap", version, f"uniswap-v{version}", None,
                                  pair[0], pair[1], None, None, None, None, None, None)  # fmt: skip
        sold = 0 if ins[0] else 1
        key = (log.transaction_hash, log.log_index)
        expect[key] = (pair[sold], pair[1 - sold], ins[sold], outs[1 - sold], taker)
    assert len(expect) == matching

    tokens = {a: Token(a, None, None, d, "call") for a, d in DECIMALS.items()}
    decoded = default_registry().decode(logs, Context(pools, tokens, times, txs))
    assert decoded.counts["skip.malformed"] == 0
    pool_events = (V2_SWAP, V3_SWAP, V3_BURN, V3_COLLECT)  # Sync yields nothing, known pool or not
    unknown = [log for log in logs if log.topic0 in pool_events and log.address not in pools]
    unknown += [log for log in logs if log.topic0 == V4_SWAP]  # v4 pools are ids; none is given here
    assert decoded.counts["skip.unknown_pool"] == len(unknown) > 0
    trades = {(r.transaction_hash, r.log_index): r for r in decoded.records if isinstance(r, DexTrade)}
    assert set(trades) == {(log.transaction_hash, log.log_index) for log in swaps if log.address in pools}
    assert set(expect) <= set(trades)
    exact_checked = 0
    for key, (sold_token, bought_token, sold_raw, bought_raw, taker) in expect.items():
        trade = trades[key]
        log = next(log for log in swaps if (log.transaction_hash, log.log_index) == key)
        assert (trade.token_sold_address, trade.token_bought_address) == (sold_token, bought_token)
        assert (trade.amount_sold_raw, trade.amount_bought_raw) == (sold_raw, bought_raw)
        maker = log.address if log.topic0 == V2_SWAP else None  # Dune: the pair for v2, NULL for v3
        assert (trade.taker, trade.maker, trade.pool_address) == (taker, maker, log.address)
        assert (trade.tx_from, trade.tx_to) == txs[log.transaction_hash]
        assert (trade.block_number, trade.block_hash, trade.block_time) == (
            log.block_number, log.block_hash, times[log.block_hash],
        )  # fmt: skip
        assert trade.version == pools[log.address].version
        if sold_token in DECIMALS and bought_token in DECIMALS:
            with localcontext() as c:
                c.prec = 100  # the default 28 digits would round the expected values themselves
                assert trade.amount_sold == Decimal(sold_raw) / Decimal(10) ** DECIMALS[sold_token]
                assert trade.amount_bought == Decimal(bought_raw) / Decimal(10) ** DECIMALS[bought_token]
                assert trade.price is not None and trade.amount_bought is not None
                assert abs(trade.price * trade.amount_bought / trade.amount_sold - 1) < Decimal("1e-37")
            exact_checked += 1
        else:
            assert trade.price is None and (trade.amount_sold is None or trade.amount_bought is None)
    assert exact_checked > 0


# -- Dune's dex.trades formula, applied by hand to four real Swap logs of block 21925176 -----------------
# Raw words read off receipts.json; pool tokens from the same transactions' ERC-20 Transfers (token0 <
# token1 by address). Dune (spellbook uniswap_compatible_v2_trades / _v3_trades):
#   v2: bought = amount0Out of token0 if amount0Out != 0 else amount1Out of token1;
#       sold = amount1In of token1 if amount0In == 0 or amount1Out == 0 else amount0In of token0; maker = pair
#   v3: amount0 < 0: bought |amount0| token0, sold |amount1| token1; else bought |amount1| token1, sold
#       |amount0| token0; maker = NULL
HELIOS_BLOCK = "0x92dabfa3f61ff1c349d12f5fd0dd4c99760a0a41b77dee8f0a80f83efdcb307a"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
TAX_TOKEN = "0x045a9ea27dab8c0dd724b5da222358d0ec699988"  # pays out less than the Swap says (a transfer fee)
OTHER_TOKEN = "0x33d0568941c0c64ff7e0fb4fba0b11bd37deed9f"
TX_A = "0xed435bf6c31aa136a6ca6031850cbdde28566919c2d4bd18e6ac841339f8f234"
TX_B = "0x81728f20df72fba5ec109dc1f4e6bf10745733dce1848e653a9b1b9964f18e9f"
FROM_A, TO_A = "0x8fd9446590732dfabc6e03b69f05ff5bb6a241b3", "0x3328f7f4a1d1c57c35df56bbf0c9dcafca309c49"
FROM_B, TO_B = "0xae2fc483527b8ef99eb5d9b44875f005ba1fae13", "0x1f2f10d1c40777ae1da742455c65828ff36df387"
PAIR_A = "0x999b8fc9161fb1f399a0a2d280ae6a75c697f432"
DUNE_POOLS = {  # address: (version, token0, token1)
    PAIR_A: ("2", TAX_TOKEN, WETH),
    "0xecfe2c3c1ac0a5a59227a01f3dd7044159b11a57": ("2", OTHER_TOKEN, WETH),
    "0xc7bbec68d12a0d1830360f8ec58fa599ba1b0e9b": ("3", WETH, USDT),
    "0xe0554a476a092703abdb3ef35c80e0d76d32939f": ("3", USDC, WETH),
}
WANT_DUNE = [
    # log 5, v2: amount0In 0, amount1In 0x74ee4caaccc12b, amount0Out 0x48fa63937bfd10000, amount1Out 0
    # -> bought amount0Out of token0; amount0In == 0 -> sold amount1In of token1
    DexTrade(21925176, 1740508595, HELIOS_BLOCK, TX_A, 0, 5, "uniswap", "2", "uniswap-v2",
             PAIR_A, FROM_A, PAIR_A,
             TAX_TOKEN, WETH, None, "WETH", 0x48FA63937BFD10000, 0x74EE4CAACCC12B,
             None, Decimal("0.032913110348906795"), None, FROM_A, TO_A),
    # log 87, v3: amount0 +0x1a9e579d0df7506 (WETH in), amount1 -0x113a9d0c (two's complement 0x..eec562f4)
    # -> amount0 >= 0: bought |amount1| of token1 (USDT), sold amount0 of token0 (WETH)
    DexTrade(21925176, 1740508595, HELIOS_BLOCK, TX_B, 12, 87, "uniswap", "3", "uniswap-v3",
             "0xc7bbec68d12a0d1830360f8ec58fa599ba1b0e9b", "0x627846f6131a4631ddf6bb53bd682ccf51f623b3", None,
             USDT, WETH, "USDT", "WETH", 0x113A9D0C, 0x1A9E579D0DF7506,
             Decimal("289.053964"), Decimal("0.119879176460137734"),
             Decimal("0.00041472939793393642579487337527050831242"), FROM_B, TO_B),
    # log 93, v2: amount0In 0x1515747000000000000, amount1In 0, amount0Out 0, amount1Out 0x1b1e1ff00000000
    # -> bought amount1Out of token1 (WETH); amount0In != 0 and amount1Out != 0 -> sold amount0In of token0
    DexTrade(21925176, 1740508595, HELIOS_BLOCK, TX_B, 12, 93, "uniswap", "2", "uniswap-v2",
             "0xecfe2c3c1ac0a5a59227a01f3dd7044159b11a57", TO_B, "0xecfe2c3c1ac0a5a59227a01f3dd7044159b11a57",
             WETH, OTHER_TOKEN, "WETH", None, 0x1B1E1FF00000000, 0x1515747000000000000,
             Decimal("0.122127150248624128"), None, None, FROM_B, TO_B),
    # log 100, v3: amount0 -0x97fd938c (two's complement 0x..68026c74), amount1 +0xeb2708f00000000
    # -> amount0 < 0: bought |amount0| of token0 (USDC), sold amount1 of token1 (WETH)
    DexTrade(21925176, 1740508595, HELIOS_BLOCK, TX_B, 12, 100, "uniswap", "3", "uniswap-v3",
             "0xe0554a476a092703abdb3ef35c80e0d76d32939f", TO_B, None,
             USDC, WETH, "USDC", "WETH", 0x97FD938C, 0xEB2708F00000000,
             Decimal("2549.977996"), Decimal("1.059032621868122112"),
             Decimal("0.00041531049425891677851168406709655387944"), FROM_B, TO_B),
]  # fmt: skip


def test_real_swaps_follow_dunes_formula_every_field() -> None:
    logs, times, txs, _ = helios_logs()
    wanted = {(t.transaction_hash, t.log_index) for t in WANT_DUNE}
    chosen = [log for log in logs if (log.transaction_hash, log.log_index) in wanted]
    pools = {
        a: Pool(a, "uniswap", v, f"uniswap-v{v}", None, t0, t1, None, None, None, None, None, None)
        for a, (v, t0, t1) in DUNE_POOLS.items()
    }
    tokens = {
        WETH: Token(WETH, "WETH", "Wrapped Ether", 18, "call"),
        USDC: Token(USDC, "USDC", "USD Coin", 6, "call"),
        USDT: Token(USDT, "USDT", "Tether USD", 6, "call"),
    }
    decoded = default_registry().decode(chosen, Context(pools, tokens, times, txs))
    assert list(decoded.records) == WANT_DUNE
