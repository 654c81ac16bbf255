"""A scripted Ethereum node for follower tests: JSON-RPC over real HTTP (batches too) and a real websocket
with ``eth_subscribe`` ``newHeads``, on one local port, like a real node.

The test owns the chain (``ScriptedChain``): it mines synthetic blocks (a few transactions, receipts and
ERC-20 ``Transfer`` logs each, consistent hashes and parent hashes), replaces the tip (reorgs), makes side
blocks that are never canonical, and decides what the node says: heads it pushes (late, duplicate, side
branch, garbage), hashes it refuses to serve (``eth_getBlockByHash`` answers null, as a load-balanced
backend that never saw the block does), and calls that fail (HTTP 429 or a timeout).

The chain is the independent truth a test compares the database with: ``canonical()`` gives the
(number, hash, parent_hash) of every canonical block, ``tx_hashes()`` their transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TOKEN = "0x" + "ab" * 20


def _h(*parts: object) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _addr(n: int) -> str:
    return "0x" + hashlib.sha256(f"addr{n}".encode()).hexdigest()[:40]


def _word(value: int) -> str:
    return "0x" + f"{value:064x}"


class ScriptedChain:
    """Blocks by hash (every block ever made, orphaned ones included) and the canonical chain by number."""

    def __init__(self, *, genesis_time: int = 1_700_000_000, block_time: int = 12, txs: int = 2) -> None:
        self.by_hash: dict[str, dict[str, Any]] = {}
        self.receipts: dict[str, list[dict[str, Any]]] = {}
        self.canonical_hashes: list[str] = []
        self.genesis_time = genesis_time
        self.block_time = block_time
        self.txs = txs
        self._salt = 0

    def make_block(self, number: int, parent_hash: str, *, txs: int | None = None) -> dict[str, Any]:
        """A new block (stored by hash, not made canonical) with its receipts."""
        self._salt += 1
        block_hash = _h("block", number, parent_hash, self._salt)
        n_txs = self.txs if txs is None else txs
        transactions = []
        receipts = []
        for i in range(n_txs):
            tx_hash = _h("tx", block_hash, i)
            sender, receiver = _addr(self._salt + i), _addr(self._salt + i + 1)
            value = 10**15 + self._salt * 100 + i
            transactions.append({
                "hash": tx_hash, "blockHash": block_hash, "blockNumber": hex(number),
                "transactionIndex": hex(i), "nonce": hex(self._salt), "from": sender, "to": TOKEN,
                "value": hex(value), "gas": hex(60_000), "gasPrice": hex(10**9), "input": "0xa9059cbb",
                "type": "0x0",
            })  # fmt: skip
            receipts.append({
                "blockHash": block_hash, "blockNumber": hex(number), "transactionHash": tx_hash,
                "transactionIndex": hex(i), "status": "0x1", "gasUsed": hex(50_000),
                "cumulativeGasUsed": hex(50_000 * (i + 1)), "effectiveGasPrice": hex(10**9),
                "contractAddress": None, "from": sender, "to": TOKEN,
                "logs": [{
                    "address": TOKEN, "data": _word(value), "logIndex": hex(i), "removed": False,
                    "topics": [TRANSFER, "0x" + "0" * 24 + sender[2:], "0x" + "0" * 24 + receiver[2:]],
                    "blockHash": block_hash, "blockNumber": hex(number), "transactionHash": tx_hash,
                    "transactionIndex": hex(i),
                }],
            })  # fmt: skip
        block = {
            "number": hex(number), "hash": block_hash, "parentHash": parent_hash, "nonce": "0x" + "0" * 16,
            "sha3Uncles": _h("uncles"), "logsBloom": "0x" + "00" * 256,
            "transactionsRoot": _h("tx", block_hash),
            "stateRoot": _h("state", block_hash), "receiptsRoot": _h("rc", block_hash), "miner": _addr(0),
            "difficulty": "0x0", "totalDifficulty": "0x0", "extraData": "0x", "size": hex(1000),
            "gasLimit": hex(30_000_000), "gasUsed": hex(50_000 * n_txs), "baseFeePerGas": hex(10**9),
            "timestamp": hex(self.genesis_time + number * self.block_time), "transactions": transactions,
            "uncles": [],
        }  # fmt: skip
        self.by_hash[block_hash] = block
        self.receipts[block_hash] = receipts
        return block

    @property
    def head(self) -> dict[str, Any]:
        return self.by_hash[self.canonical_hashes[-1]]

    def block(self, number: int) -> dict[str, Any] | None:
        if 0 <= number < len(self.canonical_hashes):
            return self.by_hash[self.canonical_hashes[number]]
        return None

    def mine(self, count: int = 1) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            number = len(self.canonical_hashes)
            parent = self.canonical_hashes[-1] if self.canonical_hashes else "0x" + "00" * 32
            block = self.make_block(number, parent)
            self.canonical_hashes.append(block["hash"])
            out.append(block)
        return out

    def reorg(self, depth: int, new_length: int | None = None) -> list[dict[str, Any]]:
        """Replace the last ``depth`` blocks with a new branch of ``new_length`` (default ``depth``)."""
        del self.canonical_hashes[len(self.canonical_hashes) - depth :]
        return self.mine(depth if new_length is None else new_length)

    def side_block(self, number: int) -> dict[str, Any]:
        """A block at ``number`` on a side branch (its parent canonical), never made canonical."""
        return self.make_block(number, self.canonical_hashes[number - 1])

    def canonical(self, first: int = 0) -> list[tuple[int, str, str]]:
        return [
            (int(b["number"], 16), b["hash"], b["parentHash"])
            for b in (self.by_hash[h] for h in self.canonical_hashes[first:])
        ]

    def tx_hashes(self, first: int = 0) -> list[str]:
        return [tx["hash"] for h in self.canonical_hashes[first:] for tx in self.by_hash[h]["transactions"]]


@dataclass
class Fault:
    method: str
    kind: str  # "429" | "timeout" | "500"
    remaining: int
    delay: float = 5.0  # for "timeout": how long the answer is held back
    body: str = "rate limited"  # for HTTP errors


@dataclass
class ScriptedNode:
    chain: ScriptedChain = field(default_factory=ScriptedChain)
    chain_id: int = 31337
    websocket: bool = True  # False: no websocket endpoint (connections refused with 403)
    auto_heads: bool = True  # push the new tip to subscribers after mine()/reorg()
    refused_hashes: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    port: int = 0
    before_answer: Callable[[str, list[Any]], None] | None = None  # e.g. reorg the chain mid-gap-fill
    # one-shot answers from "another backend": (method, first param) → blocks to answer, in turn
    overrides: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    _subscribers: set[WebSocket] = field(default_factory=set)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- what the test scripts --------------------------------------------------------------

    def fail(
        self, method: str, kind: str = "429", times: int = 1, delay: float = 5.0, body: str = "rate limited"
    ) -> None:
        self.faults.append(Fault(method, kind, times, delay, body))

    async def mine(self, count: int = 1) -> list[dict[str, Any]]:
        blocks = self.chain.mine(count)
        if self.auto_heads:
            await self.send_head(self.chain.head)
        return blocks

    async def reorg(self, depth: int, new_length: int | None = None) -> list[dict[str, Any]]:
        blocks = self.chain.reorg(depth, new_length)
        if self.auto_heads:
            await self.send_head(self.chain.head)
        return blocks

    async def send_head(self, block: dict[str, Any]) -> None:
        header = {k: v for k, v in block.items() if k != "transactions"}
        params = {"subscription": "0x1", "result": header}
        await self.send_raw(
            orjson.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": params}).decode()
        )

    async def send_raw(self, text: str) -> None:
        for ws in list(self._subscribers):
            with contextlib.suppress(Exception):
                await ws.send_text(text)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- JSON-RPC ----------------------------------------------------------------------------

    def _block_param(self, param: str) -> dict[str, Any] | None:
        if param in ("latest", "safe", "finalized", "pending"):
            return self.chain.head if self.chain.canonical_hashes else None
        if param == "earliest":
            return self.chain.block(0)
        return self.chain.block(int(param, 16))

    @staticmethod
    def _shape(block: dict[str, Any] | None, full: bool) -> dict[str, Any] | None:
        if block is None or full:
            return block
        return {**block, "transactions": [tx["hash"] for tx in block["transactions"]]}

    def answer(self, method: str, params: list[Any]) -> Any:
        if self.before_answer is not None:
            self.before_answer(method, params)
        chain = self.chain
        pending = self.overrides.get((method, str(params[0]) if params else ""))
        if pending:
            return self._shape(pending.pop(0), bool(params[1]) if len(params) > 1 else True)
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(len(chain.canonical_hashes) - 1)
        if method == "eth_getBlockByNumber":
            return self._shape(self._block_param(params[0]), bool(params[1]))
        if method == "eth_getBlockByHash":
            block_hash = params[0].lower()
            if block_hash in self.refused_hashes:
                return None
            return self._shape(chain.by_hash.get(block_hash), bool(params[1]))
        if method == "eth_getBlockReceipts":
            param = params[0]
            if isinstance(param, str) and len(param) == 66:
                return None if param in self.refused_hashes else chain.receipts.get(param.lower())
            block = self._block_param(param)
            return None if block is None else chain.receipts[block["hash"]]
        raise KeyError(method)

    def _fault_for(self, methods: list[str]) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.method in methods:
                fault.remaining -= 1
                return fault
        return None

    async def _http(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        entries = body if isinstance(body, list) else [body]
        methods = [e["method"] for e in entries]
        fault = self._fault_for(methods)
        if fault is not None:
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay)
            else:
                return Response(fault.body.encode(), status_code=int(fault.kind))
        out = []
        for entry in entries:
            self.calls.append((entry["method"], entry.get("params") or []))
            try:
                result = self.answer(entry["method"], entry.get("params") or [])
                out.append({"jsonrpc": "2.0", "id": entry["id"], "result": result})
            except KeyError:
                out.append(
                    {"jsonrpc": "2.0", "id": entry["id"], "error": {"code": -32601, "message": "nope"}}
                )
        return Response(
            orjson.dumps(out if isinstance(body, list) else out[0]), media_type="application/json"
        )

    async def _ws(self, ws: WebSocket) -> None:
        if not self.websocket:
            await ws.close(code=1008)
            return
        await ws.accept()
        try:
            while True:
                frame = await ws.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                message = orjson.loads(frame.get("text") or frame.get("bytes") or b"{}")
                if message.get("method") == "eth_subscribe":
                    await ws.send_text(
                        orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": "0x1"}).decode()
                    )
                    self._subscribers.add(ws)
        except WebSocketDisconnect:
            pass
        finally:
            self._subscribers.discard(ws)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[ScriptedNode]:
        app = Starlette(
            routes=[
                Route("/", self._http, methods=["POST"]),
                Route("/{path:path}", self._http, methods=["POST"]),  # keys in the path, as hosted nodes
                WebSocketRoute("/", self._ws),
            ]
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", ws_ping_interval=None, timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            for ws in list(self._subscribers):
                with contextlib.suppress(Exception):
                    await ws.close()
            await asyncio.wait_for(task, timeout=10)
            sock.close()

    async def send_head_and_wait(self, block: dict[str, Any], timeout: float = 10.0) -> None:
        """Push ``block`` as a head and wait until the client asked about it (by its number or hash), so
        the next head does not arrive in the same backlog (where only the newest counts)."""
        mark = len(self.calls)
        await self.send_head(block)
        wanted = {block["hash"], block["number"]}
        for _ in range(int(timeout / 0.02)):
            if any(params and params[0] in wanted for _, params in self.calls[mark:]):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the client never asked about head {block['number']} {block['hash']}")

    async def drop_websockets(self, *, refuse_new: bool = True) -> None:
        """Close every websocket (a node restart, a load balancer dropping idle connections)."""
        self.websocket = not refuse_new
        for ws in list(self._subscribers):
            with contextlib.suppress(Exception):
                await ws.close(code=1012)
        self._subscribers.clear()

    async def wait_for_subscriber(self, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if self._subscribers:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no websocket subscriber")
