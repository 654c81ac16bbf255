"""Swap-log decoding throughput: dexnode's fast decoders and full record path against web3.py.

Input (the same every run): every real Uniswap v2/v3 Swap log in ``../shared/fixtures`` (the three
demeter-fetch v3 pools, the ethereum-etl blocks 17173049–50, helios block 21925176) repeated in order to
100k logs; every real Uniswap v4 Swap at hand (``tests/data/uniswap-v4`` and helios block 21925176's two)
and the five real Balancer v2 Vault Swaps of ``tests/data/balancer-v2``, each repeated to 100k logs.

Cases, each a full pass over its logs:
- ``decode v2/v3``: ``decoders.uniswap.FAST_DECODERS[topic0](log)`` → decoded event tuple;
- ``v2/v3``, ``v4``, ``balancer``: ``Registry.decode(logs, ctx)`` → one ``DexTrade`` per log (pool
  lookup, sides, exact Decimal amounts, price, record construction), every pool and token known; each
  with CPython's default GC and with the node's (``… gc``: heap frozen, thresholds 50_000/20/50, as
  ``indexer.pipeline.pipeline.fewer_collections`` runs follow and backfill);
- web3.py: ``contract.events.Swap().process_log(log)`` on a 5,000-log sample in web3's input form.

How it is measured (the machine is shared, so wall time lies):
- CPU time of the measuring process (``time.process_time``), not wall time;
- rounds interleaved: each round runs every case once, in a rotated order, so load that comes and goes
  hits every case alike; the median over rounds is the figure, the min–max range is printed beside it;
- ``--before REV`` runs the same rounds on git revision REV's ``decoders``/``protocols``/``records``/
  ``core`` (extracted to a temporary directory) in a second worker process, alternating with this
  tree's worker round by round, and prints after/before as the median of the per-round ratios;
- ``--instructions`` counts instructions per log under ``valgrind --tool=callgrind`` on a fixed small
  input (2,000 logs per case, after a warm-up pass): callgrind dumps its counters at each
  ``os.getppid()`` marker between cases, so start-up and input building are not counted. Instruction
  counts do not move with the machine's load; with ``--before`` both trees are counted.

Targets: decode ≥ 20× web3.py and ≥ 200k logs/s; every record path ≥ 200k logs/s (issues 11 and 14).
Run: ``make bench-decode`` (this tree only) or ``.venv/bin/python bench/decode.py --before HEAD~5
--instructions``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import csv
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

if "--worker" not in sys.argv:  # the peer: only the main process imports web3.py
    from hexbytes import HexBytes
    from web3 import Web3

from decoders.uniswap import FAST_DECODERS
from protocols.base import Context
from protocols.registry import default_registry
from records import Log, Pool, Token

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
TARGET_LOGS = 100_000
WEB3_SAMPLE = 5_000
RATIO_TARGET = 20.0
RATE_TARGET = 200_000.0
ROUNDS = 7
CALLGRIND_LOGS = 2_000  # per case: a fixed small input (instructions scale with it, not with load)
ROOT = Path(__file__).resolve().parents[1]
CODE = ("decoders", "protocols", "records", "core")  # what --before takes from the old revision

V2_ABI = {
    "anonymous": False,
    "name": "Swap",
    "type": "event",
    "inputs": [
        {"indexed": True, "name": "sender", "type": "address"},
        {"indexed": False, "name": "amount0In", "type": "uint256"},
        {"indexed": False, "name": "amount1In", "type": "uint256"},
        {"indexed": False, "name": "amount0Out", "type": "uint256"},
        {"indexed": False, "name": "amount1Out", "type": "uint256"},
        {"indexed": True, "name": "to", "type": "address"},
    ],
}
V3_ABI = {
    "anonymous": False,
    "name": "Swap",
    "type": "event",
    "inputs": [
        {"indexed": True, "name": "sender", "type": "address"},
        {"indexed": True, "name": "recipient", "type": "address"},
        {"indexed": False, "name": "amount0", "type": "int256"},
        {"indexed": False, "name": "amount1", "type": "int256"},
        {"indexed": False, "name": "sqrtPriceX96", "type": "uint160"},
        {"indexed": False, "name": "liquidity", "type": "uint128"},
        {"indexed": False, "name": "tick", "type": "int24"},
    ],
}


ETL_KEYS = (
    "block_number",
    "block_hash",
    "transaction_hash",
    "transaction_index",
    "log_index",
    "address",
    "data",
)
RPC_KEYS = ("blockNumber", "blockHash", "transactionHash", "transactionIndex", "logIndex", "address", "data")


def _log(values: Sequence[Any], topics: Sequence[str]) -> Log:
    """Log from (block number, block hash, tx hash, tx index, log index, address, data) and topics."""
    number, block_hash, tx, index, position, address, data = values
    padded = [*topics, None, None, None, None]
    return Log(int(number), block_hash, tx, int(index), int(position), address, data, *padded[:4])


def real_swaps() -> list[Log]:
    swaps: list[Log] = []
    for raw in sorted((FIXTURES / "uniswap" / "v3-demeter-fetch").glob("*.raw.csv")):
        address = raw.name.split("-")[1]
        with open(raw, newline="") as f:
            for row in csv.DictReader(f):
                number = int(row["block_number"])
                tx_keys = ("transaction_hash", "transaction_index", "log_index")
                values = [number, f"0x{number:064x}", *(row[k] for k in tx_keys), address, row["data"]]
                swaps.append(_log(values, ast.literal_eval(row["topics"])))
    etl = FIXTURES / "ethereum-etl" / "test_stream" / "blocks_17173049_17173050" / "expected_logs.json"
    for line in etl.read_text().splitlines():
        d = json.loads(line)
        swaps.append(_log([d[k] for k in ETL_KEYS], d["topics"]))
    receipts = json.loads((FIXTURES / "mainnet-block-21925176-helios" / "receipts.json").read_text())
    for d in (d for receipt in receipts for d in receipt["logs"]):
        quantities: list[Any] = [d[k] for k in RPC_KEYS]
        for i in (0, 3, 4):  # block number, transaction index, log index: hex quantities
            quantities[i] = int(quantities[i], 16)
        swaps.append(_log(quantities, d["topics"]))
    return [log for log in swaps if log.topic0 in (V2_SWAP, V3_SWAP)]


def context(logs: Sequence[Log]) -> Context:
    """Every pool known (two stand-in tokens with 18 and 6 decimals), so every log becomes a DexTrade."""
    token0, token1 = "0x" + "0a" * 20, "0x" + "0b" * 20
    none = (None,) * 6  # fee, tick spacing, created block/hash/tx/log
    pools = {
        log.address: Pool(
            log.address, "uniswap", "2" if log.topic0 == V2_SWAP else "3", "x", None, token0, token1, *none
        )
        for log in logs
    }
    tokens = {token0: Token(token0, "A", "A", 18, "call"), token1: Token(token1, "B", "B", 6, "call")}
    times = {log.block_hash: 0 for log in logs}
    return Context(pools, tokens, times, {log.transaction_hash: ("0x", None) for log in logs})


DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
V4_SWAP = "0x40e9cecb9f5f1f1c5b9c97dec2917b7ee92e57ba5563708daca94dd84ad7112f"
BALANCER_SWAP = "0x2170c741c41531aec20e7c107c24eecfdd15e69c9bb0a8dd37b1840b9e0b207b"
POOL_MANAGER = "0x000000000004444c5dc75cb358380d2e3de08a90"
VAULT = "0xba12222222228d8ba445958a75a0704d566bf2c8"


def v4_swaps() -> list[Log]:
    """Every real Uniswap v4 Swap at hand: ``tests/data/uniswap-v4`` and helios block 21925176's two."""
    recorded = json.loads((DATA / "uniswap-v4" / "mainnet_swap_logs.json").read_text())
    receipts = json.loads((FIXTURES / "mainnet-block-21925176-helios" / "receipts.json").read_text())
    found = []
    for d in [*recorded, *(d for receipt in receipts for d in receipt["logs"])]:
        values: list[Any] = [d[k] for k in RPC_KEYS]
        for i in (0, 3, 4):
            values[i] = int(values[i], 16)
        found.append(_log(values, d["topics"]))
    return [log for log in found if log.topic0 == V4_SWAP]


def balancer_swaps() -> list[Log]:
    """The five real Balancer v2 Vault Swaps of ``tests/data/balancer-v2`` (stored base64 with bare
    token addresses, as recorded; turned back into the JSON-RPC form here)."""
    logs = []
    for i, entry in enumerate(json.loads((DATA / "balancer-v2" / "mainnet_swap_logs.json").read_text())):
        raw = entry["log"]
        topics = [t if len(t) == 66 else "0x" + t[2:].rjust(64, "0") for t in raw["topics"]]
        data = "0x" + base64.b64decode(raw["data"]).hex()
        logs.append(
            _log([i, "0x" + "11" * 32, entry["transaction"]["hash"], 0, i, raw["address"], data], topics)
        )
    return logs


def singleton_context(logs: Sequence[Log], contract: str, version: str, exchange: str) -> Context:
    """Every pool (keyed by topic1) known with two stand-in tokens of 18 and 6 decimals."""
    token0, token1 = "0x" + "0a" * 20, "0x" + "0b" * 20
    none = (None,) * 6  # fee, tick spacing, created block/hash/tx/log
    pools = {
        str(log.topic1): Pool(
            str(log.topic1),
            "x",
            version,
            exchange,
            contract,
            token0,
            token1,
            *none,
            contract,
            (token0, token1),
        )
        for log in logs
    }
    tokens = {token0: Token(token0, "A", "A", 18, "call"), token1: Token(token1, "B", "B", 6, "call")}
    times = {log.block_hash: 0 for log in logs}
    return Context(pools, tokens, times, {log.transaction_hash: ("0x", None) for log in logs})


def web3_form(log: Log) -> dict[str, Any]:
    """The log as web3.py's ``get_logs`` returns it (checksummed address, HexBytes)."""
    return {
        "address": Web3.to_checksum_address(log.address),
        "topics": [HexBytes(t) for t in (log.topic0, log.topic1, log.topic2, log.topic3) if t is not None],
        "data": HexBytes(log.data),
        "blockNumber": log.block_number,
        "blockHash": HexBytes(log.block_hash),
        "transactionHash": HexBytes(log.transaction_hash),
        "transactionIndex": log.transaction_index,
        "logIndex": log.log_index,
    }


def repeat(found: Sequence[Log], count: int) -> list[Log]:
    return (list(found) * (count // len(found) + 1))[:count]


Run = Callable[[], Any]


def cases(count: int) -> dict[str, Run]:
    """Case name → one pass over its logs (each log of each case checked to become one record)."""
    registry = default_registry()
    v23 = repeat(real_swaps(), count)
    singles = {
        "v4": (repeat(v4_swaps(), count), POOL_MANAGER, "4", "uniswap-v4"),
        "balancer": (repeat(balancer_swaps(), count), VAULT, "2", "balancer-v2"),
    }
    inputs = {"v2/v3": (v23, context(v23))}
    for name, (logs, contract, version, exchange) in singles.items():
        inputs[name] = (logs, singleton_context(logs, contract, version, exchange))
    for name, (logs, ctx) in inputs.items():
        got = registry.decode(logs, ctx).counts
        assert got["records"] == len(logs), (name, got)
    decoders = FAST_DECODERS

    def decode_all() -> None:
        for log in v23:
            decoders[log.topic0](log)  # type: ignore[index]

    out: dict[str, Run] = {"decode v2/v3": decode_all}
    decode = registry.decode
    for name, (logs, ctx) in inputs.items():
        out[name] = lambda logs=logs, ctx=ctx: decode(logs, ctx)  # type: ignore[misc]
    return out


def node_gc(run: Run) -> Run:
    """``run`` with the GC as the node sets it around follow and backfill (heap frozen, rare collections)."""

    def tuned() -> None:
        threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        try:
            run()
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()

    return tuned


def timed_cases() -> dict[str, Run]:
    plain = cases(TARGET_LOGS)
    out = dict(plain)
    for name in ("v2/v3", "v4", "balancer"):
        out[f"{name} gc"] = node_gc(plain[name])
    return out


def cpu_seconds(run: Run) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def worker(mode: str) -> int:
    """``time``: per line ``round N`` on stdin, one JSON line {case: CPU seconds} on stdout.
    ``callgrind``: one warm-up pass of each case, then each case between two ``os.getppid()`` markers."""
    if mode == "callgrind":
        runs = cases(CALLGRIND_LOGS)
        for run in runs.values():
            run()
        for run in runs.values():
            os.getppid()
            run()
        os.getppid()
        print(json.dumps(list(runs)))
        return 0
    runs = timed_cases()
    names = list(runs)
    print(json.dumps({"cases": names, "logs": TARGET_LOGS}), flush=True)
    for line in sys.stdin:
        shift = int(line.split()[1]) % len(names)
        order = names[shift:] + names[:shift]  # rotated per round: no case always runs first
        print(json.dumps({name: cpu_seconds(runs[name]) for name in order}), flush=True)
    return 0


def code_of(revision: str, into: Path) -> Path:
    """REV's product packages the bench runs (``git archive``), in ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, *CODE],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def worker_env(code: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if code is not None:  # ahead of the editable install's finder
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    return env


class Worker:
    """A timing worker process over one tree's code."""

    def __init__(self, label: str, code: Path | None) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "time"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_env(code),
        )
        self.header = json.loads(self._stdout().readline())
        self.seconds: dict[str, list[float]] = {name: [] for name in self.header["cases"]}

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def round(self, number: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"round {number}\n")
        self.proc.stdin.flush()
        for name, seconds in json.loads(self._stdout().readline()).items():
            self.seconds[name].append(seconds)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()

    def rates(self, name: str) -> list[float]:
        return [self.header["logs"] / s for s in self.seconds[name]]


def instructions(code: Path | None) -> dict[str, float]:
    """Case → instructions per log under callgrind (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--worker", "callgrind"],
            capture_output=True, text=True, env=worker_env(code), check=True,
        )  # fmt: skip
        names = json.loads(done.stdout.strip().splitlines()[-1])
        totals = {}
        for dump in Path(tmp).glob("cg.out.*"):
            match = re.search(r"^totals: (\d+)", dump.read_text(), re.M)
            totals[int(dump.name.rsplit(".", 1)[1])] = int(match.group(1)) if match else 0
        # dump 1 is everything before the first marker; dumps 2.. are the cases in order
        if len(totals) != len(names) + 1:
            raise RuntimeError(f"expected {len(names) + 1} callgrind dumps, got {len(totals)}")
        return {name: totals[i + 2] / CALLGRIND_LOGS for i, name in enumerate(names)}


def web3_rate() -> float:
    """web3.py ``process_log`` on a sample of the v2/v3 logs, median of three CPU-timed passes."""
    logs = repeat(real_swaps(), TARGET_LOGS)
    w3 = Web3()
    events = {
        V2_SWAP: w3.eth.contract(abi=[V2_ABI]).events.Swap(),
        V3_SWAP: w3.eth.contract(abi=[V3_ABI]).events.Swap(),
    }
    sample = logs[:: max(1, len(logs) // WEB3_SAMPLE)][:WEB3_SAMPLE]
    prepared = [(events[str(log.topic0)], web3_form(log)) for log in sample]

    def run() -> None:
        for event, entry in prepared:
            event.process_log(entry)

    return statistics.median(len(prepared) / cpu_seconds(run) for _ in range(3))


def spread(rates: list[float]) -> str:
    return f"{statistics.median(rates):>9,.0f}  [{min(rates):>9,.0f} – {max(rates):>9,.0f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--worker", choices=("time", "callgrind"), help=argparse.SUPPRESS)
    parser.add_argument("--before", metavar="REV", help="also measure git revision REV's code")
    parser.add_argument("--instructions", action="store_true", help="count instructions per log (valgrind)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if not FIXTURES.is_dir():
        print(f"recorded fixtures not found at {FIXTURES}", file=sys.stderr)
        return 1
    real = real_swaps()
    v2 = sum(log.topic0 == V2_SWAP for log in real)
    print(
        f"inputs: {len(real)} real v2/v3 swaps ({v2} v2), {len(v4_swaps())} v4, {len(balancer_swaps())} "
        f"balancer, each case repeated to {TARGET_LOGS:,} logs; Python {platform.python_version()}, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.2f} (CPU time is what is measured)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        old = code_of(args.before, Path(tmp)) if args.before else None
        workers = [Worker("this tree", None)]
        if old is not None:
            workers.insert(0, Worker(f"{args.before}", old))
        for number in range(args.rounds):
            for w in workers if number % 2 == 0 else workers[::-1]:  # alternate which goes first
                w.round(number)
        for w in workers:
            w.close()
        counts = (
            [instructions(old if w.label != "this tree" else None) for w in workers]
            if args.instructions
            else []
        )
    peer = web3_rate()
    print(f"web3.py process_log: {peer:,.0f} logs/s (CPU time, {WEB3_SAMPLE:,}-log sample)")
    print(f"logs/s per CPU-second, median [min – max] of {args.rounds} interleaved rounds:")
    header = "".join(f"{w.label:>34}" for w in workers)
    extra = "  after/before" if len(workers) == 2 else ""
    print(f"{'case':<16}{header}{extra}  target")
    for name in workers[-1].header["cases"]:
        rates = [w.rates(name) for w in workers]
        line = f"{name:<16}" + "".join(f"{spread(r):>34}" for r in rates)
        if len(workers) == 2:
            ratio = statistics.median(a / b for a, b in zip(rates[1], rates[0], strict=True))
            line += f"  {ratio:12.2f}×"
        now = statistics.median(rates[-1])
        goal = max(RATE_TARGET, RATIO_TARGET * peer) if name.startswith("decode") else RATE_TARGET
        line += f"  ≥ {goal:,.0f}: {'ok' if now >= goal else 'BELOW'} ({now / peer:.0f}× web3.py)"
        print(line)
    if counts:
        print(f"instructions per log (callgrind, {CALLGRIND_LOGS:,} logs a case, after a warm-up pass):")
        for name in counts[-1]:
            cells = "".join(f"{c[name]:>12,.0f}  ({w.label})" for c, w in zip(counts, workers, strict=True))
            versus = f"  after/before {counts[1][name] / counts[0][name]:.2f}" if len(counts) == 2 else ""
            print(f"  {name:<14}{cells}{versus}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
