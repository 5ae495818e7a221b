// The order form: what the trader types is the only state here; rounding, validation,
// the reserve and the mode's verdict come from lib/orderForm.ts.
import { useId, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import type { Balance, Market, MarketMode, Order, OrderType, PlaceOrder, Side, TimeInForce } from "../api/types";
import { display } from "../lib/decimal";
import {
  allowedTimeInForce,
  availableFor,
  blockedReason,
  EMPTY_DRAFT,
  isShort,
  prepareOrder,
  roundPrice,
  roundQuantity,
  type Draft,
} from "../lib/orderForm";

export interface OrderFormProps {
  market: Market;
  mode: MarketMode | null;
  signedIn: boolean;
  balances: readonly Balance[] | undefined;
  /** sends the order; resolves with the API's answer, rejects with an ApiError */
  place: (order: PlaceOrder) => Promise<Order>;
  error: ApiError | null;
  onError: (error: ApiError | null) => void;
}

function assetPlaces(market: Market, asset: string): number {
  return asset === market.base_asset ? market.base_decimals : market.quote_decimals;
}

export function OrderForm({ market, mode, signedIn, balances, place, error, onError }: OrderFormProps) {
  const [draft, setDraft] = useState<Draft>(EMPTY_DRAFT);
  const [busy, setBusy] = useState(false);
  const [placed, setPlaced] = useState<Order | null>(null);
  const id = useId();
  const set = (change: Partial<Draft>) => setDraft((d) => ({ ...d, ...change }));

  const prepared = prepareOrder(market, draft);
  const reason = signedIn ? blockedReason(mode, draft, market.trading) : "Log in to place orders.";
  // A soft halt still takes post-only limit orders: keep the fields usable then.
  const frozen = reason !== null && !(signedIn && mode === "SOFT_HALT");
  const reserve = prepared.reserve;
  const available = reserve && balances ? availableFor(balances, market.symbol, reserve.asset) : null;
  const short = isShort(reserve, available);
  const tifs = allowedTimeInForce(draft.type);

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (reason || !prepared.order || busy) return;
    setBusy(true);
    onError(null);
    setPlaced(null);
    try {
      const order = await place(prepared.order);
      setPlaced(order);
      if (order.status === "REJECTED") {
        const code = order.reject_reason ?? "rejected";
        onError(new ApiError(code, `the matcher rejected order ${order.order_id}`, 200));
      }
    } catch (exc) {
      onError(exc as ApiError);
    } finally {
      setBusy(false);
    }
  }

  const f = (name: string) => `${id}-${name}`;
  return (
    <section className="panel form-panel" aria-label="Order form">
      <header className="panel-head">
        <h2>Place an order</h2>
      </header>
      <form onSubmit={submit} noValidate>
        {reason && (
          <p className="blocked" role="status" data-testid="order-blocked">
            {reason}
          </p>
        )}
        <fieldset disabled={frozen}>
          <div className="row">
            <label htmlFor={f("side")}>Side</label>
            <select
              id={f("side")}
              value={draft.side}
              onChange={(e) => set({ side: e.target.value as Side })}
            >
              <option value="BUY">BUY</option>
              <option value="SELL">SELL</option>
            </select>
          </div>
          <div className="row">
            <label htmlFor={f("type")}>Type</label>
            <select
              id={f("type")}
              value={draft.type}
              onChange={(e) => {
                const type = e.target.value as OrderType;
                set(
                  type === "MARKET"
                    ? { type, timeInForce: "IOC", postOnly: false }
                    : { type, timeInForce: "GTC" },
                );
              }}
            >
              <option value="LIMIT">LIMIT</option>
              <option value="MARKET">MARKET</option>
            </select>
          </div>
          <div className="row">
            <label htmlFor={f("price")}>Price</label>
            <input
              id={f("price")}
              inputMode="decimal"
              autoComplete="off"
              disabled={draft.type === "MARKET"}
              placeholder={draft.type === "MARKET" ? "market" : `tick ${market.tick_size}`}
              value={draft.type === "MARKET" ? "" : draft.price}
              aria-invalid={draft.price.trim() !== "" && prepared.errors.price ? true : undefined}
              aria-describedby={f("price-note")}
              onChange={(e) => set({ price: e.target.value })}
              onBlur={() => {
                const rounded = roundPrice(market, draft.price, draft.side);
                if (rounded !== null) set({ price: rounded });
              }}
            />
            <span className="unit">{market.quote_asset}</span>
          </div>
          <p className="note" id={f("price-note")}>
            {draft.type === "LIMIT" && note(draft.price, prepared.errors.price, prepared.price)}
          </p>
          <div className="row">
            <label htmlFor={f("quantity")}>Quantity</label>
            <input
              id={f("quantity")}
              inputMode="decimal"
              autoComplete="off"
              placeholder={`lot ${market.lot_size}`}
              value={draft.quantity}
              aria-invalid={draft.quantity.trim() !== "" && prepared.errors.quantity ? true : undefined}
              aria-describedby={f("quantity-note")}
              onChange={(e) => set({ quantity: e.target.value })}
              onBlur={() => {
                const rounded = roundQuantity(market, draft.quantity);
                if (rounded !== null) set({ quantity: rounded });
              }}
            />
            <span className="unit">{market.base_asset}</span>
          </div>
          <p className="note" id={f("quantity-note")}>
            {note(draft.quantity, prepared.errors.quantity, prepared.quantity)}
          </p>
          {draft.type === "MARKET" && draft.side === "BUY" && (
            <>
              <div className="row">
                <label htmlFor={f("budget")}>Quote budget</label>
                <input
                  id={f("budget")}
                  inputMode="decimal"
                  autoComplete="off"
                  placeholder="all available"
                  value={draft.quoteBudget}
                  aria-invalid={draft.quoteBudget.trim() !== "" && prepared.errors.quoteBudget ? true : undefined}
                  onChange={(e) => set({ quoteBudget: e.target.value })}
                />
                <span className="unit">{market.quote_asset}</span>
              </div>
              <p className="note">{prepared.errors.quoteBudget}</p>
            </>
          )}
          <div className="row">
            <label htmlFor={f("tif")}>Time in force</label>
            <select
              id={f("tif")}
              value={draft.timeInForce}
              onChange={(e) => {
                const timeInForce = e.target.value as TimeInForce;
                set(timeInForce === "GTC" ? { timeInForce } : { timeInForce, postOnly: false });
              }}
            >
              {tifs.map((t) => (
                <option key={t} value={t}>
                  {t}
                </option>
              ))}
            </select>
          </div>
          <div className="row check">
            <input
              id={f("post")}
              type="checkbox"
              checked={draft.postOnly}
              disabled={draft.type !== "LIMIT" || draft.timeInForce !== "GTC"}
              onChange={(e) => set({ postOnly: e.target.checked })}
            />
            <label htmlFor={f("post")}>Post only</label>
          </div>
          {prepared.errors.form && <p className="note">{prepared.errors.form}</p>}
          <p className="reserve" data-testid="order-reserve">
            {reserve === null
              ? "Reserve: —"
              : reserve.amount === null
                ? `Reserve: all available ${reserve.asset}`
                : `Reserve: ${display(reserve.amount, assetPlaces(market, reserve.asset))} ${reserve.asset}`}
            {available !== null && reserve && ` (available ${display(available, assetPlaces(market, reserve.asset))})`}
            {short && <strong className="warn"> insufficient</strong>}
          </p>
        </fieldset>
        <button type="submit" disabled={reason !== null || busy || prepared.order === null}>
          {busy ? "Placing…" : "Place order"}
        </button>
        {error && (
          <p className="error" role="alert" data-testid="order-error">
            <code>{error.code}</code>: {error.message}
          </p>
        )}
        {placed && !error && (
          <p className="ok" role="status" data-testid="order-placed">
            {placed.order_id} {placed.status}
          </p>
        )}
      </form>
    </section>
  );
}

/** Under a field: its problem once something is typed, else the rounded value it sends. */
function note(typed: string, error: string | undefined, sent: string | null): string {
  if (typed.trim() === "") return "";
  if (error) return error;
  return sent !== null && typed.trim() !== sent ? `sent as ${sent}` : "";
}
