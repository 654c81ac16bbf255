"""``GET /v1/status``'s in-process sources (``api.routes.status.register_status_source``): what ``dexnode
run`` can add beside the figures the route reads itself."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from api.routes.status import _merge, register_status_source

pytestmark = pytest.mark.unit


def test_a_source_adds_to_numbers_replaces_the_rest_and_a_broken_one_is_named() -> None:
    app = FastAPI()
    register_status_source(app, "follower", lambda: {"rpc_errors": 3, "feed_resyncs": 4, "phase": "follow"})
    register_status_source(app, "broken", lambda: {"rpc_errors": 1 // 0})
    body = {"rpc_errors": 2, "feed_resyncs": None, "ws_clients": 1, "reorgs": 7}
    _merge(body, app.state.status_sources)
    assert body == {
        "rpc_errors": 5,  # the API's own failed node calls plus the follower's
        "feed_resyncs": 4,
        "ws_clients": 1,
        "reorgs": 7,
        "phase": "follow",
        "source_errors": ["broken"],
    }


def test_registering_a_name_again_replaces_that_source() -> None:
    app = FastAPI()
    register_status_source(app, "feeds", lambda: {"feed_resyncs": 1})
    register_status_source(app, "feeds", lambda: {"feed_resyncs": 2})
    body: dict[str, object] = {"feed_resyncs": 0}
    _merge(body, app.state.status_sources)
    assert body == {"feed_resyncs": 2}
