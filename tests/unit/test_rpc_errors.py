"""The one mapping of JSON-RPC errors to retryable / fatal classes, and the backoff policy."""

from __future__ import annotations

import pytest

from core.errors import FatalError, RetryableError
from indexer.chain.rpc import RetryPolicy
from indexer.chain.rpc_errors import (
    BatchTooLarge,
    CallReverted,
    InvalidParams,
    MethodNotFound,
    RpcFatalError,
    RpcRetryableError,
    map_rpc_error,
)
from indexer.chain.rpc_wire import parse_retry_after

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (-32005, "limit exceeded", RpcRetryableError),  # Infura
        (429, "Your app has exceeded its compute units per second capacity", RpcRetryableError),  # Alchemy
        (-32603, "internal error", RpcRetryableError),
        (-32000, "header not found", RpcRetryableError),  # geth, block not there yet
        (-32000, "some transient server error", RpcRetryableError),  # server error range
        (-32601, "the method eth_getBlockReceipts does not exist/is not available", MethodNotFound),
        (-32600, "the method eth_getBlockReceipts does not exist/is not available", MethodNotFound),
        (-32004, "Method not supported", MethodNotFound),
        (-32602, "invalid argument 0: hex string without 0x prefix", InvalidParams),
        (3, "execution reverted: Ownable: caller is not the owner", CallReverted),
        (-32000, "execution reverted", CallReverted),
        (-32600, "batch too large", BatchTooLarge),  # geth's BatchRequestLimit
        (-32003, "response too large", BatchTooLarge),
        (-32700, "parse error", RpcFatalError),
        (-32600, "invalid request", RpcFatalError),
        (12345, "who knows", RpcFatalError),
    ],
)
def test_error_mapping(code: int, message: str, expected: type[Exception]) -> None:
    error = map_rpc_error({"code": code, "message": message, "data": "0x08c379a0"}, "eth_call")
    assert type(error) is expected
    assert isinstance(error, RetryableError) != isinstance(error, FatalError)
    assert error.code == code and "eth_call" in str(error)


def test_revert_keeps_its_data() -> None:
    error = map_rpc_error({"code": 3, "message": "execution reverted", "data": "0x08c379a0abcd"}, "eth_call")
    assert isinstance(error, CallReverted) and error.data == "0x08c379a0abcd"


def test_infura_backoff_hint() -> None:
    error = map_rpc_error(
        {
            "code": -32005,
            "message": "project ID request rate exceeded",
            "data": {"rate": {"backoff_seconds": 30}},
        },
        "eth_getLogs",
    )
    assert isinstance(error, RpcRetryableError) and error.retry_after == 30.0


def test_malformed_error_object_is_fatal() -> None:
    assert isinstance(map_rpc_error("boom", "eth_call"), RpcFatalError)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now


def test_backoff_grows_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=8.0, max_retry_after=60.0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay(retry, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert policy.delay(1, 5.0) == 5.0
    assert policy.delay(1, 500.0) == 60.0
