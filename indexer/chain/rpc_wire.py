"""The JSON-RPC wire format and the small values around it: request bodies, answers split per call
(errors mapped once by ``indexer.chain.rpc_errors``), result checks, counters and call results.

``indexer.chain.rpc.RpcClient`` sends and retries; the devnet's synchronous client
(``devnet/rpc.py``) builds and reads the same bodies with ``request_body`` / ``results_of``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from indexer.chain.rpc_errors import CallReverted, NotAvailableYet, RpcRetryableError, map_rpc_error

BlockId = int | str  # a number, a tag ("latest", "finalized", "safe") or a 0x block hash
Check = Callable[[int, Any], Any]  # (position in the batch, result) → value; may raise RetryableError


@dataclass(slots=True)
class RpcStats:
    """Counters for benchmarks and logs."""

    requests: int = 0  # HTTP POSTs sent
    batches: int = 0  # of which were JSON-RPC batches (more than one call)
    calls: int = 0  # JSON-RPC calls sent, counting each batch entry and each resend
    retries: int = 0  # backoff sleeps taken
    # failures seen, retried or not, by kind: timeout, connection, http_429, http_503, invalid_json,
    # jsonrpc_<code>, not_available_yet, ... (an eth_call that reverts is an answer, not counted).
    # A plain dict: the API exports it as dexnode_rpc_errors_total when it runs in this process.
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True, slots=True)
class CallResult:
    """One ``eth_calls`` entry, always an answer from the chain: ``data`` (0x-hex, ``"0x"`` when the
    call returned nothing) or ``error``, the ``CallReverted`` of a call that failed in the EVM."""

    data: str | None
    error: CallReverted | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_kind(exc: Exception) -> str:
    """``jsonrpc_<code>`` for a node's JSON-RPC error, else the class in snake case."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"jsonrpc_{code}"
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def block_param(block: BlockId) -> str:
    return hex(block) if isinstance(block, int) else block


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def body_start(content: bytes) -> str:
    """The start of a body, for an error message."""
    return content[:200].decode("utf-8", "replace")


def not_null(what: str) -> Check:
    def check(_: int, result: Any) -> Any:
        if result is None:
            raise NotAvailableYet(f"node returned null for {what}")
        return result

    return check


def all_receipts(blocks: Sequence[Mapping[str, Any]]) -> Check:
    def check(i: int, receipts: Any) -> Any:
        if receipts is None or len(receipts) != len(blocks[i]["transactions"]):
            got = "null" if receipts is None else len(receipts)
            raise NotAvailableYet(f"eth_getBlockReceipts gave {got} receipts for block {blocks[i]['hash']}")
        return receipts

    return check


def request_body(calls: Sequence[tuple[str, Sequence[Any]]], first_id: int) -> bytes:
    """The JSON-RPC request for ``calls`` (ids ``first_id``, ``first_id + 1``, ...): one object for one
    call, a batch array for more."""
    payload = [
        {"jsonrpc": "2.0", "id": first_id + i, "method": m, "params": list(p)}
        for i, (m, p) in enumerate(calls)
    ]
    return orjson.dumps(payload if len(calls) > 1 else payload[0])


def results_of(body: Any, calls: Sequence[tuple[str, Sequence[Any]]], first_id: int, label: str) -> list[Any]:
    """Per call of ``request_body(calls, first_id)``, in order: its result, or the exception for its
    entry (errors mapped by ``map_rpc_error``; a missing entry is retryable). Raises the mapped error
    when the request as a whole was refused."""
    is_batch = len(calls) > 1
    if isinstance(body, Mapping) and (is_batch or body.get("id") is None) and "error" in body:
        raise map_rpc_error(body["error"], label)  # the request as a whole was refused
    entries = body if isinstance(body, list) else [body]
    by_id = {e.get("id"): e for e in entries if isinstance(e, Mapping)}
    if not is_batch and len(by_id) == 1:  # a single answer: trust it whatever id a proxy gave
        by_id = {first_id: next(iter(by_id.values()))}
    out: list[Any] = []
    for i, (method, _) in enumerate(calls):
        entry = by_id.get(first_id + i)
        if entry is None:
            out.append(RpcRetryableError(f"{method}: no response entry in the batch", method=method))
        elif "error" in entry and entry["error"] is not None:
            out.append(map_rpc_error(entry["error"], method))
        else:
            out.append(entry.get("result"))
    return out
