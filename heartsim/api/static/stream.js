// The live stream (WS /ws/heartbeat): reconnects with exponential backoff and resumes from the
// last received seq (`?since=SEQ`), so the server replays what was missed: no gap, no duplicate.

import { ApiError } from "./api.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 40_000; // no frame at all (not even a pong) for this long: reconnect
const CLOSE_NORMAL = 1000;
// Closes the server explains in its reason (too slow, too big, no pong to its keepalive).
const CLOSES_TO_REPORT = new Set([1008, 1009, 1011]);

/**
 * Events passed to the handlers:
 * - onStatus({state, detail, retryInS}): state is "connecting" | "live" | "reconnecting";
 * - onConnected(message): the server's `connected` message (once per connection);
 * - onHeartbeat(message): each heartbeat, in seq order, exactly once;
 * - onNotice(text, kind): something the user should read ("error" | "info").
 */
export class HeartbeatStream {
  constructor(api, { onStatus, onConnected, onHeartbeat, onNotice }) {
    this.api = api;
    this.handlers = { onStatus, onConnected, onHeartbeat, onNotice };
    this.person = null; // null: the server's default person (until `connected` names it)
    this.lastSeq = null;
    this.epoch = null; // the server run lastSeq belongs to (sent back so a restart is noticed)
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    window.addEventListener("online", () => this.reconnectNow());
  }

  /** Subscribe to `person` (null: default) from now on, dropping any current subscription. */
  open(person) {
    this.shutdown();
    this.person = person || null;
    this.lastSeq = null;
    this.epoch = null;
    this.attempt = 0;
    this.connect();
  }

  /** Resume point learnt elsewhere (e.g. from /heartbeat/history); only ever moves forward. */
  advanceTo(seq) {
    if (this.lastSeq === null || seq > this.lastSeq) this.lastSeq = seq;
  }

  /** Skip the remaining backoff (the browser is back online, the user asked). */
  reconnectNow() {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  shutdown() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopPinging();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(CLOSE_NORMAL, "dashboard switched stream");
    }
  }

  connect() {
    const resuming = this.lastSeq !== null;
    const query = { person: this.person, since: this.lastSeq, epoch: resuming ? this.epoch : null };
    const url = this.api.streamUrl(query);
    this.emitStatus(this.attempt === 0 ? "connecting" : "reconnecting", "opening stream…");
    const ws = new WebSocket(url, this.api.streamProtocols());
    ws.query = query;
    ws.greeted = false; // set by the server's `connected` message
    this.ws = ws;
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(ws, event);
  }

  receive(text) {
    this.lastFrameAt = Date.now();
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this.notice(`Unreadable stream message ignored: ${String(text).slice(0, 80)}`, "error");
      return;
    }
    if (message.type === "connected") {
      if (this.ws) this.ws.greeted = true;
      this.attempt = 0;
      this.person = message.person_id ?? this.person;
      if (message.restarted) {
        // A new run numbers seq afresh: never splice it onto the old one.
        this.notice("The server restarted: showing its new run", "info");
        this.lastSeq = message.since;
      }
      this.epoch = message.epoch ?? null;
      this.startPinging();
      this.emitStatus("live", message.replayed > 0 ? `caught up ${message.replayed}` : "");
      this.handlers.onConnected(message);
    } else if (message.type === "heartbeat") {
      if (this.lastSeq !== null && message.seq <= this.lastSeq) return; // already shown
      if (this.lastSeq !== null && message.seq > this.lastSeq + 1) {
        // Only when the server no longer buffered them (a long outage): `since` replays the rest.
        this.notice(`Stream gap: ${message.seq - this.lastSeq - 1} messages missing`, "info");
      }
      this.lastSeq = message.seq;
      this.handlers.onHeartbeat(message);
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return; // a stream we already dropped
    this.ws = null;
    this.stopPinging();
    if (CLOSES_TO_REPORT.has(event.code)) {
      this.notice(`Stream closed by the server (${event.code}): ${event.reason}`, "error");
    } else if (!ws.greeted) {
      this.diagnose(ws.query);
    }
    const delay = this.backoff();
    const why =
      event.code === 1006 ? "connection lost" : `${event.reason || "closed"} (${event.code})`;
    this.emitStatus("reconnecting", why, delay / 1000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * A handshake failed: the browser hides the server's answer, so ask the same URL over plain
   * HTTP, which runs the same checks (426 means the handshake would have been accepted).
   */
  async diagnose(query) {
    try {
      await this.api.get("/ws/heartbeat", query);
    } catch (err) {
      if (err instanceof ApiError && err.status !== 426 && err.status !== 0) {
        this.notice(`Stream refused: ${err.describe()}`, "error");
      }
    }
  }

  /** Exponential backoff with ±20 % jitter: 0.5 s, 1 s, 2 s, … up to 10 s. */
  backoff() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (0.8 + 0.4 * Math.random()));
  }

  startPinging() {
    this.stopPinging();
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
        // Half-open connection: do not wait for a close handshake that may never come.
        ws.onclose = null;
        ws.close(4000, "no answer from the server");
        this.closed(ws, { code: 4000, reason: "no answer from the server" });
      } else {
        ws.send("ping");
      }
    }, PING_EVERY_MS);
  }

  stopPinging() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  emitStatus(state, detail = "", retryInS = null) {
    this.handlers.onStatus({ state, detail, retryInS });
  }

  notice(text, kind) {
    this.handlers.onNotice(text, kind);
  }
}
