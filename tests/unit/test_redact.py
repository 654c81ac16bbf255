"""Keys in node URLs never reach a log line: ``core.redact`` on the URL shapes hosted nodes use."""

from __future__ import annotations

import pytest

from core.redact import mask_url, mask_urls_in

pytestmark = pytest.mark.unit

INFURA_KEY = "0123456789abcdef0123456789abcdef"
ALCHEMY_KEY = "aB3dE-fGh_IjK9lMnOpQrStUvWxYz012"
QUICKNODE_TOKEN = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"https://mainnet.infura.io/v3/{INFURA_KEY}", "https://mainnet.infura.io/v3/***"),
        (f"wss://mainnet.infura.io/ws/v3/{INFURA_KEY}", "wss://mainnet.infura.io/ws/v3/***"),
        (f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}", "https://eth-mainnet.g.alchemy.com/v2/***"),
        (f"wss://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}", "wss://eth-mainnet.g.alchemy.com/v2/***"),
        ("https://v2-only.example/v2/short", "https://v2-only.example/v2/***"),
        (f"https://proud-lake.quiknode.pro/{QUICKNODE_TOKEN}/", "https://proud-lake.quiknode.pro/***/"),
        (f"wss://proud-lake.quiknode.pro/{QUICKNODE_TOKEN}", "wss://proud-lake.quiknode.pro/***"),
        (f"https://rpc.ankr.com/eth/{INFURA_KEY * 2}", "https://rpc.ankr.com/eth/***"),
        (
            "https://lb.drpc.org/ogrpc?network=ethereum&dkey=Abcdefghij",
            "https://lb.drpc.org/ogrpc?network=ethereum&dkey=***",
        ),
        (
            "https://node.example/rpc?apikey=s3cret&api_key=x&token=y",
            "https://node.example/rpc?apikey=***&api_key=***&token=***",
        ),
        ("https://alice:hunter2@node.example:8545/", "https://***@node.example:8545/"),
        ("https://alice@node.example/", "https://***@node.example/"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("ws://localhost:8546/ws", "ws://localhost:8546/ws"),
        ("https://ethereum-rpc.publicnode.com", "https://ethereum-rpc.publicnode.com"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_nothing_of_a_key_survives() -> None:
    for url in (
        f"wss://mainnet.infura.io/ws/v3/{INFURA_KEY}?x=1#frag",
        f"https://{QUICKNODE_TOKEN}.nodes.example/",
        f"https://user:{ALCHEMY_KEY}@eth.example/v1/{INFURA_KEY}",
    ):
        masked = mask_url(url)
        assert INFURA_KEY not in masked and QUICKNODE_TOKEN not in masked and ALCHEMY_KEY not in masked, (
            masked
        )


def test_unparsable_urls_are_masked_whole() -> None:
    assert mask_url("https://[not-an-ipv6/v3/" + INFURA_KEY) == "***"


def test_mask_urls_in_text() -> None:
    text = (
        f"InvalidStatus: wss://mainnet.infura.io/ws/v3/{INFURA_KEY} rejected (HTTP 401);"
        f" tried 'https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}' too, and http://127.0.0.1:8545"
    )
    assert mask_urls_in(text) == (
        "InvalidStatus: wss://mainnet.infura.io/ws/v3/*** rejected (HTTP 401);"
        " tried 'https://eth-mainnet.g.alchemy.com/v2/***' too, and http://127.0.0.1:8545"
    )


def test_a_bad_setting_with_a_key_is_reported_without_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dexnode`` with a websocket URL given as https:// (a common slip): one error line, no key."""
    from cli.main import main

    monkeypatch.setenv("DEXNODE_RPC_WS", f"https://mainnet.infura.io/v3/{INFURA_KEY}")
    monkeypatch.setenv("DEXNODE_RPC_HTTP", f"wss://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}")
    with pytest.raises(SystemExit) as exit_:
        main(["db", "status"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "DEXNODE_RPC_WS" in err and "DEXNODE_RPC_HTTP" in err and "https://mainnet.infura.io/v3/***" in err
    assert INFURA_KEY not in err and ALCHEMY_KEY not in err
