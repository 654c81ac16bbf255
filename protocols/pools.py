"""Classifying a pool the pipeline has not seen created: pure pieces around two rounds of ``eth_call``.

When a pool event comes from an address missing from ``ctx.pools``, the pipeline asks the registry for
a ``PoolQuery`` (``Registry.unknown_pools``) and then:

1. sends ``query.calls`` (``eth_call`` to the pool: ``factory()``, ``token0()``, ``token1()`` and for v3
   ``fee()``, ``tickSpacing()``) and passes the results, keyed by ``Call.name``, to ``query.resolve``:
   a ``Pool`` with protocol ``unknown``, or ``Skip(NOT_A_POOL)`` when token0/token1 cannot be read;
2. if ``query.verification_call(pool)`` is not None (the pool names a configured factory), sends it —
   ``getPair(token0, token1)`` / ``getPool(token0, token1, fee)`` to that factory — and
   ``query.verified(pool, result)`` returns the pool labelled with the venue when the factory answers
   with the pool's own address, else the pool unchanged (``unknown``).

Why the second round: any contract can answer ``factory()`` with Uniswap's factory; only the factory's
own registry proves the pool is one of its. Computing the CREATE2 address instead would need each
fork's init-code hash (and the devnet's differs from mainnet's).

A call result is the return data as ``0x`` hex or bytes, or None when the call failed or reverted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from decoders.events import selector
from protocols.skips import NOT_A_POOL, UNKNOWN, Skip
from records import Log, Pool

CallResult = str | bytes | None

FACTORY = "factory"
TOKEN0 = "token0"
TOKEN1 = "token1"
FEE = "fee"
TICK_SPACING = "tickSpacing"
SELECTORS: dict[str, str] = {
    name: selector(f"{name}()") for name in (FACTORY, TOKEN0, TOKEN1, FEE, TICK_SPACING)
}  # factory 0xc45a0155, token0 0x0dfe1681, token1 0xd21220a7, fee 0xddca3f43, tickSpacing 0xd0c93a7c


class Call(NamedTuple):
    """One ``eth_call``: ``name`` keys its result, ``to`` is the contract, ``data`` the calldata."""

    name: str
    to: str
    data: str


def encode_call(signature: str, *args: str | int) -> str:
    """Calldata for static address/uint arguments: ``encode_call("getPair(address,address)", a, b)``."""
    words = (int(a, 16) if isinstance(a, str) else a for a in args)
    return selector(signature) + "".join(f"{w:064x}" for w in words)


def _word(result: CallResult) -> int | None:
    """The first 32-byte word of a call result, or None (failed, empty, short, not hex)."""
    if result is None:
        return None
    if isinstance(result, str):
        text = result[2:] if result[:2] in ("0x", "0X") else result
        if len(text) < 64:
            return None
        try:
            return int(text[:64], 16)
        except ValueError:
            return None
    return int.from_bytes(result[:32], "big") if len(result) >= 32 else None


def address_result(result: CallResult) -> str | None:
    """An ``address`` return value as lower-case ``0x`` hex; None if not a clean non-zero address."""
    word = _word(result)
    if word is None or word == 0 or word >> 160:
        return None
    return f"0x{word:040x}"


def uint_result(result: CallResult, bits: int) -> int | None:
    word = _word(result)
    return None if word is None or word >> bits else word


def int_result(result: CallResult, bits: int) -> int | None:
    """A signed ``int<bits>`` return value (sign-extended to 256 bits on the wire)."""
    word = _word(result)
    if word is None:
        return None
    if word >> 255:
        word -= 1 << 256
    return word if -(1 << (bits - 1)) <= word < 1 << (bits - 1) else None


@dataclass(frozen=True, slots=True)
class PoolResolver:
    """How one protocol version classifies an unknown emitter (the protocol module builds it)."""

    version: str
    calls: tuple[str, ...]  # function names called on the pool, keys of ``SELECTORS``
    # (pool id, results, emitting contract) → a Pool (protocol unknown until verified) or a Skip
    resolve: Callable[[str, Mapping[str, CallResult], str], Pool | Skip]
    verification: Callable[[Pool], Call | None]  # factory registry lookup, or None
    confirm: Callable[[Pool], Pool]  # label a pool its factory confirmed
    # calls made to the emitting contract instead (a singleton that knows its pools: Balancer's Vault)
    contract_calls: Callable[[str, str], tuple[Call, ...]] | None = None


@dataclass(frozen=True, slots=True)
class PoolQuery:
    """The pure steps to classify one address; see the module docstring for the order."""

    address: str  # the pool id
    resolver: PoolResolver
    contract: str = ""  # the contract that emitted the pool's event

    @property
    def version(self) -> str:
        return self.resolver.version

    @property
    def calls(self) -> tuple[Call, ...]:
        if self.resolver.contract_calls is not None:
            return self.resolver.contract_calls(self.address, self.contract)
        return tuple(Call(name, self.address, SELECTORS[name]) for name in self.resolver.calls)

    def resolve(self, results: Mapping[str, CallResult]) -> Pool | Skip:
        return self.resolver.resolve(self.address, results, self.contract)

    def verification_call(self, pool: Pool) -> Call | None:
        return self.resolver.verification(pool)

    def verified(self, pool: Pool, result: CallResult) -> Pool:
        return self.resolver.confirm(pool) if address_result(result) == self.address else pool


def read_pool_tokens(address: str, results: Mapping[str, CallResult]) -> tuple[str, str, str | None] | Skip:
    """(token0, token1, factory) from call results; factory None when unreadable."""
    token0, token1 = address_result(results.get(TOKEN0)), address_result(results.get(TOKEN1))
    if token0 is None or token1 is None:
        bad = TOKEN0 if token0 is None else TOKEN1
        return Skip(NOT_A_POOL, f"{address}: {bad}() did not return an address")
    return token0, token1, address_result(results.get(FACTORY))


def make_pool(
    address: str,
    *,
    protocol: str,
    version: str,
    label: str | None,
    factory: str | None,
    token0: str,
    token1: str,
    fee: int | None,
    tick_spacing: int | None,
    created_by: Log | None = None,
    contract: str | None = None,
    tokens: tuple[str, ...] | None = None,
    hooks: str | None = None,
) -> Pool:
    """A ``Pool``: attributed to ``protocol`` under ``label`` when a configured venue vouches for it
    (``label`` not None), else ``unknown``; ``created_by`` is the factory's creation log, when seen.
    ``contract`` (the emitter of the pool's events) defaults to ``address``, ``tokens`` to
    (token0, token1)."""
    return Pool(
        address=address,
        protocol=protocol if label is not None else UNKNOWN,
        version=version,
        exchange=label if label is not None else UNKNOWN,
        factory=factory,
        token0=token0,
        token1=token1,
        fee=fee,
        tick_spacing=tick_spacing,
        created_block_number=created_by.block_number if created_by is not None else None,
        created_block_hash=created_by.block_hash if created_by is not None else None,
        created_transaction_hash=created_by.transaction_hash if created_by is not None else None,
        created_log_index=created_by.log_index if created_by is not None else None,
        contract=contract if contract is not None else address,
        tokens=tokens if tokens is not None else (token0, token1),
        hooks=hooks,
    )
