"""Alembic environment: runs migrations over an async (asyncpg) SQLAlchemy connection.

The URL comes from the Alembic config (set by ``migrations.runner``), never from the
environment at import time.
"""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from sinks.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection):
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        await connection.run_sync(_run)
        return
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
