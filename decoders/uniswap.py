"""Fast fixed-layout decoders for the hot Uniswap events (v2 Swap/Mint/Burn/Sync, v3 Swap/Mint/Burn/Collect).

Each decoder checks the layout first, exactly: topic count, data length (``2 + 64 * words`` characters),
zero padding of address words. It then converts the data once with ``binascii.a2b_hex`` and reads words at
fixed offsets with ``int.from_bytes`` (``signed=True`` is the two's complement of ``int256``/``int24``),
which measured 1.3–1.5× faster than ``int(word, 16)`` per word. The two Swaps (one a trade, the hottest
events) read all their data as one integer and take each word by a shift and a mask (~150 ns less than a
slice and a ``from_bytes`` per word); a signed word is its unsigned value less 2^256 when its top bit is
set, and a narrow type's range is checked on the unsigned word (an int24 is below 2^23 or at least 2^256 -
2^23). Addresses are sliced from the hex strings. Ranges of ``uint112``/``uint128``/``uint160``/``int24``
values are checked too. eth-abi is not on this path. A log that fails a check decodes to
``Malformed(reason)``, never an exception. Pool-creation events are rare and go through the eth-abi
fallback (``decoders.uniswap_abi``).

Every decoder is keyed by topic0 in ``FAST_DECODERS``; ``decoders.uniswap_abi.EVENTS`` holds the
Solidity declarations they implement, which the unit tests decode independently with eth-abi.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from decoders.events import INT24_MAX, INT24_MIN, EventAbi, Malformed
from decoders.uniswap_abi import (
    V2_BURN,
    V2_MINT,
    V2_SWAP,
    V2_SYNC,
    V3_BURN,
    V3_COLLECT,
    V3_MINT,
    V3_SWAP,
    V2Burn,
    V2Mint,
    V2Swap,
    V2Sync,
    V3Burn,
    V3Collect,
    V3Mint,
    V3Swap,
)
from records import Log

_ZEROS = "0" * 24  # the padding in front of an address in a 32-byte word
_PAD = "0x" + _ZEROS  # a topic holding an address starts with this
# binascii.a2b_hex: the same bytes as bytes.fromhex, ~50 ns less a log, and it refuses whitespace
# (fromhex skips it) with a ValueError, as it refuses any non-hex character
_fromhex = binascii.a2b_hex
_int = int.from_bytes  # big-endian by default
# NamedTuple's generated ``__new__`` is a Python function; the swap decoders (one call per trade) build
# their results with tuple's own, which makes the same object in half the time.
_tuple_new = tuple.__new__
_U112 = 1 << 112
_U128 = 1 << 128
_U160 = 1 << 160
_WORD = (1 << 256) - 1  # a word's mask
_SIGN = 1 << 255  # a word at or above this is negative as an intN
_WRAP = 1 << 256  # ... and its value is the word less this
_INT24_GAP = (INT24_MAX, _WRAP + INT24_MIN)  # an int24's word is <= the first or >= the second


def _bad_topics(event: EventAbi, log: Log) -> Malformed:
    count = sum(t is not None for t in (log.topic0, log.topic1, log.topic2, log.topic3))
    return Malformed(f"{event.name}: expected {event.topic_count} topics, got {count}")


def _bad_data(event: EventAbi, data: str, words: int) -> Malformed:
    return Malformed(f"{event.name}: expected {32 * words} data bytes, got {(len(data) - 2) / 2:g}")


def _bad(event: EventAbi, what: str) -> Malformed:
    return Malformed(f"{event.name}: {what}")


def _words(data: str, size: int) -> bytes | None:
    """The data as bytes when it is exactly ``size`` bytes of hex."""
    try:
        raw = _fromhex(data[2:])
    except ValueError:
        return None
    return raw if len(raw) == size else None


def _tick(topic: str) -> int:
    """int24 from a sign-extended 32-byte topic; ValueError when not hex or out of range."""
    raw = _fromhex(topic[2:])
    value = _int(raw, signed=True)
    if len(raw) != 32 or not INT24_MIN <= value <= INT24_MAX:
        raise ValueError("int24 out of range")
    return value


def decode_v2_swap(log: Log) -> V2Swap | Malformed:
    """Uniswap v2 pair ``Swap``: topics [sig, sender, to], data 4 × uint256.

    Sample (mainnet block 17173049, pair 0x7054b0f9…775c, log 3)::

        topics: 0xd78ad95f…59d822, 0x…6b75d8af000000e20b7a7ddf000ba900b4009a80 (sender),
                0x…6b75d8af000000e20b7a7ddf000ba900b4009a80 (to)
        data:   0000000000000000000000000000000000000000000000000000000000000000  amount0In
                00000000000000000000000000000000000000000000000061ec933f00000000  amount1In
                000000000000000000000000000000000000000001e5492e0000000000000000  amount0Out
                0000000000000000000000000000000000000000000000000000000000000000  amount1Out

    decodes to amount1In = 7056176614974947328 and amount0Out = 150188698577042438264952193024.

    Invariant: the pair contract emits exactly this layout (the topic0 is shared by every v2 fork);
    amounts are unsigned, so any 64 hex characters are a valid word.
    """
    t1, t2, data = log.topic1, log.topic2, log.data
    if t1 is None or t2 is None or log.topic3 is not None:
        return _bad_topics(V2_SWAP, log)
    if len(data) != 258:
        return _bad_data(V2_SWAP, data, 4)
    if not t1.startswith(_PAD) or not t2.startswith(_PAD) or len(t1) != 66 or len(t2) != 66:
        return _bad(V2_SWAP, "address topic is not zero-padded")
    try:  # inlined _words: this is the hottest path
        raw = _fromhex(data[2:])
    except ValueError:
        raw = b""
    if len(raw) != 128:
        return _bad(V2_SWAP, "data is not hex")
    n = _int(raw)  # the four words as one integer: word i is (n >> 256 * (3 - i)) & _WORD
    return _tuple_new(
        V2Swap,
        ("0x" + t1[26:], "0x" + t2[26:], n >> 768, (n >> 512) & _WORD, (n >> 256) & _WORD, n & _WORD),
    )


def decode_v2_sync(log: Log) -> V2Sync | Malformed:
    """Uniswap v2 pair ``Sync``: topics [sig], data 2 × uint112 (the reserves after the event that follows).

    Sample (mainnet block 17173049, pair 0x7054b0f9…775c, log 2, just before the Swap above)::

        topics: 0x1c411e9a…fbbad1
        data:   000000000000000000000000000000000000006300a8da002c3e3b737172f1a5  reserve0
                0000000000000000000000000000000000000000000000144cca7845c3983133  reserve1

    Invariant: reserves are ``uint112`` (the pair stores them in one slot), so a word ≥ 2^112 is malformed.
    """
    data = log.data
    if log.topic1 is not None:
        return _bad_topics(V2_SYNC, log)
    if len(data) != 130:
        return _bad_data(V2_SYNC, data, 2)
    try:  # inlined _words: this is the hottest path
        raw = _fromhex(data[2:])
    except ValueError:
        raw = b""
    if len(raw) != 64:
        return _bad(V2_SYNC, "data is not hex")
    reserve0, reserve1 = _int(raw[:32]), _int(raw[32:])
    if reserve0 >= _U112 or reserve1 >= _U112:
        return _bad(V2_SYNC, "reserve exceeds uint112")
    return V2Sync(reserve0, reserve1)


def decode_v2_mint(log: Log) -> V2Mint | Malformed:
    """Uniswap v2 pair ``Mint``: topics [sig, sender], data [amount0, amount1] (uint256).

    Sample: none of the recorded mainnet data in ``../shared/fixtures`` holds a v2 Mint (see
    ``uniswap/PROVENANCE.md``, Gaps); the layout is v2-core's ``UniswapV2Pair`` and the unit tests
    check it against eth-abi on generated payloads.

    Invariant: emitted only by the pair after it minted LP tokens; amounts are unsigned.
    """
    t1, data = log.topic1, log.data
    if t1 is None or log.topic2 is not None:
        return _bad_topics(V2_MINT, log)
    if len(data) != 130:
        return _bad_data(V2_MINT, data, 2)
    if not t1.startswith(_PAD) or len(t1) != 66:
        return _bad(V2_MINT, "address topic is not zero-padded")
    raw = _words(data, 64)
    if raw is None:
        return _bad(V2_MINT, "data is not hex")
    return V2Mint("0x" + t1[26:], _int(raw[:32]), _int(raw[32:]))


def decode_v2_burn(log: Log) -> V2Burn | Malformed:
    """Uniswap v2 pair ``Burn``: topics [sig, sender, to], data [amount0, amount1] (uint256).

    Sample: none in ``../shared/fixtures`` (see ``uniswap/PROVENANCE.md``, Gaps); layout from v2-core,
    checked against eth-abi by the unit tests.

    Invariant: ``to`` received amount0/amount1 of token0/token1 from the pair in the same call.
    """
    t1, t2, data = log.topic1, log.topic2, log.data
    if t1 is None or t2 is None or log.topic3 is not None:
        return _bad_topics(V2_BURN, log)
    if len(data) != 130:
        return _bad_data(V2_BURN, data, 2)
    if not t1.startswith(_PAD) or not t2.startswith(_PAD) or len(t1) != 66 or len(t2) != 66:
        return _bad(V2_BURN, "address topic is not zero-padded")
    raw = _words(data, 64)
    if raw is None:
        return _bad(V2_BURN, "data is not hex")
    return V2Burn("0x" + t1[26:], _int(raw[:32]), _int(raw[32:]), "0x" + t2[26:])


def decode_v3_swap(log: Log) -> V3Swap | Malformed:
    """Uniswap v3 pool ``Swap``: topics [sig, sender, recipient], data [int256 amount0, int256 amount1,
    uint160 sqrtPriceX96, uint128 liquidity, int24 tick].

    Sample (mainnet block 17173049, pool 0x498498fa…41ec5, log 93)::

        topics: 0xc42079f9…bcca67, 0x…68b3465833fb72a70ecdf485e0e4c7bd8665fc45 (sender),
                0x…c89c92526f5b49821bdd137d375a4032a317212f (recipient)
        data:   ffffffffffffffffffffffffffffffffffffffffffff40c7a426a316ae550dfb  amount0 (negative: paid out)
                0000000000000000000000000000000000000000000000000853a0d2313c0000  amount1 (positive: paid in)
                00000000000000000000000000000000000000000035320bb1d33bafa052974e  sqrtPriceX96
                0000000000000000000000000000000000000000000060adaf174f9df3180bcb  liquidity
                fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffdd401  tick -142335

    Invariant: amounts are the pool's balance deltas (two's complement words); ``tick`` is an int24
    sign-extended to 32 bytes, so a word outside [-2^23, 2^23) is malformed, as are sqrtPriceX96 ≥ 2^160
    and liquidity ≥ 2^128.
    """
    t1, t2, data = log.topic1, log.topic2, log.data
    if t1 is None or t2 is None or log.topic3 is not None:
        return _bad_topics(V3_SWAP, log)
    if len(data) != 322:
        return _bad_data(V3_SWAP, data, 5)
    if not t1.startswith(_PAD) or not t2.startswith(_PAD) or len(t1) != 66 or len(t2) != 66:
        return _bad(V3_SWAP, "address topic is not zero-padded")
    try:  # inlined _words: this is the hottest path
        raw = _fromhex(data[2:])
    except ValueError:
        raw = b""
    if len(raw) != 160:
        return _bad(V3_SWAP, "data is not hex")
    n = _int(raw)  # the five words as one integer (unsigned words; see the module docstring)
    amount0, amount1 = n >> 1024, (n >> 768) & _WORD
    sqrt_price, liquidity, tick = (n >> 512) & _WORD, (n >> 256) & _WORD, n & _WORD
    if sqrt_price >= _U160 or liquidity >= _U128 or _INT24_GAP[0] < tick < _INT24_GAP[1]:
        return _bad(V3_SWAP, "sqrtPriceX96, liquidity or tick out of range")
    return _tuple_new(
        V3Swap,
        (
            "0x" + t1[26:],
            "0x" + t2[26:],
            amount0 - _WRAP if amount0 >= _SIGN else amount0,
            amount1 - _WRAP if amount1 >= _SIGN else amount1,
            sqrt_price,
            liquidity,
            tick - _WRAP if tick >= _SIGN else tick,
        ),
    )


def _position_topics(event: EventAbi, log: Log) -> tuple[str, int, int] | Malformed:
    """(owner, tickLower, tickUpper) from topics 1–3, shared by v3 Mint, Burn and Collect."""
    t1, t2, t3 = log.topic1, log.topic2, log.topic3
    if t1 is None or t2 is None or t3 is None:
        return _bad_topics(event, log)
    if not t1.startswith(_PAD) or len(t1) != 66:
        return _bad(event, "owner topic is not zero-padded")
    try:
        return "0x" + t1[26:], _tick(t2), _tick(t3)
    except ValueError:
        return _bad(event, "tick topic is not an int24")


def decode_v3_mint(log: Log) -> V3Mint | Malformed:
    """Uniswap v3 pool ``Mint``: topics [sig, owner, tickLower, tickUpper], data [address sender,
    uint128 amount, uint256 amount0, uint256 amount1].

    Sample (mainnet block 18938642, pool 0x82c427ad…0d29c, log 2)::

        topics: 0x7a53080b…0bde, 0x…a69babef1ca67a37ffaf7a485dfff3382056e78c (owner),
                0x…6ea0 (tickLower 28320), 0x…6edc (tickUpper 28380)
        data:   0000000000000000000000009a5f2e0db22ff289d0cc40ef654a19a5b012d8aa  sender
                0000000000000000000000000000000000000000000000be3157259f8f8d6ba0  amount (liquidity)
                0000000000000000000000000000000000000000000000000000000000000000  amount0
                0000000000000000000000000000000000000000000000025ab8315580205cef  amount1

    Invariant: tick topics are sign-extended int24 (negative ticks are ``0xff…``); the sender word is a
    zero-padded address; amount < 2^128.
    """
    head = _position_topics(V3_MINT, log)
    if isinstance(head, Malformed):
        return head
    data = log.data
    if len(data) != 258:
        return _bad_data(V3_MINT, data, 4)
    if not data.startswith(_ZEROS, 2):
        return _bad(V3_MINT, "sender word is not zero-padded")
    raw = _words(data, 128)
    if raw is None:
        return _bad(V3_MINT, "data is not hex")
    amount = _int(raw[32:64])
    if amount >= _U128:
        return _bad(V3_MINT, "amount exceeds uint128")
    owner, lower, upper = head
    return V3Mint("0x" + data[26:66], owner, lower, upper, amount, _int(raw[64:96]), _int(raw[96:]))


def decode_v3_burn(log: Log) -> V3Burn | Malformed:
    """Uniswap v3 pool ``Burn``: topics [sig, owner, tickLower, tickUpper], data [uint128 amount,
    uint256 amount0, uint256 amount1].

    Sample (mainnet block 18938642, pool 0x82c427ad…0d29c, log 7)::

        topics: 0x0c396cd9…98982c, 0x…a69babef1ca67a37ffaf7a485dfff3382056e78c (owner),
                0x…6ea0 (tickLower 28320), 0x…6edc (tickUpper 28380)
        data:   0000000000000000000000000000000000000000000000be3157259f8f8d6ba0  amount (liquidity)
                00000000000000000000000000000000000000000000000020977656c669ebf8  amount0
                0000000000000000000000000000000000000000000000002f9e1b7c8d730cf4  amount1

    Invariant: the amounts are credited to the position (``tokensOwed``), not yet paid out; a later
    ``Collect`` pays them. amount < 2^128.
    """
    head = _position_topics(V3_BURN, log)
    if isinstance(head, Malformed):
        return head
    data = log.data
    if len(data) != 194:
        return _bad_data(V3_BURN, data, 3)
    raw = _words(data, 96)
    if raw is None:
        return _bad(V3_BURN, "data is not hex")
    amount, amount0, amount1 = _int(raw[:32]), _int(raw[32:64]), _int(raw[64:])
    if amount >= _U128:
        return _bad(V3_BURN, "amount exceeds uint128")
    owner, lower, upper = head
    return V3Burn(owner, lower, upper, amount, amount0, amount1)


def decode_v3_collect(log: Log) -> V3Collect | Malformed:
    """Uniswap v3 pool ``Collect``: topics [sig, owner, tickLower, tickUpper], data [address recipient,
    uint128 amount0, uint128 amount1].

    Sample (mainnet block 18938642, pool 0x82c427ad…0d29c, log 10)::

        topics: 0x70935338…6ca9c0, 0x…a69babef1ca67a37ffaf7a485dfff3382056e78c (owner),
                0x…6ea0 (tickLower 28320), 0x…6edc (tickUpper 28380)
        data:   000000000000000000000000a69babef1ca67a37ffaf7a485dfff3382056e78c  recipient
                00000000000000000000000000000000000000000000000020b091662f842c9d  amount0
                0000000000000000000000000000000000000000000000002f9e1b7c8d730cf4  amount1

    Invariant: the pool's own Collect is what it paid (the position manager's Collect can differ by a
    few wei); both amounts < 2^128.
    """
    head = _position_topics(V3_COLLECT, log)
    if isinstance(head, Malformed):
        return head
    data = log.data
    if len(data) != 194:
        return _bad_data(V3_COLLECT, data, 3)
    if not data.startswith(_ZEROS, 2):
        return _bad(V3_COLLECT, "recipient word is not zero-padded")
    raw = _words(data, 96)
    if raw is None:
        return _bad(V3_COLLECT, "data is not hex")
    amount0, amount1 = _int(raw[32:64]), _int(raw[64:])
    if amount0 >= _U128 or amount1 >= _U128:
        return _bad(V3_COLLECT, "amount exceeds uint128")
    owner, lower, upper = head
    return V3Collect(owner, "0x" + data[26:66], lower, upper, amount0, amount1)


FAST_DECODERS: dict[str, Callable[[Log], Any]] = {
    V2_SWAP.topic0: decode_v2_swap,
    V2_MINT.topic0: decode_v2_mint,
    V2_BURN.topic0: decode_v2_burn,
    V2_SYNC.topic0: decode_v2_sync,
    V3_SWAP.topic0: decode_v3_swap,
    V3_MINT.topic0: decode_v3_mint,
    V3_BURN.topic0: decode_v3_burn,
    V3_COLLECT.topic0: decode_v3_collect,
}
