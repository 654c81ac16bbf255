"""``dexnode replay``'s server: the API app whose ``/ws`` answers each connection with its own playback of
history (``api.stream.history``), the range and speed in the URL's query::

    ws://127.0.0.1:8000/ws?from=2026-01-02T03:04&to=2026-01-02T03:10&speed=10

Everything else (the protocol's subscribe messages, the data messages and cursors, REST on the same
database) is the live API's (docs/archive.md, "Replay").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg
from fastapi import FastAPI, WebSocket

from api.app import create_app
from api.stream.history import HistoryStore, Playback, PlayStats, Source, play_for, playback_of
from api.stream.hub import Client, Hub, Limits
from api.stream.protocol import ProtocolError, error
from api.ws import CLOSE_POLICY, limits_of, serve_on
from core.settings import Settings

log = logging.getLogger("dexnode.api.replay")
FINISHED = "replay finished"


@dataclass
class ReplayState:
    source: Source
    defaults: Playback  # the command line's range and speed, for what a URL does not give
    known_types: frozenset[str]
    limits: Limits
    played: list[PlayStats] = field(default_factory=list)  # one per finished playback


def replay_app(
    settings: Settings,
    pool: asyncpg.Pool,
    source: Source,
    defaults: Playback,
    known_types: frozenset[str],
) -> FastAPI:
    limits = limits_of(settings)
    # the app's own hub stays empty: each connection gets a hub of its own
    app = create_app(settings, pool=pool, hub=Hub(HistoryStore(), confirmations=0, limits=limits))
    app.state.replay = ReplayState(source, defaults, known_types, limits)
    app.add_api_websocket_route("/ws", replay_stream)
    app.router.routes.insert(0, app.router.routes.pop())  # matched before the live /ws
    return app


async def replay_stream(websocket: WebSocket) -> None:
    state: ReplayState = websocket.app.state.replay
    try:
        playback = playback_of(dict(websocket.query_params), state.defaults, state.known_types)
    except ProtocolError as exc:
        await websocket.accept()
        await websocket.send_text(error(exc.code, exc.message))
        await websocket.close(code=CLOSE_POLICY, reason=exc.message[:120])
        return
    hub = Hub(HistoryStore(), confirmations=0, limits=state.limits)

    async def play(client: Client) -> str:
        stats = await play_for(hub, client, state.source, playback)
        state.played.append(stats)
        log.info(
            "replay to %s: %d blocks, %d exchange records, %d messages in %.2fs",
            client.name,
            stats.blocks,
            stats.cex_records,
            stats.messages,
            stats.seconds,
        )
        return FINISHED

    await serve_on(websocket, hub, play)
