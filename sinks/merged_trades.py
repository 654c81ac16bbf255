"""The one trade shape DEX and CEX trades share: the merged ``trades`` Kafka topic and websocket channel.

``{"venue", "symbol", "pool", "price", "size", "side", "time", "trade_id", "block_number"}``:

- ``venue``: the exchange (``binance``) or the DEX label (``uniswap-v2``);
- ``symbol``: ``BASE-QUOTE``; for a DEX trade base is the pool's token with the lower address (token0 of a
  Uniswap pool, so one pool always has one symbol), named by its symbol, or its address when it has none;
- ``price``: quote per base, ``size``: the base amount, exact decimal strings (null for a DEX trade whose
  token decimals are unknown);
- ``side``: the taker's, ``buy`` when the taker received the base;
- ``time``: ms (the exchange's time, receipt time when it gives none; the block's time for a DEX trade);
- ``trade_id``: the exchange's id, or ``transaction_hash:log_index``; ``pool`` and ``block_number``: DEX only.

Defined here (below both ``cex`` and ``api``) so the Kafka producer and the websocket send the same thing.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

from records.cex import Trade
from records.chain import DexTrade

# the precision DexTrade.price has (protocols.trades.price_of): 38 significant digits, half-even
_PRICE = Context(prec=38)


def cex_trade(trade: Trade) -> dict[str, Any]:
    when = trade.event_timestamp if trade.event_timestamp is not None else trade.atom_timestamp // 1000
    return {
        "venue": trade.exchange,
        "symbol": trade.symbol,
        "pool": None,
        "price": format(trade.price, "f"),
        "size": format(trade.size, "f"),
        "side": trade.taker_side,
        "time": when,
        "trade_id": trade.trade_id,
        "block_number": None,
    }


def dex_trade(trade: DexTrade) -> dict[str, Any]:
    bought_is_base = trade.token_bought_address < trade.token_sold_address
    bought = trade.token_bought_symbol or trade.token_bought_address
    sold = trade.token_sold_symbol or trade.token_sold_address
    base, quote = (bought, sold) if bought_is_base else (sold, bought)
    size: Decimal | None
    price: Decimal | None = None
    if bought_is_base:  # the taker bought the base, paying quote: DexTrade.price is sold per bought
        size = trade.amount_bought
        if trade.amount_sold is not None and trade.amount_bought:
            price = trade.price
    else:
        size = trade.amount_sold
        if trade.amount_bought is not None and trade.amount_sold:
            price = _PRICE.divide(trade.amount_bought, trade.amount_sold)
    if price is None:
        size = None
    return {
        "venue": trade.exchange,
        "symbol": f"{base}-{quote}",
        "pool": trade.pool_address,
        "price": None if price is None else format(price, "f"),
        "size": None if size is None else format(size, "f"),
        "side": "buy" if bought_is_base else "sell",
        "time": trade.block_time * 1000,
        "trade_id": f"{trade.transaction_hash}:{trade.log_index}",
        "block_number": trade.block_number,
    }
