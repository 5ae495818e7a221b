import { describe, expect, it } from "vitest";
import type { Candle } from "../api/types";
import { barOf, bucketStart, mergeMinute } from "./candles";

const MIN = 60_000;
const minute = (open_time: number, o: string, h: string, l: string, c: string): Candle => ({
  symbol: "BTC-USDT",
  interval: "1m",
  open_time,
  close_time: open_time + MIN - 1,
  open: o,
  high: h,
  low: l,
  close: c,
  volume: "1",
  quote_volume: "100",
  trades: 1,
  final: false,
  revision: 0,
});

describe("candles", () => {
  it("aligns buckets, weeks on Mondays", () => {
    expect(bucketStart(7 * MIN + 5, "5m")).toBe(5 * MIN);
    // 1970-01-05 was the first Monday
    expect(bucketStart(Date.UTC(2024, 0, 10, 12), "1w")).toBe(Date.UTC(2024, 0, 8));
    expect(bucketStart(Date.UTC(2024, 0, 8), "1w")).toBe(Date.UTC(2024, 0, 8));
  });

  it("replaces the 1m bar and appends a new minute", () => {
    const bars = [barOf(minute(0, "10", "11", "9", "10"))];
    const [same, changed] = mergeMinute(bars, minute(0, "10", "12", "9", "12"), "1m");
    expect(same).toHaveLength(1);
    expect(changed?.high).toBe("12");
    const [more] = mergeMinute(same, minute(MIN, "12", "12", "12", "12"), "1m");
    expect(more.map((b) => b.time)).toEqual([0, MIN]);
  });

  it("widens a longer bar with decimal comparison and takes the newest close", () => {
    const bars = [barOf(minute(0, "10", "11", "9.5", "10"))];
    let [next] = mergeMinute(bars, minute(2 * MIN, "10", "100.5", "9.75", "99"), "5m");
    expect(next[0]).toMatchObject({ open: "10", high: "100.5", low: "9.5", close: "99" });
    // a late revision of an earlier minute widens but does not move the close
    [next] = mergeMinute(next, minute(MIN, "10", "10", "2", "3"), "5m");
    expect(next[0]).toMatchObject({ low: "2", close: "99" });
    // the next bucket opens a new bar
    [next] = mergeMinute(next, minute(5 * MIN, "99", "99", "99", "99"), "5m");
    expect(next.map((b) => b.time)).toEqual([0, 5 * MIN]);
  });

  it("ignores minutes older than the bars shown", () => {
    const bars = [barOf(minute(10 * MIN, "1", "1", "1", "1"))];
    const [same, changed] = mergeMinute(bars, minute(0, "5", "5", "5", "5"), "1m");
    expect(same).toBe(bars);
    expect(changed).toBeNull();
  });
});
