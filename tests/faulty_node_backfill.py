"""A JSON-RPC proxy in front of a real node that fails on cue: for the backfill's fault tests.

It is a real HTTP server (a thread, so a ``dexnode`` subprocess can use it too) that forwards every
request to the upstream node unchanged, except:

- during an outage (``outage(seconds)``, or started by the ``after``-th request of a method with
  ``outage_on``) every request is answered HTTP 503, or the connection is closed without an answer;
- a method listed in ``refuse`` is answered with that JSON-RPC error object (a node that lacks it).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson


class FaultyNode:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.refuse: dict[str, dict[str, Any]] = {}
        self.mode = "503"  # or "drop": close the connection without an answer
        self.requests: Counter[str] = Counter()  # per first method of each request
        self.failed = 0  # requests answered with an outage
        self._down_until = 0.0
        self._trigger: tuple[str, int, float] | None = None
        self._lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                node._handle(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyNode:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def outage_on(self, method: str, after: int, seconds: float) -> None:
        """An outage of ``seconds`` from the ``after``-th request whose first call is ``method``."""
        self._trigger = (method, after, seconds)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        payload = orjson.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        method = calls[0].get("method", "") if calls else ""
        with self._lock:
            self.requests[method] += 1
            trigger = self._trigger
            if trigger is not None and trigger[0] == method and self.requests[method] == trigger[1]:
                self._down_until = time.monotonic() + trigger[2]
                self._trigger = None
            down = time.monotonic() < self._down_until
            if down:
                self.failed += 1
        if down and self.mode == "drop":
            handler.close_connection = True
            handler.connection.close()
            return
        if down:
            self._reply(handler, 503, b"service unavailable")
            return
        if any(c.get("method") in self.refuse for c in calls):
            answers = [
                {"jsonrpc": "2.0", "id": c.get("id"), "error": self.refuse[c["method"]]}
                if c.get("method") in self.refuse
                else self._forward_one(c)
                for c in calls
            ]
            self._reply(handler, 200, orjson.dumps(answers if isinstance(payload, list) else answers[0]))
            return
        status, data = self._forward(body)
        self._reply(handler, status, data)

    def _forward_one(self, call: dict[str, Any]) -> Any:
        return orjson.loads(self._forward(orjson.dumps(call))[1])

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request("POST", "/", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
