"""Fast decoders against eth-abi on generated payloads, and malformed logs (a skip, never an exception)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.events import EventAbi, Malformed
from decoders.uniswap import FAST_DECODERS
from decoders.uniswap_abi import decode_pair_created, decode_pool_created
from protocols.base import Context
from protocols.registry import default_registry
from protocols.skips import MALFORMED, Skip
from records import Log

pytestmark = pytest.mark.unit

# The events, declared here independently of the code under test: (signature, [(abi type, indexed)]),
# parameters in declaration order, which is also the order of dexnode's decoded tuples, except v2 Swap
# whose decoded tuple puts `to` second (sender, to, amounts...).
EVENTS: dict[str, tuple[str, list[tuple[str, bool]]]] = {
    "v2_swap": (
        "Swap(address,uint256,uint256,uint256,uint256,address)",
        [
            ("address", True),
            ("uint256", False),
            ("uint256", False),
            ("uint256", False),
            ("uint256", False),
            ("address", True),
        ],
    ),
    "v2_mint": ("Mint(address,uint256,uint256)", [("address", True), ("uint256", False), ("uint256", False)]),
    "v2_burn": (
        "Burn(address,uint256,uint256,address)",
        [("address", True), ("uint256", False), ("uint256", False), ("address", True)],
    ),
    "v2_sync": ("Sync(uint112,uint112)", [("uint112", False), ("uint112", False)]),
    "v3_swap": (
        "Swap(address,address,int256,int256,uint160,uint128,int24)",
        [
            ("address", True),
            ("address", True),
            ("int256", False),
            ("int256", False),
            ("uint160", False),
            ("uint128", False),
            ("int24", False),
        ],
    ),
    "v3_mint": (
        "Mint(address,address,int24,int24,uint128,uint256,uint256)",
        [
            ("address", False),
            ("address", True),
            ("int24", True),
            ("int24", True),
            ("uint128", False),
            ("uint256", False),
            ("uint256", False),
        ],
    ),
    "v3_burn": (
        "Burn(address,int24,int24,uint128,uint256,uint256)",
        [
            ("address", True),
            ("int24", True),
            ("int24", True),
            ("uint128", False),
            ("uint256", False),
            ("uint256", False),
        ],
    ),
    "v3_collect": (
        "Collect(address,address,int24,int24,uint128,uint128)",
        [
            ("address", True),
            ("address", False),
            ("int24", True),
            ("int24", True),
            ("uint128", False),
            ("uint128", False),
        ],
    ),
}


def topic0(name: str) -> str:
    return "0x" + keccak(text=EVENTS[name][0]).hex()


def _int_strategy(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    extremes = [low, high, 0, 1, -1 if signed else 2, low + 1, high - 1]
    return st.one_of(st.sampled_from(extremes), st.integers(low, high))


def value_strategy(abi_type: str) -> st.SearchStrategy[Any]:
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    signed = abi_type.startswith("int")
    return _int_strategy(int(abi_type.removeprefix("u").removeprefix("int")), signed)


def build_log(name: str, values: list[Any], address: str = "0x" + "ab" * 20) -> Log:
    params = EVENTS[name][1]
    topics = [topic0(name)] + [
        "0x" + encode([t], [v]).hex() for (t, indexed), v in zip(params, values, strict=True) if indexed
    ]
    data_types = [t for t, indexed in params if not indexed]
    data_values = [v for (_, indexed), v in zip(params, values, strict=True) if not indexed]
    topics += [None] * (4 - len(topics))  # type: ignore[list-item]
    data = "0x" + encode(data_types, data_values).hex()
    return Log(1, "0x" + "11" * 32, "0x" + "22" * 32, 0, 0, address, data, *topics)


def eth_abi_values(name: str, log: Log) -> list[Any]:
    """Decode the log back with eth-abi, parameter by parameter, in declaration order."""
    params = EVENTS[name][1]
    topics = iter([log.topic1, log.topic2, log.topic3])
    data = iter(decode([t for t, indexed in params if not indexed], bytes.fromhex(log.data[2:])))
    out = []
    for abi_type, indexed in params:
        value = decode([abi_type], bytes.fromhex(next(topics)[2:]))[0] if indexed else next(data)  # type: ignore[index]
        out.append(value.lower() if abi_type == "address" else value)
    return out


def as_decoded(name: str, values: list[Any]) -> list[Any]:
    """Declaration order → the order of dexnode's decoded tuple."""
    if name == "v2_swap":  # V2Swap(sender, to, amount0_in, amount1_in, amount0_out, amount1_out)
        return [values[0], values[5], *values[1:5]]
    return values


@st.composite
def event_payloads(draw: st.DrawFn) -> tuple[str, list[Any]]:
    name = draw(st.sampled_from(sorted(EVENTS)))
    return name, [draw(value_strategy(t)) for t, _ in EVENTS[name][1]]


def test_fast_decoders_cover_the_declared_topics() -> None:
    assert set(FAST_DECODERS) == {topic0(name) for name in EVENTS}


@settings(max_examples=1500, deadline=None)
@given(event_payloads())
def test_fast_decoders_agree_with_eth_abi(payload: tuple[str, list[Any]]) -> None:
    name, values = payload
    log = build_log(name, values)
    decoded = FAST_DECODERS[topic0(name)](log)
    assert not isinstance(decoded, Malformed), decoded
    assert list(decoded) == as_decoded(name, eth_abi_values(name, log)) == as_decoded(name, values)


def strict_eth_abi(name: str, log: Log) -> list[Any] | None:
    """What a decoder must return for ``log``, from eth-abi and the declaration alone: the decoded values
    when the log is laid out exactly as declared (each indexed parameter one 32-byte topic and no other
    topic, the data exactly the non-indexed words, all hex, every value in range with clean padding),
    else None (malformed)."""
    params = EVENTS[name][1]
    indexed = sum(1 for _, ix in params if ix)
    topics = [log.topic1, log.topic2, log.topic3]
    if any(t is not None for t in topics[indexed:]):
        return None
    if not all(t is not None and re.fullmatch("0x[0-9a-fA-F]{64}", t) for t in topics[:indexed]):
        return None
    if not re.fullmatch(f"0x[0-9a-fA-F]{{{64 * (len(params) - indexed)}}}", log.data):
        return None
    try:
        return as_decoded(name, eth_abi_values(name, log))
    except DecodingError:  # dirty padding, out-of-range value
        return None


@st.composite
def garbled_logs(draw: st.DrawFn) -> tuple[str, Log]:
    """Random text, or a well-formed log with one part replaced (its topics, a data word, the data's
    length). Topics stay a list without holes, as a node gives them (``topicN`` set implies ``topicN-1``)."""
    name = draw(st.sampled_from(sorted(EVENTS)))
    if draw(st.booleans()):
        texts = draw(st.lists(st.text("0123456789abcdefx ", max_size=70), max_size=3))
        data = draw(st.text("0123456789abcdefABCDEFx _-", max_size=400))
        topics = [*texts, *[None] * (3 - len(texts))]
        return name, Log(1, "0xb", "0xt", 0, 0, "0x" + "ab" * 20, data, topic0(name), *topics)
    log = build_log(name, [draw(value_strategy(t)) for t, _ in EVENTS[name][1]])
    words = st.sampled_from(["0x" + "00" * 32, "0x" + "ff" * 32]) | st.binary(min_size=32, max_size=32).map(
        lambda b: "0x" + b.hex()
    )
    part = draw(st.sampled_from(["topics", "data_word", "data_cut", "data_add"]))
    if part == "topics":  # fewer, more or other topics
        count = draw(st.integers(0, 3))
        old = [log.topic1, log.topic2, log.topic3]
        new = [old[k] if old[k] is not None and draw(st.booleans()) else draw(words) for k in range(count)]
        topic1, topic2, topic3 = [*new, *[None] * (3 - count)]
        return name, dataclasses.replace(log, topic1=topic1, topic2=topic2, topic3=topic3)
    data = log.data[2:]
    if part == "data_cut":
        return name, dataclasses.replace(log, data="0x" + data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    if part == "data_add":
        return name, dataclasses.replace(log, data=log.data + draw(st.text("0123456789abcdef", max_size=70)))
    index = draw(st.integers(0, len(data) // 64 - 1))
    word = draw(words)
    return name, dataclasses.replace(
        log, data="0x" + data[: 64 * index] + word[2:] + data[64 * (index + 1) :]
    )


@settings(max_examples=1500, deadline=None)
@given(garbled_logs())
def test_garbled_logs_decode_exactly_or_are_malformed(case: tuple[str, Log]) -> None:
    name, log = case
    want = strict_eth_abi(name, log)
    result = FAST_DECODERS[topic0(name)](log)
    outcome = default_registry().lookup(topic0(name)).handle(log, Context({}, {}, {}, {}))  # type: ignore[union-attr]
    if want is None:
        assert isinstance(result, Malformed), (log, result)
        assert outcome == Skip(MALFORMED, result.reason)
    else:
        assert not isinstance(result, Malformed), (log, result)
        assert list(result) == want
        # a well-formed pool event in no known pool: skipped as such (Sync yields nothing), never malformed
        assert (
            outcome is None
            if name == "v2_sync"
            else (isinstance(outcome, Skip) and outcome.reason != MALFORMED)
        )


def _sample(name: str) -> Log:
    return build_log(name, [1 if t != "address" else "0x" + "cd" * 20 for t, _ in EVENTS[name][1]])


def _replace(log: Log, **changes: Any) -> Log:
    return dataclasses.replace(log, **changes)


def _word(log: Log, index: int, value: str) -> Log:
    data = log.data[2:]
    return _replace(log, data="0x" + data[: 64 * index] + value + data[64 * (index + 1) :])


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_malformed_layouts(name: str) -> None:
    log = _sample(name)
    decoder = FAST_DECODERS[log.topic0]  # type: ignore[index]
    assert not isinstance(decoder(log), Malformed)
    topics = [log.topic1, log.topic2, log.topic3]
    count = sum(t is not None for t in topics)
    fewer = topics[: count - 1] + [None] * (4 - count) if count else None
    more = topics[:count] + ["0x" + "00" * 32] + [None] * (2 - count) if count < 3 else None
    bad = [
        _replace(log, data=log.data[:-64]),  # a word short
        _replace(log, data=log.data + "00" * 32),  # a word long
        _replace(log, data=log.data[:-1]),  # odd length
        _replace(log, data=log.data[:-2] + "zz"),  # not hex
        _replace(log, data=log.data[:2] + " " + log.data[3:]),  # fromhex would skip the space
    ]
    if fewer is not None:
        bad.append(_replace(log, topic1=fewer[0], topic2=fewer[1], topic3=fewer[2]))
    if more is not None:
        bad.append(_replace(log, topic1=more[0], topic2=more[1], topic3=more[2]))
    for malformed in bad:
        result = decoder(malformed)
        assert isinstance(result, Malformed), (malformed, result)
        assert result.reason.startswith(EVENTS[name][0].split("(")[0] + ":")


ADDRESS_TOPIC_WITH_DIRT = "0x" + "01" + "00" * 11 + "cd" * 20
TOO_BIG_FOR_INT24 = f"{1 << 23:064x}"


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("v2_swap", {"topic1": ADDRESS_TOPIC_WITH_DIRT}, "zero-padded"),
        ("v2_burn", {"topic2": ADDRESS_TOPIC_WITH_DIRT}, "zero-padded"),
        ("v3_swap", {"topic2": ADDRESS_TOPIC_WITH_DIRT}, "zero-padded"),
        ("v3_collect", {"topic1": ADDRESS_TOPIC_WITH_DIRT}, "zero-padded"),
        ("v3_mint", {"topic2": "0x" + TOO_BIG_FOR_INT24}, "int24"),
        ("v3_burn", {"topic3": "0x" + "ff" * 28 + "ff7fffff"}, "int24"),  # -2^23 - 1
        ("v3_swap", {"word": (4, TOO_BIG_FOR_INT24)}, "out of range"),  # tick
        ("v3_swap", {"word": (2, f"{1 << 160:064x}")}, "out of range"),  # sqrtPriceX96
        ("v3_swap", {"word": (3, f"{1 << 128:064x}")}, "out of range"),  # liquidity
        ("v2_sync", {"word": (0, f"{1 << 112:064x}")}, "uint112"),
        ("v3_mint", {"word": (0, "01" + "00" * 31)}, "zero-padded"),  # sender word
        ("v3_mint", {"word": (1, f"{1 << 128:064x}")}, "uint128"),
        ("v3_collect", {"word": (2, f"{1 << 128:064x}")}, "uint128"),
    ],
)
def test_out_of_range_values_are_malformed(name: str, change: dict[str, Any], reason: str) -> None:
    log = _sample(name)
    if "word" in change:  # (index of the data word, its new 64 hex characters)
        log = _word(log, *change.pop("word"))
    log = _replace(log, **change)
    result = FAST_DECODERS[log.topic0](log)  # type: ignore[index]
    assert isinstance(result, Malformed) and reason in result.reason, result


def test_malformed_logs_are_counted_skips_in_a_batch() -> None:
    good = _sample("v2_sync")
    short = _replace(_sample("v3_swap"), data="0x" + "00" * 64)
    registry = default_registry()
    decoded = registry.decode([good, short, short], Context({}, {}, {}, {}))
    assert decoded.records == []
    assert decoded.counts["skip.malformed"] == 2
    assert [skip for _, skip in decoded.skipped] == [
        Skip(MALFORMED, "Swap: expected 160 data bytes, got 64"),
    ] * 2


def _factory_log(signature: str, indexed: list[tuple[str, Any]], data: list[tuple[str, Any]]) -> Log:
    topics = ["0x" + keccak(text=signature).hex()] + ["0x" + encode([t], [v]).hex() for t, v in indexed]
    topics += [None] * (4 - len(topics))  # type: ignore[list-item]
    payload = "0x" + encode([t for t, _ in data], [v for _, v in data]).hex()
    return Log(1, "0xb", "0xt", 0, 0, "0x" + "ff" * 20, payload, *topics)


def test_eth_abi_fallback_decodes_pool_creation_and_reports_malformed() -> None:
    token0, token1, pool = "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20
    tokens = [("address", token0), ("address", token1)]
    pair_created = _factory_log(
        "PairCreated(address,address,address,uint256)", tokens, [("address", pool), ("uint256", 7)]
    )
    assert tuple(decode_pair_created(pair_created)) == (token0, token1, pool, 7)
    assert isinstance(decode_pair_created(_replace(pair_created, data="0x" + "00" * 31)), Malformed)
    assert isinstance(decode_pair_created(_replace(pair_created, topic2=None)), Malformed)
    pool_created = _factory_log(
        "PoolCreated(address,address,uint24,int24,address)",
        [*tokens, ("uint24", 3000)],
        [("int24", -60), ("address", pool)],
    )
    assert tuple(decode_pool_created(pool_created)) == (token0, token1, 3000, -60, pool)
    assert isinstance(decode_pool_created(_replace(pool_created, topic3="0x" + "ff" * 32)), Malformed)


def test_event_abi_parses_declarations() -> None:
    swap = EventAbi.parse(
        "Swap(address indexed sender, uint amount0In, uint amount1In, uint, uint, address indexed to)"
    )
    assert swap.signature == "Swap(address,uint256,uint256,uint256,uint256,address)"
    assert swap.topic0 == "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
    assert swap.topic_count == 3
    assert [p.name for p in swap.params] == ["sender", "amount0In", "amount1In", "arg3", "arg4", "to"]
    for bad in ("Swap", "Swap(address indexed indexed x)", "(uint a)", "E(uint indexed a, uint indexed b, "
                "uint indexed c, uint indexed d)"):  # fmt: skip
        with pytest.raises(ValueError):
            EventAbi.parse(bad)
