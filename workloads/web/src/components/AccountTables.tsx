// The trader's tables: open orders (cancel, cancel all), order history, fills, balances,
// transfers.
import { useState } from "react";
import type { ApiError } from "../api/client";
import type { Balance, Market, OrderRow } from "../api/types";
import { display } from "../lib/decimal";
import { stamp, type Scales } from "../lib/format";
import { useFills, useOrders, useTransfers, type PagedResource } from "../state/account";
import { ErrorText } from "./ErrorText";

function More<T>({ resource }: { resource: PagedResource<T> }) {
  if (!resource.loadMore) return null;
  return (
    <button type="button" className="more" onClick={resource.loadMore}>
      Load more
    </button>
  );
}

/** The columns open orders and order history share. */
function OrderHead() {
  return (
    <>
      <th scope="col">Time</th>
      <th scope="col">Order</th>
      <th scope="col">Side</th>
      <th scope="col">Type</th>
      <th scope="col" className="num">Price</th>
      <th scope="col" className="num">Quantity</th>
      <th scope="col" className="num">Filled</th>
    </>
  );
}

function OrderCells({ order: o, scales }: { order: OrderRow; scales: Scales }) {
  return (
    <>
      <td>{stamp(o.created_at)}</td>
      <td>{o.order_id}</td>
      <td className={o.side === "BUY" ? "bid" : "ask"}>{o.side}</td>
      <td>
        {o.type} {o.time_in_force}
        {o.post_only ? " post-only" : ""}
      </td>
      <td className="num">{display(o.price, scales.price)}</td>
      <td className="num">{display(o.quantity, scales.quantity)}</td>
      <td className="num">{display(o.filled_quantity, scales.quantity)}</td>
    </>
  );
}

export interface OpenOrdersProps {
  symbol: string;
  scales: Scales;
  cancel: (orderId: string) => Promise<unknown>;
  cancelAll: () => Promise<unknown>;
  onError: (error: ApiError | null) => void;
}

export function OpenOrders({ symbol, scales, cancel, cancelAll, onError }: OpenOrdersProps) {
  const orders = useOrders(symbol, "open");
  const [busy, setBusy] = useState<string | null>(null);
  const run = async (what: string, action: () => Promise<unknown>) => {
    setBusy(what);
    onError(null);
    try {
      await action();
    } catch (exc) {
      onError(exc as ApiError);
    } finally {
      setBusy(null);
    }
  };
  const rows = orders.data?.items ?? [];
  return (
    <section className="panel" aria-label="Open orders panel">
      <header className="panel-head">
        <h2>Open orders</h2>
        <button
          type="button"
          disabled={busy !== null || rows.length === 0}
          onClick={() => run("all", cancelAll)}
        >
          Cancel all
        </button>
      </header>
      <ErrorText error={orders.error} />
      <table aria-label="Open orders">
        <thead>
          <tr>
            <OrderHead />
            <th scope="col">Status</th>
            <th scope="col"><span className="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {rows.map((o) => (
            <tr key={o.order_id} data-order-id={o.order_id}>
              <OrderCells order={o} scales={scales} />
              <td>{o.status}</td>
              <td>
                <button
                  type="button"
                  aria-label={`Cancel ${o.order_id}`}
                  disabled={busy !== null}
                  onClick={() => run(o.order_id, () => cancel(o.order_id))}
                >
                  Cancel
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {rows.length === 0 && !orders.loading && <p className="empty">No open orders.</p>}
      <More resource={orders} />
    </section>
  );
}

export function OrderHistory({ symbol, scales }: { symbol: string; scales: Scales }) {
  const orders = useOrders(symbol, "closed");
  const rows = orders.data?.items ?? [];
  return (
    <section className="panel" aria-label="Order history panel">
      <header className="panel-head">
        <h2>Order history</h2>
      </header>
      <ErrorText error={orders.error} />
      <table aria-label="Order history">
        <thead>
          <tr>
            <OrderHead />
            <th scope="col" className="num">Average</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((o) => (
            <tr key={o.order_id} data-order-id={o.order_id}>
              <OrderCells order={o} scales={scales} />
              <td className="num">{display(o.average_price, scales.price)}</td>
              <td>
                {o.status}
                {o.reject_reason ? ` (${o.reject_reason})` : ""}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <More resource={orders} />
    </section>
  );
}

export function Fills({ market, scales }: { market: Market; scales: Scales }) {
  const fills = useFills(market.symbol);
  const rows = fills.data?.items ?? [];
  const places = (asset: string) => (asset === market.base_asset ? scales.base : scales.quote);
  return (
    <section className="panel" aria-label="Fills panel">
      <header className="panel-head">
        <h2>Fills</h2>
      </header>
      <ErrorText error={fills.error} />
      <table aria-label="Fills">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Trade</th>
            <th scope="col">Order</th>
            <th scope="col">Side</th>
            <th scope="col">Liquidity</th>
            <th scope="col" className="num">Price</th>
            <th scope="col" className="num">Quantity</th>
            <th scope="col" className="num">Quote</th>
            <th scope="col" className="num">Fee</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((t) => (
            <tr key={`${t.trade_id}/${t.order_id}`}>
              <td>{stamp(t.time)}</td>
              <td>{t.trade_id}</td>
              <td>{t.order_id}</td>
              <td className={t.side === "BUY" ? "bid" : "ask"}>{t.side}</td>
              <td>{t.liquidity}</td>
              <td className="num">{display(t.price, scales.price)}</td>
              <td className="num">{display(t.quantity, scales.quantity)}</td>
              <td className="num">{display(t.quote_amount, scales.quote)}</td>
              <td className="num">
                {display(t.fee, places(t.fee_asset))} {t.fee_asset}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <More resource={fills} />
    </section>
  );
}

export interface BalancesProps {
  balances: readonly Balance[] | undefined;
  error: ApiError | undefined;
  /** decimal places per asset; an asset not listed shows as the API wrote it */
  places: Record<string, number>;
}

/** Per asset: available and held in the markets, the wallet (in no market), and the total of
 * the three. A wallet the gateway could not read from the ledger shows as — (the total is
 * then the markets' alone). */
export function Balances({ balances, error, places }: BalancesProps) {
  const unread = balances?.some((b) => b.wallet === null) ?? false;
  return (
    <section className="panel" aria-label="Balances panel">
      <header className="panel-head">
        <h2>Balances</h2>
      </header>
      <ErrorText error={error} />
      <table aria-label="Balances">
        <thead>
          <tr>
            <th scope="col">Asset</th>
            <th scope="col" className="num">Available</th>
            <th scope="col" className="num">Hold</th>
            <th scope="col" className="num">Wallet</th>
            <th scope="col" className="num">Total</th>
          </tr>
        </thead>
        <tbody>
          {(balances ?? []).map((b) => (
            <tr key={b.asset} data-asset={b.asset}>
              <th scope="row">{b.asset}</th>
              <td className="num">{display(b.available, places[b.asset])}</td>
              <td className="num">{display(b.hold, places[b.asset])}</td>
              <td className="num">{display(b.wallet, places[b.asset])}</td>
              <td className="num">{display(b.total, places[b.asset])}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {balances && balances.length === 0 && <p className="empty">No funds yet.</p>}
      {unread && (
        <p className="note" data-testid="wallet-unread">
          The wallet cannot be read just now; totals are the markets' alone.
        </p>
      )}
    </section>
  );
}

export function Transfers({ places }: { places: Record<string, number> }) {
  const transfers = useTransfers();
  const rows = transfers.data?.items ?? [];
  return (
    <section className="panel" aria-label="Transfers panel">
      <header className="panel-head">
        <h2>Transfers</h2>
      </header>
      <ErrorText error={transfers.error} />
      <table aria-label="Transfers">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Market</th>
            <th scope="col">Direction</th>
            <th scope="col" className="num">Amount</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((t) => (
            <tr key={t.transfer_id} data-transfer-id={t.transfer_id}>
              <td>{stamp(t.created_at)}</td>
              <td>{t.symbol}</td>
              <td>{t.direction === "to_market" ? "to market" : "to wallet"}</td>
              <td className="num">
                {display(t.amount, places[t.asset])} {t.asset}
              </td>
              <td>
                {t.status}
                {t.reject_reason ? ` (${t.reject_reason})` : ""}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {rows.length === 0 && !transfers.loading && <p className="empty">No transfers yet.</p>}
      <More resource={transfers} />
    </section>
  );
}
