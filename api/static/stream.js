// The /ws client of the dashboard (protocol: docs/api-websocket.md). Subscriptions outlive the socket:
// after a disconnect it reconnects with exponential backoff (0.5 s doubling to 15 s, with jitter) and
// subscribes again from the last cursor each subscription saw, so nothing is missed or repeated; a
// cursor of an orphaned block comes back as a `reorg` first, which the page applies like a live one.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const CURSOR_UNKNOWN = 4040;
const UNKNOWN_CHANNEL = 4003;

export class Stream {
  /**
   * @param {string} url ws://host/ws
   * @param {(msg: object) => void} onMessage every data, reorg, finalized and heartbeat message
   * @param {(state: string, detail: string) => void} onState "connecting" | "live" | "down"
   */
  constructor(url, onMessage, onState) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.subs = new Map(); // id -> {channel, filters, fromBlock, cursor, onRefused}
    this.delay = FIRST_DELAY_MS;
    this.socket = null;
    this.timer = null;
  }

  /** Subscribe (now if connected, else on connect); `fromBlock` replays from that block the first time. */
  subscribe(id, channel, { filters = {}, fromBlock = null, onRefused = null } = {}) {
    const sub = { channel, filters, fromBlock, cursor: null, onRefused };
    this.subs.set(id, sub);
    this._send(this._subscription(id, sub));
  }

  unsubscribe(id) {
    if (this.subs.delete(id)) this._send({ op: "unsubscribe", id });
  }

  connect() {
    clearTimeout(this.timer);
    this.onState("connecting", this.url);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      for (const [id, sub] of this.subs) socket.send(JSON.stringify(this._subscription(id, sub)));
    };
    socket.onmessage = (frame) => this._receive(JSON.parse(frame.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      const wait = Math.round(this.delay * (0.75 + Math.random() * 0.5));
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      const reason = event.reason ? `: ${event.reason}` : "";
      this.onState("down", `disconnected (${event.code}${reason}); retrying in ${(wait / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  _subscription(id, sub) {
    const message = { op: "subscribe", id, channel: sub.channel, ...sub.filters };
    if (sub.cursor !== null) message.from = sub.cursor;
    else if (sub.fromBlock !== null) message.from_block = sub.fromBlock;
    return message;
  }

  _send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  _receive(msg) {
    if (msg.event === "live") {
      this.delay = FIRST_DELAY_MS; // a subscription went live: the connection is healthy again
      this.onState("live", "live");
    } else if (msg.event === "error") {
      const sub = this.subs.get(msg.id);
      if (sub && msg.code === CURSOR_UNKNOWN) {
        // the database was rebuilt while we were away: start over from now
        sub.cursor = null;
        sub.fromBlock = null;
        this._send(this._subscription(msg.id, sub));
      } else if (sub && msg.code === UNKNOWN_CHANNEL) {
        this.subs.delete(msg.id); // this server has no such channel (no exchange feeds in this build)
        if (sub.onRefused) sub.onRefused(msg);
      }
    }
    if (msg.cursor !== undefined && msg.cursor !== null) {
      const sub = this.subs.get(msg.id);
      if (sub) sub.cursor = msg.cursor;
    }
    this.onMessage(msg);
  }
}
