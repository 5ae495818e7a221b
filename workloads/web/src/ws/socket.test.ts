import { describe, expect, it } from "vitest";
import { backoffDelay, Socket } from "./socket";

class FakeSocket {
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(text: string) {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }
  close() {
    this.readyState = 3;
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
  }
  receive(msg: unknown) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  ops() {
    return this.sent.map(({ id: _, ...rest }) => rest);
  }
}

/** Timers driven by the test: nothing waits on the wall clock. */
function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number; done: boolean }[] = [];
  const socket = new Socket({
    url: "ws://test/ws",
    backoff: { base: 100, max: 1000 },
    random: () => 0.999,
    create: () => {
      const ws = new FakeSocket();
      sockets.push(ws);
      return ws as unknown as WebSocket;
    },
    setTimer: (fn, ms) => {
      const timer = { fn, ms, done: false };
      timers.push(timer);
      return timer;
    },
    clearTimer: (timer) => {
      (timer as { done: boolean }).done = true;
    },
  });
  const fire = (ms: number) => {
    const timer = timers.find((t) => !t.done && t.ms === ms);
    if (!timer) throw new Error(`no timer of ${ms} ms`);
    timer.done = true;
    timer.fn();
  };
  return { socket, sockets, timers, fire };
}

describe("backoff", () => {
  it("grows exponentially to a ceiling, with jitter", () => {
    const b = { base: 500, max: 15_000 };
    expect(backoffDelay(0, b, 0.999)).toBe(499);
    expect(backoffDelay(3, b, 0.999)).toBe(3996);
    expect(backoffDelay(30, b, 0.999)).toBe(14_985);
    expect(backoffDelay(5, b, 0)).toBe(250); // never a busy loop
  });
});

describe("socket", () => {
  it("subscribes once per key and dispatches by channel and symbol", () => {
    const { socket, sockets } = harness();
    socket.start();
    const ws = sockets[0]!;
    ws.open();
    const got: unknown[] = [];
    const offA = socket.subscribe("book", "BTC-USDT", (m) => got.push(["a", m.seq]));
    const offB = socket.subscribe("book", "BTC-USDT", (m) => got.push(["b", m.seq]));
    expect(ws.ops()).toEqual([{ op: "subscribe", channel: "book", symbol: "BTC-USDT" }]);
    ws.receive({ type: "subscribed", id: 1, channel: "book", symbol: "BTC-USDT" });
    ws.receive({ channel: "book", symbol: "BTC-USDT", type: "snapshot", seq: 1 });
    ws.receive({ channel: "book", symbol: "ETH-USDT", type: "snapshot", seq: 2 });
    expect(got).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
    offA();
    expect(ws.ops()).toHaveLength(1);
    offB();
    expect(ws.ops()[1]).toEqual({ op: "unsubscribe", channel: "book", symbol: "BTC-USDT" });
  });

  it("reconnects with backoff, authenticates first and resubscribes everything", () => {
    const { socket, sockets, fire } = harness();
    const statuses: string[] = [];
    let reconnects = 0;
    socket.onStatus((s) => statuses.push(s));
    socket.onReconnect(() => reconnects++);
    socket.setToken("tok");
    socket.subscribe("trades", "BTC-USDT", () => {});
    socket.subscribe("orders", "", () => {});
    socket.start();
    sockets[0]!.open();
    expect(sockets[0]!.ops()).toEqual([
      { op: "auth", token: "tok" },
      { op: "subscribe", channel: "trades", symbol: "BTC-USDT" },
      { op: "subscribe", channel: "orders" },
    ]);
    sockets[0]!.drop();
    expect(socket.status).toBe("reconnecting");
    fire(99); // first attempt: base * 2^0, jittered
    sockets[1]!.drop(); // refused
    fire(199); // second attempt waits longer
    expect(sockets).toHaveLength(3);
    sockets[2]!.open();
    expect(socket.status).toBe("connected");
    expect(sockets[2]!.ops()).toEqual(sockets[0]!.ops());
    expect(statuses).toEqual(["connected", "reconnecting", "connected"]);
    expect(reconnects).toBe(1);
  });

  it("holds private subscriptions until there is a session", () => {
    const { socket, sockets } = harness();
    socket.start();
    sockets[0]!.open();
    socket.subscribe("fills", "", () => {});
    expect(sockets[0]!.ops()).toEqual([]);
    socket.setToken("tok");
    expect(sockets[0]!.ops()).toEqual([{ op: "auth", token: "tok" }, { op: "subscribe", channel: "fills" }]);
  });

  it("treats a missing pong as a dead connection", () => {
    const { socket, sockets, fire } = harness();
    socket.start();
    sockets[0]!.open();
    fire(20_000);
    expect(sockets[0]!.ops()).toEqual([{ op: "ping" }]);
    fire(10_000);
    expect(socket.status).toBe("reconnecting");
  });

  it("stays down after stop()", () => {
    const { socket, sockets, timers } = harness();
    socket.start();
    sockets[0]!.open();
    socket.stop();
    sockets[0]!.drop();
    expect(timers.filter((t) => !t.done)).toHaveLength(0);
  });
});
