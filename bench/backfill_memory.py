"""Backfill peak memory on mainnet-sized blocks, at several ``--workers``, against a 500 MB limit.

Chain: the recorded mainnet block 21925176 (``../shared/fixtures/mainnet-block-21925176-helios``:
202 transactions, 463 logs, 510 KB of receipts) replicated as ``--blocks`` consecutive blocks by a
local JSON-RPC server (its own process): number, hash, parent hash, transaction hashes and every
receipt's and log's block/transaction fields are rewritten per block, so the blocks form one chain
and every row has its own key. The recorded header holds transaction hashes only; the server gives
each one a full transaction object built from its receipt (from, to, type, gas, fees, a 420-byte
input, signature), about 0.3 MB per block, so a block's answers are ~0.8 MB of JSON as on mainnet.

``dexnode backfill`` runs as a user runs it (a subprocess, ``--no-dex``: the replicated pools do not
exist on this node) into a fresh database, at each ``--workers`` with the default ``--memory-mb``;
its peak RSS is ``ru_maxrss`` of the child (``wait4``) and ``VmHWM`` sampled every 20 ms (the larger
is printed). The ratio is peak / limit (< 1 passes). With ``--unbounded`` the same run is repeated with
a budget too large to bind (``--memory-mb 100000``: chunks of ``--batch-blocks``, ``2 × workers`` held,
as before the budget existed) for comparison.

    .venv/bin/python bench/backfill_memory.py [--blocks 400] [--workers 1,4,16] [--unbounded]

Server: ``DATABASE_URL`` if set (new databases there), else an embedded pgserver in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.database import asyncpg_dsn, embedded_server, ensure_database  # noqa: E402

HELIOS = REPO.parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
DEXNODE = REPO / ".venv" / "bin" / "dexnode"
LIMIT_MB = 500.0
NUMBER = '"0xNUMBER"'  # markers in the templates, replaced per block
HASH_MARK = "f" * 62
PARENT_MARK = "e" * 62
TX_MARK = "d" * 30


# -- the node ------------------------------------------------------------------------------------------


def block_hash(n: int) -> str:
    return "0xaa" + f"{n:062x}"


def _templates() -> tuple[bytes, bytes, bytes]:
    """(full block, hashes-only block, receipts) of the recorded block with per-block markers."""
    header = orjson.loads((HELIOS / "block.json").read_bytes())
    receipts = orjson.loads((HELIOS / "receipts.json").read_bytes())
    tx_hash = {h: "0xcc" + TX_MARK + f"{i:032x}" for i, h in enumerate(header["transactions"])}
    header |= {"hash": "0xaa" + HASH_MARK, "parentHash": "0xaa" + PARENT_MARK, "number": "0xNUMBER"}
    for r in receipts:
        r |= {"transactionHash": tx_hash[r["transactionHash"]], "blockHash": header["hash"]}
        r["blockNumber"] = "0xNUMBER"
        for lg in r["logs"]:
            lg |= {"transactionHash": r["transactionHash"], "blockHash": header["hash"]}
            lg["blockNumber"] = "0xNUMBER"
    full = [_transaction(r, header) for r in receipts]
    hashes_only = orjson.dumps({**header, "transactions": [t["hash"] for t in full]})
    return orjson.dumps({**header, "transactions": full}), hashes_only, orjson.dumps(receipts)


def _transaction(r: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    i = int(r["transactionIndex"], 16)
    tx: dict[str, Any] = {
        "hash": r["transactionHash"],
        "blockHash": header["hash"],
        "blockNumber": "0xNUMBER",
        "transactionIndex": r["transactionIndex"],
        "from": r["from"],
        "to": r["to"],
        "nonce": hex(1000 + i),
        "value": hex(10**15 * (i % 7)),
        "gas": hex(int(r["gasUsed"], 16) * 3 // 2),
        "gasPrice": r["effectiveGasPrice"],
        "input": "0x" + f"{i:08x}" + "ab" * 416,
        "type": r["type"],
        "chainId": "0x1",
        "v": "0x1",
        "r": "0x" + f"{i + 1:064x}",
        "s": "0x" + f"{i + 2:064x}",
    }
    if r["type"] == "0x2":
        tx |= {"maxFeePerGas": hex(int(r["effectiveGasPrice"], 16) * 2), "maxPriorityFeePerGas": "0x1",
               "accessList": [], "yParity": "0x1"}  # fmt: skip
    return tx


class Chain:
    def __init__(self, blocks: int) -> None:
        self.head = blocks + 1
        self.full, self.hashes_only, self.receipts = _templates()

    def block(self, n: int, full: bool) -> bytes:
        raw = self.full if full else self.hashes_only
        return self._fill(raw, n)

    def _fill(self, raw: bytes, n: int) -> bytes:
        return (
            raw.replace(HASH_MARK.encode(), f"{n:062x}".encode())
            .replace(PARENT_MARK.encode(), f"{n - 1:062x}".encode())
            .replace(TX_MARK.encode(), f"{n:030x}".encode())
            .replace(NUMBER.encode(), f'"{hex(n)}"'.encode())
        )

    def answer(self, call: dict[str, Any]) -> bytes:
        method, params = call.get("method"), call.get("params") or []
        if method == "eth_blockNumber":
            result = orjson.dumps(hex(self.head))
        elif method == "eth_chainId":
            result = b'"0x1"'
        elif method == "eth_getBlockByNumber":
            tag = params[0]
            n = self.head if tag in ("latest", "finalized", "safe") else int(tag, 16)
            result = self.block(n, bool(params[1])) if 1 <= n <= self.head else b"null"
        elif method == "eth_getBlockReceipts":
            key = params[0]
            n = int(key[4:], 16) if len(key) == 66 else int(key, 16)
            result = self._fill(self.receipts, n) if 1 <= n <= self.head else b"null"
        else:
            error = {"code": -32601, "message": f"the method {method} does not exist/is not available"}
            return orjson.dumps({"jsonrpc": "2.0", "id": call.get("id"), "error": error})
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(call.get("id")) + b',"result":' + result + b"}"


def serve(port: int, blocks: int) -> None:
    chain = Chain(blocks)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            payload = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            if isinstance(payload, list):
                body = b"[" + b",".join(chain.answer(c) for c in payload) + b"]"
            else:
                body = chain.answer(payload)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


@contextlib.contextmanager
def node(blocks: int) -> Iterator[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--blocks", str(blocks)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the measurement -----------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_backfill(
    url: str, dsn: str, blocks: int, workers: int, memory_mb: int | None, dexnode: str
) -> tuple[float, float, str]:
    """→ (peak RSS MB, wall seconds, the command's summary line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env["DEXNODE_LOG_LEVEL"] = "WARNING"
    argv = [dexnode, "backfill", "--from", "1", "--to", str(blocks), "--confirmations", "1",
            "--rpc-http", url, "--database-url", dsn, "--workers", str(workers), "--no-dex"]  # fmt: skip
    if memory_mb is not None:
        argv += ["--memory-mb", str(memory_mb)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        hwm = 0.0
        while True:
            hwm = max(hwm, _vm_hwm_mb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dexnode backfill failed:\n{stderr[-3000:]}")
    return max(hwm, usage.ru_maxrss / 1024), wall, stdout.strip().splitlines()[-1]


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # our own generated name
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield asyncpg_dsn(url)
        return
    root = Path(tempfile.mkdtemp(prefix="dexnode-bench-pg-"))
    try:
        with embedded_server(root) as uri:
            yield uri
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--workers", default="1,4,16")
    parser.add_argument("--memory-mb", type=int, default=None, help="passed on (default: dexnode's)")
    parser.add_argument("--unbounded", action="store_true", help="also run with a budget too large to bind")
    parser.add_argument("--dexnode", default=str(DEXNODE), help="the dexnode command to measure")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.blocks)
        return
    if not HELIOS.is_dir():
        raise SystemExit(f"recorded fixture not found: {HELIOS}")
    chain = Chain(1)
    per_block = len(chain.block(1, True)) + len(chain._fill(chain.receipts, 1))
    print(f"{args.blocks} blocks of {per_block / 2**20:.2f} MB of JSON answers each (202 txs, 463 logs)")
    runs = [(int(w), args.memory_mb) for w in args.workers.split(",")]
    if args.unbounded:
        runs += [(int(w), 100_000) for w in args.workers.split(",")]
    worst = 0.0
    with postgres() as server, node(args.blocks) as url:
        for workers, memory_mb in runs:
            name = f"dexnode_bench_mem_{secrets.token_hex(3)}"
            dsn = asyncio.run(ensure_database(server, name))
            try:
                peak, wall, line = run_backfill(url, dsn, args.blocks, workers, memory_mb, args.dexnode)
            finally:
                asyncio.run(drop_database(server, name))
            budget = "default budget" if memory_mb is None else f"--memory-mb {memory_mb}"
            ratio = peak / LIMIT_MB
            if memory_mb is None or memory_mb < 100_000:
                worst = max(worst, ratio)
            print(
                f"--workers {workers:>2} ({budget}): peak RSS {peak:6.0f} MB = {ratio:.2f}× the"
                f" {LIMIT_MB:.0f} MB limit, {args.blocks / wall:,.1f} blocks/s ({line.split(' in ')[0]})",
                flush=True,
            )
    print(f"worst budgeted run: {worst:.2f}× the limit ({'pass' if worst < 1 else 'FAIL'})")


if __name__ == "__main__":
    main()
