// Candles at the chosen interval, kept from REST /candles and the WS `candles` channel.
//
// The socket sends 1-minute candles only (the whole minute, again on every trade), so a
// longer interval's current bar is updated from them: high and low widen, the close is the
// newest minute's close, a minute past the last bar opens a new one. Prices stay decimal
// strings here; the chart converts them for drawing only.
import type { Candle, Interval } from "../api/types";
import { cmp, parse } from "./decimal";

export const INTERVAL_MS: Record<Interval, number> = {
  "1m": 60_000,
  "5m": 300_000,
  "15m": 900_000,
  "1h": 3_600_000,
  "4h": 14_400_000,
  "1d": 86_400_000,
  "1w": 604_800_000,
};

/** 1970-01-01 was a Thursday; the API's weeks start on Mondays (as Binance's). */
const WEEK_OFFSET_MS = 4 * 86_400_000;

export interface Bar {
  /** open time, epoch ms */
  readonly time: number;
  readonly open: string;
  readonly high: string;
  readonly low: string;
  readonly close: string;
  /** the open time of the newest minute that set `close` (0: from REST) */
  readonly minute: number;
}

export function bucketStart(ms: number, interval: Interval): number {
  const size = INTERVAL_MS[interval];
  if (interval === "1w") return Math.floor((ms - WEEK_OFFSET_MS) / size) * size + WEEK_OFFSET_MS;
  return Math.floor(ms / size) * size;
}

export function barOf(candle: Candle): Bar {
  const { open_time, open, high, low, close } = candle;
  return { time: open_time, open, high, low, close, minute: 0 };
}

const higher = (a: string, b: string) => (cmp(parse(a), parse(b)) >= 0 ? a : b);
const lower = (a: string, b: string) => (cmp(parse(a), parse(b)) <= 0 ? a : b);

/** The bars after one WS 1-minute candle, and the bar that changed (null: nothing did). */
export function mergeMinute(
  bars: readonly Bar[],
  minute: Candle,
  interval: Interval,
): [readonly Bar[], Bar | null] {
  const time = bucketStart(minute.open_time, interval);
  const last = bars[bars.length - 1];
  if (last === undefined || time > last.time) {
    const bar = { ...barOf(minute), time, minute: minute.open_time };
    return [[...bars, bar], bar];
  }
  const index = bars.findIndex((b) => b.time === time);
  if (index < 0) return [bars, null]; // older than what is shown, or in a hole
  const old = bars[index] as Bar;
  let bar: Bar;
  if (interval === "1m") {
    bar = { ...barOf(minute), minute: minute.open_time };
  } else {
    const newest = minute.open_time >= old.minute;
    bar = {
      time,
      open: old.open,
      high: higher(old.high, minute.high),
      low: lower(old.low, minute.low),
      close: newest ? minute.close : old.close,
      minute: newest ? minute.open_time : old.minute,
    };
  }
  const next = bars.slice();
  next[index] = bar;
  return [next, bar];
}
