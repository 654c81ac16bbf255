"""Kafka rules that need no broker: keys, reverts, the in-flight journal, settings, the consumer rule."""

from __future__ import annotations

import orjson
import pytest

from core.settings import build_settings, librdkafka_from_env
from records import Block, Log, Pool, Reorg, Revert, Token, TokenTransfer, Transaction, to_json
from records.batch import Batch
from sinks.kafka import KafkaOptions
from sinks.kafka_journal import InFlight, encode, last_complete
from sinks.kafka_keys import (
    BlockKeys,
    Topics,
    encode_record,
    keys_of_batch,
    merged_trade_messages,
    message_key,
    restore_messages,
)
from sinks.kafka_read import NetState, Received, resolve_topic

pytestmark = pytest.mark.unit

H1, H2 = "0x" + "1" * 64, "0x" + "2" * 64
TX = "0x" + "7" * 64


def block(number: int, block_hash: str) -> Block:
    return Block(number, block_hash, "0x" + "0" * 64, None, None, None, None, None, None, None, None,
                 None, None, None, 30_000_000, 21_000, None, 1_700_000_000, 1)  # fmt: skip


def log(block_hash: str, index: int) -> Log:
    return Log(5, block_hash, TX, 0, index, "0x" + "a" * 40, "0x", "0x" + "d" * 64, None, None, None)


def transfer(block_hash: str, index: int, batch_index: int) -> TokenTransfer:
    return TokenTransfer("0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40, 10**30, None, "erc20", None, 5,
                         block_hash, TX, 0, index, batch_index)  # fmt: skip


def pool(created: int | None) -> Pool:
    return Pool("0x" + "e" * 40, "uniswap", "2", "uniswap-v2", None, "0x" + "a" * 40, "0x" + "b" * 40, 3000,
                None, created, H1 if created else None, None, None)  # fmt: skip


def test_keys_are_the_natural_keys() -> None:
    assert message_key(block(5, H1)) == "5"
    assert message_key(log(H1, 3)) == f"{H1}:3"
    assert message_key(transfer(H1, 3, 2)) == f"{H1}:3:2"
    assert message_key(pool(5)) == "0x" + "e" * 40
    reorg = Reorg(4, H2, 2, ("0xa", "0xb"), ("0xc",), 0)
    assert message_key(reorg) == f"{H2}:0xb"


def test_every_message_names_its_block_in_headers() -> None:
    kind, key, value, headers = encode_record("logs", log(H1, 3), (9, H2))
    assert (kind, key, value) == ("logs", f"{H1}:3".encode(), to_json(log(H1, 3)))
    assert headers == [("block_hash", H1.encode())]
    token = Token("0x" + "a" * 40, "T", "Token", 18, "call")
    assert encode_record("tokens", token, (9, H2))[3] == [("block_hash", H2.encode())]


def test_a_batch_reverts_what_postgres_deletes_and_nothing_else() -> None:
    tx = Transaction(TX, 5, H1, 0, 0, 0, "0x" + "b" * 40, None, 0, 21_000, 1, "0x", None, None, None, None,
                     2, 1, None, 21_000, 21_000, 1, None)  # fmt: skip
    batch = Batch(
        "follow",
        [block(5, H1)],
        {
            Transaction: [tx],
            Log: [log(H1, 0), log(H1, 1)],
            TokenTransfer: [transfer(H1, 1, 0)],
            Pool: [pool(5), pool(None)],  # a pool no indexed block created stays in Postgres: never reverted
            Token: [Token("0x" + "a" * 40, "T", "Token", 18, "call")],
        },
    )
    (keys,) = keys_of_batch(batch)
    assert (keys.number, keys.hash) == (5, H1)
    assert keys.keys == {
        "blocks": ["5"],
        "transactions": [TX],
        "logs": [f"{H1}:0", f"{H1}:1"],
        "token_transfers": [f"{H1}:1:0"],
        "pools": ["0x" + "e" * 40],
    }
    reverts = list(keys.reverts())
    assert reverts[-1] == ("blocks", Revert(5, H1, "block", "5"))  # the block after what it contained
    assert ("logs", Revert(5, H1, "log", f"{H1}:1")) in reverts and len(reverts) == 6


def test_the_journal_gives_the_last_complete_entry_even_after_a_torn_write() -> None:
    many = [
        BlockKeys(n, f"0x{n:064x}", {"logs": [f"0x{n:064x}:{i}" for i in range(3000)]}) for n in range(10)
    ]
    first = encode(InFlight("follow", (9, f"0x{9:064x}"), many, None, "a"))
    assert len(first) > 1 and all(len(part) < 1_000_000 for part in first)
    entry = last_complete(first)
    assert entry is not None and entry.blocks == many and entry.after == (9, f"0x{9:064x}")
    second = encode(InFlight("follow", (10, H2), [BlockKeys(10, H2, {"blocks": ["10"]})], ("k", 9, H1), "b"))
    assert last_complete(first + second) == InFlight(
        "follow", (10, H2), [BlockKeys(10, H2, {"blocks": ["10"]})], ("k", 9, H1), "b"
    )
    torn = first + encode(InFlight("follow", (11, H1), many, None, "c"))[:1]  # died while journaling
    assert last_complete(torn) == entry
    assert last_complete(first[1:]) is None  # the window began mid-entry: nothing complete in it


def test_the_journal_keeps_what_a_reorg_batch_reverted_across_parts() -> None:
    orphaned = [
        BlockKeys(n, f"0x{n:064x}", {"logs": [f"0x{n:064x}:{i}" for i in range(3000)]}) for n in (4, 5)
    ]
    new = [BlockKeys(n, f"0x{n + 100:064x}", {"blocks": [str(n)]}) for n in (4, 5, 6)]
    entry = InFlight("follow", (6, new[-1].hash), new, ("k", 3, H1), "r", orphaned=orphaned)
    parts = encode(entry)
    assert len(parts) > 1 and all(len(part) < 1_000_000 for part in parts)
    assert last_complete(parts) == entry
    older = encode(InFlight("follow", (3, H1), [BlockKeys(3, H1, {"blocks": ["3"]})], None, "o"))
    assert last_complete(older + parts[:-1]) == InFlight(  # torn: the entry before it, which had none
        "follow", (3, H1), [BlockKeys(3, H1, {"blocks": ["3"]})], None, "o", orphaned=[]
    )


def test_a_restore_brings_back_exactly_the_reverted_records_postgres_still_holds() -> None:
    token = Token("0x" + "a" * 40, "T", "Token", 18, "call")  # never reverted, so never restored
    stored = Batch("follow", [block(5, H1)], {Log: [log(H1, 0), log(H1, 1)], Token: [token]})
    reverted = [
        BlockKeys(5, H1, {"blocks": ["5"], "logs": [f"{H1}:1"]}),  # log 0 was not reverted
        BlockKeys(5, H2, {"blocks": ["5"]}),  # another block 5: Postgres does not hold it
    ]
    got = restore_messages(Topics("p."), stored, reverted)
    assert got == [
        ("p.head.blocks", b"5", to_json(block(5, H1)), [("block_hash", H1.encode())], -1),
        ("p.head.logs", f"{H1}:1".encode(), to_json(log(H1, 1)), [("block_hash", H1.encode())], -1),
    ]


def test_librdkafka_settings_come_from_dexnode_kafka_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DEXNODE_KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "DEXNODE_KAFKA_TOPIC_PREFIX": "main.",
        "DEXNODE_KAFKA_SASL_MECHANISM": "PLAIN",
        "DEXNODE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "DEXNODE_KAFKA_MESSAGE_TIMEOUT_MS": "60000",
        "DEXNODE_KAFKA_SSL_ENGINE__ID": "x",
        "DEXNODE_RPC_HTTP": "http://node",
    }
    librdkafka = {
        "sasl.mechanism": "PLAIN",
        "security.protocol": "SASL_SSL",
        "message.timeout.ms": "60000",
        "ssl.engine_id": "x",
    }
    assert librdkafka_from_env(env) == librdkafka
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from_env = build_settings()  # the way main() builds it: the variables reach Settings, and Kafka
    options = KafkaOptions.from_settings(from_env)
    assert options is not None and options.topic_prefix == "main." and options.extra == librdkafka
    # a --kafka-option flag wins over the variable of the same name, the others stay
    flagged = from_env.with_overrides(librdkafka={"sasl.mechanism": "SCRAM-SHA-512", "client.id": "me"})
    assert flagged.librdkafka == {**librdkafka, "sasl.mechanism": "SCRAM-SHA-512", "client.id": "me"}
    monkeypatch.delenv("DEXNODE_KAFKA_TOPIC_PREFIX")
    default = KafkaOptions.from_settings(build_settings(chain="base"))
    assert default is not None and default.topic_prefix == "base."
    monkeypatch.delenv("DEXNODE_KAFKA_BOOTSTRAP_SERVERS")
    assert KafkaOptions.from_settings(build_settings()) is None


def test_delivery_guarantees_cannot_be_configured_away() -> None:
    options = KafkaOptions(
        "b:9092", "x.", 12, {"acks": "1", "enable.idempotence": "false", "linger.ms": "50"}
    )
    config = options.producer_config()
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["linger.ms"] == "50" and config["compression.type"] == "lz4"


def received(key: str, doc: object, block_hash: str, offset: int, topic: str = "x.head.logs") -> Received:
    value = orjson.dumps(doc)
    return Received(topic, 0, offset, key, block_hash, 5, value, orjson.loads(value))


def test_a_consumer_undoes_a_record_only_with_a_revert_of_its_own_block() -> None:
    state = NetState()
    record = {"type": "log", "version": 1, "data": {"log_index": 1}}

    def revert(block_hash: str) -> dict[str, object]:
        return {
            "type": "revert",
            "version": 1,
            "data": {"block_hash": block_hash, "key": "k", "block_number": 5},
        }

    state.apply(received("k", record, H1, 0))
    state.apply(received("k", record, H1, 1))  # a duplicate after a restart
    assert len(state.records) == 1
    state.apply(received("k", revert(H2), H2, 2))  # a revert of another block with that key
    assert len(state.records) == 1
    state.apply(received("k", revert(H1), H1, 3))
    assert state.records == {} and state.reverted == 1
    state.apply(received("k", revert(H1), H1, 4))  # a repeated revert is a no-op
    assert state.reverted == 1


def test_short_topic_names_get_the_chain_prefix() -> None:
    assert resolve_topic("head.blocks", "ethereum.") == "ethereum.head.blocks"
    assert resolve_topic("ethereum.head.blocks", "ethereum.") == "ethereum.head.blocks"
    assert resolve_topic("other.topic", "ethereum.") == "other.topic"


def test_a_dex_trade_on_the_merged_trades_topic_is_keyed_by_pool_in_the_cex_trades_shape() -> None:
    from decimal import Decimal

    from records import DexTrade

    pool_address, weth, usdc = "0x" + "e" * 40, "0x" + "c" * 40, "0x" + "a" * 40
    trade = DexTrade(block_number=7, block_time=1_700_000_012, block_hash=H1, transaction_hash=TX,
                     transaction_index=0, log_index=3, protocol="uniswap", version="2", exchange="uniswap-v2",
                     pool_address=pool_address, taker="0x" + "d" * 40, maker=pool_address,
                     token_bought_address=weth, token_sold_address=usdc, token_bought_symbol="WETH",
                     token_sold_symbol="USDC", amount_bought_raw=5 * 10**17, amount_sold_raw=1_500_000_000,
                     amount_bought=Decimal("0.5"), amount_sold=Decimal("1500"), price=Decimal("3000"),
                     tx_from="0x" + "d" * 40, tx_to=None)  # fmt: skip
    batch = Batch("backfill", [block(7, H1)], {DexTrade: [trade]})
    [(topic, key, value, headers, partition)] = merged_trade_messages(batch, "trades")
    assert (topic, key, headers, partition) == (
        "trades",
        pool_address.encode(),
        [("block_hash", H1.encode())],
        -1,
    )
    # USDC (0xaa..) is token0, the base: the taker sold 1500 of it for 0.5 WETH, at 1/3000 WETH (38 digits)
    assert orjson.loads(value) == {
        "venue": "uniswap-v2", "symbol": "USDC-WETH", "pool": pool_address, "price": "0.000" + "3" * 38,
        "size": "1500", "side": "sell", "time": 1_700_000_012_000, "trade_id": f"{TX}:3", "block_number": 7,
    }  # fmt: skip


def test_dex_and_cex_trades_meet_on_one_merged_topic_with_the_default_and_a_set_prefix() -> None:
    from decimal import Decimal

    from cex.kafka import messages as cex_messages
    from records import Trade

    cex = Trade("binance", "ETH-USDT", Decimal("3000"), Decimal("1"), "buy", "9", None, None, 1, 1000)
    for prefix in (None, "mainnet."):
        settings = build_settings(kafka_bootstrap_servers="localhost:9092", kafka_topic_prefix=prefix)
        options = KafkaOptions.from_settings(settings)
        assert options is not None
        topics = Topics(options.topic_prefix, options.merged_prefix)
        # the CEX side's prefix, as the cex command builds it (cli.cex)
        cex_topics = {m[0] for m in cex_messages([cex], settings.kafka_topic_prefix or "")}
        assert topics.merged_trades() in cex_topics
        assert topics.merged_trades() in topics.all()
    assert Topics("ethereum.", "").merged_trades() == "trades"
    assert Topics("eth.").merged_trades() == "eth.trades"
