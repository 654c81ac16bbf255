"""The HTTP API (to come): FastAPI REST routes, GraphQL, the websocket hub endpoint. Reads through
``sinks.postgres_read`` and ``core``; never imports the sync layer (``indexer.realtime``/``backfill``)."""
