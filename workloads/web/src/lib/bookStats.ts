// How far the drawn order book trails the socket, for the browser benchmark
// (e2e/bench/bench_web.py reads `window.__exchangeBookStats` each animation frame).
// `received` counts book messages from the socket; `drawn` is how many of them the book in
// the DOM reflects. Each book state is tagged with the count that produced it, so a commit
// of that state moves `drawn` there. A message that changes nothing (stale) needs no
// drawing: it counts as drawn at once when the DOM already shows its state.
// Cheap enough to stay on: a counter and a WeakMap entry per message.

export interface BookStats {
  received: number;
  drawn: number;
}

export class BookTracker {
  readonly stats: BookStats = { received: 0, drawn: 0 };
  private readonly tags = new WeakMap<object, number>();
  private shown: object | null = null;

  /** A socket message was applied and `state` is the book it left. */
  received(state: object): void {
    this.stats.received += 1;
    this.tag(state);
  }

  /** `state` came from elsewhere (a REST resync): it reflects what was received so far. */
  tag(state: object): void {
    this.tags.set(state, this.stats.received);
    if (state === this.shown) this.stats.drawn = this.stats.received;
  }

  /** `state` is now in the DOM. */
  drawn(state: object): void {
    this.shown = state;
    this.stats.drawn = this.tags.get(state) ?? this.stats.drawn;
  }
}

declare global {
  interface Window {
    __exchangeBookStats?: BookStats;
  }
}

/** The page's one tracker, its counters published on `window`. */
export const bookTracker = new BookTracker();
if (typeof window !== "undefined") window.__exchangeBookStats = bookTracker.stats;
