// The order book a client holds, kept from the WS `book` channel: a pure state machine.
//
// The gateway's rules (workloads/gateway/book.py): a snapshot is the book at `seq`; a diff
// carries absolute level quantities ("0": the level is gone) and covers (prev_seq, seq].
// Holding the book at S, a diff applies when prev_seq <= S < seq (applying a level twice is
// harmless), is stale when seq <= S, and is a gap when prev_seq > S: the book is then
// unusable until a fresh snapshot (REST /orderbook) arrives. Diffs that arrive while waiting
// are kept and replayed on top of it. The checksum (CRC32 of the best 10 levels per side)
// catches a book that went wrong without a gap.
import { cmp, parse, type Dec } from "./decimal";

export type Level = readonly [price: string, quantity: string];

export interface BookMessage {
  type?: "snapshot" | "diff" | string;
  seq: number;
  prev_seq?: number;
  bids: Level[] | string[][];
  asks: Level[] | string[][];
  checksum?: number;
}

export type BookStatus = "empty" | "live" | "resyncing";

export interface BookState {
  readonly status: BookStatus;
  readonly seq: number;
  /** price string -> quantity string, as the API writes them */
  readonly bids: ReadonlyMap<string, string>;
  readonly asks: ReadonlyMap<string, string>;
  /** diffs received while waiting for a snapshot, in arrival order */
  readonly pending: readonly BookMessage[];
}

export type BookOutcome =
  | "snapshot" // levels replaced
  | "applied" // a diff applied
  | "stale" // already covered by what is held: ignored
  | "buffered" // waiting for a snapshot: kept for later
  | "gap" // a diff is missing: fetch a snapshot (state is now resyncing)
  | "checksum"; // levels disagree with the server's checksum: fetch a snapshot

export const MAX_PENDING = 1000;
export const CHECKSUM_DEPTH = 10;

export const EMPTY_BOOK: BookState = {
  status: "empty",
  seq: 0,
  bids: new Map(),
  asks: new Map(),
  pending: [],
};

function levels(rows: BookMessage["bids"]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [price, quantity] of rows) {
    if (price !== undefined && quantity !== undefined && !isZeroText(quantity)) {
      out.set(price, quantity);
    }
  }
  return out;
}

function isZeroText(quantity: string): boolean {
  return !/[1-9]/.test(quantity);
}

function patch(current: ReadonlyMap<string, string>, rows: BookMessage["bids"]) {
  const out = new Map(current);
  for (const [price, quantity] of rows) {
    if (price === undefined || quantity === undefined) continue;
    if (isZeroText(quantity)) out.delete(price);
    else out.set(price, quantity);
  }
  return out;
}

function resyncing(state: BookState, pending: readonly BookMessage[]): BookState {
  return { ...state, status: "resyncing", pending: pending.slice(-MAX_PENDING) };
}

/** Marks the book as waiting for a snapshot (after a reconnect, say). */
export function requestResync(state: BookState): BookState {
  return resyncing(state, []);
}

function loadSnapshot(state: BookState, msg: BookMessage): [BookState, BookOutcome] {
  if (state.status === "live" && msg.seq < state.seq) return [state, "stale"];
  let next: BookState = {
    status: "live",
    seq: msg.seq,
    bids: levels(msg.bids),
    asks: levels(msg.asks),
    pending: [],
  };
  if (msg.checksum !== undefined && checksum(next) !== msg.checksum) {
    return [resyncing(next, []), "checksum"];
  }
  for (const diff of state.pending) {
    const [after, outcome] = applyDiff(next, diff);
    next = after;
    if (outcome === "gap" || outcome === "checksum") {
      const rest = state.pending.slice(state.pending.indexOf(diff) + 1);
      return [resyncing(next, rest), outcome];
    }
  }
  return [next, "snapshot"];
}

function applyDiff(state: BookState, msg: BookMessage): [BookState, BookOutcome] {
  if (state.status !== "live") {
    return [resyncing(state, [...state.pending, msg]), "buffered"];
  }
  if (msg.seq <= state.seq) return [state, "stale"];
  const prev = msg.prev_seq ?? msg.seq;
  if (prev > state.seq) return [resyncing(state, [msg]), "gap"];
  const next: BookState = {
    status: "live",
    seq: msg.seq,
    bids: patch(state.bids, msg.bids),
    asks: patch(state.asks, msg.asks),
    pending: [],
  };
  if (msg.checksum !== undefined && checksum(next) !== msg.checksum) {
    return [resyncing(next, []), "checksum"];
  }
  return [next, "applied"];
}

/** Applies one snapshot or diff: the new state and what happened. */
export function applyBook(state: BookState, msg: BookMessage): [BookState, BookOutcome] {
  return msg.type === "diff" || msg.prev_seq !== undefined
    ? applyDiff(state, msg)
    : loadSnapshot(state, msg);
}

function byPrice(levelsMap: ReadonlyMap<string, string>, descending: boolean): Level[] {
  const rows = [...levelsMap.entries()].map(([p, q]): [Dec, Level] => [parse(p), [p, q]]);
  rows.sort((a, b) => (descending ? cmp(b[0], a[0]) : cmp(a[0], b[0])));
  return rows.map((row) => row[1]);
}

/** The best `depth` levels: bids from the highest price, asks from the lowest. */
export function top(state: BookState, depth: number): { bids: Level[]; asks: Level[] } {
  return {
    bids: byPrice(state.bids, true).slice(0, depth),
    asks: byPrice(state.asks, false).slice(0, depth),
  };
}

let table: Uint32Array | null = null;

/** CRC-32 (IEEE), as Python's zlib.crc32. */
export function crc32(text: string): number {
  if (table === null) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of new TextEncoder().encode(text)) {
    crc = (table[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** The gateway's checksum: `b1p:b1q,...|a1p:a1q,...` over the best 10 levels per side. */
export function checksum(state: BookState): number {
  const { bids, asks } = top(state, CHECKSUM_DEPTH);
  const side = (rows: Level[]) => rows.map(([p, q]) => `${p}:${q}`).join(",");
  return crc32(`${side(bids)}|${side(asks)}`);
}
