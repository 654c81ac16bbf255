"""The hot swap decoders (``binascii.a2b_hex`` + ``int.from_bytes`` at fixed offsets) against eth-abi on
random and garbled payloads, and the full log → record path with the C record maker against the Python one
on real mainnet logs."""

from __future__ import annotations

import dataclasses
import gc
import re
import string
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode
from eth_abi.exceptions import DecodingError
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.balancer_v2 import BALANCER_SWAP, decode_balancer_swap
from decoders.events import EventAbi, Malformed
from decoders.uniswap import decode_v2_swap, decode_v3_swap
from decoders.uniswap_abi import V2_SWAP, V3_SWAP
from decoders.uniswap_v4 import V4_SWAP, decode_v4_swap
from protocols import trades
from protocols.registry import default_registry
from records import DexTrade, Log

pytestmark = pytest.mark.unit

CASES = {
    "v2": (V2_SWAP, decode_v2_swap),
    "v3": (V3_SWAP, decode_v3_swap),
    "v4": (V4_SWAP, decode_v4_swap),
    "balancer": (BALANCER_SWAP, decode_balancer_swap),
}
HEX = set(string.hexdigits)


def snake(name: str) -> str:
    """``amount0In`` → ``amount0_in``, ``sqrtPriceX96`` → ``sqrt_price_x96``, ``poolId`` → ``pool_id``."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def word_strategy() -> st.SearchStrategy[str]:
    """64 hex characters: any word, or a sign-extended or zero-padded small value (what valid logs hold)."""

    def word(value: int) -> str:
        return (value % (1 << 256)).to_bytes(32, "big").hex()

    # each side of every narrow type's limits (int24, int128, uint24, uint128, uint160, int256)
    edges = sorted(
        {e + d for b in (24, 128, 160, 256) for e in (1 << (b - 1), -(1 << (b - 1)), 1 << b) for d in (-1, 0)}
    )
    small = st.integers(-(1 << 130), (1 << 170) - 1)
    return st.one_of(
        st.binary(min_size=32, max_size=32).map(bytes.hex), small.map(word), st.sampled_from(edges).map(word)
    )


def topic_for(abi_type: str, raw: bytes) -> str:
    if abi_type == "address":
        return "0x" + encode(["address"], ["0x" + raw[:20].hex()]).hex()
    return "0x" + raw.hex()


@st.composite
def swap_logs(draw: st.DrawFn) -> tuple[str, Log]:
    """A swap log of one of the four shapes: valid topics, data of random words, sometimes one character
    garbled (non-hex, whitespace, upper case, non-ASCII)."""
    name = draw(st.sampled_from(sorted(CASES)))
    event = CASES[name][0]
    topics = [event.topic0]
    topics += [
        topic_for(p.type, draw(st.binary(min_size=32, max_size=32))) for p in event.params if p.indexed
    ]
    words = [draw(word_strategy()) for p in event.params if not p.indexed]
    data = "".join(words)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        char = draw(st.sampled_from([" ", "\n", "g", "x", "é", "A", "F", "0", "-"]))
        data = data[:at] + char + data[at + 1 :]
    padded = [*topics, None, None, None][:4]
    return name, Log(1, "0x" + "11" * 32, "0x" + "22" * 32, 0, 0, "0x" + "33" * 20, "0x" + data, *padded)


def eth_abi_oracle(event: EventAbi, log: Log) -> dict[str, Any] | None:
    """Argument name → value decoded by eth-abi alone (strict: a word outside its type is an error), or
    None when the data is not exactly hex words of the event's types."""
    body = log.data[2:]
    if not set(body) <= HEX:
        return None
    types = [p.type for p in event.params if not p.indexed]
    try:
        values = iter(abi_decode(types, bytes.fromhex(body), strict=True))
    except (DecodingError, ValueError, OverflowError):
        return None
    topics = iter([log.topic1, log.topic2, log.topic3])
    out: dict[str, Any] = {}
    for p in event.params:
        if p.indexed:
            topic = str(next(topics))
            out[p.name] = "0x" + topic[26:] if p.type == "address" else topic
        else:
            value = next(values)
            out[p.name] = value.lower() if p.type == "address" else value
    return out


@settings(max_examples=2000, deadline=None)
@given(swap_logs())
def test_fast_swap_decoders_agree_with_eth_abi(case: tuple[str, Log]) -> None:
    name, log = case
    event, decode = CASES[name]
    want = eth_abi_oracle(event, log)
    got = decode(log)
    if want is None:
        assert type(got) is Malformed, (name, log.data, got)
        return
    assert type(got) is not Malformed, (name, log.data, got)
    assert {field: getattr(got, field) for field in got._fields} == {snake(k): v for k, v in want.items()}


def limits(abi_type: str) -> tuple[int, int]:
    bits = int(abi_type.lstrip("uint") or 256)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if abi_type.startswith("int") else (0, (1 << bits) - 1)


def boundary_cases() -> list[tuple[str, int, int]]:
    """(case, data word index, value): each side of each data word's limits, the other words valid."""
    out = []
    for name, (event, _) in CASES.items():
        types = [p.type for p in event.params if not p.indexed]
        for index, abi_type in enumerate(types):
            if abi_type == "address":
                continue
            low, high = limits(abi_type)
            wide = abi_type.endswith("256")  # a word holds nothing beyond its limits
            out += [(name, index, v) for v in (low, high) if wide]
            out += [(name, index, v) for v in (low - 1, low, high, high + 1) if not wide]
    return out


@pytest.mark.parametrize(("name", "index", "value"), boundary_cases())
def test_each_side_of_every_limit_decodes_as_eth_abi_does(name: str, index: int, value: int) -> None:
    event, decode = CASES[name]
    types = [p.type for p in event.params if not p.indexed]
    words = [(1 if t != "address" else 0).to_bytes(32, "big").hex() for t in types]
    words[index] = (value % (1 << 256)).to_bytes(32, "big").hex()
    topics = [event.topic0] + ["0x" + "00" * 12 + "cd" * 20 for p in event.params if p.indexed]
    keys = (1, "0x" + "11" * 32, "0x" + "22" * 32, 0, 0, "0x" + "33" * 20)
    log = Log(*keys, "0x" + "".join(words), *[*topics, None, None, None][:4])
    low, high = limits(types[index])
    want = eth_abi_oracle(event, log)
    assert (want is not None) == (low <= value <= high)  # the oracle itself knows the limits
    got = decode(log)
    if want is None:
        assert type(got) is Malformed
    else:
        assert {f: getattr(got, f) for f in got._fields} == {snake(k): v for k, v in want.items()}


def test_upper_case_hex_decodes_as_lower_case() -> None:
    data = "00" * 31 + "ab" + "ff" * 32 + "00" * 31 + "0c" + "00" * 32
    topic = "0x" + "00" * 12 + "cd" * 20
    keys = (1, "0x" + "11" * 32, "0x" + "22" * 32, 0, 0, "0x" + "33" * 20)
    log = Log(*keys, "0x" + data, V2_SWAP.topic0, topic, topic, None)
    assert decode_v2_swap(log) == decode_v2_swap(dataclasses.replace(log, data="0x" + data.upper()))


FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def test_record_path_with_the_c_maker_equals_the_python_maker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every real swap the decode benchmark uses, through the registry with each maker: equal records,
    field by field; the C maker's trades are left to reference counting (no tracked field)."""
    bench = pytest.importorskip("bench.decode")
    if not FIXTURES.is_dir():
        pytest.skip(f"recorded fixtures not found at {FIXTURES}")
    registry = default_registry()
    logs_v23 = bench.real_swaps()
    inputs = [
        (logs_v23, bench.context(logs_v23)),
        (bench.v4_swaps(), None, bench.POOL_MANAGER, "4", "uniswap-v4"),
        (bench.balancer_swaps(), None, bench.VAULT, "2", "balancer-v2"),
    ]
    batches = []
    for logs, ctx, *singleton in inputs:
        batches.append((logs, ctx if ctx is not None else bench.singleton_context(logs, *singleton)))
    made = [registry.decode(logs, ctx).records for logs, ctx in batches]
    monkeypatch.setattr(trades, "_dex_trade", trades.slot_filler(DexTrade))
    python = [registry.decode(logs, ctx).records for logs, ctx in batches]
    assert [len(r) for r in made] == [len(logs) for logs, _ in batches]
    for ours, theirs in zip(made, python, strict=True):
        assert ours == theirs
        assert all(type(r) is DexTrade for r in ours)
        if type(trades.slot_maker(DexTrade)).__name__ == "builtin_function_or_method":  # the C maker built
            assert not any(gc.is_tracked(r) for r in ours)
