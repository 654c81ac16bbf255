"""Token transfers from raw logs: ERC-20 and ERC-721 ``Transfer``, ERC-1155 ``TransferSingle``/``Batch``.

Pure and fast: fixed-layout events are decoded by slicing the hex strings and ``int(x, 16)``; the
one dynamic layout (``TransferBatch``) is decoded by hand with every offset and length
bounds-checked. Input logs are ``records.Log`` as ``indexer.chain.extract`` builds them: lower-case hex,
topics ``topic0..topic3`` (null when absent), ``data`` as ``0x``-hex.

A log that carries a transfer topic0 but not the standard shape (non-standard tokens exist: old
tokens without indexed parameters, contracts emitting garbage) is not a transfer we can trust: it
is returned as a ``SkippedTransfer`` with a reason, logged with its coordinates, and never raises.
The raw log itself is still stored by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from records import Log, TokenTransfer

log = logging.getLogger("dexnode.decoders.transfers")

# keccak256("Transfer(address,address,uint256)"): the same topic0 for ERC-20 and ERC-721
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
# keccak256("TransferSingle(address,address,address,uint256,uint256)")
TRANSFER_SINGLE_TOPIC = "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62"
# keccak256("TransferBatch(address,address,address,uint256[],uint256[])")
TRANSFER_BATCH_TOPIC = "0x4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb"

# ``_erc20`` builds its records positionally, in field order: checked here once, so a field added to or
# moved in TokenTransfer fails at import instead of shifting every later column.
_TRANSFER_FIELDS = (
    "token_address", "from_address", "to_address", "value", "token_id", "standard", "operator",
    "block_number", "block_hash", "transaction_hash", "transaction_index", "log_index", "batch_index",
)  # fmt: skip
if tuple(f.name for f in fields(TokenTransfer)) != _TRANSFER_FIELDS:
    raise ImportError("records.TokenTransfer changed its fields: update decoders/transfers.py")

_ADDRESS_PAD = "0x" + "0" * 24  # an ABI-encoded address: 12 zero bytes, then 20 address bytes
_WORD = 64  # hex chars per 32-byte word


@dataclass(frozen=True, slots=True)
class SkippedTransfer:
    """A log with a transfer topic0 that does not have the standard layout, and why."""

    block_number: int
    transaction_hash: str
    log_index: int
    address: str
    topic0: str
    reason: str


class _Malformed(Exception):
    """Internal: the log has a transfer topic0 but not the layout the standard defines."""


def _address(topic: str | None) -> str:
    if topic is None or len(topic) != 66 or not topic.startswith(_ADDRESS_PAD):
        raise _Malformed(f"topic is not an ABI-encoded address: {topic!r}")
    return "0x" + topic[26:]


def _uint(word: str) -> int:
    try:
        return int(word, 16)
    except ValueError:
        raise _Malformed(f"not hex: {word[:20]!r}") from None


def _transfer(
    log_: Log,
    from_address: str,
    to_address: str,
    value: int,
    token_id: int | None,
    standard: str,
    operator: str | None,
    batch_index: int = 0,
) -> TokenTransfer:
    return TokenTransfer(
        token_address=log_.address,
        from_address=from_address,
        to_address=to_address,
        value=value,
        token_id=token_id,
        standard=standard,
        operator=operator,
        block_number=log_.block_number,
        block_hash=log_.block_hash,
        transaction_hash=log_.transaction_hash,
        transaction_index=log_.transaction_index,
        log_index=log_.log_index,
        batch_index=batch_index,
    )


def decode_transfer(log_: Log) -> TokenTransfer:
    """ERC-20 or ERC-721 ``Transfer(address indexed from, address indexed to, uint256 value|tokenId)``.

    Sample (mainnet block 483920, log 0, ERC-20; ``../shared/fixtures/ethereum-etl``)::

        address 0xf4eced2f682ce333f96f2d8966c613ded8fc95dd
        topics  [0xddf252ad…b3ef,
                 0x0000000000000000000000001b63142628311395ceafeea5667e7c9026c862ca,
                 0x000000000000000000000000ac4df82fe37ea2187bc8c011a23d743b4f39019a]
        data    0x00000000000000000000000000000000000000000000000000000000000186a0  (100000)

    Sample (block 21925176, log 0xc7, ERC-721 token id 3; ``mainnet-block-21925176-helios``)::

        address 0xe230cb0f2ad1713340c029539dce9ab36cc6b23f
        topics  [0xddf252ad…b3ef, 0x…e0a613f4793a0bdd35783fd803115187da7c7b01,
                 0x…3a3548e060be10c2614d0a4cb0c03cc9093fd799,
                 0x0000000000000000000000000000000000000000000000000000000000000003]
        data    0x

    Invariant: the two standards share topic0 and differ only in what is indexed. ERC-20 has 3
    topics and exactly one data word (the amount); ERC-721 has 4 topics (the token id indexed too)
    and empty data, and moves one token (``value`` 1, ``token_id`` the id). Any other shape raises
    ``_Malformed``.
    """
    data = log_.data
    if log_.topic3 is None:
        if log_.topic2 is None or len(data) != 2 + _WORD:
            raise _Malformed(f"ERC-20 Transfer needs 3 topics and 32 data bytes, data has {len(data)} chars")
        return _transfer(
            log_,
            from_address=_address(log_.topic1),
            to_address=_address(log_.topic2),
            value=_uint(data[2:]),
            token_id=None,
            standard="erc20",
            operator=None,
        )
    if data not in ("0x", ""):
        raise _Malformed("ERC-721 Transfer (4 topics) must have empty data")
    return _transfer(
        log_,
        from_address=_address(log_.topic1),
        to_address=_address(log_.topic2),
        value=1,
        token_id=_uint(log_.topic3[2:]),
        standard="erc721",
        operator=None,
    )


def decode_transfer_single(log_: Log) -> TokenTransfer:
    """ERC-1155 ``TransferSingle(operator indexed, from indexed, to indexed, uint256 id, uint256 value)``.

    Sample (block 21925176, log 0x123; ``mainnet-block-21925176-helios``)::

        address 0xc36cf0cfcb5d905b8b513860db0cfe63f6cf9f5c
        topics  [0xc3d58168…0f62, 0x…1e0049783f008a0085193e00003d00cd54003c71 (operator),
                 0x…a5900395659ee19c1f5c85dc3c014491e7fdb928 (from),
                 0x…b99aeec95d14a9a9f9088bc29bbbf1986ff6173d (to)]
        data    0x0000000000000000000000000000014e00000000000000000000000000000000   (id)
                  0000000000000000000000000000000000000000000000000000000000000001   (value 1)

    Invariant: 4 topics and exactly two data words, id then value.
    """
    data = log_.data
    if log_.topic3 is None or len(data) != 2 + 2 * _WORD:
        raise _Malformed(f"TransferSingle needs 4 topics and 64 data bytes, data has {len(data)} chars")
    return _transfer(
        log_,
        from_address=_address(log_.topic2),
        to_address=_address(log_.topic3),
        value=_uint(data[2 + _WORD :]),
        token_id=_uint(data[2 : 2 + _WORD]),
        standard="erc1155",
        operator=_address(log_.topic1),
    )


def _uint_array(words: str, offset_word: int, n_words: int) -> list[int]:
    """The ``uint256[]`` whose head word ``offset_word`` points at, every position checked."""
    offset = _uint(words[offset_word * _WORD : (offset_word + 1) * _WORD])
    if offset % 32:
        raise _Malformed(f"array offset {offset} is not word-aligned")
    start = offset // 32
    if start + 1 > n_words:
        raise _Malformed(f"array offset {offset} is past the end of data")
    length = _uint(words[start * _WORD : (start + 1) * _WORD])
    if start + 1 + length > n_words:
        raise _Malformed(f"array of {length} at offset {offset} runs past the end of data")
    base = (start + 1) * _WORD
    return [_uint(words[base + i * _WORD : base + (i + 1) * _WORD]) for i in range(length)]


def decode_transfer_batch(log_: Log) -> list[TokenTransfer]:
    """ERC-1155 ``TransferBatch(operator, from, to indexed; uint256[] ids, uint256[] values)``.

    There is no ``TransferBatch`` in the recorded fixtures; this is the canonical ABI layout the
    tests build with eth-abi (2 ids)::

        topics  [0x4a39dc06…f7fb, operator, from, to]   (ABI-encoded addresses)
        data    0x…40 (offset of ids) 0x…a0 (offset of values)
                  …02 (ids length) id0 id1  …02 (values length) value0 value1

    Invariant: data is a whole number of words; both offsets are word-aligned and inside data,
    each array's length word and elements lie inside data, and the two arrays have the same
    length. One ``TokenTransfer`` per id, ``batch_index`` its position. Offsets need not be the
    canonical ones (any valid ABI encoding decodes).
    """
    data = log_.data
    if log_.topic3 is None:
        raise _Malformed("TransferBatch needs 4 topics")
    words = data[2:]
    if len(words) % _WORD or len(words) < 4 * _WORD:
        raise _Malformed(f"TransferBatch data of {len(words) // 2} bytes is not ABI (2 arrays)")
    n_words = len(words) // _WORD
    ids = _uint_array(words, 0, n_words)
    values = _uint_array(words, 1, n_words)
    if len(ids) != len(values):
        raise _Malformed(f"TransferBatch has {len(ids)} ids but {len(values)} values")
    operator = _address(log_.topic1)
    from_address = _address(log_.topic2)
    to_address = _address(log_.topic3)
    return [
        _transfer(
            log_,
            from_address=from_address,
            to_address=to_address,
            value=value,
            token_id=token_id,
            standard="erc1155",
            operator=operator,
            batch_index=i,
        )
        for i, (token_id, value) in enumerate(zip(ids, values, strict=True))
    ]


def _erc20(log_: Log, make: Callable[..., TokenTransfer]) -> TokenTransfer | None:
    """The usual ERC-20 ``Transfer``, decoded with no helper call per field (most transfer logs are
    these, so this is the backfill's hot path); None for any other shape or doubt, which
    ``decode_transfer`` then decodes or rejects with its reason. ``make``: ``TokenTransfer`` or a
    positional maker of equal records (``decode_transfers``)."""
    t1, t2, data = log_.topic1, log_.topic2, log_.data
    if (
        log_.topic3 is not None
        or t1 is None
        or t2 is None
        or len(data) != 2 + _WORD
        or len(t1) != 66
        or len(t2) != 66
        or not t1.startswith(_ADDRESS_PAD)
        or not t2.startswith(_ADDRESS_PAD)
    ):
        return None
    try:
        value = int(data[2:], 16)
    except ValueError:
        return None
    return make(  # positional, in TokenTransfer's field order
        log_.address,
        "0x" + t1[26:],
        "0x" + t2[26:],
        value,
        None,  # token_id
        "erc20",
        None,  # operator
        log_.block_number,
        log_.block_hash,
        log_.transaction_hash,
        log_.transaction_index,
        log_.log_index,
        0,  # batch_index
    )


@dataclass(frozen=True, slots=True)
class TransferDecoding:
    transfers: tuple[TokenTransfer, ...]
    skipped: tuple[SkippedTransfer, ...]


def decode_transfers(
    logs: Iterable[Log], make: Callable[..., TokenTransfer] = TokenTransfer
) -> TransferDecoding:
    """All token transfers in ``logs`` (in log order, batch entries in array order), and the skips.

    ``make`` builds the ERC-20 transfers (nearly all of them) from positional values in field order:
    ``TokenTransfer`` itself, or a maker of equal records that costs less than a frozen dataclass's
    ``__init__`` (its 13 ``object.__setattr__`` calls were 60 % of this function's time); the backfill
    passes ``indexer.pipeline.pipeline.RECORD_MAKERS.transfer``."""
    transfers: list[TokenTransfer] = []
    skipped: list[SkippedTransfer] = []
    append = transfers.append
    for lg in logs:
        topic0 = lg.topic0
        try:
            if topic0 == TRANSFER_TOPIC:
                fast = _erc20(lg, make)
                append(decode_transfer(lg) if fast is None else fast)
            elif topic0 == TRANSFER_SINGLE_TOPIC:
                transfers.append(decode_transfer_single(lg))
            elif topic0 == TRANSFER_BATCH_TOPIC:
                transfers.extend(decode_transfer_batch(lg))
        except _Malformed as exc:
            skip = SkippedTransfer(
                block_number=lg.block_number,
                transaction_hash=lg.transaction_hash,
                log_index=lg.log_index,
                address=lg.address,
                topic0=topic0 or "",
                reason=str(exc),
            )
            skipped.append(skip)
            log.info(
                "skipped non-standard transfer log: block %d tx %s log %d token %s: %s",
                skip.block_number,
                skip.transaction_hash,
                skip.log_index,
                skip.address,
                skip.reason,
            )
    return TransferDecoding(tuple(transfers), tuple(skipped))
