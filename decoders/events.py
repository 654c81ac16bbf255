"""Event decoding primitives: ABI words from hex, the ``Malformed`` skip result, and the eth-abi fallback.

A log's ``data`` is ``0x`` + 64 hex characters per 32-byte word and its topics are 66-character hex
strings (lower case, as ``records.Log`` guarantees). The fast decoders in ``decoders.uniswap`` slice
those strings directly; ``EventAbi`` decodes any other event with eth-abi. Neither raises on bad input:
a log that does not fit the declared layout decodes to ``Malformed(reason)``, which callers count and
skip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak

from records import Log

INT24_MIN = -(1 << 23)
INT24_MAX = (1 << 23) - 1


class Malformed(NamedTuple):
    """A log whose topics or data do not fit the event it claims to be (its topic0)."""

    reason: str


def selector(signature: str) -> str:
    """``0x`` + the 4-byte function selector of a canonical signature such as ``token0()``."""
    return "0x" + keccak(text=signature)[:4].hex()


def event_topic0(signature: str) -> str:
    """``0x`` + keccak256 of a canonical event signature such as ``Sync(uint112,uint112)``."""
    return "0x" + keccak(text=signature).hex()


_PARAM = re.compile(r"^\s*([a-z0-9\[\]]+)(\s+indexed)?(?:\s+([A-Za-z_][A-Za-z0-9_]*))?\s*$")


@dataclass(frozen=True, slots=True)
class AbiParam:
    name: str
    type: str
    indexed: bool


@dataclass(frozen=True, slots=True)
class EventAbi:
    """One event's ABI, from its Solidity declaration; decodes logs with eth-abi (the slow, general path).

    Tuple parameters are not supported (none of the events dexnode decodes has one). Indexed dynamic
    parameters (``string``, ``bytes``, arrays) are returned as their topic, the keccak hash.
    """

    name: str
    params: tuple[AbiParam, ...]

    @classmethod
    def parse(cls, declaration: str) -> EventAbi:
        """``EventAbi.parse("Sync(uint112 reserve0, uint112 reserve1)")``."""
        head, _, rest = declaration.partition("(")
        if not rest.endswith(")") or not head.strip().isidentifier():
            raise ValueError(f"not an event declaration: {declaration!r}")
        params = []
        body = rest[:-1].strip()
        for i, part in enumerate(body.split(",") if body else []):
            match = _PARAM.match(part)
            if match is None:
                raise ValueError(f"cannot parse parameter {part!r} of {declaration!r}")
            abi_type, indexed, name = match.groups()
            abi_type = {"uint": "uint256", "int": "int256"}.get(abi_type, abi_type)
            params.append(AbiParam(name or f"arg{i}", abi_type, indexed is not None))
        if sum(p.indexed for p in params) > 3:
            raise ValueError(f"more than 3 indexed parameters: {declaration!r}")
        return cls(head.strip(), tuple(params))

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(p.type for p in self.params)})"

    @property
    def topic0(self) -> str:
        return event_topic0(self.signature)

    @property
    def topic_count(self) -> int:
        return 1 + sum(p.indexed for p in self.params)

    def decode(self, log: Log) -> dict[str, Any] | Malformed:
        """Argument name → value; addresses lower-case ``0x`` hex, ints as int, bytes as ``0x`` hex."""
        topics = [t for t in (log.topic1, log.topic2, log.topic3) if t is not None]
        if len(topics) + 1 != self.topic_count:
            return Malformed(f"{self.name}: expected {self.topic_count} topics, got {len(topics) + 1}")
        try:
            data = bytes.fromhex(log.data[2:])
            values = iter(abi_decode([p.type for p in self.params if not p.indexed], data, strict=True))
            out: dict[str, Any] = {}
            topic_iter = iter(topics)
            for p in self.params:
                if p.indexed:
                    topic = next(topic_iter)
                    dynamic = p.type in ("string", "bytes") or p.type.endswith("]")
                    value: Any = topic if dynamic else abi_decode([p.type], bytes.fromhex(topic[2:]))[0]
                else:
                    value = next(values)
                out[p.name] = _plain(p.type, value)
            return out
        except (DecodingError, ValueError, OverflowError) as exc:
            return Malformed(f"{self.name}: {type(exc).__name__}: {exc}")


def _plain(abi_type: str, value: Any) -> Any:
    if abi_type == "address":
        return str(value).lower()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value
