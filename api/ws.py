"""The live websocket ``/ws``: subscribe to blocks, DEX trades, token transfers or logs, replay what was
missed from a cursor or a block, then follow live through reorgs (docs/api-websocket.md).

The hub comes from ``ApiState.hub`` when ``serve`` runs beside the follower (in process); otherwise
this router's lifespan makes one fed by Postgres ``LISTEN/NOTIFY`` (``api.stream.listener``) or, with
``DEXNODE_API_LIVE_SOURCE=kafka``, by the node's ``head.*`` topics (``api.stream.kafka_source``), so any
number of API processes can serve one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, FastAPI, WebSocket
from prometheus_client import Gauge
from starlette.websockets import WebSocketDisconnect

from api.auth import AccessControl, AccessDenied
from api.deps import get_state
from api.stream.frames import Message, frame, text_of
from api.stream.hub import Client, Hub, Limits, Writer
from api.stream.kafka_source import KafkaSource, live_source
from api.stream.protocol import Code, Ping, ProtocolError, Subscribe, Unsubscribe, error, event, parse
from api.stream.replay import PostgresStore
from api.ws_transport import frame_writer
from core.settings import Settings

log = logging.getLogger("dexnode.api.ws")

CLOSE_NORMAL = 1000  # a finished stream (a replay that has played)
CLOSE_POLICY = 1008  # a slow consumer, a cap reached
CLOSE_GOING_AWAY = 1001
CLOSE_ERROR = 1011
END = ""  # queued after a finished stream's last message: the sender stops there (no message is empty)
# what runs beside a connection and ends its stream (``dexnode replay``'s playback): returns the close reason
Beside = Callable[[Client], Awaitable[str]]
# A kicked client still has what was sent before the close frame to read (the frame queues behind it):
# it gets this long to read it and see the reason, then the connection is dropped.
CLOSE_TIMEOUT = 60.0
# what one socket write takes from a client's queue at most (the transport's high-water mark is 64 kB)
WRITE_BYTES = 64 * 1024


def limits_of(settings: Settings) -> Limits:
    return Limits(
        queue_messages=settings.ws_queue_messages,
        buffer_events=max(100, settings.ws_queue_messages // 5),
        max_subscriptions=settings.ws_max_subscriptions,
        heartbeat_seconds=settings.ws_heartbeat_seconds,
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.api
    settings: Settings = state.settings
    listener = None
    if state.hub is None:
        state.hub = Hub(
            PostgresStore(state.pool), confirmations=settings.confirmations, limits=limits_of(settings)
        )
        listener = live_source(settings, state.pool, state.hub)
        await listener.start()
    hub: Hub = state.hub
    app.state.ws_access = getattr(app.state, "access", None) or AccessControl.from_settings(settings)
    gauge = Gauge("dexnode_ws_clients", "websocket clients connected", registry=state.metrics.registry)
    gauge.set_function(lambda: len(hub.clients))
    if isinstance(listener, KafkaSource):
        source = listener
        live = Gauge(
            "dexnode_ws_live_blocks",
            "blocks the Kafka live source sent to the hub, by where it read them",
            ["via"],
            registry=state.metrics.registry,
        )
        live.labels("kafka").set_function(lambda: source.kafka_blocks)
        live.labels("postgres").set_function(lambda: source.postgres_blocks)
    try:
        yield
    finally:
        await hub.close()
        if listener is not None:
            await listener.close()


router = APIRouter(lifespan=lifespan)


def _client_name(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client is not None else "unknown"


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    await serve_on(websocket, get_state(websocket).hub)


async def serve_on(websocket: WebSocket, hub: Hub, beside: Beside | None = None) -> None:
    """One connection served from ``hub``; with ``beside``, closed (1000) once it has ended and its
    messages were sent."""
    access: AccessControl = websocket.app.state.ws_access
    try:
        identity = access.open_websocket(
            websocket.headers, websocket.client.host if websocket.client else None
        )
    except AccessDenied as denied:
        await websocket.accept()
        await websocket.send_text(error(Code(denied.code), denied.message))
        await websocket.close(code=CLOSE_POLICY, reason=denied.message[:120])
        return
    try:
        await websocket.accept()
        client = hub.connect(_client_name(websocket))
        client.writer = frame_writer(websocket.scope)  # None under a test client: text, one by one
        try:
            await _serve(websocket, client, beside)
        finally:
            hub.disconnect(client)
    finally:
        access.close_websocket(identity)


async def _finish(client: Client, beside: Beside) -> tuple[int, str]:
    try:
        ended = (CLOSE_NORMAL, await beside(client))
    except Exception as exc:
        log.warning("ws client %s: stream failed: %s", client.name, exc)
        client.offer(error(Code.REPLAY_FAILED, "replay failed"))
        ended = (CLOSE_ERROR, "replay failed")
    await client.send(END)
    return ended


async def _serve(websocket: WebSocket, client: Client, beside: Beside | None = None) -> None:
    sender = asyncio.create_task(_send_loop(websocket, client))
    receiver = asyncio.create_task(_receive_loop(websocket, client))
    kicked = asyncio.create_task(client.closed.wait())
    finish = asyncio.create_task(_finish(client, beside)) if beside is not None else None
    tasks = (sender, receiver, kicked, *(() if finish is None else (finish,)))
    ended: tuple[int, str] | None = None
    try:
        await asyncio.wait((sender, receiver, kicked), return_when=asyncio.FIRST_COMPLETED)
        if finish is not None and sender.done() and sender.exception() is None:
            ended = await finish  # the sender stopped at END: everything before it was sent
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if ended is not None:
        code, reason = ended
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), CLOSE_TIMEOUT)
    elif client.close_reason is not None:
        code = CLOSE_GOING_AWAY if client.close_reason == "server shutting down" else CLOSE_POLICY
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                websocket.close(code=code, reason=client.close_reason[:120]), CLOSE_TIMEOUT
            )


async def _send_loop(websocket: WebSocket, client: Client) -> None:
    """Send the client's queue in order; a heartbeat after ``heartbeat_seconds`` without a message.

    The heartbeat is one timer per connection that re-arms itself, not a timeout per message: a live
    block reaches every client through an empty queue, and ``wait_for`` there (a task and a timer per
    message per client) was an eighth of the fan-out's CPU.

    With a frame writer, live messages offered while this sender idles are written by the hub
    (``Client.flush``); the sender takes what is queued behind a full socket, and replays."""
    frames = client.writer
    queue = client.queue
    loop = asyncio.get_running_loop()
    hub = client.hub
    period = hub.limits.heartbeat_seconds
    client.last_sent = loop.time()
    timer: asyncio.TimerHandle

    def beat() -> None:
        nonlocal timer
        idle = loop.time() - client.last_sent
        if idle < period:  # something was sent since: wait out the rest of the period
            timer = loop.call_later(period - idle, beat)
            return
        if client.unsent() == 0:  # (a sender stuck on a slow socket has messages queued: no heartbeat)
            tip = hub.tip
            client.offer(
                event("heartbeat", head=None if tip is None else tip.number, finalized=hub.finalized)
            )
        timer = loop.call_later(period, beat)

    timer = loop.call_later(period, beat)
    try:
        while True:
            if queue.empty():
                client.idle = True
                try:
                    message = await queue.get()
                finally:
                    client.idle = False
            else:
                message = queue.get_nowait()
            if message is END:
                return
            client.last_sent = loop.time()
            if frames is None:  # a server without api.ws_transport (a test client): text, one by one
                await websocket.send_text(text_of(message))
            elif not await _write_frames(frames, message, queue):
                return
    finally:
        timer.cancel()


async def _write_frames(frames: Writer, first: Message, queue: asyncio.Queue[Message]) -> bool:
    """``first`` and whatever else is queued, as frames in one write: a block's messages (its data, then
    the finality watermark) reach the socket in one send, not one each. The frames are built from the
    messages' shared encoded halves (``api.stream.frames``). False when END was among them."""
    await frames.ready()  # messages stay queued (and count against the bound) while the socket is full
    bits = frames.window_bits
    out = [frame(first, bits)]
    size = len(out[0])
    while size < WRITE_BYTES and not queue.empty():
        message = queue.get_nowait()
        if message is END:
            frames.write(b"".join(out))
            return False
        out.append(frame(message, bits))
        size += len(out[-1])
    frames.write(out[0] if len(out) == 1 else b"".join(out))
    return True


async def _receive_loop(websocket: WebSocket, client: Client) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                raw = frame.get("bytes") or b""
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    client.offer(error(Code.BAD_MESSAGE, "frames must be UTF-8 JSON text"))
                    continue
            try:
                message = parse(text, client.next_id)
            except ProtocolError as exc:
                client.offer(error(exc.code, exc.message))
                continue
            if isinstance(message, Subscribe):
                client.subscribe(message)
            elif isinstance(message, Unsubscribe):
                client.unsubscribe(message.id)
            elif isinstance(message, Ping):
                client.offer(event("pong"))
