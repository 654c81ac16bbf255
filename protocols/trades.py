"""Building ``DexTrade`` and ``DexLiquidity`` records from decoded amounts: exact amounts, price, sides.

Exact amounts: ``raw / 10**decimals`` as a ``Decimal``, computed as ``raw × 10**-decimals`` (one
cached ``Decimal`` per decimals value) in a context of 80 digits. The default context (28 digits)
would round amounts above 10**28 raw units (10**10 tokens of an 18-decimal token, not rare among
large-supply tokens), so it must not be used; 80 digits hold any uint256/int256 (78 digits), so the
result is never rounded. The exponent is ``-decimals``
(``1.000000`` for 10**6 raw USDC units).

Price: ``amount_sold / amount_bought`` in human units (how many sold tokens one bought token cost),
rounded to ``PRICE_DIGITS`` = 38 significant digits, half-even — the widest DECIMAL most SQL engines
(Trino, Spark, BigQuery NUMERIC's precision) accept, and far beyond any quote's meaning. Null when
either token's decimals are unknown or nothing was bought.

Trade sides (which token was bought and sold, and how much) are decided by each protocol plugin, with
Dune's ``dex.trades`` formulas (spellbook's ``uniswap_compatible_v2_trades`` / ``_v3_trades`` macros), so
that a row here and the same swap's row on Dune carry the same tokens and raw amounts. Every Swap event
is a trade: Dune keeps flash swaps and zero-amount swaps, so dexnode does too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from decimal import Context as DecimalContext
from types import MemberDescriptorType
from typing import Any, Final

from protocols.base import Context
from records import DexLiquidity, DexTrade, Log, Pool
from records.chain import TokenAmount

PRICE_DIGITS: Final = 38
_EXACT = DecimalContext(
    prec=80, rounding=ROUND_HALF_EVEN, Emin=-999999, Emax=999999, traps=[InvalidOperation]
)
_PRICE = DecimalContext(prec=PRICE_DIGITS, rounding=ROUND_HALF_EVEN, Emin=-999999, Emax=999999)


def slot_filler(cls: type[Any]) -> Callable[..., Any]:
    """A positional constructor for a frozen slots dataclass: the same object as ``cls(*values)``, cheaper.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, and a DexTrade has
    23: that was 40 % of the swap → DexTrade path. Calling each slot descriptor's ``__set__`` instead
    still costs a C call with an argument tuple per field (measured: a quarter of the path). So the
    fields are stored by plain attribute assignments, which CPython turns into direct slot stores, on an
    unfrozen twin of ``cls`` (same base, same ``__slots__``: the same memory layout), and the finished
    object then becomes a ``cls`` by ``__class__`` assignment — which CPython allows only between
    layouts it checks are identical — frozen from then on. The unit tests compare the result with
    ``cls(*values)`` field by field. Falls back to ``cls`` if the class validates in ``__post_init__``
    or keeps a field outside its own slots.
    """
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    own = vars(cls)
    slots = all(f.init and isinstance(own.get(f.name), MemberDescriptorType) for f in fields)
    if hasattr(cls, "__post_init__") or not slots:
        return cls
    # Both methods: they share one C slot, so a frozen base's __delattr__ alone would keep every
    # assignment on the generic, unspecialised path.
    unfrozen = {
        "__slots__": cls.__slots__,
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
    }
    twin = type(f"_Unfrozen{cls.__name__}", cls.__bases__, unfrozen)
    probe: Any = object.__new__(twin)
    try:  # CPython's layout check, once here rather than at the first record
        probe.__class__ = cls
    except TypeError:
        return cls
    body = "".join(f"    obj.{name} = {name}\n" for name in names)
    head = f"def make({', '.join(names)}):\n    obj = _new(_twin)\n"
    source = f"{head}{body}    obj.__class__ = _cls\n    return obj\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec(source, namespace)
    make: Callable[..., Any] = namespace["make"]
    return make


def slot_maker(cls: type[Any]) -> Callable[..., Any]:
    """``slot_filler``'s maker in C when ``protocols/_speedups.c`` is built (``make install``): the object is
    allocated and its slots filled in one call (the Python maker runs one interpreter instruction per
    field and a ``__class__`` assignment). The same checks decide whether a fast maker is allowed at all;
    without the extension, or for a class they refuse, this is ``slot_filler(cls)``."""
    python = slot_filler(cls)
    if python is cls or _c_slot_maker is None:
        return python
    return _c_slot_maker(cls, tuple(f.name for f in dataclasses.fields(cls)))


try:  # optional C extension; tests/unit/test_decode_makers.py runs both makers against cls(*values)
    from protocols._speedups import receipt_logs as c_receipt_logs
    from protocols._speedups import slot_maker as _c_slot_maker
except ImportError as error:  # not built (no compiler at install time): the Python maker, same records
    _c_slot_maker = None
    c_receipt_logs = None  # extraction's common case in C (indexer.pipeline.pipeline.RECORD_MAKERS)
    if not isinstance(error, ModuleNotFoundError):  # built, but not loadable here (another Python, say)
        logging.getLogger(__name__).warning("protocols._speedups not loaded, makers in Python: %s", error)

_dex_trade: Callable[..., DexTrade] = slot_maker(DexTrade)
_dex_liquidity: Callable[..., DexLiquidity] = slot_maker(DexLiquidity)


class _Scales(dict[int, Decimal]):
    """decimals → ``Decimal`` 10**-decimals (``1E-18``), made on first use.

    ``_EXACT.multiply(raw, scale)`` keeps raw's digits and takes the exponent ``-decimals``: the same
    ``Decimal`` as ``Decimal(raw).scaleb(-decimals)``, digits and exponent alike. It is cheaper: a
    context method converts an ``int`` operand exactly itself (no ``Decimal(raw)`` object built
    through the constructor's argument parsing), and ``scaleb`` parsed keyword arguments on every call.
    """

    def __missing__(self, decimals: int) -> Decimal:
        scale = self[decimals] = Decimal(1).scaleb(-decimals, _EXACT)
        return scale


_SCALES: Final = _Scales()
_multiply = _EXACT.multiply


def exact_amount(raw: int, decimals: int | None) -> Decimal | None:
    """``raw / 10**decimals``, exact; None when decimals are unknown."""
    if decimals is None:
        return None
    return _multiply(raw, _SCALES[decimals])


def price_of(amount_sold: Decimal | None, amount_bought: Decimal | None) -> Decimal | None:
    """Sold per bought, 38 significant digits half-even; None when unknown or nothing was bought."""
    if amount_sold is None or amount_bought is None or not amount_bought:
        return None
    return _PRICE.divide(amount_sold, amount_bought)


def trade(
    log: Log,
    ctx: Context,
    pool: Pool,
    taker: str,
    maker: str | None,
    bought: str,
    bought_raw: int,
    sold: str,
    sold_raw: int,
) -> DexTrade:
    """A ``DexTrade`` with the sides the protocol decided; symbols, exact amounts and price added here."""
    tokens, scales = ctx.tokens, _SCALES
    sold_token, bought_token = tokens.get(sold), tokens.get(bought)
    # exact_amount inlined: one call less per amount on the hottest path
    sold_symbol: str | None = None
    amount_sold: Decimal | None = None
    if sold_token is not None:
        sold_symbol, decimals = sold_token.symbol, sold_token.decimals
        if decimals is not None:
            amount_sold = _multiply(sold_raw, scales[decimals])
    bought_symbol: str | None = None
    amount_bought: Decimal | None = None
    if bought_token is not None:
        bought_symbol, decimals = bought_token.symbol, bought_token.decimals
        if decimals is not None:
            amount_bought = _multiply(bought_raw, scales[decimals])
    price = (
        _PRICE.divide(amount_sold, amount_bought)
        if amount_sold is not None and amount_bought  # None or zero → no price
        else None
    )
    tx_from, tx_to = ctx.transactions[log.transaction_hash]
    return _dex_trade(  # positional, in DexTrade's field order
        log.block_number,
        ctx.block_times[log.block_hash],
        log.block_hash,
        log.transaction_hash,
        log.transaction_index,
        log.log_index,
        pool.protocol,
        pool.version,
        pool.exchange,
        pool.address,
        taker,
        maker,
        bought,
        sold,
        bought_symbol,
        sold_symbol,
        bought_raw,
        sold_raw,
        amount_bought,
        amount_sold,
        price,
        tx_from,
        tx_to,
    )


def liquidity(
    log: Log,
    ctx: Context,
    pool: Pool,
    event: str,
    event_type: str,
    amount0: int,
    amount1: int,
    *,
    owner: str | None,
    sender: str | None,
    liquidity: int | None = None,
    tick_lower: int | None = None,
    tick_upper: int | None = None,
    amounts: tuple[TokenAmount, ...] = (),
) -> DexLiquidity:
    """A ``DexLiquidity`` for a pool's mint/burn/collect (``event_type`` add/remove); ``amounts`` lists
    every token's amount for pools with more than two tokens."""
    token0, token1 = ctx.tokens.get(pool.token0), ctx.tokens.get(pool.token1)
    return _dex_liquidity(  # positional, in DexLiquidity's field order
        log.block_number,
        ctx.block_times[log.block_hash],
        log.block_hash,
        log.transaction_hash,
        log.transaction_index,
        log.log_index,
        pool.protocol,
        pool.version,
        pool.exchange,
        pool.address,
        event,
        event_type,
        pool.token0,
        pool.token1,
        amount0,
        amount1,
        exact_amount(amount0, token0.decimals if token0 is not None else None),
        exact_amount(amount1, token1.decimals if token1 is not None else None),
        owner,
        sender,
        liquidity,
        tick_lower,
        tick_upper,
        amounts,
    )
