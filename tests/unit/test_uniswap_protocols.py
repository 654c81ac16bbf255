"""Uniswap v2/v3 plugins: trade sides (incl. the flash-swap shape), exact amounts and price, liquidity
events, pool discovery and classification (configured forks, unknown factories, impostors), config errors."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from core.errors import ConfigError
from protocols.base import Context, EventHandler, ProtocolSpec
from protocols.registry import Registry, default_registry, resolution_counts
from protocols.skips import NOT_A_POOL, UNCONFIGURED_FACTORY, UNKNOWN_POOL, VERSION_MISMATCH, Skip
from protocols.trades import exact_amount, price_of, slot_filler
from protocols.uniswap.v2 import V2Venue
from protocols.uniswap.v3 import V3Venue
from records import DexLiquidity, DexTrade, Log, Pool, Token, to_dict

pytestmark = pytest.mark.unit

UNISWAP_V2_FACTORY = "0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f"
SUSHISWAP_FACTORY = "0xc0aee478e3658e2610c5f7a4a2e1777ce9e4f2ac"
UNISWAP_V3_FACTORY = "0x1f98431c8ad98523631ae4a59f267346ea31f984"
TOKEN0, TOKEN1 = "0x" + "0a" * 20, "0x" + "0b" * 20  # token0 < token1, as Uniswap orders them
PAIR, POOL3 = "0x" + "aa" * 20, "0x" + "bb" * 20
TAKER, SENDER = "0x" + "cc" * 20, "0x" + "dd" * 20
BLOCK, TX = "0x" + "11" * 32, "0x" + "22" * 32
TOKENS = {TOKEN0: Token(TOKEN0, "AAA", "A", 18, "call"), TOKEN1: Token(TOKEN1, "USDX", "B", 6, "call")}


def sig(text: str) -> str:
    return "0x" + keccak(text=text).hex()


def word(abi_type: str, value: Any) -> str:
    return "0x" + encode([abi_type], [value]).hex()


def log(address: str, signature: str, topics: list[tuple[str, Any]], data: list[tuple[str, Any]]) -> Log:
    all_topics: list[str | None] = [sig(signature), *(word(t, v) for t, v in topics)]
    all_topics += [None] * (4 - len(all_topics))
    payload = "0x" + encode([t for t, _ in data], [v for _, v in data]).hex()
    return Log(100, BLOCK, TX, 3, 7, address, payload, *all_topics)


def v2_swap(a0_in: int, a1_in: int, a0_out: int, a1_out: int, address: str = PAIR) -> Log:
    return log(
        address,
        "Swap(address,uint256,uint256,uint256,uint256,address)",
        [("address", SENDER), ("address", TAKER)],
        [("uint256", a0_in), ("uint256", a1_in), ("uint256", a0_out), ("uint256", a1_out)],
    )


def v3_swap(amount0: int, amount1: int, address: str = POOL3) -> Log:
    return log(
        address,
        "Swap(address,address,int256,int256,uint160,uint128,int24)",
        [("address", SENDER), ("address", TAKER)],
        [
            ("int256", amount0),
            ("int256", amount1),
            ("uint160", 2**96),
            ("uint128", 10**18),
            ("int24", -887272),
        ],
    )


def pool(address: str, version: str, protocol: str = "uniswap", exchange: str | None = None) -> Pool:
    return Pool(
        address,
        protocol,
        version,
        exchange or f"uniswap-v{version}",
        None,
        TOKEN0,
        TOKEN1,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def context(*pools: Pool, tokens: dict[str, Token] = TOKENS) -> Context:
    return Context(
        {p.address: p for p in pools}, tokens, {BLOCK: 1_700_000_000}, {TX: ("0x" + "ee" * 20, None)}
    )


REGISTRY = default_registry()


def handle(entry: Log, ctx: Context) -> object:
    handler = REGISTRY.lookup(entry.topic0)
    assert handler is not None
    return handler.handle(entry, ctx)


def test_v2_swap_sides_amounts_price_and_keys() -> None:
    trade = handle(v2_swap(0, 2_500_000_000, 10**18, 0), context(pool(PAIR, "2")))
    assert isinstance(trade, DexTrade)
    assert (trade.token_sold_address, trade.token_bought_address) == (TOKEN1, TOKEN0)
    assert (trade.token_sold_symbol, trade.token_bought_symbol) == ("USDX", "AAA")
    assert (trade.amount_sold_raw, trade.amount_bought_raw) == (2_500_000_000, 10**18)
    assert (trade.amount_sold, trade.amount_bought, trade.price) == (
        Decimal("2500"),
        Decimal("1"),
        Decimal(2500),
    )
    assert (trade.taker, trade.maker, trade.pool_address) == (TAKER, PAIR, PAIR)
    assert (trade.protocol, trade.version, trade.exchange) == ("uniswap", "2", "uniswap-v2")
    assert (trade.block_number, trade.block_hash, trade.block_time) == (100, BLOCK, 1_700_000_000)
    assert (trade.transaction_hash, trade.transaction_index, trade.log_index) == (TX, 3, 7)
    assert (trade.tx_from, trade.tx_to) == ("0x" + "ee" * 20, None)


def sides(outcome: object) -> tuple[str, int, str, int, str | None]:
    """(token bought, raw amount bought, token sold, raw amount sold, maker) of a DexTrade."""
    assert isinstance(outcome, DexTrade), outcome
    t = outcome
    return (t.token_bought_address, t.amount_bought_raw, t.token_sold_address, t.amount_sold_raw, t.maker)


# Dune's formula (spellbook uniswap_compatible_v2_trades), worked by hand for each shape:
#   bought = amount0Out of token0 if amount0Out != 0 else amount1Out of token1
#   sold   = amount1In of token1 if amount0In == 0 or amount1Out == 0 else amount0In of token0
V2_DUNE_CASES = [
    # (amount0In, amount1In, amount0Out, amount1Out), (bought, bought_raw, sold, sold_raw)
    # flash swap: 100 token0 out, repaid with 30 token0 + 200 token1; amount1Out == 0 -> sold amount1In
    ((30, 200, 100, 0), (TOKEN0, 100, TOKEN1, 200)),
    # both out, repaid in token1: amount0Out != 0 -> bought token0; amount0In == 0 -> sold amount1In
    ((0, 160, 100, 50), (TOKEN0, 100, TOKEN1, 160)),
    # flash loan repaid (with fee) in the borrowed token0: bought 1000 token0, sold amount1In = 0 of token1
    ((1003, 0, 1000, 0), (TOKEN0, 1000, TOKEN1, 0)),
    # the same in token1: amount0Out == 0 -> bought amount1Out; amount0In == 0 -> sold amount1In
    ((0, 1003, 0, 1000), (TOKEN1, 1000, TOKEN1, 1003)),
    # all four non-zero: amount0In != 0 and amount1Out != 0 -> sold amount0In of token0
    ((10, 20, 30, 40), (TOKEN0, 30, TOKEN0, 10)),
    ((0, 0, 0, 0), (TOKEN1, 0, TOKEN1, 0)),
    ((5, 5, 0, 0), (TOKEN1, 0, TOKEN1, 5)),  # both in
    ((0, 0, 5, 5), (TOKEN0, 5, TOKEN1, 0)),  # both out
    ((7, 0, 0, 9), (TOKEN1, 9, TOKEN0, 7)),  # a plain sale of token0
]


@pytest.mark.parametrize(("amounts", "want"), V2_DUNE_CASES)
def test_v2_swap_sides_follow_dune_and_every_swap_is_a_trade(
    amounts: tuple[int, int, int, int], want: tuple[str, int, str, int]
) -> None:
    trade = handle(v2_swap(*amounts), context(pool(PAIR, "2"), tokens={}))
    assert sides(trade) == (*want, PAIR)  # maker = the pair, as on Dune


def test_v2_flash_loan_repaid_in_kind_has_a_zero_price() -> None:
    trade = handle(v2_swap(1003, 0, 1000, 0), context(pool(PAIR, "2")))
    assert isinstance(trade, DexTrade)
    assert (trade.amount_bought, trade.amount_sold) == (Decimal("1E-15"), Decimal(0))
    assert trade.price == 0


# Dune (uniswap_compatible_v3_trades): amount0 < 0 -> bought |amount0| token0, sold |amount1| token1;
# else bought |amount1| token1, sold |amount0| token0; maker NULL.
V3_DUNE_CASES = [
    ((-(10**18), 3_000_000_000), (TOKEN0, 10**18, TOKEN1, 3_000_000_000)),
    ((5, -7), (TOKEN1, 7, TOKEN0, 5)),
    ((5, 0), (TOKEN1, 0, TOKEN0, 5)),  # dust: nothing paid out
    ((0, 7), (TOKEN1, 7, TOKEN0, 0)),  # amount0 == 0 is not < 0: token1 is "bought", as on Dune
    ((-5, -5), (TOKEN0, 5, TOKEN1, 5)),
    ((0, 0), (TOKEN1, 0, TOKEN0, 0)),
]


@pytest.mark.parametrize(("amounts", "want"), V3_DUNE_CASES)
def test_v3_swap_sides_follow_dune_and_maker_is_null(
    amounts: tuple[int, int], want: tuple[str, int, str, int]
) -> None:
    trade = handle(v3_swap(*amounts), context(pool(POOL3, "3"), tokens={}))
    assert sides(trade) == (*want, None)
    assert isinstance(trade, DexTrade) and (trade.taker, trade.pool_address) == (TAKER, POOL3)


def test_v3_swap_exact_amounts_and_dust_has_no_price() -> None:
    ctx = context(pool(POOL3, "3"))
    trade = handle(v3_swap(-(10**18), 3_000_000_000), ctx)
    assert isinstance(trade, DexTrade)
    assert (trade.amount_bought, trade.amount_sold, trade.price) == (Decimal(1), Decimal(3000), Decimal(3000))
    dust = handle(v3_swap(5, 0), ctx)
    assert isinstance(dust, DexTrade)
    assert (dust.amount_bought, dust.amount_sold, dust.price) == (Decimal(0), Decimal("5E-18"), None)


def test_exact_amounts_are_never_rounded() -> None:
    raw = 2**256 - 1  # 78 digits: the default 28-digit context would round this
    text = str(raw)
    assert exact_amount(raw, 18) == Decimal(f"{text[:-18]}.{text[-18:]}")
    assert str(exact_amount(raw, 77)) == f"{text[0]}.{text[1:]}"
    assert str(exact_amount(1_000_000, 6)) == "1.000000"
    assert exact_amount(-(2**255), 0) == -(2**255)
    assert exact_amount(5, None) is None
    trade = handle(v3_swap(-(2**255), 2**255 - 1), context(pool(POOL3, "3")))
    assert isinstance(trade, DexTrade) and trade.amount_bought_raw == 2**255
    assert trade.amount_bought == Decimal(f"{str(2**255)[:-18]}.{str(2**255)[-18:]}")


def test_price_has_38_significant_digits_half_even() -> None:
    assert price_of(Decimal(1), Decimal(3)) == Decimal("0." + "3" * 38)
    assert price_of(Decimal(2), Decimal(3)) == Decimal("0." + "6" * 37 + "7")
    assert price_of(Decimal("1.5"), Decimal(0)) is None
    assert price_of(None, Decimal(1)) is None


def test_unknown_decimals_give_null_exact_amounts_and_price() -> None:
    only_token0 = {TOKEN0: TOKENS[TOKEN0]}
    trade = handle(v2_swap(0, 7, 10**18, 0), context(pool(PAIR, "2"), tokens=only_token0))
    assert isinstance(trade, DexTrade)
    assert (trade.amount_bought, trade.amount_sold, trade.price) == (Decimal(1), None, None)
    assert (trade.token_bought_symbol, trade.token_sold_symbol) == ("AAA", None)


def test_liquidity_events() -> None:
    ctx = context(pool(PAIR, "2"), pool(POOL3, "3"))
    mint = handle(
        log(
            PAIR,
            "Mint(address,uint256,uint256)",
            [("address", SENDER)],
            [("uint256", 10**18), ("uint256", 5_000_000)],
        ),
        ctx,
    )
    assert isinstance(mint, DexLiquidity)
    assert (mint.event, mint.event_type, mint.sender, mint.owner) == ("mint", "add", SENDER, None)
    assert (mint.amount0_raw, mint.amount1_raw, mint.amount0, mint.amount1) == (10**18, 5_000_000, 1, 5)
    burn = handle(
        log(
            PAIR,
            "Burn(address,uint256,uint256,address)",
            [("address", SENDER), ("address", TAKER)],
            [("uint256", 1), ("uint256", 2)],
        ),
        ctx,
    )
    assert isinstance(burn, DexLiquidity) and (burn.event, burn.event_type) == ("burn", "remove")
    v3_mint = handle(
        log(
            POOL3,
            "Mint(address,address,int24,int24,uint128,uint256,uint256)",
            [("address", TAKER), ("int24", -887220), ("int24", 60)],
            [("address", SENDER), ("uint128", 77), ("uint256", 1), ("uint256", 2)],
        ),
        ctx,
    )
    assert isinstance(v3_mint, DexLiquidity)
    assert (v3_mint.owner, v3_mint.sender, v3_mint.liquidity) == (TAKER, SENDER, 77)
    assert (v3_mint.tick_lower, v3_mint.tick_upper, v3_mint.token0, v3_mint.token1) == (
        -887220,
        60,
        TOKEN0,
        TOKEN1,
    )
    collect = handle(
        log(
            POOL3,
            "Collect(address,address,int24,int24,uint128,uint128)",
            [("address", TAKER), ("int24", -60), ("int24", 60)],
            [("address", SENDER), ("uint128", 3), ("uint128", 4)],
        ),
        ctx,
    )
    assert isinstance(collect, DexLiquidity)
    assert (collect.event, collect.event_type, collect.owner, collect.liquidity) == (
        "collect",
        "remove",
        TAKER,
        None,
    )
    sync = log(PAIR, "Sync(uint112,uint112)", [], [("uint112", 1), ("uint112", 2)])
    assert handle(sync, ctx) is None


def test_pool_events_need_a_known_pool_of_the_right_version() -> None:
    assert handle(v2_swap(0, 1, 1, 0), context()) == Skip(UNKNOWN_POOL)
    result = handle(v2_swap(0, 1, 1, 0, address=POOL3), context(pool(POOL3, "3")))
    assert isinstance(result, Skip) and result.reason == VERSION_MISMATCH
    result = handle(v3_swap(1, -1, address=PAIR), context(pool(PAIR, "2")))
    assert isinstance(result, Skip) and result.reason == VERSION_MISMATCH


def pair_created(factory: str) -> Log:
    return log(
        factory,
        "PairCreated(address,address,address,uint256)",
        [("address", TOKEN0), ("address", TOKEN1)],
        [("address", PAIR), ("uint256", 42)],
    )


def test_pool_creation_from_configured_factories_only() -> None:
    created = handle(pair_created(SUSHISWAP_FACTORY), context())
    assert created == Pool(
        PAIR, "uniswap", "2", "sushiswap", SUSHISWAP_FACTORY, TOKEN0, TOKEN1, 3000, None, 100, BLOCK, TX, 7,
        contract=PAIR, tokens=(TOKEN0, TOKEN1),
    )  # fmt: skip
    assert handle(pair_created("0x" + "99" * 20), context()) == Skip(UNCONFIGURED_FACTORY, "0x" + "99" * 20)
    pool_created = log(
        UNISWAP_V3_FACTORY,
        "PoolCreated(address,address,uint24,int24,address)",
        [("address", TOKEN0), ("address", TOKEN1), ("uint24", 500)],
        [("int24", 10), ("address", POOL3)],
    )
    assert handle(pool_created, context()) == Pool(
        POOL3, "uniswap", "3", "uniswap-v3", UNISWAP_V3_FACTORY, TOKEN0, TOKEN1, 500, 10, 100, BLOCK, TX, 7,
        contract=POOL3, tokens=(TOKEN0, TOKEN1),
    )  # fmt: skip


def test_a_v2_fork_is_one_configuration_entry() -> None:
    shiba = "0x115934131916c8b277dd010ee02de363c09d037c"
    # as copied from a block explorer: checksummed
    registry = default_registry(
        {"uniswap-v2": [V2Venue(to_checksum_address(shiba), "shibaswap")], "uniswap-v3": []}
    )
    handler = registry.lookup(pair_created(shiba).topic0)
    assert handler is not None
    created = handler.handle(pair_created(shiba), context())
    assert isinstance(created, Pool) and (created.exchange, created.factory) == ("shibaswap", shiba)
    trade = registry.lookup(v2_swap(0, 1, 1, 0).topic0).handle(v2_swap(0, 1, 1, 0), context(created))  # type: ignore[union-attr]
    assert isinstance(trade, DexTrade) and (trade.protocol, trade.exchange) == ("uniswap", "shibaswap")
    assert handler.handle(pair_created(UNISWAP_V2_FACTORY), context()) == Skip(
        UNCONFIGURED_FACTORY, UNISWAP_V2_FACTORY
    )


def results(**values: Any) -> dict[str, str | None]:
    """eth_call results as a node returns them (``0x`` hex), None for a revert."""
    types = {
        "factory": "address",
        "token0": "address",
        "token1": "address",
        "fee": "uint24",
        "tickSpacing": "int24",
    }
    return {k: None if v is None else word(types[k], v) for k, v in values.items()}


def test_unknown_pool_resolution_calls_and_unknown_factory() -> None:
    logs = [
        v2_swap(0, 1, 1, 0),
        v2_swap(0, 1, 1, 0),
        v3_swap(1, -1),
        v2_swap(0, 1, 1, 0, address="0x" + "ab" * 20),
    ]
    queries = REGISTRY.unknown_pools(logs, {"0x" + "ab" * 20: pool("0x" + "ab" * 20, "2")})
    assert [(q.address, q.version) for q in queries] == [(PAIR, "2"), (POOL3, "3")]
    selectors = {
        name: sig(f"{name}()")[:10] for name in ("factory", "token0", "token1", "fee", "tickSpacing")
    }
    assert [(c.name, c.to, c.data) for c in queries[0].calls] == [
        (name, PAIR, selectors[name]) for name in ("factory", "token0", "token1")
    ]
    assert [c.name for c in queries[1].calls] == ["factory", "token0", "token1", "fee", "tickSpacing"]
    assert all(c.data == selectors[c.name] and c.to == POOL3 for c in queries[1].calls)

    elsewhere = "0x" + "99" * 20
    resolved = queries[0].resolve(results(factory=elsewhere, token0=TOKEN0, token1=TOKEN1))
    assert resolved == Pool(
        PAIR, "unknown", "2", "unknown", elsewhere, TOKEN0, TOKEN1, None, None, None, None, None, None,
        contract=PAIR, tokens=(TOKEN0, TOKEN1),
    )  # fmt: skip
    assert isinstance(resolved, Pool) and queries[0].verification_call(resolved) is None
    trade = handle(v2_swap(0, 1, 1, 0), context(resolved))
    assert isinstance(trade, DexTrade) and (trade.protocol, trade.exchange) == ("unknown", "unknown")
    no_factory = queries[0].resolve({**results(token0=TOKEN0, token1=TOKEN1), "factory": "0x"})
    assert isinstance(no_factory, Pool) and (no_factory.factory, no_factory.protocol) == (None, "unknown")
    not_a_pool = queries[0].resolve(results(factory=UNISWAP_V2_FACTORY, token0=None, token1=TOKEN1))
    assert isinstance(not_a_pool, Skip) and not_a_pool.reason == NOT_A_POOL
    garbage = queries[0].resolve({**results(factory=UNISWAP_V2_FACTORY, token1=TOKEN1), "token0": "0x1234"})
    assert isinstance(garbage, Skip) and garbage.reason == NOT_A_POOL
    assert resolution_counts([resolved, not_a_pool, garbage]) == {"pool.unknown": 1, "skip.not_a_pool": 2}


def test_configured_factory_must_confirm_the_pool() -> None:
    query = REGISTRY.unknown_pools([v2_swap(0, 1, 1, 0)], {})[0]
    claimed = query.resolve(results(factory=SUSHISWAP_FACTORY, token0=TOKEN0, token1=TOKEN1))
    assert isinstance(claimed, Pool) and claimed.protocol == "unknown"  # until the factory confirms it
    call = query.verification_call(claimed)
    assert call is not None and call.to == SUSHISWAP_FACTORY
    assert (
        call.data
        == sig("getPair(address,address)")[:10] + encode(["address", "address"], [TOKEN0, TOKEN1]).hex()
    )
    confirmed = query.verified(claimed, word("address", PAIR))
    assert (confirmed.protocol, confirmed.exchange, confirmed.fee) == ("uniswap", "sushiswap", 3000)
    impostor = query.verified(claimed, word("address", "0x" + "77" * 20))
    assert (impostor.protocol, impostor.exchange, impostor.fee) == ("unknown", "unknown", None)
    assert query.verified(claimed, None) == claimed

    query3 = REGISTRY.unknown_pools([v3_swap(1, -1)], {})[0]
    claimed3 = query3.resolve(
        results(factory=UNISWAP_V3_FACTORY, token0=TOKEN0, token1=TOKEN1, fee=500, tickSpacing=-10)
    )
    assert isinstance(claimed3, Pool) and (claimed3.fee, claimed3.tick_spacing) == (500, -10)
    call3 = query3.verification_call(claimed3)
    assert (
        call3 is not None
        and call3.data
        == sig("getPool(address,address,uint24)")[:10]
        + encode(["address", "address", "uint24"], [TOKEN0, TOKEN1, 500]).hex()
    )
    assert query3.verified(claimed3, word("address", POOL3)).exchange == "uniswap-v3"
    no_fee = query3.resolve(results(factory=UNISWAP_V3_FACTORY, token0=TOKEN0, token1=TOKEN1, fee=None))
    assert isinstance(no_fee, Pool) and no_fee.fee is None and query3.verification_call(no_fee) is None


@pytest.mark.parametrize(
    "venues",
    [
        [V2Venue("0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6", "uniswap-v2")],  # 39 hex digits
        [V2Venue("uniswap", "uniswap-v2")],
        [V2Venue(UNISWAP_V2_FACTORY, "a"), V2Venue(UNISWAP_V2_FACTORY.upper().replace("0X", "0x"), "b")],
        [V2Venue(UNISWAP_V2_FACTORY, "unknown")],
        [V2Venue(UNISWAP_V2_FACTORY, "")],
    ],
)
def test_bad_venue_configuration_is_a_config_error(venues: list[V2Venue]) -> None:
    with pytest.raises(ConfigError):
        default_registry({"uniswap-v2": venues})
    with pytest.raises(ConfigError):
        default_registry({"uniswap-v3": [V3Venue(v.factory, v.label) for v in venues]})


def test_two_protocols_declaring_one_topic0_is_a_config_error() -> None:
    clash = EventHandler(
        sig("Swap(address,uint256,uint256,uint256,uint256,address)"),
        "other",
        "Swap",
        "pool_event",
        lambda log, ctx: None,
    )
    with pytest.raises(ConfigError, match="uniswap-v2"):
        Registry([*REGISTRY.protocols, ProtocolSpec("other", "1", (clash,))])


def test_slot_filler_builds_the_same_record() -> None:
    values: dict[str, Any] = {f.name: f"v{i}" for i, f in enumerate(dataclasses.fields(DexTrade))}
    values.update(block_number=1, amount_bought=Decimal("1.50"), amount_sold=Decimal("3"), price=None)
    fast = slot_filler(DexTrade)(*values.values())
    assert (
        type(fast) is DexTrade and fast == DexTrade(**values) and to_dict(fast) == to_dict(DexTrade(**values))
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.price = Decimal(1)  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            raise ValueError

    assert slot_filler(Checked) is Checked
