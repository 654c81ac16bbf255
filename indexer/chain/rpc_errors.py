"""JSON-RPC errors → dexnode's error classes, decided in this one place.

Retry loops decide by class only: ``RpcRetryableError`` (rate limits, internal errors, a node
that does not have the block yet) is retried with backoff; every ``RpcFatalError`` is not.
``MethodNotFound`` lets callers fall back to another method; ``CallReverted`` lets ``eth_calls``
report one reverting call without failing the others; ``StateUnavailable`` lets it ask again at
``latest`` where a pruned node no longer holds the state of an old block.

An ``eth_call`` that fails in the EVM (revert, out of gas, invalid opcode) is an answer about the
contract and maps to ``CallReverted``; anything that is about the node (rate limit, timeout, a block
it does not have yet) is retryable and never an answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from core.errors import FatalError, RetryableError


class RpcRetryableError(RetryableError):
    def __init__(
        self, message: str, *, method: str = "", code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.method = method
        self.code = code


class RpcFatalError(FatalError):
    def __init__(self, message: str, *, method: str = "", code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.method = method
        self.code = code
        self.data = data


class MethodNotFound(RpcFatalError):
    """The node does not implement (or does not expose) the method."""


class InvalidParams(RpcFatalError):
    """The node rejects the parameters: a bug on our side, retrying cannot help."""


class CallReverted(RpcFatalError):
    """``eth_call`` reverted; ``data`` holds the revert data (``0x…``) when the node gives it.

    Fatal for that call, not for the node: token metadata reads treat it as "not implemented".
    """


class StateUnavailable(RpcFatalError):
    """The node has the block but no longer its state (a pruned, non-archive node): ``eth_call`` at that
    block cannot be answered there, ever; ask at a newer block instead."""


class BatchTooLarge(RpcRetryableError):
    """The node refused a batch (or its response) for its size: resend in smaller batches."""


class NotAvailableYet(RpcRetryableError):
    """The node answered null for a block or receipt that must exist: it lags behind; ask again."""


# Substrings of lower-cased messages, checked before the code (providers reuse codes loosely).
_MESSAGE_RULES: tuple[tuple[str, type[RpcRetryableError] | type[RpcFatalError]], ...] = (
    ("batch too large", BatchTooLarge),
    ("batch size", BatchTooLarge),
    ("response too large", BatchTooLarge),
    ("response size", BatchTooLarge),
    ("rate limit", RpcRetryableError),
    ("too many requests", RpcRetryableError),
    ("capacity", RpcRetryableError),
    ("revert", CallReverted),
    # the EVM failed the call: as much an answer as a revert (geth -32000, anvil "EvmError: ...")
    ("out of gas", CallReverted),
    ("outofgas", CallReverted),
    ("invalid opcode", CallReverted),
    ("invalidfeopcode", CallReverted),
    ("invalid jump", CallReverted),
    ("stack underflow", CallReverted),
    ("stack limit", CallReverted),
    ("stack overflow", CallReverted),
    ("write protection", CallReverted),
    ("return data out of bounds", CallReverted),
    ("evmerror", CallReverted),
    # state of an old block pruned away (geth, erigon, nethermind, besu wordings)
    ("missing trie node", StateUnavailable),
    ("historical state", StateUnavailable),
    ("state not available", StateUnavailable),
    ("state is not available", StateUnavailable),
    ("state histories", StateUnavailable),
    ("state pruned", StateUnavailable),
    ("world state unavailable", StateUnavailable),
    ("method not found", MethodNotFound),
    ("method not supported", MethodNotFound),
    ("not supported", MethodNotFound),
    ("unsupported method", MethodNotFound),
    ("does not exist/is not available", MethodNotFound),
    ("header not found", RpcRetryableError),
    ("block not found", RpcRetryableError),
    ("unknown block", RpcRetryableError),
    ("timeout", RpcRetryableError),
    ("timed out", RpcRetryableError),
)

_CODE_RULES: dict[int, type[RpcRetryableError] | type[RpcFatalError]] = {
    3: CallReverted,  # geth: execution reverted, with the revert data
    429: RpcRetryableError,  # some providers copy the HTTP status into the JSON-RPC error
    -32005: RpcRetryableError,  # limit exceeded (EIP-1474), Infura's rate limit
    -32603: RpcRetryableError,  # internal error
    -32601: MethodNotFound,
    -32004: MethodNotFound,  # method not supported (EIP-1474)
    -32602: InvalidParams,
    -32600: RpcFatalError,  # invalid request
    -32700: RpcFatalError,  # parse error
}


def _backoff_hint(data: Any) -> float | None:
    """Infura puts ``{"rate": {"backoff_seconds": n}}`` in a rate-limit error's ``data``."""
    if isinstance(data, Mapping):
        rate = data.get("rate")
        if isinstance(rate, Mapping) and isinstance(rate.get("backoff_seconds"), int | float):
            return float(rate["backoff_seconds"])
    return None


# anvil: "BlockOutOfRangeError: block height is 312 but requested was 5" (code -32602) for a block above
# its head (it lags: retry) and for one below its oldest state (pruned or loaded from a dump: no state).
_OUT_OF_RANGE = re.compile(r"block ?out ?of ?range.*?height is (\d+) but requested was (\d+)")


def _out_of_range(lowered: str) -> type[RpcRetryableError] | type[RpcFatalError] | None:
    match = _OUT_OF_RANGE.search(lowered)
    if match is None:
        return None
    height, requested = int(match.group(1)), int(match.group(2))
    return NotAvailableYet if requested > height else StateUnavailable


def map_rpc_error(error: Any, method: str) -> RpcRetryableError | RpcFatalError:
    """The exception for a JSON-RPC ``error`` object returned for ``method``."""
    if not isinstance(error, Mapping):
        return RpcFatalError(f"{method}: malformed JSON-RPC error {error!r}", method=method)
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    text = f"{method}: JSON-RPC error {code}: {message}"
    lowered = message.lower()
    cls: type[RpcRetryableError] | type[RpcFatalError] | None = _out_of_range(lowered)
    for needle, rule in () if cls is not None else _MESSAGE_RULES:
        if needle in lowered:
            cls = rule
            break
    if cls is None and isinstance(code, int):
        cls = _CODE_RULES.get(code)
        if cls is None and -32099 <= code <= -32000:
            cls = RpcRetryableError  # implementation-defined server errors: usually transient
    if cls is None:
        cls = RpcFatalError
    code_int = code if isinstance(code, int) else None
    if issubclass(cls, RpcRetryableError):
        return cls(text, method=method, code=code_int, retry_after=_backoff_hint(data))
    return cls(text, method=method, code=code_int, data=data)
