// The one WebSocket to the gateway's `/ws`: subscriptions by (channel, symbol) with
// reference counts, session auth (`{"op":"auth","token"}`), and a reconnect with
// exponential backoff and jitter that authenticates again and resubscribes everything.
// The server pings (the browser answers); the client also sends `{"op":"ping"}` and treats
// a missing `pong` as a dead connection.

export type SocketStatus = "connecting" | "connected" | "reconnecting";

export interface ServerMessage {
  channel?: string;
  type?: string;
  symbol?: string;
  id?: unknown;
  code?: string;
  message?: string;
  [field: string]: unknown;
}

type Handler = (msg: ServerMessage) => void;

export interface Backoff {
  /** first delay, ms */
  base: number;
  /** largest delay, ms */
  max: number;
}

export const DEFAULT_BACKOFF: Backoff = { base: 500, max: 15_000 };
const PING_EVERY_MS = 20_000;
const PONG_WITHIN_MS = 10_000;

/** The wait before reconnect attempt `attempt` (0-based): full jitter over base*2^attempt,
 * at least base/2, at most max. `random` is in [0, 1). */
export function backoffDelay(attempt: number, backoff: Backoff, random: number): number {
  const ceiling = Math.min(backoff.max, backoff.base * 2 ** Math.min(attempt, 20));
  return Math.max(backoff.base / 2, Math.floor(ceiling * random));
}

export interface SocketOptions {
  url: string;
  backoff?: Backoff;
  create?: (url: string) => WebSocket;
  random?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (timer: unknown) => void;
}

const PRIVATE = new Set(["orders", "fills"]);

function keyOf(channel: string, symbol: string): string {
  return `${channel}|${symbol}`;
}

/** The URL of `/ws` on this page's origin. */
export function sameOriginUrl(path = "/ws"): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss" : "ws"}://${host}${path}`;
}

export class Socket {
  status: SocketStatus = "connecting";
  /** the last error the server sent for a command (not tied to one subscription) */
  lastError: ServerMessage | null = null;
  private ws: WebSocket | null = null;
  private attempt = 0;
  private token: string | null = null;
  private authenticated = false;
  private closedByUs = false;
  private reconnectTimer: unknown = null;
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;
  private nextId = 1;
  private readonly subs = new Map<string, { channel: string; symbol: string; handlers: Set<Handler> }>();
  private readonly statusListeners = new Set<(status: SocketStatus) => void>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly o: Required<SocketOptions>;

  constructor(options: SocketOptions) {
    this.o = {
      backoff: DEFAULT_BACKOFF,
      create: (url) => new WebSocket(url),
      random: Math.random,
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
      ...options,
    };
  }

  start(): void {
    this.closedByUs = false;
    if (!this.ws) this.open();
  }

  stop(): void {
    this.closedByUs = true;
    this.clearTimers();
    this.ws?.close(1000, "bye");
    this.ws = null;
  }

  onStatus(listener: (status: SocketStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Called after every reconnect (after resubscribing): state held from the socket may
   * have missed messages and should be refetched. */
  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  /** Sets or clears the session; private subscriptions follow it. */
  setToken(token: string | null): void {
    if (token === this.token) return;
    this.token = token;
    this.authenticated = false;
    if (token && this.isOpen()) {
      this.send({ op: "auth", token });
      for (const sub of this.subs.values()) {
        if (PRIVATE.has(sub.channel)) this.sendSubscribe(sub.channel, sub.symbol);
      }
    }
    // The server has no "unauth": a fresh connection drops the account.
    if (!token && this.ws) this.drop(4000, "logged out");
  }

  subscribe(channel: string, symbol: string, handler: Handler): () => void {
    const key = keyOf(channel, PRIVATE.has(channel) ? "" : symbol);
    let sub = this.subs.get(key);
    if (!sub) {
      sub = { channel, symbol: PRIVATE.has(channel) ? "" : symbol, handlers: new Set() };
      this.subs.set(key, sub);
      this.sendSubscribe(sub.channel, sub.symbol);
    }
    sub.handlers.add(handler);
    return () => {
      const current = this.subs.get(key);
      if (!current) return;
      current.handlers.delete(handler);
      if (current.handlers.size === 0) {
        this.subs.delete(key);
        if (this.isOpen()) {
          this.send({ op: "unsubscribe", channel: current.channel, symbol: current.symbol });
        }
      }
    };
  }

  // ---------------------------------------------------------------- internals

  private isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === 1;
  }

  private send(command: Record<string, unknown>): void {
    this.ws?.send(JSON.stringify({ ...command, id: this.nextId++ }));
  }

  private sendSubscribe(channel: string, symbol: string): void {
    if (!this.isOpen()) return; // sent on open
    if (PRIVATE.has(channel) && !this.token) return; // sent after auth
    this.send(symbol ? { op: "subscribe", channel, symbol } : { op: "subscribe", channel });
  }

  private setStatus(status: SocketStatus): void {
    if (status === this.status) return;
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }

  private open(): void {
    let ws: WebSocket;
    try {
      ws = this.o.create(this.o.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (event: MessageEvent) => this.received(ws, event.data);
    ws.onclose = () => this.closed(ws);
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private opened(ws: WebSocket): void {
    if (ws !== this.ws) return;
    const reconnected = this.attempt > 0 || this.status === "reconnecting";
    this.attempt = 0;
    // The server runs one connection's commands in order: auth lands before the
    // private subscriptions that need it.
    if (this.token) this.send({ op: "auth", token: this.token });
    for (const sub of this.subs.values()) this.sendSubscribe(sub.channel, sub.symbol);
    this.setStatus("connected");
    this.schedulePing();
    if (reconnected) for (const listener of this.reconnectListeners) listener();
  }

  private received(ws: WebSocket, data: unknown): void {
    if (ws !== this.ws || typeof data !== "string") return;
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      return;
    }
    if (msg.type === "pong") {
      if (this.pongTimer !== null) this.o.clearTimer(this.pongTimer);
      this.pongTimer = null;
      return;
    }
    if (msg.type === "authenticated") {
      this.authenticated = true;
      return;
    }
    if (msg.type === "error") {
      this.lastError = msg;
      if (msg.code === "invalid_session") this.authenticated = false;
      return;
    }
    // Acknowledgements name the channel too: only data messages go to the handlers.
    if (!msg.channel || msg.type === "subscribed" || msg.type === "unsubscribed") return;
    const symbol = PRIVATE.has(msg.channel) ? "" : (msg.symbol ?? "");
    const sub = this.subs.get(keyOf(msg.channel, symbol));
    if (sub) for (const handler of sub.handlers) handler(msg);
  }

  private closed(ws: WebSocket): void {
    if (ws === this.ws) this.drop();
  }

  /** Forgets the current connection (closing it when a code is given) and reconnects. */
  private drop(code?: number, reason?: string): void {
    const ws = this.ws;
    this.ws = null;
    this.clearTimers();
    if (ws && code !== undefined) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    if (!this.closedByUs) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setStatus("reconnecting");
    const delay = backoffDelay(this.attempt, this.o.backoff, this.o.random());
    this.attempt += 1;
    this.reconnectTimer = this.o.setTimer(() => {
      this.reconnectTimer = null;
      if (!this.closedByUs) this.open();
    }, delay);
  }

  private schedulePing(): void {
    this.pingTimer = this.o.setTimer(() => {
      if (!this.isOpen()) return;
      if (this.pongTimer === null) {
        this.send({ op: "ping" });
        this.pongTimer = this.o.setTimer(() => {
          this.pongTimer = null;
          this.drop(4001, "no pong"); // a dead network may never deliver onclose
        }, PONG_WITHIN_MS);
      }
      this.schedulePing();
    }, PING_EVERY_MS);
  }

  private clearTimers(): void {
    for (const timer of [this.reconnectTimer, this.pingTimer, this.pongTimer]) {
      if (timer !== null) this.o.clearTimer(timer);
    }
    this.reconnectTimer = this.pingTimer = this.pongTimer = null;
  }

  /** Whether the server confirmed the session on this connection. */
  get isAuthenticated(): boolean {
    return this.authenticated;
  }
}
