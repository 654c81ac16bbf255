"""Head hints from websocket messages: what counts as a head, what is malformed (logged and skipped)."""

from __future__ import annotations

import pytest

from core.settings import build_settings
from indexer.realtime.heads import MalformedHead, parse_head

pytestmark = pytest.mark.unit

HASH = "0x" + "ab" * 32


def test_a_newheads_notification_is_a_head() -> None:
    raw = (
        '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x1",'
        f'"result":{{"number":"0x1b4","hash":"{HASH.upper().replace("0X", "0x")}","parentHash":"0x00"}}}}}}'
    )
    head = parse_head(raw)
    assert head is not None and (head.number, head.hash) == (0x1B4, HASH)


def test_the_subscription_confirmation_is_not_a_head() -> None:
    assert parse_head(b'{"jsonrpc":"2.0","id":1,"result":"0x9cef478923ff08bf67fde6c64013158d"}') is None


def test_a_refused_subscription_is_a_connection_error() -> None:
    with pytest.raises(ConnectionRefusedError, match="eth_subscribe refused"):
        parse_head('{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no subscriptions"}}')


@pytest.mark.parametrize(
    "raw",
    [
        "not json {",
        "[1, 2]",
        "42",
        "null",
        '{"method":"eth_subscription","params":"x"}',
        '{"method":"eth_subscription","params":{"result":[]}}',
        '{"method":"eth_subscription","params":{"result":{"hash":"' + HASH + '"}}}',
        '{"method":"eth_subscription","params":{"result":{"number":"zz","hash":"' + HASH + '"}}}',
        '{"method":"eth_subscription","params":{"result":{"number":"0xzz"}}}',
        '{"method":"eth_subscription","params":{"result":{"number":436}}}',
        '{"method":"eth_subscription","params":{"result":{"number":"0x1","hash":"0x12"}}}',
        '{"method":"eth_subscription","params":{"result":{"number":"0x1","hash":7}}}',
    ],
)
def test_malformed_messages_raise_malformed_head(raw: str) -> None:
    with pytest.raises(MalformedHead):
        parse_head(raw)


@pytest.mark.parametrize(
    ("env", "ws"),
    [
        ({}, "ws://127.0.0.1:8545"),  # the local devnet: one port for both
        ({"DEXNODE_RPC_HTTP": "https://mainnet.infura.io/v3/k"}, None),  # only HTTP given: poll
        (
            {"DEXNODE_RPC_HTTP": "https://x.example", "DEXNODE_RPC_WS": "wss://x.example/ws"},
            "wss://x.example/ws",
        ),
        ({"DEXNODE_RPC_WS": ""}, "ws://127.0.0.1:8545"),
    ],
)
def test_the_websocket_url_of_the_settings(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], ws: str | None
) -> None:
    for name in ("DEXNODE_RPC_HTTP", "DEXNODE_RPC_WS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build_settings().heads_ws_url == ws
