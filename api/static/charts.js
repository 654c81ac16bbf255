// Candles in a TradingView lightweight-charts chart (vendored by `make install`, see api/routes/dashboard.py).
// The API computes every candle exactly (decimal strings); the chart needs numbers, so values are
// converted only for drawing; the caption under the chart carries the close as text (cut, not
// rounded; the exact value in its title).

import { shortAmount } from "./util.js";

const REFRESH_DEBOUNCE_MS = 400;

export class CandleChart {
  /**
   * @param lib the lightweight-charts module, or null when it is not installed (text only then)
   * @param {HTMLElement} container
   * @param {HTMLElement} caption text under the chart (readable without the canvas)
   * @param {(latestOnly: boolean) => Promise<{candles: object[], label: string, unit: string}>} load
   *   candles in ascending time with {start (s), open, high, low, close, volume, trades}
   */
  constructor(lib, container, caption, load) {
    this.caption = caption;
    this.load = load;
    this.timer = null;
    this.generation = 0;
    this.lastTime = null;
    this.chart = null;
    if (lib === null) {
      caption.textContent = "chart library not installed (run make install); candles as text only";
      return;
    }
    this.chart = lib.createChart(container, {
      autoSize: true,
      layout: { background: { type: lib.ColorType.Solid, color: "#171e26" }, textColor: "#9aa5b1" },
      grid: { vertLines: { color: "#222b35" }, horzLines: { color: "#222b35" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    this.candles = this.chart.addSeries(lib.CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a", wickDownColor: "#ef5350",
      borderVisible: false,
    });
    this.volume = this.chart.addSeries(lib.HistogramSeries, { priceScaleId: "", color: "#3b4a5a" });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  }

  /** Load everything again (a new pool or market, a reorg). */
  async reload() {
    const generation = ++this.generation;
    const { candles, label, unit } = await this.load(false);
    if (generation !== this.generation) return; // a newer selection won
    this.label = label;
    this.unit = unit;
    if (this.chart) {
      this.candles.applyOptions({ priceFormat: priceFormat(candles) });
      this.candles.setData(candles.map(bar));
      this.volume.setData(candles.map(volumeBar));
      this.chart.timeScale().fitContent();
    }
    this.lastTime = candles.length ? candles[candles.length - 1].start : null;
    this._caption(candles);
  }

  /** New trades arrived: fetch the newest candles soon (several trades in a burst make one request). */
  refreshSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._refresh().catch((e) => this._error(e)), REFRESH_DEBOUNCE_MS);
  }

  async _refresh() {
    const generation = this.generation;
    const { candles } = await this.load(true);
    if (generation !== this.generation || !candles.length) return;
    try {
      for (const candle of candles) {
        if (this.chart && (this.lastTime === null || candle.start >= this.lastTime)) {
          this.candles.update(bar(candle));
          this.volume.update(volumeBar(candle));
        }
      }
    } catch (e) {
      return this.reload(); // an update older than the last bar: the history changed, draw it again
    }
    this.lastTime = Math.max(this.lastTime ?? 0, candles[candles.length - 1].start);
    this._caption(candles);
  }

  _caption(candles) {
    if (!candles.length) {
      this.caption.textContent = `${this.label}: no trades yet`;
      return;
    }
    const last = candles[candles.length - 1];
    const when = new Date(last.start * 1000).toISOString().slice(11, 16);
    const trades = last.trades === null || last.trades === undefined ? "" : `, ${last.trades} trades`;
    this.caption.textContent = `${this.label}: close ${shortAmount(last.close)} ${this.unit} (candle ${when} UTC${trades})`;
    this.caption.title = `exact close: ${last.close}`;
  }

  _error(e) {
    this.caption.textContent = `candles unavailable: ${e.message}`;
  }
}

/** Enough decimals for the pair's scale (0.0000168 WBTC per USDC needs ten, 3000.03 USDT two). */
function priceFormat(candles) {
  const close = candles.length ? Math.abs(Number(candles[candles.length - 1].close)) : 1;
  const precision = close > 0 ? Math.min(12, Math.max(2, Math.ceil(-Math.log10(close)) + 4)) : 2;
  return { type: "price", precision, minMove: 10 ** -precision };
}

function bar(c) {
  return { time: c.start, open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close) };
}

function volumeBar(c) {
  return { time: c.start, value: Number(c.volume) };
}
