"""``dexnode serve``: the REST, GraphQL and websocket API (``api.app.create_app``) on uvicorn.

It only reads the database (run ``dexnode db upgrade`` or ``dexnode follow`` first): several
``serve`` processes can stand behind a load balancer beside one follower."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from core.settings import Settings

log = logging.getLogger("dexnode.serve")


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
    )
    log.info("API on http://%s:%s (docs at /docs, GraphQL at /graphql)", settings.api_host, settings.api_port)
    await uvicorn.Server(config).serve()
