"""Token transfer decoding: ERC-1155 batches (built with eth-abi), and what is skipped, never raised."""

from __future__ import annotations

import logging

import pytest
from eth_abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st

from decoders.transfers import (
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
    decode_transfers,
)
from records import Log

pytestmark = pytest.mark.unit

OPERATOR = "0x1e0049783f008a0085193e00003d00cd54003c71"
FROM = "0xa5900395659ee19c1f5c85dc3c014491e7fdb928"
TO = "0xb99aeec95d14a9a9f9088bc29bbbf1986ff6173d"
TOKEN = "0xc36cf0cfcb5d905b8b513860db0cfe63f6cf9f5c"


def word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def make_log(topics: list[str], data: str, log_index: int = 7) -> Log:
    padded: list[str | None] = [*topics, None, None, None, None][:4]
    return Log(
        block_number=21925176,
        block_hash="0x92dabfa3f61ff1c349d12f5fd0dd4c99760a0a41b77dee8f0a80f83efdcb307a",
        transaction_hash="0x6d1045eee07cf211d3776d0c0b9e4c291cb584a8553fb151d7433ca7c9c25912",
        transaction_index=56,
        log_index=log_index,
        address=TOKEN,
        data=data,
        topic0=padded[0],
        topic1=padded[1],
        topic2=padded[2],
        topic3=padded[3],
    )


def batch_log(data: str) -> Log:
    return make_log([TRANSFER_BATCH_TOPIC, topic(OPERATOR), topic(FROM), topic(TO)], data)


def abi_batch(ids: list[int], values: list[int]) -> Log:
    return batch_log("0x" + abi_encode(["uint256[]", "uint256[]"], [ids, values]).hex())


def test_transfer_batch_canonical_encoding() -> None:
    ids, values = [0x14E, 2**256 - 1, 0], [1, 5, 2**200]
    decoded = decode_transfers([abi_batch(ids, values)])
    assert decoded.skipped == ()
    assert [(t.token_id, t.value, t.batch_index) for t in decoded.transfers] == [
        (0x14E, 1, 0),
        (2**256 - 1, 5, 1),
        (0, 2**200, 2),
    ]
    for t in decoded.transfers:
        assert (t.standard, t.operator, t.from_address, t.to_address) == ("erc1155", OPERATOR, FROM, TO)
        assert (t.token_address, t.log_index, t.transaction_index) == (TOKEN, 7, 56)


def test_transfer_batch_non_canonical_offsets() -> None:
    # values array first, ids array second, with a gap word: still valid ABI
    data = word(0xA0) + word(0x40) + word(1) + word(9) + word(0xDEAD) + word(1) + word(42)
    (t,) = decode_transfers([batch_log("0x" + data)]).transfers
    assert (t.token_id, t.value) == (42, 9)


def test_empty_transfer_batch() -> None:
    decoded = decode_transfers([abi_batch([], [])])
    assert decoded.transfers == () and decoded.skipped == ()


MALFORMED_BATCHES = {
    "length mismatch": word(0x40) + word(0x80) + word(1) + word(7) + word(2) + word(1) + word(1),
    "offset past end": word(0x40) + word(0x400) + word(1) + word(7),
    "unaligned offset": word(0x41) + word(0xA0) + word(1) + word(7) + word(1) + word(1),
    "length past end": word(0x40) + word(0x80) + word(2**255) + word(0),
    "huge offset": word(2**256 - 32) + word(0x40) + word(0) + word(0),
    "truncated": abi_encode(["uint256[]", "uint256[]"], [[1, 2], [3, 4]]).hex()[:-64],
    "not whole words": abi_encode(["uint256[]", "uint256[]"], [[1], [3]]).hex() + "00",
    "too short": word(0x40),
    "not hex": word(0x40) + word(0x60) + "zz" * 32 + word(0),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_BATCHES))
def test_malformed_transfer_batch_is_skipped(case: str, caplog: pytest.LogCaptureFixture) -> None:
    good = make_log([TRANSFER_TOPIC, topic(FROM), topic(TO)], "0x" + word(5), log_index=8)
    with caplog.at_level(logging.INFO, logger="dexnode.decoders.transfers"):
        decoded = decode_transfers([batch_log("0x" + MALFORMED_BATCHES[case]), good])
    assert [t.log_index for t in decoded.transfers] == [8]  # the good log after it still decodes
    (skip,) = decoded.skipped
    assert (skip.block_number, skip.log_index, skip.topic0) == (21925176, 7, TRANSFER_BATCH_TOPIC)
    assert "block 21925176" in caplog.text and "log 7" in caplog.text and skip.transaction_hash in caplog.text


NON_STANDARD = {
    # ethereum-etl decodes this one (all three words in data); we skip: nothing is indexed, so a
    # topic filter on from/to would miss it, and it is not the standard's shape
    "erc20 all in data": ([TRANSFER_TOPIC], word(1) + word(2) + word(3)),
    "erc20 two topics": ([TRANSFER_TOPIC, topic(FROM)], word(3)),
    "erc20 long data": ([TRANSFER_TOPIC, topic(FROM), topic(TO)], word(3) + word(4)),
    "erc20 empty data": ([TRANSFER_TOPIC, topic(FROM), topic(TO)], ""),
    "erc721 with data": ([TRANSFER_TOPIC, topic(FROM), topic(TO), word(3)], word(3)),
    "dirty address padding": ([TRANSFER_TOPIC, "0x" + "ff" * 12 + FROM[2:], topic(TO)], word(3)),
    "short topic": ([TRANSFER_TOPIC, FROM, topic(TO)], word(3)),
    "single 3 topics": ([TRANSFER_SINGLE_TOPIC, topic(OPERATOR), topic(FROM)], word(1) + word(2)),
    "single short data": ([TRANSFER_SINGLE_TOPIC, topic(OPERATOR), topic(FROM), topic(TO)], word(1)),
    "batch 3 topics": ([TRANSFER_BATCH_TOPIC, topic(OPERATOR), topic(FROM)], word(64) + word(96) + word(0)),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NON_STANDARD))
def test_non_standard_transfer_is_skipped(case: str) -> None:
    topics, data = NON_STANDARD[case]
    decoded = decode_transfers([make_log(topics, "0x" + data)])
    assert decoded.transfers == ()
    assert len(decoded.skipped) == 1 and decoded.skipped[0].reason


def test_other_events_are_neither_decoded_nor_skipped() -> None:
    approval = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
    approval_log = make_log([approval, topic(FROM), topic(TO)], "0x" + word(1))
    decoded = decode_transfers([approval_log, make_log([], "0x")])
    assert decoded.transfers == () and decoded.skipped == ()


transfer_topics = st.sampled_from([TRANSFER_TOPIC, TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC])
any_topic = st.one_of(st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()), st.just(topic(FROM)))
words = st.lists(
    st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([0x20, 0x40, 0x60, 0x80, 1, 2, 2**255])), max_size=8
)


@given(transfer_topics, st.lists(any_topic, max_size=3), words, st.binary(max_size=5))
def test_decoder_never_raises(topic0: str, topics: list[str], data_words: list[int], tail: bytes) -> None:
    data = "0x" + "".join(word(w) for w in data_words) + tail.hex()
    decoded = decode_transfers([make_log([topic0, *topics], data)])
    assert len(decoded.skipped) <= 1
    assert not (decoded.skipped and decoded.transfers)
    for t in decoded.transfers:
        assert 0 <= t.value < 2**256 and (t.token_id is None or 0 <= t.token_id < 2**256)


@given(st.lists(st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1)), max_size=20))
def test_transfer_batch_roundtrip(pairs: list[tuple[int, int]]) -> None:
    ids, values = [p[0] for p in pairs], [p[1] for p in pairs]
    decoded = decode_transfers([abi_batch(ids, values)])
    assert [(t.token_id, t.value) for t in decoded.transfers] == pairs
    assert [t.batch_index for t in decoded.transfers] == list(range(len(pairs)))
