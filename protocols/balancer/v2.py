"""Balancer v2: one Vault holds every pool. TokensRegistered → Pool, Swap → DexTrade,
PoolBalanceChanged → DexLiquidity.

A pool is its 32-byte ``poolId`` (topic1 of every event; its first 20 bytes are the pool contract):
``Pool.address`` and a trade's ``pool_address`` hold that id, ``Pool.contract`` the Vault. Pools hold 2
to 8 tokens, listed in ``Pool.tokens`` in the Vault's order (token0/token1: the first two). A deployment
is ``BalancerVenue(vault, label)``; setting ``DEXNODE_BALANCER_V2_VAULTS``.

Rules:
- PoolRegistered is validated and yields nothing: the pool has no tokens until TokensRegistered, which
  the pool's constructor emits in the same transaction; that event makes the ``Pool`` (a later
  TokensRegistered in the same batch extends its token list).
- Swap: one trade per swap, so a ``batchSwap`` gives one trade per hop, in log order: sold ``amountIn``
  of ``tokenIn``, bought ``amountOut`` of ``tokenOut`` (as Dune's ``balancer_v2`` trades). The Vault's
  event names no trader: taker = the transaction's sender, maker null.
- PoolBalanceChanged: a join (deltas ≥ 0) is event ``join``, ``add``; an exit is ``exit``,
  ``remove``. ``amounts`` lists every token with ``|delta|`` (what the provider paid or received);
  amount0/amount1 are the first two; owner and sender = the liquidity provider.
- A pool the Vault registered before the indexed range (no discovery event seen) is classified by
  asking the Vault that emitted its event: ``getPoolTokens(poolId)`` at the batch's block gives its
  tokens; an id the Vault does not know reverts and is counted ``skip.not_a_pool``. Only a configured
  Vault is asked (anyone can emit a Swap-shaped event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from decoders.balancer_v2 import (
    BALANCER_SWAP,
    POOL_BALANCE_CHANGED,
    POOL_REGISTERED,
    TOKENS_REGISTERED,
    BalancerSwap,
    PoolBalanceChanged,
    TokensRegistered,
    decode_balancer_swap,
    decode_pool_balance_changed,
    decode_pool_registered,
    decode_pool_tokens,
    decode_tokens_registered,
)
from decoders.events import selector
from protocols.base import (
    BY_TOPIC1,
    Context,
    Discovery,
    Outcome,
    PoolEvent,
    ProtocolSpec,
    check_venues,
    protocol_spec,
)
from protocols.plugins import Plugin
from protocols.pools import Call, CallResult, PoolResolver, make_pool
from protocols.skips import MALFORMED, NOT_A_POOL, Skip
from protocols.trades import exact_amount, liquidity, trade
from records import Log, Pool
from records.chain import TokenAmount

NAME: Final = "balancer-v2"
VERSION: Final = "2"
PROTOCOL: Final = "balancer"
MAX_TOKENS: Final = 8


@dataclass(frozen=True, slots=True)
class BalancerVenue:
    """A deployment of the Balancer v2 Vault and the exchange label of its pools."""

    vault: str
    label: str

    @property
    def factory(self) -> str:  # the seam's name for the contract that makes a venue's pools
        return self.vault


DEFAULT_BALANCER_VENUES: tuple[BalancerVenue, ...] = (
    BalancerVenue("0xba12222222228d8ba445958a75a0704d566bf2c8", "balancer-v2"),
)  # Ethereum mainnet (the same address on most EVM chains)


def pool_registered(log: Log, ctx: Context, venue: BalancerVenue, event: object) -> Outcome:
    """PoolRegistered: validated; the pool is made by its TokensRegistered."""
    return None


def tokens_registered(log: Log, ctx: Context, venue: BalancerVenue, event: TokensRegistered) -> Outcome:
    """TokensRegistered from a configured Vault → Pool (2–8 tokens, in the Vault's order); for a pool
    already known, the same pool with the new tokens appended."""
    known = ctx.pools.get(event.pool_id)
    if known is not None and known.contract != log.address:
        known = None  # another Vault's pool with the same id: not this one
    earlier = known.tokens if known is not None else ()
    tokens = earlier + tuple(t for t in event.tokens if t not in earlier)
    if not 2 <= len(tokens) <= MAX_TOKENS:
        return Skip(MALFORMED, f"TokensRegistered: a pool of {len(tokens)} tokens")
    if known is not None:
        return replace(known, token0=tokens[0], token1=tokens[1], tokens=tokens)
    return make_pool(
        event.pool_id, protocol=PROTOCOL, version=VERSION, label=venue.label, factory=log.address,
        token0=tokens[0], token1=tokens[1], fee=None, tick_spacing=None, created_by=log,
        contract=log.address, tokens=tokens,
    )  # fmt: skip


def swap(log: Log, ctx: Context, pool: Pool, event: BalancerSwap) -> Outcome:
    """Swap → DexTrade (sold amountIn of tokenIn, bought amountOut of tokenOut; taker = tx sender)."""
    taker = ctx.transactions[log.transaction_hash][0]
    return trade(
        log, ctx, pool, taker, None, event.token_out, event.amount_out, event.token_in, event.amount_in
    )


def pool_balance_changed(log: Log, ctx: Context, pool: Pool, event: PoolBalanceChanged) -> Outcome:
    """PoolBalanceChanged → DexLiquidity (join/add or exit/remove, every token's amount)."""
    if len(event.tokens) < 2:
        return Skip(MALFORMED, "PoolBalanceChanged: fewer than two tokens")
    joined = all(d >= 0 for d in event.deltas)
    amounts = tuple(
        TokenAmount(token, abs(delta), exact_amount(abs(delta), _decimals(ctx, token)))
        for token, delta in zip(event.tokens, event.deltas, strict=True)
    )
    provider = event.liquidity_provider
    return liquidity(
        log, ctx, pool, "join" if joined else "exit", "add" if joined else "remove",
        amounts[0].amount_raw, amounts[1].amount_raw, owner=provider, sender=provider, amounts=amounts,
    )  # fmt: skip


def _decimals(ctx: Context, token: str) -> int | None:
    known = ctx.tokens.get(token)
    return known.decimals if known is not None else None


EVENTS: Final = (
    PoolEvent(BALANCER_SWAP, decode_balancer_swap, swap),
    PoolEvent(POOL_BALANCE_CHANGED, decode_pool_balance_changed, pool_balance_changed),
)
DISCOVERY: Final = (
    Discovery(POOL_REGISTERED, decode_pool_registered, pool_registered),
    Discovery(TOKENS_REGISTERED, decode_tokens_registered, tokens_registered),
)


GET_POOL_TOKENS: Final = "getPoolTokens"
_GET_POOL_TOKENS: Final = selector("getPoolTokens(bytes32)")


def _vault_calls(pool_id: str, vault: str) -> tuple[Call, ...]:
    return (Call(GET_POOL_TOKENS, vault, _GET_POOL_TOKENS + pool_id[2:]),)


def protocol(venues: Sequence[BalancerVenue] = DEFAULT_BALANCER_VENUES) -> ProtocolSpec:
    """The Balancer v2 plugin for these Vaults (distinct lower-case addresses)."""
    by_vault: Mapping[str, BalancerVenue] = check_venues(venues)

    def resolve(pool_id: str, results: Mapping[str, CallResult], vault: str) -> Pool | Skip:
        """A pool nobody saw registered, from its Vault's ``getPoolTokens`` (the Vault is the registry)."""
        venue = by_vault.get(vault)
        if venue is None:
            return Skip(NOT_A_POOL, f"{pool_id}: emitted by {vault}, not a configured Vault")
        tokens = decode_pool_tokens(results.get(GET_POOL_TOKENS))
        if tokens is None or not 2 <= len(tokens) <= MAX_TOKENS:
            return Skip(NOT_A_POOL, f"{pool_id}: the Vault {vault} does not know this pool")
        return make_pool(
            pool_id, protocol=PROTOCOL, version=VERSION, label=venue.label, factory=vault, token0=tokens[0],
            token1=tokens[1], fee=None, tick_spacing=None, contract=vault, tokens=tokens,
        )  # fmt: skip

    resolver = PoolResolver(VERSION, (), resolve, lambda pool: None, lambda pool: pool, _vault_calls)
    return protocol_spec(
        NAME, VERSION, by_vault, events=EVENTS, discovery=DISCOVERY, pool_key=BY_TOPIC1, resolver=resolver
    )


def _parse_venue(vault: str, label: str, extra: str) -> BalancerVenue:
    if extra:
        raise ValueError("a Vault entry takes no ':' option")
    return BalancerVenue(vault, label)


PLUGIN: Final = Plugin(NAME, "balancer_v2_vaults", DEFAULT_BALANCER_VENUES, _parse_venue, protocol)
