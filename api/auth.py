"""Access control: optional API keys, per-key and per-IP rate limits, websocket connection caps.

- ``DEXNODE_API_KEYS="key1,key2=1200"``: keys accepted in the ``X-API-Key`` header, each with its own
  limit in requests per minute (``=N``; default ``DEXNODE_API_RATE_LIMIT``). A request with an unknown
  key is refused (401); one without a key is anonymous and limited per client IP
  (``DEXNODE_API_ANON_RATE_LIMIT``; 0 refuses anonymous access when keys are set).
- Over the limit: 429 with ``Retry-After`` (seconds). The limit is a token bucket: a burst of the
  per-minute figure, refilled continuously.
- Websockets: the handshake counts as a request; at most ``DEXNODE_WS_CONNECTIONS_PER_CLIENT`` open
  connections per key (or IP) and ``DEXNODE_WS_MAX_CONNECTIONS`` in all; the subscription cap per
  connection is the hub's (``DEXNODE_WS_MAX_SUBSCRIPTIONS``, always on).
- ``DEXNODE_API_ACCESS``: ``auto`` (default) applies all this unless the client is on the loopback
  interface and no key is configured — so a node serving localhost is open, as before; ``on`` always
  (set it behind a reverse proxy on the same host, where every client looks local); ``off`` never.

Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.errors import ConfigError
from core.settings import Settings

API_KEY_HEADER = "x-api-key"
_MAX_BUCKETS = 100_000  # anonymous IPs remembered; the oldest are forgotten beyond this


class AccessDenied(Exception):
    def __init__(self, status: int, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Identity:
    kind: str  # "key", "ip", "local" (not limited)
    name: str  # a key's index (never the key), or the IP


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Policy:
    mode: str = "auto"  # auto | on | off
    keys: Mapping[str, int] = field(default_factory=dict)  # key -> requests per minute
    anon_per_minute: int = 60
    ws_max_connections: int = 1000
    ws_per_client: int = 10


def parse_keys(text: str | None, default_rate: int) -> dict[str, int]:
    """``"key1,key2=1200"`` -> {key: per-minute limit}; the error never echoes a key."""
    keys: dict[str, int] = {}
    for i, part in enumerate(p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, eq, rate = part.partition("=")
        key = key.strip()
        if len(key) < 8:
            raise ConfigError(f"DEXNODE_API_KEYS: key #{i + 1} is shorter than 8 characters")
        try:
            limit = int(rate) if eq else default_rate
        except ValueError:
            raise ConfigError(f"DEXNODE_API_KEYS: key #{i + 1} has a rate that is not an integer") from None
        if limit < 1:
            raise ConfigError(f"DEXNODE_API_KEYS: key #{i + 1} needs a rate of at least 1 per minute")
        keys[key] = limit
    return keys


@functools.lru_cache(maxsize=1024)
def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host == "testclient"


class AccessControl:
    def __init__(self, policy: Policy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._keys = list(policy.keys.items())
        self._buckets: dict[Identity, _Bucket] = {}
        self._open: dict[Identity, int] = {}
        self.ws_open = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        secret = settings.api_keys.get_secret_value() if settings.api_keys is not None else None
        return cls(
            Policy(
                mode=settings.api_access,
                keys=parse_keys(secret, settings.api_rate_limit),
                anon_per_minute=settings.api_anon_rate_limit,
                ws_max_connections=settings.ws_max_connections,
                ws_per_client=settings.ws_connections_per_client,
            )
        )

    def open_to(self, host: str | None) -> bool:
        """Whether a request from ``host`` that carries no key goes unchecked (``identify``'s "local")."""
        mode = self.policy.mode
        return mode == "off" or (mode == "auto" and not self._keys and _is_loopback(host))

    def identify(self, headers: Mapping[str, str], host: str | None) -> Identity:
        """Who is asking: a key holder, an anonymous IP, or (access off) nobody to limit."""
        given = headers.get(API_KEY_HEADER)
        if self.policy.mode == "off" or (given is None and self.open_to(host)):
            return Identity("local", host or "")
        if given is not None:
            for i, (key, _) in enumerate(self._keys):
                if hmac.compare_digest(given.encode(), key.encode()):
                    return Identity("key", str(i))
            raise AccessDenied(401, 4401, "unknown API key (header X-API-Key)")
        if self._keys and self.policy.anon_per_minute == 0:
            raise AccessDenied(401, 4401, "an API key is required (header X-API-Key)")
        return Identity("ip", host or "unknown")

    def _rate(self, who: Identity) -> int:
        return self._keys[int(who.name)][1] if who.kind == "key" else self.policy.anon_per_minute

    def take(self, who: Identity) -> None:
        """One request by ``who``; over the limit raises 429 with the seconds until one is allowed."""
        if who.kind == "local":
            return
        rate = self._rate(who)
        now = self.clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[who] = _Bucket(float(rate), now)
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * rate / 60.0)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) * 60.0 / rate
            raise AccessDenied(429, 4429, f"rate limit of {rate} requests per minute reached", wait)
        bucket.tokens -= 1.0

    def check(self, headers: Mapping[str, str], host: str | None) -> Identity:
        who = self.identify(headers, host)
        self.take(who)
        return who

    def open_websocket(self, headers: Mapping[str, str], host: str | None) -> Identity:
        who = self.check(headers, host)
        if who.kind != "local":
            if self.ws_open >= self.policy.ws_max_connections:
                raise AccessDenied(503, 4503, "too many websocket connections on this server")
            if self._open.get(who, 0) >= self.policy.ws_per_client:
                raise AccessDenied(
                    429, 4429, f"at most {self.policy.ws_per_client} websocket connections per client"
                )
        self._open[who] = self._open.get(who, 0) + 1
        self.ws_open += 1
        return who

    def close_websocket(self, who: Identity) -> None:
        left = self._open.get(who, 0) - 1
        if left > 0:
            self._open[who] = left
        else:
            self._open.pop(who, None)
        self.ws_open = max(0, self.ws_open - 1)


class AccessMiddleware:
    """ASGI middleware applying ``AccessControl`` to every HTTP request (websockets are checked by
    the ``/ws`` endpoint, which answers with an error event and a close reason)."""

    def __init__(self, app: Any, access: AccessControl, exempt: tuple[str, ...] = ("/health",)) -> None:
        self.app = app
        self.access = access
        self.exempt = exempt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        raw = scope.get("headers", [])
        if self.access.open_to(host) and not any(k.lower() == b"x-api-key" for k, _ in raw):
            await self.app(scope, receive, send)  # a local client and no key anywhere: nothing to check
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        try:
            self.access.check(headers, host)
        except AccessDenied as denied:
            await _refuse(send, denied)
            return
        await self.app(scope, receive, send)


async def _refuse(send: Any, denied: AccessDenied) -> None:
    body = orjson.dumps({"error": {"status": denied.status, "message": denied.message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if denied.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(denied.retry_after))).encode()))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
