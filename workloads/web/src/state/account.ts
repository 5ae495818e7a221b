// The signed-in trader's server state (keys under `me:`): balances, orders, fills, API
// keys. The private socket channels (orders, fills) only say that something changed; the
// entries shown are then reloaded from REST, which stays the one source of their content.
import { useCallback, useEffect, useRef } from "react";
import type {
  AccountTrade,
  ApiKeyList,
  BalancesResponse,
  OrderRow,
  Transfer,
  TransferRequest,
} from "../api/types";
import { useResource, type Resource } from "./cache";
import { useServices, useSession } from "./services";

const PAGE = 50;
const CHANGE_COALESCE_MS = 250;
const SETTLEMENT_RELOADS_MS = [1_000, 2_500, 5_000];
const FUNDING_RELOADS_MS = [500, 1_500, 4_000];

export interface Paged<T> {
  items: T[];
  next_cursor: string | null;
}

export interface PagedResource<T> extends Resource<Paged<T>> {
  loadMore: (() => void) | null;
}

function usePaged<T>(
  key: string | null,
  page: (cursor: string | null) => Promise<Paged<T>>,
): PagedResource<T> {
  const { cache } = useServices();
  const resource = useResource(cache, key, () => page(null));
  const next = resource.data?.next_cursor ?? null;
  const loadMore = useCallback(() => {
    if (!key || !next) return;
    page(next).then(
      (more) =>
        cache.set<Paged<T>>(key, (old) => ({
          items: [...(old?.items ?? []), ...more.items],
          next_cursor: more.next_cursor,
        })),
      () => resource.reload(),
    );
  }, [cache, key, next]); // `key` names what `page` fetches
  return { ...resource, loadMore: next ? loadMore : null };
}

export function useBalances(): Resource<BalancesResponse> {
  const { cache, client } = useServices();
  const { session } = useSession();
  return useResource(cache, session ? "me:balances" : null, () => client.balances());
}

export type OrderStatusFilter = "open" | "closed";

export function useOrders(symbol: string, status: OrderStatusFilter): PagedResource<OrderRow> {
  const { client } = useServices();
  const { session } = useSession();
  const key = session ? `me:orders:${status}:${symbol}` : null;
  return usePaged(key, async (cursor) => {
    const answer = await client.orders({ symbol, status, limit: PAGE, cursor: cursor ?? undefined });
    return { items: answer.orders, next_cursor: answer.next_cursor ?? null };
  });
}

export function useFills(symbol: string): PagedResource<AccountTrade> {
  const { client } = useServices();
  const { session } = useSession();
  const key = session ? `me:fills:${symbol}` : null;
  return usePaged(key, async (cursor) => {
    const answer = await client.accountTrades({ symbol, limit: PAGE, cursor: cursor ?? undefined });
    return { items: answer.trades, next_cursor: answer.next_cursor ?? null };
  });
}

export function useTransfers(): PagedResource<Transfer> {
  const { client } = useServices();
  const { session } = useSession();
  return usePaged(session ? "me:transfers" : null, async (cursor) => {
    const answer = await client.transfers({ limit: PAGE, cursor: cursor ?? undefined });
    return { items: answer.transfers, next_cursor: answer.next_cursor ?? null };
  });
}

/** Sends a transfer, then reloads balances and transfers: at once (the wallet is the
 * ledger's, current when the answer comes) and a few times over the next seconds (a market's
 * side follows the events topic, and a pending transfer is still on its way). */
export function useTransfer(): (request: TransferRequest) => Promise<Transfer> {
  const { client, cache } = useServices();
  const timers = useRef(new Set<ReturnType<typeof setTimeout>>());
  useEffect(() => {
    const pending = timers.current;
    return () => {
      pending.forEach(clearTimeout);
      pending.clear();
    };
  }, []);
  return useCallback(
    async (request: TransferRequest) => {
      const reload = () => {
        cache.invalidate("me:balances");
        cache.invalidate("me:transfers");
      };
      try {
        return await client.transfer(request);
      } finally {
        reload();
        for (const after of FUNDING_RELOADS_MS) {
          const timer = setTimeout(() => {
            timers.current.delete(timer);
            reload();
          }, after);
          timers.current.add(timer);
        }
      }
    },
    [client, cache],
  );
}

export function useApiKeys(): Resource<ApiKeyList> {
  const { cache, client } = useServices();
  const { session } = useSession();
  return useResource(cache, session ? "me:keys" : null, () => client.listKeys());
}

/** While signed in: the private channels reload orders, fills and balances (coalesced),
 * and so does a reconnect (messages may have been missed). Fills come from the ledger, which
 * books a trade a moment after the matcher made it: after a fill, they are reloaded again a
 * few times over the next seconds, until the ledger has surely settled it. */
export function usePrivateFeed(): void {
  const { socket, cache } = useServices();
  const { session } = useSession();
  const signedIn = session !== null;
  useEffect(() => {
    if (!signedIn) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settling = new Set<ReturnType<typeof setTimeout>>();
    const changed = () => {
      if (timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        cache.invalidate("me:orders:");
        cache.invalidate("me:fills:");
        cache.invalidate("me:balances");
      }, CHANGE_COALESCE_MS);
    };
    const filled = () => {
      changed();
      settling.forEach(clearTimeout);
      settling.clear();
      for (const after of SETTLEMENT_RELOADS_MS) {
        const reload = setTimeout(() => {
          settling.delete(reload);
          cache.invalidate("me:fills:");
          cache.invalidate("me:balances");
        }, after);
        settling.add(reload);
      }
    };
    const offs = [
      socket.subscribe("orders", "", changed),
      socket.subscribe("fills", "", filled),
      socket.onReconnect(changed),
    ];
    return () => {
      clearTimeout(timer);
      settling.forEach(clearTimeout);
      offs.forEach((off) => off());
    };
  }, [socket, cache, signedIn]);
}
