"""``dexnode backfill``: confirmed history into Postgres, in parallel chunks, resumable; ``--status``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    ChainOpt,
    KafkaBootstrapOpt,
    KafkaOptionOpt,
    KafkaTopicPrefixOpt,
    V2FactoriesOpt,
    V3FactoriesOpt,
    run_async,
    settings_of,
)
from core.database import connect, open_database
from core.settings import Settings
from indexer.backfill.job import backfill
from indexer.backfill.plan import BlockRange
from indexer.backfill.store import status
from migrations import runner

FromOpt = Annotated[
    int | None, typer.Option("--from", min=0, help="first block to backfill (required unless --status)")
]
ToOpt = Annotated[
    str,
    typer.Option(
        "--to",
        help="last block: a number, 'confirmed' (head minus DEXNODE_CONFIRMATIONS) or 'finalized' (the"
        " node's finalized block); never above the confirmed block",
    ),
]


def backfill_command(
    ctx: typer.Context,
    from_block: FromOpt = None,
    to: ToOpt = "confirmed",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=256,
            help="most chunks fetched at once (up to twice as many held, within --memory-mb); backs off on"
            " 429s",
        ),
    ] = 8,
    batch_blocks: Annotated[
        int, typer.Option("--batch-blocks", min=1, help="blocks per chunk (one database transaction each)")
    ] = 50,
    rpc_http: Annotated[
        str | None, typer.Option("--rpc-http", help="node JSON-RPC over HTTP (env DEXNODE_RPC_HTTP)")
    ] = None,
    rpc_batch_size: Annotated[
        int | None,
        typer.Option("--rpc-batch-size", help="most calls per JSON-RPC batch (env DEXNODE_RPC_BATCH_SIZE)"),
    ] = None,
    max_rps: Annotated[
        float | None, typer.Option("--max-rps", min=0.1, help="most HTTP requests per second to the node")
    ] = None,
    confirmations: Annotated[
        int | None,
        typer.Option(
            "--confirmations",
            help="how far below the head a block must be to be written (env DEXNODE_CONFIRMATIONS; 12);"
            " 0 only with --allow-unconfirmed",
        ),
    ] = None,
    allow_unconfirmed: Annotated[
        bool,
        typer.Option(
            "--allow-unconfirmed",
            help="accept --confirmations 0: blocks at the head, which a reorg can still replace, are"
            " written (devnets, tests); refused with Kafka, whose confirmed.* topics are never reverted",
        ),
    ] = False,
    memory_mb: Annotated[
        int,
        typer.Option(
            "--memory-mb",
            min=16,
            help="most memory for node answers in flight: chunks shrink and workers wait to stay within it",
        ),
    ] = 256,
    defer_indexes: Annotated[
        bool | None,
        typer.Option(
            "--defer-indexes/--keep-indexes",
            help="drop secondary indexes first and rebuild them at the end (faster for large ranges;"
            " queries and a running follower are slow meanwhile), or maintain them row by row;"
            " default: deferred when the database holds no block yet, else kept",
            show_default=False,
        ),
    ] = None,
    dex: Annotated[
        bool,
        typer.Option(
            "--dex/--no-dex",
            help="decode DEX pools, trades and liquidity (venues: DEXNODE_UNISWAP_V2/V3_FACTORIES)",
        ),
    ] = True,
    uniswap_v2_factories: V2FactoriesOpt = None,
    uniswap_v3_factories: V3FactoriesOpt = None,
    chain: ChainOpt = None,
    kafka_bootstrap_servers: KafkaBootstrapOpt = None,
    kafka_topic_prefix: KafkaTopicPrefixOpt = None,
    kafka_option: KafkaOptionOpt = None,
    show_status: Annotated[
        bool, typer.Option("--status", help="show ranges done, gaps and the last run's rate, then exit")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="postgresql:// URL (env DEXNODE_DATABASE_URL); unset = embedded"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="data directory (env DEXNODE_DATA_DIR, default ./.dexnode)"),
    ] = None,
) -> None:
    """Backfill confirmed blocks (transactions, receipts, logs, token transfers, DEX records) into Postgres.

    Chunks are written in parallel, each in one transaction with its checkpoint.

    Restarted with the same arguments, a killed backfill skips the chunks done and fills the gaps.

    Only blocks at or below head minus DEXNODE_CONFIRMATIONS are written.

    `dexnode follow` started afterwards (or meanwhile) continues after the contiguous backfilled range.
    """
    settings = settings_of(
        ctx,
        rpc_http=rpc_http,
        rpc_batch_size=rpc_batch_size,
        confirmations=confirmations,
        uniswap_v2_factories=uniswap_v2_factories,
        uniswap_v3_factories=uniswap_v3_factories,
        chain=chain,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topic_prefix,
        kafka_option=kafka_option,
        database_url=database_url,
        data_dir=data_dir,
    )
    if show_status:
        run_async(print_status(settings, from_block, to))
        return
    if from_block is None:
        raise typer.BadParameter("--from is required (the first block to backfill)", param_hint="--from")
    run_async(
        backfill(
            settings,
            from_block=from_block,
            to=to,
            workers=workers,
            batch_blocks=batch_blocks,
            max_rps=max_rps,
            defer_indexes=defer_indexes,
            dex=dex,
            allow_unconfirmed=allow_unconfirmed,
            memory_mb=memory_mb,
        )
    )


async def print_status(settings: Settings, from_block: int | None, to: str) -> None:
    async with open_database(settings) as db:
        await runner.upgrade(db.sqlalchemy_url)
        conn = await connect(db.dsn)
        try:
            wanted = None
            if from_block is not None and to.isdigit() and int(to) >= from_block:
                wanted = BlockRange(from_block, int(to))
            st = await status(conn, wanted)
        finally:
            await conn.close()
    for line in st.lines():
        typer.echo(line)
