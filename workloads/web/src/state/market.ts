// Market state from the socket, each kept by one hook with its cleanup: the book (with
// sequence checks and REST resync), the trade tape, the candles, and the market's mode.
import { useEffect, useRef, useState } from "react";
import { flushSync } from "react-dom";
import type { Candle, Interval, Market, MarketMode, Trade } from "../api/types";
import { applyBook, EMPTY_BOOK, requestResync, type BookMessage, type BookState } from "../lib/book";
import { bookTracker } from "../lib/bookStats";
import { barOf, mergeMinute, type Bar } from "../lib/candles";
import { applyTrades, EMPTY_TAPE, loadTape, type Tape, type TradesMessage } from "../lib/tape";
import type { ServerMessage } from "../ws/socket";
import { useResource, type Resource } from "./cache";
import { useServices } from "./services";

const RESYNC_RETRY_MS = 2_000;
const MARKETS_REFRESH_MS = 10_000;

export function useMarkets(): Resource<{ markets: Market[] }> {
  const { cache, client } = useServices();
  return useResource(cache, "markets", () => client.markets(), MARKETS_REFRESH_MS);
}

/** A mode the socket reports, wherever the message carries it (`mode` on the message or
 * in its `data`); null when it carries none. */
export function modeOf(msg: ServerMessage): MarketMode | null {
  const data = msg.data as { mode?: unknown } | undefined;
  const mode = typeof msg.mode === "string" ? msg.mode : data?.mode;
  return typeof mode === "string" ? mode : null;
}

/** The market's mode: from GET /v1/markets, overridden by what the socket says since. */
export function useMarketMode(symbol: string, fromRest: MarketMode | undefined): MarketMode | null {
  const { socket } = useServices();
  const [live, setLive] = useState<{ mode: MarketMode; rest: MarketMode | undefined } | null>(
    null,
  );
  const fromRestRef = useRef(fromRest);
  fromRestRef.current = fromRest;
  useEffect(() => {
    setLive(null);
    const seen = (msg: ServerMessage) => {
      const mode = modeOf(msg);
      if (mode) setLive({ mode, rest: fromRestRef.current });
    };
    const offs = ["ticker", "book"].map((channel) => socket.subscribe(channel, symbol, seen));
    return () => offs.forEach((off) => off());
  }, [socket, symbol]);
  // A newer REST answer (a different mode than when the socket spoke) wins again.
  if (live && live.rest === fromRest) return live.mode;
  return fromRest ?? null;
}

/** The order book of `symbol`: WS snapshot and diffs, REST /orderbook on a gap. */
export function useBook(symbol: string): BookState {
  const { socket, client } = useServices();
  const [book, setBook] = useState<BookState>(EMPTY_BOOK);
  useEffect(() => {
    let state: BookState = EMPTY_BOOK;
    let fetching = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let alive = true;
    const feed = (msg: BookMessage, fromSocket: boolean) => {
      const [next, outcome] = applyBook(state, msg);
      state = next;
      if (fromSocket) {
        bookTracker.received(next);
        // Drawn in this task: left to React's scheduler, a frame could be painted first,
        // one message behind (one render per message either way: each is its own task).
        flushSync(() => setBook(next));
      } else {
        bookTracker.tag(next);
        setBook(next);
      }
      if (outcome === "gap" || outcome === "checksum") resync();
    };
    const resync = () => {
      if (fetching || !alive) return;
      fetching = true;
      client.orderbook(symbol).then(
        (snapshot) => {
          fetching = false;
          if (alive) feed({ ...snapshot, type: "snapshot" }, false);
        },
        () => {
          fetching = false;
          if (alive) retry = setTimeout(resync, RESYNC_RETRY_MS);
        },
      );
    };
    setBook(EMPTY_BOOK);
    const off = socket.subscribe("book", symbol, (msg) => feed(msg as unknown as BookMessage, true));
    // After a reconnect the resubscription brings a snapshot: hold diffs until then.
    const offReconnect = socket.onReconnect(() => {
      state = requestResync(state);
      bookTracker.tag(state);
      setBook(state);
    });
    return () => {
      alive = false;
      clearTimeout(retry);
      off();
      offReconnect();
    };
  }, [socket, client, symbol]);
  return book;
}

/** The trade tape of `symbol`: REST /trades, then the WS chain; refetched on a gap. */
export function useTape(symbol: string): Tape {
  const { socket, client } = useServices();
  const [tape, setTape] = useState<Tape>(EMPTY_TAPE);
  useEffect(() => {
    let state: Tape = EMPTY_TAPE;
    let alive = true;
    let fetching = false;
    const refetch = () => {
      if (fetching) return;
      fetching = true;
      client.trades(symbol, 100).then(
        (page) => {
          fetching = false;
          if (!alive) return;
          state = loadTape(page.trades as Trade[]);
          setTape(state);
        },
        () => {
          fetching = false;
        },
      );
    };
    setTape(EMPTY_TAPE);
    const off = socket.subscribe("trades", symbol, (msg) => {
      const next = applyTrades(state, msg as unknown as TradesMessage);
      if (next === "gap") refetch();
      else if (next !== state) setTape((state = next));
    });
    const offReconnect = socket.onReconnect(refetch);
    refetch();
    return () => {
      alive = false;
      off();
      offReconnect();
    };
  }, [socket, client, symbol]);
  return tape;
}

export interface CandleState {
  bars: readonly Bar[];
  /** the bar the socket changed last (null after a full load) */
  changed: Bar | null;
  /** bumps on every full load */
  version: number;
  loaded: boolean;
  error: string | null;
}

/** Candles of `symbol` at `interval`: REST /candles, the current bar from WS 1m candles. */
export function useCandles(symbol: string, interval: Interval): CandleState {
  const { socket, client } = useServices();
  const [state, setState] = useState<CandleState>({
    bars: [],
    changed: null,
    version: 0,
    loaded: false,
    error: null,
  });
  useEffect(() => {
    let alive = true;
    let bars: readonly Bar[] | null = null;
    let version = 0;
    const load = () => {
      client.candles(symbol, interval).then(
        (page) => {
          if (!alive) return;
          bars = page.candles.map(barOf);
          version += 1;
          setState({ bars, changed: null, version, loaded: true, error: null });
        },
        (exc: unknown) => {
          if (!alive) return;
          bars = bars ?? [];
          setState((s) => ({ ...s, loaded: true, error: String(exc) }));
        },
      );
    };
    setState({ bars: [], changed: null, version: 0, loaded: false, error: null });
    const off = socket.subscribe("candles", symbol, (msg) => {
      if (bars === null) return; // the REST page holds it
      const [next, changed] = mergeMinute(bars, msg.data as Candle, interval);
      if (!changed) return;
      bars = next;
      setState((s) => ({ ...s, bars: next, changed }));
    });
    const offReconnect = socket.onReconnect(load);
    load();
    return () => {
      alive = false;
      off();
      offReconnect();
    };
  }, [socket, client, symbol, interval]);
  return state;
}
