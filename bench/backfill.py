"""Backfill throughput on a devnet, in one run: the node's fetch limit, ethereum-etl, and dexnode.

Chain: a seeded devnet (default 2,000 blocks at ~13 transactions per non-empty block: over 20,000
transactions and 5,000 swaps on Uniswap v2, sushiswap and v3), generated once (about two minutes) and
then loaded from the anvil state cache in ``.dexnode-test-cache/``. Every measurement covers blocks
0..head of that chain.

- **limit**: the same blocks (``eth_getBlockByNumber`` with full transactions) and receipts
  (``eth_getBlockReceipts``) fetched with batched JSON-RPC by dexnode's own client, parsed and thrown
  away; concurrency ``--workers`` and half of it, the better kept: the node's serving rate here.
- **peer**: ethereum-etl 2.4.2, installed by this script into ``bench/.peer-venv`` (with the
  parsimonious 0.9.0 fix for Python 3.11), exporting blocks, transactions, receipts, logs and token
  transfers to CSV: ``export_blocks_and_transactions``, ``extract_csv_column``,
  ``export_receipts_and_logs``, ``extract_token_transfers``, with the same workers and batch size.
- **dexnode**: ``dexnode backfill`` run as a user runs it (a subprocess) into a fresh database on the
  same Postgres: every record, DEX pools, tokens, trades and liquidity included; once with the
  secondary indexes maintained (``--keep-indexes``), once with ``--defer-indexes`` (their rebuild
  included; the default for a fresh database). Its modules
  are compiled to bytecode first, as an installed copy's are (``compile_dexnode``).

The machine is shared with the node and Postgres (and maybe more): each measurement is repeated
``--rounds`` times, interleaved, and the best kept. Rates are blocks (transactions, logs) per second
of wall time. dexnode against ethereum-etl compares whole commands (start-up included); dexnode against
the limit compares the backfill itself (the command's own timing, index rebuild included) with the
in-process fetch. Peak RSS is the process's resident high-water mark (``VmHWM``, sampled). CPU
seconds per process (node, Postgres, indexer) are printed too: where the node, Postgres and the
indexer share a few cores, the ratio to the limit is bounded by their share of the CPU, and the ratio
to ethereum-etl by how far ethereum-etl itself is from the limit (printed as the ceiling).

Targets: dexnode ≥ 5× ethereum-etl, ≥ 0.7× the limit, peak RSS < 500 MB, own CPU (indexer + Postgres)
≤ 0.4× ethereum-etl's (with the node serving it). Server: ``DATABASE_URL`` if
set (new databases there), else an embedded pgserver in a temp dir.

    .venv/bin/python bench/backfill.py [--blocks 2000] [--rate 13] [--rounds 2] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# the repository before bench/ on the path: bench/api.py would shadow the api package (cli.demo imports it)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from cli.demo import venue_settings
from core.database import asyncpg_dsn, embedded_server, ensure_database
from devnet import Devnet
from devnet.cache import DevnetCache
from indexer.backfill.load import RateLimitedTransport
from indexer.backfill.plan import BlockRange, split
from indexer.chain.rpc import RpcClient

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / "bench" / ".peer-venv"
PEER_PACKAGES = (["ethereum-etl==2.4.2"], ["--no-deps", "parsimonious==0.9.0", "regex"])
DEXNODE = REPO / ".venv" / "bin" / "dexnode"
TARGET_PEER, TARGET_LIMIT, TARGET_RSS_MB, TARGET_OWN_CPU = 5.0, 0.7, 500, 0.4


@dataclass
class Run:
    name: str
    seconds: float  # what the ratio uses
    blocks: int
    transactions: int
    logs: int
    command_seconds: float | None = None  # whole command, start-up included
    rss_mb: float | None = None
    note: str = ""
    cpu: dict[str, float] | None = None  # CPU seconds by process: node, postgres, indexer

    def rate(self, count: int) -> float:
        return count / self.seconds


# -- subprocesses with their own peak RSS ---------------------------------------------------------


def _peak_rss_mb(pid: int) -> float | None:
    """The process's resident high-water mark (``VmHWM``: this program's, not inherited at fork)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def process_cpu(pid: int | None, *, children: bool = False) -> float:
    """CPU seconds a running process used so far (with its reaped children: a postmaster's backends)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    wall: float
    rss_mb: float
    cpu: float  # user + system of the process itself
    stdout: str


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run ``argv`` and measure it; raises with its stderr on failure.

    The peak RSS is sampled every 20 ms from ``VmHWM`` (``ru_maxrss`` would report the forking
    parent's size for a small child); CPU time comes from ``wait4``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        peak = 0.0
        while True:
            peak = max(peak, _peak_rss_mb(proc.pid) or 0.0)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return Measured(wall, peak, usage.ru_utime + usage.ru_stime, stdout)


# -- limit ---------------------------------------------------------------------------------------------


async def fetch_limit(
    url: str, node_pid: int | None, wanted: BlockRange, workers: int, chunk: int, rpc_batch: int
) -> Run:
    """Blocks and receipts fetched and parsed, nothing else: dexnode's fetch path alone."""
    blocks = txs = logs = 0
    async with RpcClient(
        url, max_batch_size=rpc_batch, transport=RateLimitedTransport(None, connections=workers * 2)
    ) as rpc:
        queue = deque(split([wanted], chunk))

        async def worker() -> None:
            nonlocal blocks, txs, logs
            while queue:
                c = queue.popleft()
                for part in split([c], rpc_batch):
                    fetched = await rpc.get_blocks(list(part.numbers))
                    receipts = await rpc.get_receipts_for_blocks(fetched)
                    blocks += len(fetched)
                    txs += sum(len(b["transactions"]) for b in fetched)
                    logs += sum(len(r["logs"]) for rs in receipts for r in rs)

        node0, own0, t0 = process_cpu(node_pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds = time.perf_counter() - t0
        cpu = {"node": process_cpu(node_pid) - node0, "indexer": time.process_time() - own0}
    return Run(f"limit ×{workers}", seconds, blocks, txs, logs, note="fetch + parse, discarded", cpu=cpu)


# -- peer: ethereum-etl ----------------------------------------------------------------------------------


def ensure_peer() -> Path:
    exe = PEER_VENV / "bin" / "ethereumetl"
    if exe.exists():
        return exe
    print(f"installing ethereum-etl into {PEER_VENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [
        str(PEER_VENV / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    for packages in PEER_PACKAGES:
        subprocess.run([*pip, *packages], check=True)
    subprocess.run([str(exe), "--help"], check=True, stdout=subprocess.DEVNULL)
    return exe


def _rows(path: Path) -> int:
    with path.open(newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def peer(url: str, node_pid: int | None, wanted: BlockRange, workers: int, batch: int) -> Run:
    exe = str(ensure_peer())
    work = Path(tempfile.mkdtemp(prefix="dexnode-bench-etl-"))
    try:
        common = ["--provider-uri", url, "--max-workers", str(workers), "--batch-size", str(batch)]
        steps = [
            [exe, "export_blocks_and_transactions", "--start-block", str(wanted.first), "--end-block",
             str(wanted.last), "--blocks-output", "blocks.csv", "--transactions-output", "transactions.csv",
             *common],
            [exe, "extract_csv_column", "--input", "transactions.csv", "--column", "hash", "--output",
             "tx_hashes.txt"],
            [exe, "export_receipts_and_logs", "--transaction-hashes", "tx_hashes.txt", "--receipts-output",
             "receipts.csv", "--logs-output", "logs.csv", *common],
            [exe, "extract_token_transfers", "--logs", "logs.csv", "--output", "token_transfers.csv",
             "--max-workers", str(workers), "--batch-size", str(batch)],
        ]  # fmt: skip
        total, rss, own = 0.0, 0.0, 0.0
        node0 = process_cpu(node_pid)
        for argv in steps:
            m = run_measured(argv, cwd=work)
            total += m.wall
            rss = max(rss, m.rss_mb)
            own += m.cpu
        cpu = {"node": process_cpu(node_pid) - node0, "indexer": own}
        counts = {
            name: _rows(work / f"{name}.csv")
            for name in ("blocks", "transactions", "logs", "token_transfers")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note = f"4 commands, {counts['token_transfers']:,} token transfers"
    name = "ethereum-etl 2.4.2"
    return Run(name, total, counts["blocks"], counts["transactions"], counts["logs"], total, rss, note, cpu)


# -- dexnode ---------------------------------------------------------------------------------------------

PACKAGES = ("records", "core", "decoders", "protocols", "indexer", "sinks", "migrations", "cli", "cex", "api")


def compile_dexnode(root: Path = REPO) -> None:
    """Compile dexnode's modules to bytecode once, as ``pip install`` of a wheel does (and did for
    ethereum-etl's venv): dexnode is installed editable here, and where ``PYTHONDONTWRITEBYTECODE``
    is set (this machine sets it) every ``dexnode`` command would otherwise compile its ~150 modules
    from source again, a cost no installed copy pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    dirs = [str(root / p) for p in PACKAGES if (root / p).is_dir()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *dirs], check=True, env=env, stdout=subprocess.DEVNULL
    )


# the ``dexnode`` console script's body, for a checkout on PYTHONPATH
_OLD_CLI = "import sys; from cli.main import main; sys.argv[0] = 'dexnode'; sys.exit(main())"

_LINE = re.compile(
    r"backfilled ([\d,]+) blocks, ([\d,]+) txs, ([\d,]+) logs, ([\d,]+) token transfers, ([\d,]+) DEX trades"
    r" in [\d,]+ chunks in ([\d.]+)s.*?(?:secondary indexes rebuilt in ([\d.]+)s)?$",
    re.MULTILINE,
)


def dexnode_command(
    dsn: str,
    devnet: Devnet,
    wanted: BlockRange,
    workers: int,
    chunk: int,
    defer: bool,
    before: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``dexnode backfill`` command line and environment of a run into ``dsn``."""
    v2, v3 = venue_settings(devnet.manifest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env |= {
        "DEXNODE_UNISWAP_V2_FACTORIES": v2,
        "DEXNODE_UNISWAP_V3_FACTORIES": v3,
        "DEXNODE_LOG_LEVEL": "WARNING",
    }
    if before is not None:
        env["PYTHONPATH"] = str(before)  # ahead of the editable install's finder
    # -P: no current directory on sys.path ahead of PYTHONPATH (run from this checkout, `-c` would
    # otherwise import this tree's code as the old one)
    command = [str(DEXNODE)] if before is None else [sys.executable, "-P", "-c", _OLD_CLI]
    argv = [*command, "backfill", "--from", str(wanted.first), "--to", str(wanted.last),
            "--confirmations", "0", "--allow-unconfirmed", "--rpc-http", devnet.rpc_http,
            "--database-url", dsn,
            "--workers", str(workers), "--batch-blocks", str(chunk)]  # fmt: skip
    if defer:
        argv.append("--defer-indexes")
    elif "--keep-indexes" in ((before or REPO) / "cli" / "backfill.py").read_text():
        argv.append("--keep-indexes")  # a fresh database defers them by default since it exists
    return argv, env


async def dexnode(
    server: str,
    postmaster: int | None,
    devnet: Devnet,
    wanted: BlockRange,
    workers: int,
    chunk: int,
    defer: bool,
    before: Path | None = None,
) -> Run:
    """``dexnode backfill`` into a fresh database; ``before``: another checkout's code (an old commit,
    its C extensions built in place) run by this venv's Python, for old-and-new comparisons."""
    name = f"dexnode_bench_backfill_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = await ensure_database(server, name)
    argv, env = dexnode_command(dsn, devnet, wanted, workers, chunk, defer, before)
    try:
        node0, pg0 = process_cpu(devnet.pid), process_cpu(postmaster, children=True)
        measured = await asyncio.to_thread(run_measured, argv, env, before)
        await asyncio.sleep(0.3)  # the postmaster reaps the backends, adding their CPU to its children's
        cpu = {
            "node": process_cpu(devnet.pid) - node0,
            "postgres": process_cpu(postmaster, children=True) - pg0,
            "indexer": measured.cpu,
        }
        conn = await asyncpg.connect(dsn)
        try:
            pools = await conn.fetchval("SELECT count(*) FROM pools")
            liquidity = await conn.fetchval("SELECT count(*) FROM dex_liquidity")
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    m = _LINE.search(measured.stdout)
    if m is None:
        raise RuntimeError(f"no summary line in dexnode's output:\n{measured.stdout}")
    blocks, txs, logs, transfers, trades = (int(g.replace(",", "")) for g in m.groups()[:5])
    seconds = float(m.group(6)) + float(m.group(7) or 0.0)
    label = "dexnode --defer-indexes" if defer else "dexnode (indexes kept)"
    if before is not None:
        label = "old " + label
    note = (
        f"{transfers:,} token transfers, {trades:,} DEX trades, {liquidity:,} liquidity events, {pools} pools"
    )
    if defer:
        note += f"; index rebuild {float(m.group(7) or 0):.2f}s included"
    return Run(label, seconds, blocks, txs, logs, measured.wall, measured.rss_mb, note, cpu)


# -- report ------------------------------------------------------------------------------------------------


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def _cpu(r: Run) -> str:
    if not r.cpu:
        return ""
    parts = " + ".join(f"{name} {sec:.1f}" for name, sec in r.cpu.items())
    return f"CPU s: {parts} = {sum(r.cpu.values()):.1f}"


def report(env: str, chain: str, limit: Run, etl: Run | None, ours: list[Run]) -> None:
    print()
    print(env)
    print(chain)
    print()
    print(
        f"{'':26} {'seconds':>8} {'blocks/s':>9} {'txs/s':>8} {'logs/s':>9} {'command s':>9} {'peak RSS':>9}"
    )
    for r in [limit, *([etl] if etl else []), *ours]:
        cmd = f"{r.command_seconds:9.2f}" if r.command_seconds is not None else f"{'':9}"
        rss = f"{r.rss_mb:6.0f} MB" if r.rss_mb is not None else f"{'':9}"
        print(f"{r.name:26} {r.seconds:8.2f} {r.rate(r.blocks):9,.0f} {r.rate(r.transactions):8,.0f}"
              f" {r.rate(r.logs):9,.0f} {cmd} {rss}   {r.note}")  # fmt: skip
    print()
    for r in [limit, *([etl] if etl else []), *ours]:
        if r.cpu:
            print(f"{r.name:26} {_cpu(r)}")
    print()
    for r in ours:
        vs_limit = r.rate(r.blocks) / limit.rate(limit.blocks)
        line = f"{r.name}: {vs_limit:.2f}× the fetch limit (target ≥ {TARGET_LIMIT})"
        if etl is not None and r.command_seconds:
            vs_etl = (r.blocks / r.command_seconds) / (etl.blocks / etl.seconds)
            line += f", {vs_etl:.1f}× ethereum-etl command to command (target ≥ {TARGET_PEER:.0f}×)"
        if r.rss_mb is not None:
            line += f", peak RSS {r.rss_mb:.0f} MB (target < {TARGET_RSS_MB})"
        print(line)
        if etl is not None and etl.cpu and r.cpu:
            # dexnode's own work (indexer + its database) against ethereum-etl's whole command (its
            # processes and the node serving them), as issue 11 states the target; and like for like
            own = r.cpu["indexer"] + r.cpu.get("postgres", 0.0)
            whole, peer_own = sum(etl.cpu.values()), etl.cpu["indexer"]
            print(
                f"  own CPU (indexer + Postgres) {own:.1f} s = {own / whole:.2f}× ethereum-etl's"
                f" {whole:.1f} s with the node (target ≤ {TARGET_OWN_CPU}),"
                f" {own / peer_own:.2f}× its own {peer_own:.1f} s"
            )
    if etl is not None:
        ceiling = etl.seconds / limit.seconds
        print(
            f"(ethereum-etl here takes {ceiling:.1f}× the fetch limit's time: no indexer fetching from this"
            f" node can be more than {ceiling:.1f}× faster than it)"
        )


async def measure(
    args: argparse.Namespace, server: str, where: str, postmaster: int | None, devnet: Devnet
) -> None:
    head = devnet.head()[0]
    wanted = BlockRange(0, head)
    limits: list[Run] = []
    modes = [m == "deferred" for m in args.modes]
    trees: list[Path | None] = [None] if args.before is None else [args.before, None]
    ours: dict[tuple[bool, Path | None], list[Run]] = {(d, t): [] for d in modes for t in trees}
    for rnd in range(args.rounds):
        for k in sorted({max(1, args.workers // 2), args.workers}):
            limits.append(
                await fetch_limit(devnet.rpc_http, devnet.pid, wanted, k, args.batch_blocks, args.rpc_batch)
            )
        # old and new alternated, the old first in odd rounds and last in even ones
        for tree in trees if rnd % 2 == 0 else trees[::-1]:
            for defer in modes:
                run = await dexnode(
                    server, postmaster, devnet, wanted, args.workers, args.batch_blocks, defer, tree
                )
                ours[defer, tree].append(run)
                lim = best(limits[-2:]).seconds
                print(f"round {rnd + 1}: limit {lim:.2f}s, {run.name} {run.seconds:.2f}s"
                      f" ({lim / run.seconds:.2f}× the limit), {_cpu(run)},"
                      f" load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    etl = (
        await asyncio.to_thread(peer, devnet.rpc_http, devnet.pid, wanted, args.workers, args.rpc_batch)
        if args.peer
        else None
    )
    limit = best(limits)
    swaps = sum(devnet.manifest["counts"]["swaps"].values())
    chain = (
        f"chain: devnet seed {args.seed}, blocks 0–{head} ({limit.blocks:,} blocks, {limit.transactions:,}"
        f" transactions, {limit.logs:,} logs, {swaps:,} swaps)"
    )
    conn = await asyncpg.connect(server)
    try:
        version = await conn.fetchval("SHOW server_version")
        buffers = await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()
    env = (
        f"PostgreSQL {version} ({where}, shared_buffers {buffers}); anvil on 127.0.0.1;"
        f" {os.cpu_count()} cores shared by node, Postgres and indexer; best of {args.rounds};"
        f" workers {args.workers}, {args.batch_blocks} blocks per chunk,"
        f" JSON-RPC batches of {args.rpc_batch}"
    )
    report(env, chain, limit, etl, [best(runs) for runs in ours.values()])
    if args.before is not None:
        print()
        for defer in modes:
            old, new = ours[defer, args.before], ours[defer, None]
            for what, get in (
                ("seconds", lambda r: r.seconds),
                ("indexer CPU-s", lambda r: (r.cpu or {}).get("indexer", 0.0)),
                ("Postgres CPU-s", lambda r: (r.cpu or {}).get("postgres", 0.0)),
                ("node CPU-s", lambda r: (r.cpu or {}).get("node", 0.0)),
            ):
                pairs = ", ".join(f"{get(o):.2f} → {get(n):.2f}" for o, n in zip(old, new, strict=True))
                print(f"{new[0].name}: {what} old → new by round: {pairs}")


@contextlib.contextmanager
def server(shared_buffers: str = "auto") -> Iterator[tuple[str, str, int | None]]:
    """(server URI, description, postmaster pid when local and embedded)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield asyncpg_dsn(url), "server from DATABASE_URL", None
        return
    root = Path(tempfile.mkdtemp(prefix="dexnode-bench-pg-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    try:
        with embedded_server(root, shared_buffers) as uri:
            pid_file = root / "postgres" / "postmaster.pid"
            pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
            yield uri, "embedded pgserver", pid
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=2000, help="blocks of devnet activity")
    parser.add_argument("--rate", type=float, default=13.0, help="transactions per non-empty block")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2, help="repetitions (best kept)")
    parser.add_argument(
        "--workers", type=int, default=8, help="concurrency for dexnode, the limit and the peer"
    )
    parser.add_argument("--batch-blocks", type=int, default=50, help="blocks per dexnode chunk (its default)")
    parser.add_argument(
        "--rpc-batch", type=int, default=100, help="calls per JSON-RPC batch (and etl batch size)"
    )
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip ethereum-etl")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before <commit>`, C extensions built in place):"
        " its dexnode run in alternated rounds with this one's, and old → new figures printed per round",
    )
    parser.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["kept", "deferred"],
        help="dexnode runs per round: kept (indexes maintained), deferred (--defer-indexes), or both",
    )
    parser.add_argument(
        "--shared-buffers",
        default="auto",
        help="the embedded server's DEXNODE_EMBEDDED_SHARED_BUFFERS (auto, a size, or off for Postgres's"
        " 128MB): to compare settings in alternated runs",
    )
    args = parser.parse_args()
    if not set(args.modes) <= {"kept", "deferred"}:
        parser.error("--modes: kept, deferred or kept,deferred")
    if not DEXNODE.exists():
        sys.exit(f"{DEXNODE} missing: run `make install`")
    compile_dexnode()
    if args.before is not None:
        compile_dexnode(args.before.resolve())
    logs = Path(tempfile.mkdtemp(prefix="dexnode-bench-anvil-"))
    cache = DevnetCache(REPO / ".dexnode-test-cache", logs, args.seed, args.blocks, args.rate, True)
    print(f"devnet: seed {args.seed}, {args.blocks} blocks at rate {args.rate} (generated once, then cached)",
          flush=True)  # fmt: skip
    devnet = cache.load(headroom=0)
    try:
        with server(args.shared_buffers) as (uri, where, postmaster):
            asyncio.run(measure(args, uri, where, postmaster, devnet))
    finally:
        devnet.stop()
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
