"""The devnet, read back over JSON-RPC: what the manifest promises is on chain."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from websockets.sync.client import connect

from devnet import Devnet, DevnetError
from devnet.abi import (
    NPM_COLLECT,
    NPM_DECREASE,
    NPM_INCREASE,
    TRANSFER,
    V2_BURN,
    V2_MINT,
    V2_SWAP,
    V3_BURN,
    V3_COLLECT,
    V3_MINT,
    V3_SWAP,
    calldata,
    decode_result,
)
from devnet.cli import app
from devnet.rpc import Rpc
from tests.devnet_fixture import DevnetFactory


def topic_address(topic: str) -> str:
    """The address in an indexed address topic."""
    return "0x" + topic[-40:].lower()


pytestmark = pytest.mark.integration

ZERO = "0x" + "00" * 20


def logs(rpc: Rpc, address: str | list[str], topic0: str, to_block: str = "latest") -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": to_block, "address": address, "topics": [topic0]}
    )
    return result


def call(rpc: Rpc, to: str, signature: str, *args: Any, returns: str = "address") -> Any:
    return decode_result([returns], rpc.eth_call(to, calldata(signature, *args)))[0]


def all_receipts(rpc: Rpc) -> list[list[dict[str, Any]]]:
    head = rpc.block_number()
    return rpc.batch([("eth_getBlockReceipts", [hex(n)]) for n in range(1, head + 1)], chunk=100)


def test_pools_are_registered_on_their_factories(devnet: Devnet) -> None:
    pools = devnet.manifest["pools"]
    assert {(p["label"], p["version"]) for p in pools} == {
        ("uniswap-v2", 2),
        ("sushiswap", 2),
        ("uniswap-v3", 3),
    }
    assert {p["fee"] for p in pools if p["version"] == 3} >= {500, 3000}
    uni, sushi = (devnet.manifest["contracts"][f"{k}_factory"] for k in ("uniswap_v2", "sushiswap"))
    assert uni != sushi
    for pool in pools:
        t0, t1 = pool["token0"], pool["token1"]
        if pool["version"] == 2:
            found = call(devnet.rpc, pool["factory"], "getPair(address,address)", t1, t0)
        else:
            found = call(devnet.rpc, pool["factory"], "getPool(address,address,uint24)", t1, t0, pool["fee"])
        assert found.lower() == pool["address"]
        assert call(devnet.rpc, pool["address"], "token0()").lower() == t0
        assert call(devnet.rpc, pool["address"], "factory()").lower() == pool["factory"]


def test_routers_find_their_pairs(devnet: Devnet) -> None:
    """Router02 locates pairs by CREATE2 with its embedded init-code hash: quoting proves it agrees."""
    tokens = {t["symbol"]: t["address"] for t in devnet.manifest["tokens"]}
    for venue in ("uniswap_v2", "sushiswap"):
        router = devnet.manifest["contracts"][f"{venue}_router02"]
        data = calldata("getAmountsOut(uint256,address[])", 10**18, [tokens["WETH"], tokens["USDC"]])
        amounts = decode_result(["uint256[]"], devnet.rpc.eth_call(router, data))[0]
        assert 1_000 * 10**6 < amounts[1] < 10_000 * 10**6  # one WETH is worth thousands of USDC


def test_token_decimals_on_chain(devnet: Devnet) -> None:
    tokens = devnet.manifest["tokens"]
    for token in tokens:
        assert call(devnet.rpc, token["address"], "decimals()", returns="uint8") == token["decimals"]
        assert call(devnet.rpc, token["address"], "symbol()", returns="string") == token["symbol"]
    assert {t["decimals"] for t in tokens} == {18, 6, 8, 0}


def test_pool_events_match_manifest_counts(devnet: Devnet) -> None:
    counts = devnet.manifest["counts"]
    by_label: dict[str, list[str]] = defaultdict(list)
    for pool in devnet.manifest["pools"]:
        by_label[pool["label"]].append(pool["address"])
    for label, addresses in by_label.items():
        swap, mint, burn = (
            (V3_SWAP, V3_MINT, V3_BURN) if label == "uniswap-v3" else (V2_SWAP, V2_MINT, V2_BURN)
        )
        assert len(logs(devnet.rpc, addresses, swap)) == counts["swaps"][label], label
        assert len(logs(devnet.rpc, addresses, mint)) == counts["mints"][label], label
        assert len(logs(devnet.rpc, addresses, burn)) == counts["burns"][label], label
        assert counts["swaps"][label] > 100
    assert len(logs(devnet.rpc, by_label["uniswap-v3"], V3_COLLECT)) == counts["collects"]["uniswap-v3"] > 0
    assert sum(counts["swaps"].values()) >= 500
    npm = devnet.manifest["contracts"]["nonfungible_position_manager"]
    positions = counts["positions"]
    assert len(logs(devnet.rpc, npm, NPM_INCREASE)) == positions["minted"] + positions["increased"]
    assert len(logs(devnet.rpc, npm, NPM_DECREASE)) == positions["decreased"] > 0
    assert len(logs(devnet.rpc, npm, NPM_COLLECT)) == positions["collected"] > 0


def test_position_nfts_are_minted_moved_and_burned(devnet: Devnet) -> None:
    npm = devnet.manifest["contracts"]["nonfungible_position_manager"]
    transfers = logs(devnet.rpc, npm, TRANSFER)
    assert all(len(t["topics"]) == 4 for t in transfers)  # ERC-721: token id indexed, empty data
    kinds = Counter(
        "mint"
        if topic_address(t["topics"][1]) == ZERO
        else "burn"
        if topic_address(t["topics"][2]) == ZERO
        else "move"
        for t in transfers
    )
    positions = devnet.manifest["counts"]["positions"]
    assert kinds == {
        "mint": positions["minted"],
        "burn": positions["burned"],
        "move": positions["transferred"],
    }
    assert min(kinds.values()) > 0
    assert len(transfers) == devnet.manifest["counts"]["erc721_transfers"]


def test_empty_blocks_and_reverted_transactions(devnet: Devnet) -> None:
    receipts = all_receipts(devnet.rpc)
    counts = devnet.manifest["counts"]
    assert sum(1 for block in receipts if not block) == counts["empty_blocks"] > 10
    reverted = [r for block in receipts for r in block if r["status"] == "0x0"]
    assert len(reverted) == counts["reverted_transactions"] == counts["planned_reverts"] > 5
    assert "unexpected_reverts" not in counts
    assert sum(len(block) for block in receipts) == counts["transactions"]
    types = Counter(r["type"] for block in receipts for r in block)
    assert types["0x0"] > 0 and types["0x2"] > 0  # legacy and EIP-1559


def test_fee_on_transfer_token_delivers_less_than_sent(devnet: Devnet) -> None:
    dtt = next(t for t in devnet.manifest["tokens"] if t["fee_on_transfer"])
    transfers = logs(devnet.rpc, dtt["address"], TRANSFER)
    by_tx: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for log in transfers:
        by_tx[log["transactionHash"]].append(log)
    checked = 0
    for tx_logs in by_tx.values():
        # Each transfer is a burn of 1% (to the zero address) followed by the delivery of the rest.
        for burn, delivery in pairwise(tx_logs):
            if topic_address(burn["topics"][2]) != ZERO or burn["topics"][1] != delivery["topics"][1]:
                continue
            if topic_address(delivery["topics"][2]) == ZERO:
                continue
            burnt, received = int(burn["data"], 16), int(delivery["data"], 16)
            sent = burnt + received
            assert burnt == sent // 100 and received < sent
            checked += 1
    assert checked >= devnet.manifest["counts"]["fee_on_transfer_swaps"] > 0


@pytest.mark.slow
def test_cached_devnet_equals_a_fresh_generation(devnet: Devnet, devnet_factory: DevnetFactory) -> None:
    """Same seed, same chain: the cached session devnet and a generation from scratch agree on every
    block hash (and a different seed gives a different chain)."""
    fresh = devnet_factory(cached=False, headroom=0)
    head = fresh.manifest["head"]["number"]
    assert fresh.block_hashes(0, head) == devnet.block_hashes(0, head)
    other = devnet_factory(seed=2, blocks=20, cached=False, headroom=0)
    assert other.block_hashes(12, 20) != fresh.block_hashes(12, 20)


def test_same_seed_gives_identical_block_hashes(devnet_factory: DevnetFactory) -> None:
    first = devnet_factory(seed=5, blocks=40, cached=False, headroom=0)
    second = devnet_factory(seed=5, blocks=40, cached=False, headroom=0)
    head = first.head()[0]
    assert head == second.head()[0] > 40
    assert first.block_hashes(0, head) == second.block_hashes(0, head)


def test_reorg_replaces_exactly_the_newest_blocks(fresh_devnet: Devnet) -> None:
    rpc = fresh_devnet.rpc
    head = rpc.block_number()
    before = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(head - 3, head + 1)])
    with connect(fresh_devnet.rpc_ws, open_timeout=5) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
        assert "result" in json.loads(ws.recv(timeout=5))
        result = fresh_devnet.reorg(3)
        heads = [json.loads(ws.recv(timeout=5))["params"]["result"] for _ in range(3)]
    after = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(head - 3, head + 1)])
    assert rpc.block_number() == head
    assert after[0]["hash"] == before[0]["hash"]  # the common ancestor survives
    assert [b["hash"] for b in before[1:]] == result.old_hashes
    assert [b["hash"] for b in after[1:]] == result.new_hashes
    assert all(old != new for old, new in zip(result.old_hashes, result.new_hashes, strict=True))
    assert after[1]["parentHash"] == before[0]["hash"]
    old_txs = {tx for b in before[1:] for tx in b["transactions"]}
    new_txs = {tx for b in after[1:] for tx in b["transactions"]}
    assert all(b["transactions"] for b in after[1:]) and not old_txs & new_txs
    # websocket subscribers are told about the new branch: the same numbers with the new hashes
    assert [(int(h["number"], 16), h["hash"]) for h in heads] == [
        (head - 2 + i, new) for i, new in enumerate(result.new_hashes)
    ]
    fresh_devnet.activity(2, rate=3)  # the chain goes on from the new branch
    assert rpc.block_number() == head + 2


def test_cli_detach_activity_reorg_stop(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    started = runner.invoke(app, ["start", "--port", "0", "--blocks", "12", "--detach", *data])
    try:
        assert started.exit_code == 0, started.output
        state = json.loads((tmp_path / "devnet" / "devnet.json").read_text())
        manifest = json.loads((tmp_path / "devnet" / "manifest.json").read_text())
        assert manifest["rpc_http"] == state["rpc_http"] and manifest["chain_id"] == 31337
        with Rpc(state["rpc_http"]) as rpc:
            head = rpc.block_number()
            moved = runner.invoke(app, ["activity", "--blocks", "4", "--rate", "3", *data])
            assert moved.exit_code == 0, moved.output
            assert rpc.block_number() == head + 4
            old = rpc.call("eth_getBlockByNumber", "latest", False)["hash"]
            reorged = runner.invoke(app, ["reorg", "--depth", "2", *data])
            assert reorged.exit_code == 0, reorged.output
            new = rpc.call("eth_getBlockByNumber", "latest", False)["hash"]
            assert new != old and f"{old} -> {new}" in reorged.output
    finally:
        stopped = runner.invoke(app, ["stop", *data])
    assert stopped.exit_code == 0, stopped.output
    assert not (tmp_path / "devnet" / "devnet.json").exists()
    again = runner.invoke(app, ["stop", *data])
    assert again.exit_code == 1 and "no running devnet" in again.stderr
    assert "Traceback" not in again.output


def test_cli_errors_are_one_line(tmp_path: Path, devnet: Devnet) -> None:
    runner = CliRunner()
    port = devnet.rpc_http.rsplit(":", 1)[1]
    taken = runner.invoke(app, ["start", "--port", port, "--data-dir", str(tmp_path)])
    assert taken.exit_code == 1 and f"port {port}" in taken.stderr and len(taken.stderr.splitlines()) == 1
    missing = runner.invoke(app, ["reorg", "--depth", "1", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "no running devnet" in missing.stderr
    for command in ("start", "activity", "reorg", "stop"):
        shown = runner.invoke(app, [command, "--help"])
        assert shown.exit_code == 0 and "--data-dir" in shown.output


def test_reorg_deeper_than_the_loaded_state_is_refused(fresh_devnet: Devnet) -> None:
    """A devnet loaded from the cache has per-block state only from the load on (plus headroom)."""
    head = fresh_devnet.head()[0]
    deepest = head - (fresh_devnet.loaded_at - 1)
    with pytest.raises(DevnetError, match=f"deepest reorg now is {deepest}"):
        fresh_devnet.reorg(deepest + 1)
    assert fresh_devnet.head()[0] == head
    result = fresh_devnet.reorg(deepest)
    assert result.common_ancestor == fresh_devnet.loaded_at - 1 and len(result.new_hashes) == deepest
