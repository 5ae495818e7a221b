import { useEffect, useState } from "react";
import type { Market, Ticker } from "../api/types";
import { ErrorText } from "../components/ErrorText";
import { display, placesOf } from "../lib/decimal";
import { href } from "../router";
import { modeOf, useMarkets } from "../state/market";
import { useServices } from "../state/services";

function MarketRow({ market }: { market: Market }) {
  const { socket } = useServices();
  const [ticker, setTicker] = useState<Ticker | null>(null);
  const [mode, setMode] = useState<string | null>(null);
  useEffect(
    () =>
      socket.subscribe("ticker", market.symbol, (msg) => {
        if (msg.data) setTicker(msg.data as Ticker);
        const seen = modeOf(msg);
        if (seen) setMode(seen);
      }),
    [socket, market.symbol],
  );
  const price = placesOf(market.tick_size);
  const quantity = placesOf(market.lot_size);
  const change = ticker?.change_percent;
  return (
    <tr data-symbol={market.symbol}>
      <th scope="row">
        <a href={href({ page: "market", symbol: market.symbol })}>{market.symbol}</a>
      </th>
      <td className="num">{display(ticker?.last_price ?? market.last_price, price)}</td>
      <td className={`num ${change?.startsWith("-") ? "ask" : "bid"}`}>
        {change ? `${change}%` : "—"}
      </td>
      <td className="num">{display(ticker?.high, price)}</td>
      <td className="num">{display(ticker?.low, price)}</td>
      <td className="num">{display(ticker?.volume, quantity)}</td>
      <td>
        <span className={`mode mode-${mode ?? market.mode}`}>{mode ?? market.mode}</span>
      </td>
    </tr>
  );
}

export function MarketsPage() {
  const markets = useMarkets();
  return (
    <main className="page">
      <h1>Markets</h1>
      <ErrorText error={markets.error} />
      <table aria-label="Markets" className="markets">
        <thead>
          <tr>
            <th scope="col">Market</th>
            <th scope="col" className="num">Last</th>
            <th scope="col" className="num">24h change</th>
            <th scope="col" className="num">24h high</th>
            <th scope="col" className="num">24h low</th>
            <th scope="col" className="num">24h volume</th>
            <th scope="col">Mode</th>
          </tr>
        </thead>
        <tbody>
          {(markets.data?.markets ?? []).map((m) => (
            <MarketRow key={m.symbol} market={m} />
          ))}
        </tbody>
      </table>
      {markets.loading && !markets.data && <p>Loading…</p>}
    </main>
  );
}
