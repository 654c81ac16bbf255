"""What every command shares: the settings with the command's flags applied, the runner that turns
SIGTERM into a clean cancel, and the common options."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from core.settings import Settings, build_settings

T = TypeVar("T")

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="postgresql:// URL [env DEXNODE_DATABASE_URL]; unset = embedded"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory [env DEXNODE_DATA_DIR, default ./.dexnode]"),
]


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings built in ``main()`` with this command's flags applied."""
    base = ctx.obj if isinstance(ctx.obj, Settings) else build_settings()
    return base.with_overrides(**overrides)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command; SIGTERM cancels it like Ctrl-C, so every ``async with`` cleans up
    (the embedded Postgres is stopped, the database transaction rolled back)."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        typer.echo("dexnode: terminated", err=True)
        raise SystemExit(143) from None
