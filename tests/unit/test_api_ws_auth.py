"""Access control: keys, per-key and per-IP token buckets (429 with Retry-After), websocket caps, and
'off by default on localhost'. The middleware is driven as ASGI with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from api.auth import AccessControl, AccessDenied, AccessMiddleware, Policy, parse_keys
from core.errors import ConfigError
from core.settings import build_settings

pytestmark = pytest.mark.unit

KEY, SLOW_KEY = "k-0123456789", "k-slow-key-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def call(
    mw: AccessMiddleware, host: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    mw.app = app
    scope = {
        "type": "http",
        "path": "/v1/blocks/latest",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (host, 5000),
    }
    await mw(scope, None, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def test_keys_parse_with_their_own_limits_and_errors_never_echo_a_key() -> None:
    assert parse_keys(f"{KEY}, {SLOW_KEY}=2,", 600) == {KEY: 600, SLOW_KEY: 2}
    for bad in ("abc12", f"{KEY}=x", f"{KEY}=0"):
        with pytest.raises(ConfigError) as err:
            parse_keys(bad, 600)
        assert KEY not in str(err.value) and "abc12" not in str(err.value)


async def test_localhost_is_open_by_default_and_limited_when_access_is_on() -> None:
    clock = Clock()
    open_mw = AccessMiddleware(None, AccessControl(Policy(anon_per_minute=1), clock))
    assert [(await call(open_mw, "127.0.0.1"))[0] for _ in range(5)] == [200] * 5
    assert (await call(open_mw, "10.1.2.3"))[0] == 200
    assert (await call(open_mw, "10.1.2.3"))[0] == 429  # a remote client is limited
    on = AccessMiddleware(None, AccessControl(Policy(mode="on", anon_per_minute=1), clock))
    assert [(await call(on, "127.0.0.1"))[0] for _ in range(2)] == [200, 429]
    off = AccessMiddleware(None, AccessControl(Policy(mode="off", anon_per_minute=1), clock))
    assert [(await call(off, "10.9.9.9"))[0] for _ in range(3)] == [200] * 3


async def test_per_key_limit_answers_429_with_retry_after_and_refills() -> None:
    clock = Clock()
    mw = AccessMiddleware(None, AccessControl(Policy(keys={KEY: 600, SLOW_KEY: 2}, anon_per_minute=0), clock))
    assert [(await call(mw, "127.0.0.1", {"X-API-Key": SLOW_KEY}))[0] for _ in range(2)] == [200, 200]
    status, headers = await call(mw, "127.0.0.1", {"X-API-Key": SLOW_KEY})
    assert status == 429 and headers["retry-after"] == "30"  # 2 a minute: one token every 30 s
    assert (await call(mw, "127.0.0.1", {"X-API-Key": KEY}))[0] == 200  # another key has its own bucket
    clock.now += 30
    assert (await call(mw, "127.0.0.1", {"X-API-Key": SLOW_KEY}))[0] == 200
    assert (await call(mw, "127.0.0.1", {"X-API-Key": "k-wrong-key"}))[0] == 401
    assert (await call(mw, "127.0.0.1"))[0] == 401  # keys set, anonymous refused (rate 0)


async def test_anonymous_clients_are_limited_per_ip() -> None:
    clock = Clock()
    mw = AccessMiddleware(None, AccessControl(Policy(mode="on", anon_per_minute=3), clock))
    assert [(await call(mw, "10.0.0.1"))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert (await call(mw, "10.0.0.2"))[0] == 200


def test_websocket_connection_caps() -> None:
    access = AccessControl(Policy(mode="on", anon_per_minute=100, ws_per_client=2, ws_max_connections=3))
    a1 = access.open_websocket({}, "10.0.0.1")
    access.open_websocket({}, "10.0.0.1")
    with pytest.raises(AccessDenied) as err:
        access.open_websocket({}, "10.0.0.1")
    assert err.value.code == 4429
    access.open_websocket({}, "10.0.0.2")
    with pytest.raises(AccessDenied) as err:
        access.open_websocket({}, "10.0.0.3")
    assert err.value.code == 4503
    access.close_websocket(a1)
    access.open_websocket({}, "10.0.0.1")


def test_settings_keep_keys_secret() -> None:
    settings = build_settings(api_keys=f"{KEY},{SLOW_KEY}=5", api_access="on")
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    access = AccessControl.from_settings(settings)
    assert access.policy.keys == {KEY: settings.api_rate_limit, SLOW_KEY: 5}
