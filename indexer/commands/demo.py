"""``dexnode demo``: the node's main job on embedded defaults, narrated."""

from __future__ import annotations

import typer

from indexer.database import open_database
from indexer.settings import Settings
from migrations import runner


async def run_demo(settings: Settings) -> None:
    async with open_database(settings) as db:
        where = f"embedded PostgreSQL in {settings.data_dir / 'postgres'}" if db.embedded else db.display
        typer.echo(f"[1/2] database: {where}")
        await runner.upgrade(db.sqlalchemy_url)
        st = await runner.status(db.sqlalchemy_url)
        typer.echo(f"[2/2] schema at revision {st.current}: {len(st.tables)} tables ({', '.join(st.tables)})")
