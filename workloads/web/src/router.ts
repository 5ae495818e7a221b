// Hash routes: #/markets, #/market/<symbol>, #/login, #/signup, #/account.
import { useSyncExternalStore } from "react";

export type Route =
  | { page: "markets" }
  | { page: "market"; symbol: string }
  | { page: "login" }
  | { page: "signup" }
  | { page: "account" };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case "market":
      return parts[1] ? { page: "market", symbol: parts[1] } : { page: "markets" };
    case "login":
      return { page: "login" };
    case "signup":
      return { page: "signup" };
    case "account":
      return { page: "account" };
    default:
      return { page: "markets" };
  }
}

export function href(route: Route): string {
  return route.page === "market" ? `#/market/${encodeURIComponent(route.symbol)}` : `#/${route.page}`;
}

export function navigate(route: Route): void {
  window.location.hash = href(route);
}

function subscribe(listener: () => void): () => void {
  window.addEventListener("hashchange", listener);
  return () => window.removeEventListener("hashchange", listener);
}

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, () => window.location.hash);
  return parseRoute(hash);
}
