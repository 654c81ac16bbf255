"""Async JSON-RPC client for an Ethereum node over HTTP: batches, retries, typed helpers.

One ``httpx.AsyncClient`` (keep-alive) per ``RpcClient``, over ``indexer.chain.http11``'s lean
transport for ``http://`` nodes unless the caller passes another; use ``async with RpcClient(url) as rpc``
or call ``aclose()``. Every call goes through one retry loop that decides by error class only
(``indexer.chain.rpc_errors`` maps JSON-RPC codes once): timeouts, connection errors, HTTP 429/5xx and
retryable JSON-RPC errors are retried with jittered exponential backoff, honouring
``Retry-After``; in a batch only the entries that failed are sent again. A null block or receipt
is the node lagging (``NotAvailableYet``, retried), never an empty block.

An answer over ``max_response_bytes`` (decoded; for ``http://`` also as sent) is dropped as it arrives,
its connection closed, and retried with backoff: a fault of that node or proxy (an endless body), not data;
another try may reach a healthy backend. Not ``BatchTooLarge``: the default is far above what nodes send
(geth caps a batch's answer at 25 MB, reth at 160 MB); smaller batches would only re-read a node that lies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import orjson

from core.errors import RetryableError
from core.redact import mask_urls_in
from core.retry import RetryPolicy
from indexer.chain.http11 import Http11Transport, ResponseTooLarge
from indexer.chain.rpc_errors import (
    BatchTooLarge,
    CallReverted,
    InvalidParams,
    MethodNotFound,
    NotAvailableYet,
    RpcFatalError,
    RpcRetryableError,
    StateUnavailable,
    map_rpc_error,
)
from indexer.chain.rpc_wire import (
    BlockId,
    CallResult,
    Check,
    RpcStats,
    all_receipts,
    block_param,
    body_start,
    error_kind,
    not_null,
    parse_retry_after,
    request_body,
    results_of,
)

__all__ = [
    "BatchTooLarge",
    "CallResult",
    "CallReverted",
    "InvalidParams",
    "MethodNotFound",
    "NotAvailableYet",
    "RetryPolicy",
    "RpcClient",
    "RpcFatalError",
    "RpcRetryableError",
    "RpcStats",
    "StateUnavailable",
    "map_rpc_error",
    "request_body",
    "results_of",
]

log = logging.getLogger("dexnode.rpc")
MAX_RESPONSE_BYTES = 1024 * 1024 * 1024  # Settings.rpc_max_response_mb's default (1,024 MiB)


class RpcClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_batch_size: int = 100,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int | None = MAX_RESPONSE_BYTES,
    ) -> None:
        """``transport``: one of the caller's (give an ``Http11Transport`` the same ``max_response_bytes``:
        it reads a plain ``http://`` answer whole before this client sees a byte)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.url = url
        self.max_response_bytes = max_response_bytes
        self.max_batch_size = max_batch_size  # lowered (and kept) when the node refuses a size
        self.retry = retry or RetryPolicy()
        self.stats = RpcStats()
        self._sleep = sleep
        self._next_id = 1
        self._block_receipts_by = "hash"  # then "number", or "transactions" (per-tx receipts)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"content-type": "application/json", **(headers or {})},
            transport=transport
            or Http11Transport(
                max_connections=100,
                keepalive_expiry=60.0,
                trust_env=True,
                max_response_bytes=max_response_bytes,
            ),
        )

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport ---------------------------------------------------------------------------

    async def _post(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send ``calls`` once; → per call the result, or the exception for that entry.

        Raises for what fails the whole request: transport errors, HTTP errors, a batch refusal.
        """
        first_id = self._next_id
        self._next_id += len(calls)
        is_batch = len(calls) > 1
        self.stats.requests += 1
        self.stats.calls += len(calls)
        if is_batch:
            self.stats.batches += 1
        label = calls[0][0] if not is_batch else f"batch of {len(calls)} ({calls[0][0]}, …)"
        request = self._http.build_request("POST", self.url, content=request_body(calls, first_id))
        try:
            response, content = await self._send(request)
        except ResponseTooLarge as exc:
            self.stats.count_error("response_too_large")
            raise RpcRetryableError(
                f"{label}: {exc} (DEXNODE_RPC_MAX_RESPONSE_MB): a node or proxy sending an endless or"
                " oversized answer, or a batch too large for the limit (DEXNODE_RPC_BATCH_SIZE)",
                method=label,
            ) from exc
        except httpx.DecodingError as exc:  # no TransportError: a garbled or cut compressed body
            self.stats.count_error("undecodable_body")
            raise RpcRetryableError(f"{label}: undecodable body: {exc}", method=label) from exc
        except httpx.TimeoutException as exc:
            self.stats.count_error("timeout")
            raise RpcRetryableError(f"{label}: timeout ({type(exc).__name__})", method=label) from exc
        except httpx.TransportError as exc:
            self.stats.count_error("connection")
            raise RpcRetryableError(
                f"{label}: connection error: {mask_urls_in(repr(exc))}", method=label
            ) from exc
        status = response.status_code
        if status >= 400:
            self.stats.count_error(f"http_{status}")
        if status in (401, 403):
            raise RpcFatalError(f"{label}: HTTP {status} (check the node URL and its key)", method=label)
        if status == 413:
            raise BatchTooLarge(f"{label}: HTTP 413 request too large", method=label)
        if status in (408, 429) or status >= 500:
            raise RpcRetryableError(
                f"{label}: HTTP {status} {mask_urls_in(body_start(content))!r}",
                method=label,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            if status < 400:
                self.stats.count_error("invalid_json")
            if status >= 400:
                raise RpcFatalError(
                    f"{label}: HTTP {status} {mask_urls_in(body_start(content))!r}", method=label
                ) from exc
            raise RpcRetryableError(
                f"{label}: response is not JSON: {mask_urls_in(body_start(content))!r}"
            ) from exc
        return results_of(body, calls, first_id, label)

    async def _send(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        """The response and its (decoded) body, read as a stream and kept apart from the response.

        httpx keeps a response in a reference cycle (response, stream, request), and a body read by
        ``.content`` lives on the response: each answer (up to megabytes of JSON) would then wait for the
        cyclic collector, which the indexer runs rarely (``fewer_collections``). Read this way the
        body is freed as soon as it is parsed; what the cycle holds is a few small objects. Over
        ``max_response_bytes`` (Content-Length, then decoded bytes): ``ResponseTooLarge``; httpx closes
        the connection of a response closed before its end. The decoded bytes are counted per piece that
        httpx inflates: one deflate layer grows a piece at most ~1,032-fold (64 KiB -> 66 MB past the
        limit at worst), so stacked codings, whose layers multiply, are refused before a byte is read."""
        limit = self.max_response_bytes
        response = await self._http.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise ResponseTooLarge(limit)
            _refuse_stacked_codings(response.headers)
            parts: list[bytes] = []
            size = 0
            async for part in response.aiter_bytes():
                size += len(part)
                if limit is not None and size > limit:
                    raise ResponseTooLarge(limit)
                parts.append(part)
            content = b"".join(parts)
        finally:
            await response.aclose()
        return response, content

    # -- the retry loop ----------------------------------------------------------------------

    async def _run(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        check: Check | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[Any]:
        """Results of ``calls`` in order; an entry is the value or its final (non-retried) error.

        Retryable failures, of the whole request or of single entries, are sent again after a
        backoff until ``retry.attempts`` tries (the client's policy unless the caller passes one);
        then the last error stays in the entry.
        """
        policy = retry or self.retry
        n = len(calls)
        results: list[Any] = [None] * n
        pending = list(range(n))
        tries = 0
        while pending:
            tries += 1
            failed: dict[int, RetryableError] = {}
            size = self.max_batch_size
            queue = [pending[i : i + size] for i in range(0, len(pending), size)]
            while queue:
                chunk = queue.pop(0)
                try:
                    outcomes = await self._post([calls[i] for i in chunk])
                except BatchTooLarge as exc:
                    if len(chunk) == 1:
                        failed[chunk[0]] = exc
                        continue
                    self._shrink_batches(len(chunk), exc)
                    size = self.max_batch_size
                    queue[:0] = [chunk[i : i + size] for i in range(0, len(chunk), size)]
                    continue
                except RetryableError as exc:
                    failed.update(dict.fromkeys(chunk, exc))
                    continue
                for i, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, Exception) and not isinstance(outcome, CallReverted):
                        self.stats.count_error(error_kind(outcome))
                    if isinstance(outcome, BatchTooLarge) and len(chunk) > 1:
                        self._shrink_batches(len(chunk), outcome)
                    if isinstance(outcome, RetryableError):
                        failed[i] = outcome
                    elif isinstance(outcome, Exception) or check is None:
                        results[i] = outcome
                    else:
                        try:
                            results[i] = check(i, outcome)
                        except RetryableError as exc:
                            self.stats.count_error(error_kind(exc))
                            failed[i] = exc
            if not failed:
                break
            if tries >= policy.attempts:
                for i, error in failed.items():
                    results[i] = error
                log.warning(
                    "giving up after %d tries: %s", tries, mask_urls_in(str(next(iter(failed.values()))))
                )
                break
            pending = sorted(failed)
            first = failed[pending[0]]
            retry_after = max((e.retry_after or 0.0 for e in failed.values()), default=0.0) or None
            delay = policy.delay(tries, retry_after)
            self.stats.retries += 1
            log.warning(
                "retry %d/%d of %d call(s) (%s) in %.2fs: %s",
                tries,
                policy.attempts - 1,
                len(pending),
                calls[pending[0]][0],
                delay,
                mask_urls_in(str(first)),
            )
            await self._sleep(delay)
        return results

    def _shrink_batches(self, size: int, exc: Exception) -> None:
        new_size = min(self.max_batch_size, max(1, size // 2))
        if new_size < self.max_batch_size:
            log.warning("node refused a batch of %d (%s): batches now at most %d", size, exc, new_size)
            self.max_batch_size = new_size

    @staticmethod
    def _raise_first(results: list[Any]) -> list[Any]:
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results

    # -- generic calls -----------------------------------------------------------------------

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        return self._raise_first(await self._run([(method, params)]))[0]

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results in request order; raises the first error that survives the retries."""
        if not calls:
            return []
        return self._raise_first(await self._run(calls))

    # -- typed helpers -----------------------------------------------------------------------

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def get_block_by_number(self, block: int | str, full_txs: bool = True) -> dict[str, Any]:
        results = await self._run(
            [("eth_getBlockByNumber", [block_param(block), full_txs])], not_null(f"block {block}")
        )
        return self._raise_first(results)[0]

    async def get_block_by_hash(self, block_hash: str, full_txs: bool = True) -> dict[str, Any]:
        results = await self._run(
            [("eth_getBlockByHash", [block_hash, full_txs])], not_null(f"block {block_hash}")
        )
        return self._raise_first(results)[0]

    async def get_blocks(
        self, numbers: Sequence[int], full_txs: bool = True, *, retry: RetryPolicy | None = None
    ) -> list[dict[str, Any]]:
        calls = [("eth_getBlockByNumber", [hex(n), full_txs]) for n in numbers]
        return self._raise_first(await self._run(calls, not_null("a block"), retry))

    async def get_block_receipts(self, block: BlockId) -> list[dict[str, Any]]:
        """``eth_getBlockReceipts``; raises ``MethodNotFound`` where the node lacks it."""
        results = await self._run(
            [("eth_getBlockReceipts", [block_param(block)])], not_null(f"receipts of {block}")
        )
        return self._raise_first(results)[0]

    async def get_receipts_for_block(self, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Receipts of a fetched block, in transaction order (see ``get_receipts_for_blocks``)."""
        return (await self.get_receipts_for_blocks([block]))[0]

    async def get_receipts_for_blocks(
        self, blocks: Sequence[Mapping[str, Any]], *, retry: RetryPolicy | None = None
    ) -> list[list[dict[str, Any]]]:
        """Receipts of each fetched block (full txs or hashes), in transaction order.

        ``eth_getBlockReceipts`` by block hash, batched, so the receipts are those of exactly that
        block even mid-reorg; by number where the node rejects a hash (``extract`` then checks
        they belong to the block); batched ``eth_getTransactionReceipt`` per transaction where the
        node lacks the method. Each fallback is remembered for this client. A null or short
        answer is the node lagging and is retried (``retry``: a policy for this call only; the
        follower passes a short one, since a null can also mean the block left the chain).
        """
        if not blocks:
            return []
        while self._block_receipts_by in ("hash", "number"):
            key = self._block_receipts_by
            calls = [("eth_getBlockReceipts", [b[key]]) for b in blocks]
            results = await self._run(calls, all_receipts(blocks), retry)
            refused = next((r for r in results if isinstance(r, MethodNotFound | InvalidParams)), None)
            if refused is None:
                return self._raise_first(results)
            if isinstance(refused, InvalidParams) and key == "hash":
                self._block_receipts_by = "number"
            elif isinstance(refused, MethodNotFound):
                self._block_receipts_by = "transactions"
            else:
                raise refused
            log.warning("eth_getBlockReceipts by %s refused (%s)", key, refused)
        hashes = [[tx if isinstance(tx, str) else tx["hash"] for tx in b["transactions"]] for b in blocks]
        flat = [("eth_getTransactionReceipt", [h]) for hs in hashes for h in hs]
        receipts = self._raise_first(await self._run(flat, not_null("a transaction receipt"), retry))
        out: list[list[dict[str, Any]]] = []
        pos = 0
        for hs in hashes:
            out.append(receipts[pos : pos + len(hs)])
            pos += len(hs)
        return out

    async def eth_call(self, to: str, data: str, block: BlockId = "latest") -> str:
        """Raises ``CallReverted`` when the call reverts."""
        result: str = await self.call("eth_call", [{"to": to, "data": data}, block_param(block)])
        return result

    async def eth_calls(
        self, calls: Sequence[tuple[str, str]], block: BlockId = "latest"
    ) -> list[CallResult]:
        """Batched ``eth_call`` of (to, data) pairs at ``block``: one answer per call, a revert reported
        in its entry without failing the others. Indexers pass the block being indexed: at ``latest``,
        a backend that lags behind answers ``0x`` for a contract created after its head.

        Only answers come back. A retryable failure (timeout, 429, a backend that does not have
        ``block`` yet) that outlives the retries raises ``RpcRetryableError``, and any other node error
        raises too: the caller must not take either for what the contract said. Calls the node cannot
        answer at ``block`` because it pruned that state (``StateUnavailable``) are asked at ``latest``.
        """
        param = block_param(block)
        results = await self._run([("eth_call", [{"to": to, "data": data}, param]) for to, data in calls])
        pruned = [i for i, r in enumerate(results) if isinstance(r, StateUnavailable)]
        if pruned and param != "latest":
            log.info(
                "no state at block %s on the node (pruned): %d call(s) asked at latest", block, len(pruned)
            )
            again = await self._run(
                [("eth_call", [{"to": calls[i][0], "data": calls[i][1]}, "latest"]) for i in pruned]
            )
            for i, result in zip(pruned, again, strict=True):
                results[i] = result
        out: list[CallResult] = []
        for result in results:
            if isinstance(result, CallReverted):
                out.append(CallResult(None, result))
            elif isinstance(result, Exception):
                raise result
            else:
                out.append(CallResult(result))
        return out


def _refuse_stacked_codings(headers: httpx.Headers) -> None:
    """``Content-Encoding: gzip, gzip``: httpx inflates each layer of a piece whole, so a 1 KB answer
    becomes gigabytes before it can be counted. No node stacks codings; a fault of that backend."""
    codings = headers.get_list("content-encoding", split_commas=True)
    if len([c for c in codings if c.strip().lower() not in ("", "identity")]) > 1:
        raise httpx.DecodingError(f"stacked Content-Encoding {', '.join(codings)[:80]!r} refused")
