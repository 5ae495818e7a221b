import { describe, expect, it } from "vitest";
import type { Trade } from "../api/types";
import { applyTrades, EMPTY_TAPE, loadTape } from "./tape";

const trade = (seq: number, n = 0): Trade => ({
  trade_id: `BTC-USDT:${seq}:${n}`,
  symbol: "BTC-USDT",
  price: "100.00",
  quantity: "0.0001",
  taker_side: "BUY",
  seq,
  time: seq * 1000,
});

describe("trade tape", () => {
  it("drops messages until the REST page arrives", () => {
    expect(applyTrades(EMPTY_TAPE, { prev_seq: 0, seq: 1, data: [trade(1)] })).toBe(EMPTY_TAPE);
  });

  it("chains messages newest first, skipping trades already held", () => {
    const tape = loadTape([trade(5), trade(4)]);
    expect(tape.seq).toBe(5);
    const next = applyTrades(tape, { prev_seq: 4, seq: 7, data: [trade(5), trade(7, 0), trade(7, 1)] });
    expect(next).not.toBe("gap");
    if (next === "gap") return;
    expect(next.trades.map((t) => t.trade_id)).toEqual([
      "BTC-USDT:7:1",
      "BTC-USDT:7:0",
      "BTC-USDT:5:0",
      "BTC-USDT:4:0",
    ]);
    expect(next.seq).toBe(7);
  });

  it("reports a gap when a message starts after what is held", () => {
    expect(applyTrades(loadTape([trade(5)]), { prev_seq: 6, seq: 8, data: [trade(8)] })).toBe("gap");
  });

  it("keeps the tape bounded", () => {
    const tape = loadTape([trade(1)], 2);
    const next = applyTrades(tape, { prev_seq: 1, seq: 3, data: [trade(2), trade(3)] }, 2);
    expect(next !== "gap" && next.trades.map((t) => t.seq)).toEqual([3, 2]);
  });
});
