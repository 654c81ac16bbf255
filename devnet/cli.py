"""``dexnode devnet``: start, drive and stop the local chain."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from devnet.devnet import LOG_FILE, MANIFEST_FILE, Devnet, read_state, stop_directory
from devnet.routes import add_routes
from devnet.rpc import DevnetError

app = typer.Typer(
    help="A local anvil chain with real Uniswap v2/v3 activity (and a v2 fork) and reorgs on demand.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)  # hashes and URLs stay on one line


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="data directory [env DEXNODE_DATA_DIR, default ./.dexnode]; the devnet uses <it>/devnet",
    ),
]


def devnet_dir(ctx: typer.Context, data_dir: Path | None = None) -> Path:
    """``<data_dir>/devnet``: the flag, else the root command's Settings, else ``./.dexnode``."""
    data_dir = (
        data_dir or getattr(ctx.obj, "data_dir", None) or getattr(ctx.find_root().obj, "data_dir", None)
    )
    return Path(data_dir or ".dexnode") / "devnet"


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except DevnetError as exc:
        typer.echo(f"dexnode: {exc}", err=True)
        raise typer.Exit(1) from None


def _print_counts(counts: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("activity")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        if isinstance(value, dict):
            for name, count in value.items():
                table.add_row(f"{key} {name}", str(count))
        else:
            table.add_row(key, str(value))
    console.print(table)


def _print_summary(devnet: Devnet, directory: Path) -> None:
    m = devnet.manifest
    counts = m["counts"]
    console.print(f"[bold]devnet[/bold] chain id {m['chain_id']}  http {devnet.rpc_http}  ws {devnet.rpc_ws}")
    console.print(
        f"head {m['head']['number']} {m['head']['hash']}  generated in {m.get('generation_seconds', '?')} s"
    )
    swaps = ", ".join(f"{venue} {n}" for venue, n in counts["swaps"].items())
    console.print(f"swaps: {swaps} (total {sum(counts['swaps'].values())})")
    console.print(
        f"pools {len(m['pools'])}, tokens {len(m['tokens'])}, "
        f"empty blocks {counts.get('empty_blocks', 0)}, "
        f"reverted txs {counts.get('reverted_transactions', 0)}, "
        f"ERC-721 transfers {counts.get('erc721_transfers', 0)}"
    )
    console.print(f"manifest: {directory / MANIFEST_FILE}")


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command()
def start(
    ctx: typer.Context,
    port: int = typer.Option(8545, help="HTTP + websocket port on 127.0.0.1; 0 picks a free one."),
    seed: int = typer.Option(1, help="Seed of the generated activity: same seed, same block hashes."),
    blocks: int = typer.Option(300, min=0, help="Blocks of activity after the deployment blocks."),
    rate: float = typer.Option(6.0, min=0.0, help="Average transactions per non-empty block."),
    detach: bool = typer.Option(False, "--detach", help="Leave anvil running in the background and return."),
    data_dir: DataDirOpt = None,
) -> None:
    """Start anvil, deploy Uniswap v2, a v2 fork (sushiswap) and v3, and generate seeded activity.

    Without --detach it runs until Ctrl-C, then stops anvil.
    The manifest (contracts, tokens, pools, activity counts) goes to <data-dir>/devnet/manifest.json.
    """
    directory = devnet_dir(ctx, data_dir)
    with one_line_errors():
        devnet = Devnet.start(directory, port=port, seed=seed, blocks=blocks, rate=rate, detach=detach)
    _print_summary(devnet, directory)
    if detach:
        console.print(f"running in the background (pid {devnet.pid}); stop it with `dexnode devnet stop`")
        devnet.rpc.close()
        return
    console.print("running; Ctrl-C stops it")
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    crashed = False
    try:
        assert devnet.node is not None and devnet.node.process is not None
        while devnet.node.process.poll() is None:
            time.sleep(0.5)
        crashed = read_state(directory) is not None  # `dexnode devnet stop` removes the pid file
    except KeyboardInterrupt:
        pass
    finally:
        devnet.stop()
        signal.signal(signal.SIGTERM, previous)
    if crashed:
        typer.echo(f"dexnode: anvil exited unexpectedly (log: {directory / LOG_FILE})", err=True)
        raise typer.Exit(1)
    console.print("devnet stopped")


@app.command()
def activity(
    ctx: typer.Context,
    blocks: int = typer.Option(..., min=1, help="Blocks to mine."),
    rate: float = typer.Option(6.0, min=0.0, help="Average transactions per non-empty block."),
    seed: int | None = typer.Option(None, help="Seed (default: derived from the devnet's seed and head)."),
    data_dir: DataDirOpt = None,
) -> None:
    """Produce more seeded activity (swaps, liquidity, transfers, reverts) on the running devnet."""
    with one_line_errors():
        devnet = Devnet.attach(devnet_dir(ctx, data_dir))
        counts = devnet.activity(blocks, rate=rate, seed=seed)
    number, block_hash = devnet.head()
    _print_counts(counts, f"{blocks} blocks of activity")
    console.print(f"head {number} {block_hash}")


@app.command()
def reorg(
    ctx: typer.Context,
    depth: int = typer.Option(..., min=1, help="How many of the newest blocks to replace."),
    seed: int | None = typer.Option(None, help="Seed of the new branch's transactions."),
    data_dir: DataDirOpt = None,
) -> None:
    """Replace the newest DEPTH blocks with a branch of different transactions (anvil_reorg)."""
    with one_line_errors():
        devnet = Devnet.attach(devnet_dir(ctx, data_dir))
        result = devnet.reorg(depth, seed=seed)
    console.print(f"reorg depth {result.depth}, common ancestor block {result.common_ancestor}")
    for offset, (old, new) in enumerate(zip(result.old_hashes, result.new_hashes, strict=True)):
        console.print(f"  block {result.common_ancestor + 1 + offset}: {old} -> {new}")


@app.command()
def stop(ctx: typer.Context, data_dir: DataDirOpt = None) -> None:
    """Stop the devnet started from this data directory (foreground or --detach)."""
    with one_line_errors():
        pid = stop_directory(devnet_dir(ctx, data_dir))
    console.print(f"devnet stopped (pid {pid})")


@app.command()
def routes(
    ctx: typer.Context,
    rounds: int = typer.Option(2, min=1, help="How many times to send each route."),
    data_dir: DataDirOpt = None,
) -> None:
    """Swaps across protocols in one transaction: deploy Uniswap v4 and Balancer v2 on the devnet's
    tokens and a router, then send v2->v3->v4 (ETH out), v4 (ETH in)->v3->Balancer,
    Balancer->SushiSwap->v4 and a 2-hop Vault batchSwap, one transaction per block (once per devnet)."""
    directory = devnet_dir(ctx, data_dir)
    with one_line_errors():
        devnet = Devnet.attach(directory)
        sent = add_routes(devnet, directory, rounds)
    for route in sent:
        hops = " -> ".join(hop.exchange for hop in route.hops)
        console.print(f"block {route.block_number} {route.transaction_hash} {route.name}: {hops}")
    settings = devnet.manifest["cross_protocol"]["settings"]
    console.print("index them with: " + " ".join(f"DEXNODE_{k.upper()}={v}" for k, v in settings.items()))
