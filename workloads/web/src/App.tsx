import { useEffect, useState } from "react";
import { AccountPage } from "./pages/AccountPage";
import { AuthPage } from "./pages/AuthPage";
import { MarketPage } from "./pages/MarketPage";
import { MarketsPage } from "./pages/MarketsPage";
import { href, navigate, useRoute } from "./router";
import { usePrivateFeed } from "./state/account";
import { useServices, useSession, useSocketStatus } from "./state/services";

const SKEW_WARN_MS = 5_000;

/** How far this machine's clock is from the server's (null until known). */
function useClockSkew(): number | null {
  const { client } = useServices();
  const [skew, setSkew] = useState<number | null>(null);
  useEffect(() => {
    const sent = Date.now();
    client.time().then(
      (answer) => setSkew((sent + Date.now()) / 2 - answer.server_time),
      () => setSkew(null),
    );
  }, [client]);
  return skew;
}

function Header() {
  const { session, logout } = useSession();
  const status = useSocketStatus();
  const skew = useClockSkew();
  return (
    <header className="top">
      <a className="brand" href={href({ page: "markets" })}>
        Exchange
      </a>
      <nav aria-label="Main">
        <a href={href({ page: "markets" })}>Markets</a>
        <a href={href({ page: "account" })}>Account</a>
      </nav>
      <span className={`ws ws-${status}`} data-testid="ws-status" role="status">
        {status}
      </span>
      {skew !== null && Math.abs(skew) > SKEW_WARN_MS && (
        <span className="warn">your clock is {Math.round(skew / 1000)} s off the server's</span>
      )}
      <span className="who">
        {session ? (
          <>
            <span data-testid="session-email">{session.email ?? session.account}</span>
            <button
              type="button"
              onClick={() => {
                logout().catch(() => undefined);
                navigate({ page: "markets" });
              }}
            >
              Log out
            </button>
          </>
        ) : (
          <>
            <a href={href({ page: "login" })}>Log in</a>
            <a href={href({ page: "signup" })}>Sign up</a>
          </>
        )}
      </span>
    </header>
  );
}

export function App() {
  const route = useRoute();
  usePrivateFeed();
  return (
    <>
      <Header />
      {route.page === "market" ? (
        <MarketPage symbol={route.symbol} />
      ) : route.page === "login" || route.page === "signup" ? (
        <AuthPage key={route.page} mode={route.page} />
      ) : route.page === "account" ? (
        <AccountPage />
      ) : (
        <MarketsPage />
      )}
    </>
  );
}
