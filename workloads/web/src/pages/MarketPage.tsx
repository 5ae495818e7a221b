import { useCallback, useMemo, useState } from "react";
import type { ApiError } from "../api/client";
import type { Market, PlaceOrder } from "../api/types";
import { Balances, Fills, OpenOrders, OrderHistory } from "../components/AccountTables";
import { Chart } from "../components/Chart";
import { ErrorText } from "../components/ErrorText";
import { OrderBook } from "../components/OrderBook";
import { OrderForm } from "../components/OrderForm";
import { TradeTape } from "../components/TradeTape";
import { TransferForm } from "../components/TransferForm";
import { display } from "../lib/decimal";
import { scalesOf } from "../lib/format";
import { useBalances, useTransfer } from "../state/account";
import { useMarketMode, useMarkets, useTape } from "../state/market";
import { useServices, useSession } from "../state/services";

const MODE_REFUSALS = new Set(["market_cancel_only", "market_soft_halt", "market_hard_halt"]);

export function MarketPage({ symbol }: { symbol: string }) {
  const markets = useMarkets();
  const market = markets.data?.markets.find((m) => m.symbol === symbol);
  if (!market) {
    return (
      <main className="page">
        <h1>{symbol}</h1>
        <ErrorText error={markets.error} />
        <p>{markets.loading || !markets.data ? "Loading…" : `There is no market ${symbol}.`}</p>
      </main>
    );
  }
  return <Trading key={symbol} market={market} />;
}

function Trading({ market }: { market: Market }) {
  const { client, cache } = useServices();
  const { session } = useSession();
  const mode = useMarketMode(market.symbol, market.mode);
  const balances = useBalances();
  const transfer = useTransfer();
  const tape = useTape(market.symbol);
  const last = tape.trades[0]?.price ?? market.last_price; // the tape is live, the catalogue polled
  const scales = useMemo(() => scalesOf(market), [market]);
  const [orderError, setOrderError] = useState<ApiError | null>(null);

  const refused = useCallback(
    (error: ApiError | null) => {
      setOrderError(error);
      if (error && MODE_REFUSALS.has(error.code)) cache.invalidate("markets");
    },
    [cache],
  );
  const changed = () => {
    cache.invalidate("me:orders:");
    cache.invalidate("me:balances");
  };
  const place = async (order: PlaceOrder) => {
    const answer = await client.place(order);
    changed();
    cache.invalidate("me:fills:");
    return answer;
  };
  const cancel = async (orderId: string) => {
    await client.cancel(orderId);
    changed();
  };
  const cancelAll = async () => {
    await client.cancelAll(market.symbol);
    changed();
  };
  const places = { [market.base_asset]: scales.base, [market.quote_asset]: scales.quote };
  const shown = balances.data?.balances.filter(
    (b) => b.asset === market.base_asset || b.asset === market.quote_asset,
  );

  return (
    <main className="page market-page">
      <header className="market-head">
        <h1>{market.symbol}</h1>
        <span className={`mode mode-${mode ?? "unknown"}`} data-testid="market-mode">
          {mode ?? "unknown"}
        </span>
        <span className="last">
          last {display(last, scales.price)} {market.quote_asset}
        </span>
        <span className="steps">
          tick {market.tick_size} · lot {market.lot_size}
          {market.price_band ? ` · band ${market.price_band.low} – ${market.price_band.high}` : ""}
        </span>
      </header>
      <div className="trade-grid">
        <Chart symbol={market.symbol} tickSize={market.tick_size} pricePlaces={scales.price} />
        <OrderBook symbol={market.symbol} pricePlaces={scales.price} quantityPlaces={scales.quantity} />
        <TradeTape tape={tape} pricePlaces={scales.price} quantityPlaces={scales.quantity} />
        <OrderForm
          market={market}
          mode={mode}
          signedIn={session !== null}
          balances={balances.data?.balances}
          place={place}
          error={orderError}
          onError={refused}
        />
      </div>
      {session && (
        <div className="account-grid">
          <OpenOrders
            symbol={market.symbol}
            scales={scales}
            cancel={cancel}
            cancelAll={cancelAll}
            onError={refused}
          />
          <Balances balances={shown} error={balances.error} places={places} />
          <TransferForm market={market} balances={balances.data?.balances} transfer={transfer} />
          <OrderHistory symbol={market.symbol} scales={scales} />
          <Fills market={market} scales={scales} />
        </div>
      )}
    </main>
  );
}
