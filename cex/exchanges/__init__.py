"""One module per exchange, each declarative (endpoints, channels, symbol mapping, rules) plus subscribe,
snapshot and message -> records; ``EXCHANGES`` names them for the CLI and the settings."""

from __future__ import annotations

from cex.exchange import Exchange
from cex.exchanges.binance import Binance, BinanceFutures
from cex.exchanges.bybit import Bybit
from cex.exchanges.coinbase import Coinbase
from cex.exchanges.coinbase_exchange import CoinbaseExchange
from cex.exchanges.kraken import Kraken
from cex.exchanges.okx import Okx

EXCHANGES: dict[str, type[Exchange]] = {
    cls.name: cls for cls in (Binance, BinanceFutures, Bybit, Coinbase, CoinbaseExchange, Kraken, Okx)
}
