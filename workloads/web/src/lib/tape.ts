// The trade tape, kept from REST /trades and the WS `trades` channel: a pure function.
//
// WS messages chain (see the gateway's OpenAPI `/ws` description): `seq` is the event seq
// of the last trade in `data`, `prev_seq` that of the market's trade before the first one.
// Holding trades up to S, a message applies when prev_seq <= S (trade ids already held are
// skipped: one command's trades share a seq); prev_seq > S is a gap: refetch from REST.
import type { Trade } from "../api/types";

export interface Tape {
  /** newest first */
  readonly trades: readonly Trade[];
  /** the seq of the newest trade held; null before the first REST page */
  readonly seq: number | null;
}

export interface TradesMessage {
  prev_seq: number;
  seq: number;
  data: Trade[];
}

export const TAPE_SIZE = 100;
export const EMPTY_TAPE: Tape = { trades: [], seq: null };

/** The tape from a REST page (newest first). */
export function loadTape(page: readonly Trade[], size = TAPE_SIZE): Tape {
  const trades = page.slice(0, size);
  const seq = trades.reduce((best, t) => Math.max(best, t.seq), 0);
  return { trades, seq };
}

/** The tape after a WS message, or "gap" when trades are missing (refetch). Before the
 * first REST page arrives the messages are dropped: that page will hold them. */
export function applyTrades(tape: Tape, msg: TradesMessage, size = TAPE_SIZE): Tape | "gap" {
  if (tape.seq === null) return tape;
  if (msg.prev_seq > tape.seq) return "gap";
  const held = new Set(tape.trades.map((t) => t.trade_id));
  const fresh = msg.data.filter((t) => !held.has(t.trade_id)).reverse();
  if (!fresh.length) return { ...tape, seq: Math.max(tape.seq, msg.seq) };
  return {
    trades: [...fresh, ...tape.trades].slice(0, size),
    seq: Math.max(tape.seq, msg.seq),
  };
}
