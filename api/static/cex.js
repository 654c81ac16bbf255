// The CEX side of the dashboard: CEX trades into the shared tape (`cex_trades`), the order book of one
// market (`cex_book`: a `book_snapshot`, then `book_delta`s, `resync` when the node lost the sequence;
// each carries `sequence` and `valid`), and its candles (GET /v1/cex/candles). The markets come from
// GET /v1/status (those with stored trades) and from the trades as they arrive; with none, the panels
// say "no exchange feeds configured".

import { CandleChart } from "./charts.js";
import { api, multiply, setText, shortAmount } from "./util.js";

const BOOK_LEVELS = 12;

/** A price as a map key: "3000.10" and "3000.1" are one level (decimal text, trailing zeros cut). */
function canonical(price) {
  return price.includes(".") ? price.replace(/0+$/, "").replace(/\.$/, "") : price;
}
const $ = (id) => document.getElementById(id);

/** A CEX trade as the taker's sold and bought sides: size in the base, size × price in the quote (exact). */
function sides(trade) {
  const [base, quote = ""] = trade.symbol.split("-");
  const baseSide = `${shortAmount(trade.size)} ${base}`;
  const quoteSide = `${shortAmount(multiply(trade.size, trade.price))} ${quote}`;
  return trade.taker_side === "buy" ? { sold: quoteSide, bought: baseSide } : { sold: baseSide, bought: quoteSide };
}

export class CexPanel {
  /** @param lib lightweight-charts or null; @param page {addTradeRow, subscribe, unsubscribe} */
  constructor(lib, page) {
    this.page = page;
    this.select = $("market-select");
    this.known = new Set();
    this.current = null;
    this.bids = new Map(); // price text -> size text
    this.asks = new Map();
    this.book = { valid: false, sequence: null, reason: "waiting for a snapshot" };
    this.available = true; // false once the server refuses the CEX channels
    document.body.classList.add("hidden-cex");
    this.chart = new CandleChart(lib, $("cex-chart-canvas"), $("cex-chart-caption"), (latestOnly) =>
      this._candles(latestOnly),
    );
    setText($("cex-chart-caption"), "no exchange feeds configured");
    this.select.onchange = () => this._choose(this.select.value);
  }

  /** Subscribe (once the page's stream exists) to every market's trades: a market shows up with its
   * first trade, before the status poll lists it. A server without CEX channels refuses it: 4003. */
  start() {
    this.page.subscribe("cex-trades", "cex_trades", { onRefused: () => this._unavailable() });
  }

  /** The markets from /v1/status (polled): add new ones; choose the first when none is chosen. */
  markets(list) {
    if (!this.available) return;
    for (const m of list) {
      const key = `${m.exchange}:${m.symbol}`;
      if (this.known.has(key)) continue;
      this.known.add(key);
      this.select.append(new Option(`${m.symbol} on ${m.exchange}`, key));
    }
    if (this.current === null && this.known.size) {
      document.body.classList.remove("hidden-cex");
      this._choose(this.select.value);
    }
  }

  /** A websocket message that is not chain data: CEX trades and book messages. */
  handle(msg) {
    const data = msg.data;
    if (!data) return;
    if (msg.type === "trade") {
      this.markets([{ exchange: data.exchange, symbol: data.symbol }]);
      this.page.addTradeRow({
        key: `${data.exchange}:${data.symbol}:${data.trade_id ?? data.atom_timestamp}`,
        block: null,
        time: (data.event_timestamp ?? data.atom_timestamp / 1000) / 1000,
        venue: data.exchange,
        ...sides(data),
        price: shortAmount(data.price),
        exactPrice: data.price,
        side: data.taker_side,
      });
      if (this.current === `${data.exchange}:${data.symbol}`) this.chart.refreshSoon();
    } else if (msg.id === "cex-book") {
      this._book(msg.type, data);
    }
  }

  _unavailable() {
    this.available = false;
    document.body.classList.add("hidden-cex");
    setText($("cex-chart-caption"), "no exchange feeds configured (this server has no CEX channels)");
    setText($("book-state"), "no exchange feeds configured");
  }

  _choose(key) {
    if (!key || key === this.current) return;
    this.current = key;
    const [exchange, symbol] = key.split(":");
    this.bids.clear();
    this.asks.clear();
    this.book = { valid: false, sequence: null, reason: "waiting for a snapshot" };
    setText($("book-market"), `${symbol} on ${exchange}`);
    this._render();
    this.page.unsubscribe("cex-book");
    this.page.subscribe("cex-book", "cex_book", {
      filters: { exchange, symbol },
      onRefused: () => this._unavailable(),
    });
    this.chart.reload().catch((e) => this.chart._error(e));
  }

  async _candles(latestOnly) {
    const [exchange, symbol] = this.current.split(":");
    const limit = latestOnly ? 2 : 300;
    const q = `exchange=${encodeURIComponent(exchange)}&symbol=${encodeURIComponent(symbol)}`;
    const r = await api(`/v1/cex/candles?${q}&interval=1m&order=desc&limit=${limit}`);
    // CEX candle times are ms (records.Candle); the chart wants seconds
    const candles = r.data.reverse().map((c) => ({ ...c, start: Math.floor(c.start / 1000) }));
    return { candles, label: `${symbol} on ${exchange}`, unit: "" };
  }

  _book(type, data) {
    if (`${data.exchange}:${data.symbol}` !== this.current) return; // a message of the previous market
    if (type === "book_snapshot") {
      this.bids = new Map(data.bids.map(([p, s]) => [canonical(p), s]));
      this.asks = new Map(data.asks.map(([p, s]) => [canonical(p), s]));
    } else if (type === "book_delta") {
      const side = data.side === "bid" ? this.bids : this.asks;
      if (/^0*\.?0*$/.test(data.size)) side.delete(canonical(data.price));
      else side.set(canonical(data.price), data.size);
    } else if (type === "resync") {
      this.bids.clear();
      this.asks.clear();
    } else return;
    this.book = {
      // a snapshot and a resync say whether the book is valid; a delta keeps the state it applies to
      valid: data.valid ?? (type === "book_delta" ? this.book.valid : type === "book_snapshot"),
      sequence: data.sequence ?? this.book.sequence,
      reason: type === "resync" ? `resync${data.reason ? `: ${data.reason}` : ""}` : "",
    };
    this._render();
  }

  _render() {
    const levels = (side, descending) =>
      [...side].sort((a, b) => (descending ? Number(b[0]) - Number(a[0]) : Number(a[0]) - Number(b[0]))).slice(0, BOOK_LEVELS);
    const fill = (body, rows, priceFirst) => {
      body.replaceChildren(
        ...rows.map(([price, size]) => {
          const tr = document.createElement("tr");
          for (const text of priceFirst ? [price, size] : [size, price]) {
            const td = document.createElement("td");
            td.textContent = shortAmount(text);
            td.title = text; // the exact decimal
            tr.append(td);
          }
          return tr;
        }),
      );
    };
    fill($("bids-body"), levels(this.bids, true), false);
    fill($("asks-body"), levels(this.asks, false), true);
    const state = $("book-state");
    const sequence = this.book.sequence === null ? "" : ` · sequence ${this.book.sequence}`;
    state.className = `caption ${this.book.valid ? "valid" : "invalid"}`;
    state.dataset.valid = String(this.book.valid);
    setText(state, `${this.book.valid ? "valid" : `not valid (${this.book.reason})`}${sequence}`);
  }
}
