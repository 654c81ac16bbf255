// The dashboard's entry module: node status (GET /v1/status), latest blocks and the live DEX trades tape
// (websocket /ws, `blocks` and `dex_trades`), reorgs shown as undone, and the DEX candles chart. The
// CEX parts (trades in the same tape, candles, order book) live in cex.js. docs/dashboard.md.

import { Stream } from "./stream.js";
import { CandleChart } from "./charts.js";
import { CexPanel } from "./cex.js";
import { api, shortAmount, shortHash, utcTime, setText } from "./util.js";

const BLOCK_ROWS = 12;
const TAPE_ROWS = 100;
const REPLAY_BLOCKS = 20; // the tape starts with the trades of the newest blocks
const REORGED_VISIBLE_MS = 20000; // orphaned rows stay struck through this long, then go
const STATUS_EVERY_MS = 3000;

const $ = (id) => document.getElementById(id);
const tokens = new Map(); // address -> Promise<symbol>
const pools = new Map(); // address -> Promise<pool record>

/** A token's symbol from /v1/tokens/{address}, asked once per address (the short address if unknown). */
export function symbolOf(address) {
  if (!tokens.has(address)) {
    tokens.set(address, api(`/v1/tokens/${address}`).then((r) => r.data.symbol || shortHash(address), () => shortHash(address)));
  }
  return tokens.get(address);
}

function poolOf(address) {
  if (!pools.has(address)) pools.set(address, api(`/v1/pools/${address}`).then((r) => r.data));
  return pools.get(address);
}

async function poolLabel(address) {
  const pool = await poolOf(address);
  const [s0, s1] = await Promise.all([symbolOf(pool.token0), symbolOf(pool.token1)]);
  const fee = pool.fee === null ? "" : ` ${pool.fee / 10000}%`;
  return { label: `${s0}/${s1} ${pool.exchange}${fee}`, unit: `${s1} per ${s0}` };
}

// -- status --------------------------------------------------------------------------------------

function showStatus(s) {
  const figures = $("status-figures");
  const put = (field, text) => setText(figures.querySelector(`[data-field="${field}"]`), text);
  put("head", s.head ? `${s.head.number} (${shortHash(s.head.hash)})` : "nothing indexed yet");
  put("node_head", s.node_head ?? "node not answering");
  put("lag", `${s.lag_blocks ?? "?"} blocks, ${s.lag_seconds ?? "?"} s`);
  put("finalized", s.finalized ?? "–");
  put("reorgs", s.last_reorg ? `${s.reorgs} (last: depth ${s.last_reorg.depth} above block ${s.last_reorg.common_ancestor})` : s.reorgs);
  put("rpc_errors", s.rpc_errors);
  put("feed_resyncs", s.feed_resyncs ?? "no exchange feeds");
  put("ws_clients", s.ws_clients ?? "–");
  $("status-error").hidden = true;
}

async function pollStatus(cex) {
  try {
    const s = await api("/v1/status");
    showStatus(s);
    cex.markets(s.markets || []);
  } catch (e) {
    $("status-error").hidden = false;
    setText($("status-error"), `status unavailable: ${e.message}`);
  }
  setTimeout(() => pollStatus(cex), STATUS_EVERY_MS);
}

// -- blocks --------------------------------------------------------------------------------------

function showLatestBlock() {
  const live = [...$("blocks-body").querySelectorAll('tr:not([data-state="reorged"])')];
  const newest = live.reduce((max, tr) => Math.max(max, Number(tr.dataset.number)), -1);
  if (newest >= 0) setText($("latest-block"), String(newest));
}

function addBlock(block) {
  const body = $("blocks-body");
  for (const old of body.querySelectorAll(`tr[data-number="${block.number}"]`)) old.remove();
  const tr = document.createElement("tr");
  tr.dataset.number = block.number;
  tr.dataset.hash = block.hash;
  tr.dataset.state = "canonical";
  for (const text of [block.number, shortHash(block.hash), block.transaction_count ?? "?", utcTime(block.timestamp)]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  tr.cells[1].title = block.hash;
  const after = [...body.rows].find((row) => Number(row.dataset.number) < block.number);
  body.insertBefore(tr, after ?? null);
  while (body.rows.length > BLOCK_ROWS) body.rows[body.rows.length - 1].remove();
  showLatestBlock();
}

// -- trades tape ---------------------------------------------------------------------------------

/** A row for the tape; `cells` are strings or promises of strings (symbols resolve later). */
export function addTradeRow({ key, block, time, venue, sold, bought, price, exactPrice = null, side }) {
  const body = $("trades-body");
  if (body.querySelector(`tr[data-key="${CSS.escape(key)}"]`)) return; // a replay after a reconnect
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  tr.dataset.state = "canonical";
  if (block !== null) tr.dataset.block = block;
  if (side) tr.className = side;
  const cells = [utcTime(time), block ?? "–", venue, sold, bought, price, "ok"];
  const names = ["time", "block", "venue", "sold", "bought", "price", "state"];
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    td.className = names[i];
    if (value instanceof Promise) {
      td.textContent = "…";
      value.then((text) => (td.textContent = text));
    } else td.textContent = value;
    tr.append(td);
  });
  if (exactPrice !== null) tr.querySelector("td.price").title = exactPrice;
  body.prepend(tr);
  while (body.rows.length > TAPE_ROWS) body.rows[body.rows.length - 1].remove();
}

function dexTradeRow(t) {
  const sym = (symbol, address) => (symbol ? Promise.resolve(symbol) : symbolOf(address));
  const amount = (raw, exact, symbol) => symbol.then((s) => `${exact === null ? `${raw} raw` : shortAmount(exact)} ${s}`);
  const soldSymbol = sym(t.token_sold_symbol, t.token_sold_address);
  const boughtSymbol = sym(t.token_bought_symbol, t.token_bought_address);
  addTradeRow({
    key: `${t.transaction_hash}:${t.log_index}`,
    block: t.block_number,
    time: t.block_time,
    venue: t.exchange,
    sold: amount(t.amount_sold_raw, t.amount_sold, soldSymbol),
    bought: amount(t.amount_bought_raw, t.amount_bought, boughtSymbol),
    price: t.price === null ? "–" : shortAmount(t.price),
    exactPrice: t.price,
    side: null,
  });
}

// -- reorgs --------------------------------------------------------------------------------------

const reorgEntries = new Map(); // common ancestor hash + new head hash -> {li, trades}

/** A subscription's `reorg`: strike through its rows above the common ancestor (they are removed after
 * a while), and log the reorg once however many subscriptions report it. Each subscription's reorg
 * comes before its own new branch, so rows of the new branch are never marked. */
function applyReorg(data, rowSelector) {
  const ancestor = data.common_ancestor.number;
  let undone = 0;
  for (const tr of document.querySelectorAll(rowSelector)) {
    const number = Number(tr.dataset.block ?? tr.dataset.number);
    if (number > ancestor && tr.dataset.state !== "reorged") {
      tr.dataset.state = "reorged";
      tr.setAttribute("aria-label", `reorged: block ${number} was orphaned`);
      const state = tr.querySelector("td.state");
      if (state) {
        state.textContent = "reorged";
        undone += 1;
      }
      setTimeout(() => tr.remove(), REORGED_VISIBLE_MS);
    }
  }
  const key = `${data.common_ancestor.hash}:${data.new_head.hash}`;
  let entry = reorgEntries.get(key);
  if (!entry) {
    entry = { li: document.createElement("li"), trades: 0, blocks: 0, time: utcTime(Date.now() / 1000) };
    reorgEntries.set(key, entry);
    $("reorg-log").prepend(entry.li);
  }
  entry.trades += undone;
  entry.blocks = Math.max(entry.blocks, data.orphaned.length);
  entry.li.textContent =
    `${entry.time}: reorg above block ${ancestor}, ${entry.blocks} blocks orphaned, ${entry.trades} trades undone`;
  showLatestBlock();
}

// -- DEX candles ---------------------------------------------------------------------------------

/** The DEX candles panel: the pools in a list (those indexed at load, then each pool as its first trade
 * arrives); the pool of the newest trade is charted until the user picks another. */
async function dexChart(lib) {
  const select = $("pool-select");
  const interval = $("dex-interval");
  const chart = new CandleChart(lib, $("dex-chart-canvas"), $("dex-chart-caption"), async (latestOnly) => {
    const pool = select.value;
    const limit = latestOnly ? 2 : 300;
    const r = await api(`/v1/dex/candles?pool=${pool}&interval=${interval.value}&order=desc&limit=${limit}`);
    const candles = r.data.reverse().map((c) => ({ ...c, volume: c.volume1, trades: c.trade_count }));
    return { candles, ...(await poolLabel(pool)) };
  });
  const reload = () => (select.value ? chart.reload() : Promise.resolve()).catch((e) => chart._error(e));
  const known = new Set();
  const addPool = (address) => {
    if (known.has(address) || address.length !== 42) return false; // candles: 20-byte pool addresses
    known.add(address);
    const option = new Option(shortHash(address), address);
    select.append(option);
    poolLabel(address).then(({ label }) => (option.textContent = label), () => {});
    return true;
  };
  const [list, latest] = await Promise.all([api("/v1/pools?limit=200"), api("/v1/dex/trades?order=desc&limit=1")]);
  for (const pool of list.data) addPool(pool.address);
  const newest = latest.data[0]?.pool_address;
  if (newest && known.has(newest)) select.value = newest;
  else select.value = ""; // no trade yet: wait for the first one rather than chart an idle pool
  select.onchange = reload;
  interval.onchange = reload;
  await reload();
  return {
    chart,
    /** A DEX trade arrived live: list its pool; chart it if nothing is charted yet; else refresh. */
    trade(pool) {
      addPool(pool);
      if (!select.value && known.has(pool)) {
        select.value = pool;
        reload();
      } else if (pool === select.value) chart.refreshSoon();
    },
  };
}

// -- wiring --------------------------------------------------------------------------------------

async function main() {
  const lib = await import("./vendor/lightweight-charts.js").catch(() => null);
  const status = await api("/v1/status").catch(() => null);
  const head = status?.head?.number ?? null;
  const chartPromise = dexChart(lib).catch((e) => {
    setText($("dex-chart-caption"), `candles unavailable: ${e.message}`);
    return null;
  });
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const connection = $("connection");
  let dex = null;
  const cex = new CexPanel(lib, {
    addTradeRow,
    subscribe: (...args) => stream.subscribe(...args),
    unsubscribe: (id) => stream.unsubscribe(id),
  });
  const stream = new Stream(
    url,
    (msg) => {
      if (msg.type === "reorg") {
        if (msg.id === "blocks") applyReorg(msg.data, "#blocks-body tr[data-number]");
        if (msg.id === "dex") {
          applyReorg(msg.data, "#trades-body tr[data-block]");
          if (dex) dex.chart.reload().catch((e) => dex.chart._error(e));
        }
      } else if (msg.type === "block") addBlock(msg.data);
      else if (msg.type === "dex_trade") {
        dexTradeRow(msg.data);
        if (dex) dex.trade(msg.data.pool_address);
      } else cex.handle(msg);
    },
    (state, detail) => {
      connection.className = `connection ${state}`;
      setText(connection, state === "live" ? "live" : detail);
    },
  );
  const fromBlock = head === null ? null : Math.max(0, head - REPLAY_BLOCKS);
  stream.subscribe("blocks", "blocks", { fromBlock: head === null ? null : Math.max(0, head - BLOCK_ROWS) });
  stream.subscribe("dex", "dex_trades", { fromBlock });
  cex.start();
  stream.connect();
  window.dexnode = { stream }; // a handle for the browser console (and the browser test)
  pollStatus(cex);
  dex = await chartPromise;
}

main();
