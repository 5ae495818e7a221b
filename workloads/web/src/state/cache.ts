// The server-state cache: one entry per key (`balances`, `orders:open:BTC-USDT`, ...),
// loaded through the client, shared by every component that shows it, reloaded when the
// socket says it changed (`invalidate`). Components never keep their own copy.
import { useCallback, useEffect, useSyncExternalStore } from "react";
import { ApiError } from "../api/client";

export interface Entry<T> {
  readonly data: T | undefined;
  readonly error: ApiError | undefined;
  readonly loading: boolean;
}

interface Slot {
  entry: Entry<unknown>;
  loader: (() => Promise<unknown>) | null;
  request: number;
  users: number;
}

const IDLE: Entry<never> = { data: undefined, error: undefined, loading: false };

function asApiError(exc: unknown): ApiError {
  return exc instanceof ApiError ? exc : new ApiError("client_error", String(exc), 0);
}

export class Cache {
  private readonly slots = new Map<string, Slot>();
  private readonly listeners = new Map<string, Set<() => void>>();

  private slot(key: string): Slot {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { entry: IDLE, loader: null, request: 0, users: 0 };
      this.slots.set(key, slot);
    }
    return slot;
  }

  private emit(key: string): void {
    for (const listener of this.listeners.get(key) ?? []) listener();
  }

  private put(key: string, entry: Entry<unknown>): void {
    this.slot(key).entry = entry;
    this.emit(key);
  }

  get<T>(key: string): Entry<T> {
    return (this.slots.get(key)?.entry ?? IDLE) as Entry<T>;
  }

  subscribe(key: string, listener: () => void): () => void {
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Loads `key` (again); an older request still running is ignored when it ends. */
  async load<T>(key: string, loader: () => Promise<T>): Promise<void> {
    const slot = this.slot(key);
    slot.loader = loader;
    const request = ++slot.request;
    this.put(key, { ...slot.entry, loading: true });
    try {
      const data = await loader();
      if (slot.request === request) this.put(key, { data, error: undefined, loading: false });
    } catch (exc) {
      if (slot.request === request) {
        this.put(key, { data: slot.entry.data, error: asApiError(exc), loading: false });
      }
    }
  }

  /** Puts a value in directly (a place or cancel answer, say). */
  set<T>(key: string, update: (old: T | undefined) => T): void {
    const slot = this.slot(key);
    slot.request += 1; // a load in flight is older than this
    this.put(key, { data: update(slot.entry.data as T | undefined), error: undefined, loading: false });
  }

  /** Reloads every key that starts with `prefix` and is shown; forgets the others. */
  invalidate(prefix: string): void {
    for (const [key, slot] of this.slots) {
      if (!key.startsWith(prefix)) continue;
      if (slot.users > 0 && slot.loader) void this.load(key, slot.loader);
      else this.slots.delete(key);
    }
  }

  /** Drops every key that starts with `prefix` (after a logout). */
  clear(prefix: string): void {
    for (const key of [...this.slots.keys()]) {
      if (key.startsWith(prefix)) {
        this.slots.delete(key);
        this.emit(key);
      }
    }
  }

  use(key: string): () => void {
    const slot = this.slot(key);
    slot.users += 1;
    return () => {
      slot.users -= 1;
    };
  }
}

export interface Resource<T> extends Entry<T> {
  reload: () => void;
}

/** The cached value of `key` (null: nothing to load), loaded on first use and every
 * `refreshMs` while shown. `loader` must depend only on what `key` names. */
export function useResource<T>(
  cache: Cache,
  key: string | null,
  loader: () => Promise<T>,
  refreshMs = 0,
): Resource<T> {
  const subscribe = useCallback(
    (listener: () => void) => (key ? cache.subscribe(key, listener) : () => {}),
    [cache, key],
  );
  const entry = useSyncExternalStore(subscribe, () =>
    key ? cache.get<T>(key) : (IDLE as Entry<T>),
  );
  // `key` names what `loader` fetches, so a new key is a new loader.
  const load = useCallback(() => (key ? void cache.load(key, loader) : undefined), [cache, key]);
  useEffect(() => {
    if (!key) return;
    const release = cache.use(key);
    const now = cache.get(key);
    if (now.data === undefined && !now.loading) load();
    const timer = refreshMs > 0 ? setInterval(load, refreshMs) : undefined;
    return () => {
      release();
      if (timer) clearInterval(timer);
    };
  }, [cache, key, load, refreshMs]);
  return { ...entry, reload: load };
}
