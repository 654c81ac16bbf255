"""A running devnet: anvil plus the manifest of what was deployed and generated on it.

Files in the devnet directory (``<data_dir>/devnet``): ``manifest.json`` (chain id, URLs, contracts,
tokens, pools, activity counts), ``devnet.json`` (pid and URLs of the running anvil) and ``anvil.log``."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.activity import ActivityGenerator
from devnet.anvil import (
    BLOCK_TIME,
    CHAIN_ID,
    GENESIS_TIMESTAMP,
    PRUNE_HISTORY,
    AnvilProcess,
    pid_is_anvil,
    start_anvil,
    stop_pid,
)
from devnet.artifacts import source_hash
from devnet.deployment import V2_VENUES, Deployment
from devnet.miner import Miner
from devnet.rpc import DevnetError, Rpc, is_alive
from devnet.setup import set_up

MANIFEST_FILE = "manifest.json"
STATE_FILE = "devnet.json"
LOG_FILE = "anvil.log"
VENUES = (*V2_VENUES, "uniswap-v3")


@dataclass(frozen=True)
class ReorgResult:
    depth: int
    common_ancestor: int  # the newest block number both branches share
    old_hashes: list[str]  # oldest first, blocks common_ancestor+1 .. head
    new_hashes: list[str]


def nest_counts(counts: Counter[str]) -> dict[str, Any]:
    """``{"swaps.uniswap-v2": 3}`` -> ``{"swaps": {"uniswap-v2": 3, ...}}`` with every venue present."""
    nested: dict[str, Any] = {
        "swaps": dict.fromkeys(VENUES, 0),
        "mints": dict.fromkeys(VENUES, 0),
        "burns": dict.fromkeys(VENUES, 0),
        "collects": {"uniswap-v3": 0},
        "pools_created": dict.fromkeys(VENUES, 0),
        "positions": dict.fromkeys(
            ("minted", "increased", "decreased", "collected", "burned", "transferred"), 0
        ),
    }
    for key, value in sorted(counts.items()):
        group, _, name = key.partition(".")
        if name:
            nested.setdefault(group, {})[name] = nested.get(group, {}).get(name, 0) + value
        else:
            nested[group] = value
    return nested


def add_counts(nested: dict[str, Any], counts: Counter[str]) -> dict[str, Any]:
    flat: Counter[str] = Counter()
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] += value
    flat.update(counts)
    return nest_counts(flat)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


class Devnet:
    """A devnet to drive from Python: ``rpc_http``, ``rpc_ws``, ``manifest``, ``activity()``, ``reorg()``."""

    def __init__(self, node: AnvilProcess | None, manifest: dict[str, Any], directory: Path | None) -> None:
        self.node = node
        self.manifest = manifest
        self.directory = directory
        self.rpc_http: str = manifest["rpc_http"]
        self.rpc_ws: str = manifest["rpc_ws"]
        self.rpc = Rpc(self.rpc_http)
        # First block with per-block state (eth_call at a block, reorg ancestor); > 0 after a state load.
        self.loaded_at = 0

    @property
    def deployment(self) -> Deployment:
        return Deployment.from_json(self.manifest)

    @property
    def pid(self) -> int | None:
        return self.node.pid if self.node else None

    # -- lifecycle ------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        directory: Path | None,
        *,
        port: int | None = None,
        seed: int = 1,
        blocks: int = 300,
        rate: float = 6.0,
        detach: bool = False,
        cache_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> Devnet:
        """Start anvil, deploy, generate ``blocks`` blocks of seeded activity and (with a directory)
        write the manifest and pid file there."""
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            running = read_state(directory)
            if running is not None and pid_is_anvil(running["pid"]):
                raise DevnetError(
                    f"a devnet is already running at {running['rpc_http']} (pid {running['pid']}): "
                    "run `dexnode devnet stop` first"
                )
        work = directory or (cache_dir or Path.cwd() / ".dexnode")
        node = start_anvil(port, log_path or work / LOG_FILE, detach=detach)
        try:
            started = time.monotonic()
            with Rpc(node.rpc_http) as rpc:
                manifest = generate(rpc, seed=seed, blocks=blocks, rate=rate, cache_dir=cache_dir or work)
            manifest |= {"rpc_http": node.rpc_http, "rpc_ws": node.rpc_ws}
            manifest["generation_seconds"] = round(time.monotonic() - started, 2)
            devnet = cls(node, manifest, directory)
            devnet.rpc.call("evm_setAutomine", True)  # transactions sent by users get mined
            if directory is not None:
                devnet.save(detached=detach)
        except BaseException:
            node.stop()
            raise
        return devnet

    @classmethod
    def from_state(
        cls, state: Path, manifest: dict[str, Any], log_path: Path, *, port: int | None = None
    ) -> Devnet:
        """A new anvil loaded from an ``anvil_dumpState`` file (history included), checked against the
        manifest it was generated with."""
        node = start_anvil(port, log_path, load_state=state)
        try:
            manifest = manifest | {"rpc_http": node.rpc_http, "rpc_ws": node.rpc_ws}
            devnet = cls(node, manifest, None)
            devnet.rpc.call("anvil_setBlockTimestampInterval", BLOCK_TIME)  # not part of the state
            devnet.verify_history()
            devnet.rpc.call("evm_setAutomine", True)
        except BaseException:
            node.stop()
            raise
        return devnet

    @classmethod
    def attach(cls, directory: Path) -> Devnet:
        """The devnet running from ``directory`` (started there, foreground or ``--detach``)."""
        state = read_state(directory)
        if state is None or not pid_is_anvil(state["pid"]) or not is_alive(state["rpc_http"]):
            raise DevnetError(f"no running devnet in {directory}: start one with `dexnode devnet start`")
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            raise DevnetError(
                f"the running devnet's manifest {directory / MANIFEST_FILE} is missing"
            ) from None
        node = AnvilProcess(pid=state["pid"], port=state["port"], log_path=Path(state["log"]))
        return cls(node, manifest, directory)

    def save(self, *, detached: bool = False) -> None:
        assert self.directory is not None and self.node is not None
        _write_json(self.directory / MANIFEST_FILE, self.manifest)
        _write_json(
            self.directory / STATE_FILE,
            {
                "pid": self.node.pid,
                "port": self.node.port,
                "rpc_http": self.rpc_http,
                "rpc_ws": self.rpc_ws,
                "chain_id": self.manifest["chain_id"],
                "log": str(self.node.log_path),
                "manifest": str(self.directory / MANIFEST_FILE),
                "detached": detached,
            },
        )

    def stop(self) -> None:
        self.rpc.close()
        if self.node is not None:
            self.node.stop()
        if self.directory is not None:
            state = read_state(self.directory)
            if state is not None and (self.node is None or state["pid"] == self.node.pid):
                (self.directory / STATE_FILE).unlink(missing_ok=True)

    # -- driving it -----------------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        block = self.rpc.call("eth_getBlockByNumber", "latest", False)
        return int(block["number"], 16), block["hash"]

    def block_hashes(self, first: int, last: int) -> list[str]:
        return fetch_hashes(self.rpc, list(range(first, last + 1)))

    def _default_seed(self) -> int:
        return int(self.manifest.get("seed", 0)) * 1_000_003 + self.head()[0]

    def activity(self, blocks: int, rate: float = 6.0, seed: int | None = None) -> dict[str, Any]:
        """Mine ``blocks`` more blocks of activity (~``rate`` transactions each); returns their counts."""
        if blocks < 1:
            raise DevnetError("activity needs at least one block")
        rng = random.Random(self._default_seed() if seed is None else seed)
        self.rpc.call("evm_setAutomine", False)
        try:
            miner = Miner(self.rpc, [self.manifest["deployer"], *self.manifest["accounts"]])
            ActivityGenerator(self.rpc, miner, self.deployment, rng).run(blocks, rate)
        finally:
            self.rpc.call("evm_setAutomine", True)
        self.manifest["counts"] = add_counts(self.manifest["counts"], miner.counts)
        self.record_head()
        return nest_counts(miner.counts)

    def reorg(self, depth: int, seed: int | None = None) -> ReorgResult:
        """Replace the newest ``depth`` blocks by a branch with other transactions (anvil_reorg): every
        new block gets an ETH transfer of a seeded amount and up to two swaps, so no hash survives."""
        head, _ = self.head()
        if not 1 <= depth <= head:
            raise DevnetError(f"reorg depth must be between 1 and the head ({head}), got {depth}")
        ancestor = head - depth
        oldest = max(self.loaded_at - 1, head - PRUNE_HISTORY + 1, 0)
        if ancestor < oldest:
            raise DevnetError(
                f"reorg depth {depth} reaches below block {oldest}, the oldest block with state here "
                f"(loaded from a state dump, or older than anvil keeps); the deepest reorg now is "
                f"{head - oldest}"
            )
        before = self.block_hashes(ancestor, head)
        rng = random.Random(self._default_seed() if seed is None else seed)
        miner = Miner(self.rpc, [self.manifest["deployer"], *self.manifest["accounts"]])
        gen = ActivityGenerator(self.rpc, miner, self.deployment, rng)
        pairs = []
        for offset in range(depth):
            for tx in [gen.eth_transfer()] + [gen.simple_swap() for _ in range(rng.randint(0, 2))]:
                request = miner.request(tx, 0)
                del request["nonce"]  # anvil numbers them from the common ancestor's state
                pairs.append([request, offset])
        self.rpc.call("anvil_reorg", depth, pairs)
        after = self.block_hashes(ancestor, head)
        if after[0] != before[0] or any(a == b for a, b in zip(after[1:], before[1:], strict=True)):
            raise DevnetError(f"anvil_reorg({depth}) did not replace exactly the newest {depth} blocks")
        result = ReorgResult(depth, ancestor, before[1:], after[1:])
        self.manifest.setdefault("reorgs", []).append(
            {
                "depth": depth,
                "common_ancestor": ancestor,
                "old_hashes": result.old_hashes,
                "new_hashes": result.new_hashes,
            }
        )
        self.record_head()
        return result

    def record_head(self) -> None:
        number, block_hash = self.head()
        self.manifest["head"] = {"number": number, "hash": block_hash}
        if self.directory is not None and self.node is not None:
            _write_json(self.directory / MANIFEST_FILE, self.manifest)

    def verify_history(self) -> None:
        """Raise unless the node holds the manifest's chain: head, checkpoint hashes, code and logs."""
        head = self.manifest["head"]
        checkpoints = {int(k): v for k, v in self.manifest.get("checkpoints", {}).items()}
        checkpoints[head["number"]] = head["hash"]
        if self.rpc.block_number() != head["number"]:
            raise DevnetError(f"loaded chain head is {self.rpc.block_number()}, expected {head['number']}")
        numbers = sorted(checkpoints)
        got = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        for number, block in zip(numbers, got, strict=True):
            if block is None or block["hash"] != checkpoints[number]:
                raise DevnetError(f"loaded chain differs at block {number}")
        if (
            self.rpc.call("eth_getCode", self.manifest["contracts"]["nonfungible_position_manager"], "latest")
            == "0x"
        ):
            raise DevnetError("loaded chain lost contract code")
        receipts = self.rpc.call("eth_getBlockReceipts", hex(self.manifest["setup_head"]))
        if not receipts:
            raise DevnetError("loaded chain lost its receipts")


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def stop_directory(directory: Path) -> int:
    """Stop the devnet whose pid file is in ``directory``; returns its pid."""
    state = read_state(directory)
    if state is None or not pid_is_anvil(state["pid"]):
        (directory / STATE_FILE).unlink(missing_ok=True)
        raise DevnetError(f"no running devnet in {directory}")
    stop_pid(state["pid"])
    (directory / STATE_FILE).unlink(missing_ok=True)
    return int(state["pid"])


def generate(rpc: Rpc, *, seed: int, blocks: int, rate: float, cache_dir: Path) -> dict[str, Any]:
    """Deploy and generate on a fresh anvil; returns the manifest (without URLs)."""
    rpc.call("anvil_setBlockTimestampInterval", BLOCK_TIME)
    accounts = [a.lower() for a in rpc.call("eth_accounts")]
    miner = Miner(rpc, accounts)
    dep = set_up(rpc, miner, accounts, cache_dir)
    setup_head = rpc.block_number()
    ActivityGenerator(rpc, miner, dep, random.Random(seed)).run(blocks, rate)
    head = rpc.call("eth_getBlockByNumber", "latest", False)
    number = int(head["number"], 16)
    step = max(1, number // 8)
    sample = list(range(0, number, step))
    checkpoints = dict(zip(map(str, sample), fetch_hashes(rpc, sample), strict=True))
    return {
        "version": 1,
        "chain_id": CHAIN_ID,
        "seed": seed,
        "blocks": blocks,
        "rate": rate,
        "source_hash": source_hash(),
        "genesis_timestamp": GENESIS_TIMESTAMP,
        "block_time": BLOCK_TIME,
        "setup_head": setup_head,
        "head": {"number": number, "hash": head["hash"]},
        "checkpoints": checkpoints,
        **dep.to_json(),
        "counts": nest_counts(miner.counts),
        "reorgs": [],
    }


def fetch_hashes(rpc: Rpc, numbers: list[int]) -> list[str]:
    return [b["hash"] for b in rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])]
