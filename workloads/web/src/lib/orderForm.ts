// The order form's rules, as pure functions: rounding to the market's tick and lot,
// validation against its limits and price band, what the order reserves, and whether the
// market's mode lets it be placed at all. The matcher checks all of it again; these exist
// so a trader sees the problem before sending.
import type { Balance, Market, MarketMode, OrderType, PlaceOrder, Side, TimeInForce } from "../api/types";
import {
  cmp,
  format,
  isPositive,
  mul,
  parse,
  parseInput,
  placesOf,
  rescale,
  roundToStep,
  type Dec,
  type Rounding,
} from "./decimal";

export type Rules = Pick<
  Market,
  | "symbol"
  | "base_asset"
  | "quote_asset"
  | "quote_decimals"
  | "tick_size"
  | "lot_size"
  | "min_quantity"
  | "max_quantity"
  | "min_price"
  | "max_price"
  | "price_band"
>;

export interface Draft {
  side: Side;
  type: OrderType;
  price: string;
  quantity: string;
  /** MARKET buys only; empty: the matcher reserves all available quote */
  quoteBudget: string;
  timeInForce: TimeInForce;
  postOnly: boolean;
}

export const EMPTY_DRAFT: Draft = {
  side: "BUY",
  type: "LIMIT",
  price: "",
  quantity: "",
  quoteBudget: "",
  timeInForce: "GTC",
  postOnly: false,
};

export interface Reserve {
  asset: string;
  /** null: everything available (a MARKET buy without a budget) */
  amount: string | null;
}

export interface Prepared {
  /** the request body, or null while something is wrong */
  order: PlaceOrder | null;
  errors: { price?: string; quantity?: string; quoteBudget?: string; form?: string };
  /** the values as they will be sent (rounded to tick and lot) */
  price: string | null;
  quantity: string | null;
  quoteBudget: string | null;
  reserve: Reserve | null;
}

/** Why the market refuses new orders like this one now; null when it accepts them. A soft
 * halt stops matching but still rests post-only limit orders (as the matcher does). A market
 * without a matcher (`trading` false) shows sample data only. */
export function blockedReason(
  mode: MarketMode | null | undefined,
  draft: Draft,
  trading = true,
): string | null {
  if (!trading) return "This market shows sample data only: it has no matcher and takes no orders.";
  switch (mode) {
    case undefined:
    case null:
    case "UNSPECIFIED": // not reported: the matcher decides
    case "NORMAL":
      return null;
    case "CANCEL_ONLY":
      return "CANCEL_ONLY: the market accepts cancels only; new orders are refused.";
    case "SOFT_HALT":
      return draft.type === "LIMIT" && draft.timeInForce === "GTC" && draft.postOnly
        ? null
        : "SOFT_HALT: matching is halted; only post-only GTC limit orders and cancels are accepted.";
    case "HARD_HALT":
      return "HARD_HALT: the market is halted and accepts no orders or cancels.";
    default:
      return `${mode}: the market does not accept new orders.`;
  }
}

/** The time in force an order type allows (a MARKET order is always IOC). */
export function allowedTimeInForce(type: OrderType): TimeInForce[] {
  return type === "MARKET" ? ["IOC"] : ["GTC", "IOC", "FOK"];
}

function stepRound(text: string, step: string, mode: Rounding): Dec | null {
  const value = parseInput(text);
  if (value === null) return null;
  return roundToStep(value, parse(step), mode);
}

/** A price rounded to the tick: down for a buy (never pay more than typed), up for a sell
 * (never sell for less). Null when `text` is not a number. */
export function roundPrice(rules: Rules, text: string, side: Side): string | null {
  const value = stepRound(text, rules.tick_size, side === "BUY" ? "down" : "up");
  return value && format(rescale(value, placesOf(rules.tick_size), "down"));
}

/** A quantity rounded down to the lot. */
export function roundQuantity(rules: Rules, text: string): string | null {
  const value = stepRound(text, rules.lot_size, "down");
  return value && format(rescale(value, placesOf(rules.lot_size), "down"));
}

function within(value: Dec, low: string, high: string): -1 | 0 | 1 {
  if (cmp(value, parse(low)) < 0) return -1;
  if (cmp(value, parse(high)) > 0) return 1;
  return 0;
}

export function prepareOrder(rules: Rules, draft: Draft): Prepared {
  const errors: Prepared["errors"] = {};
  const out: Prepared = { order: null, errors, price: null, quantity: null, quoteBudget: null, reserve: null };

  const quantity = roundQuantity(rules, draft.quantity);
  if (draft.quantity.trim() === "") errors.quantity = "Enter a quantity.";
  else if (quantity === null) errors.quantity = "Quantity must be a positive decimal number.";
  else {
    out.quantity = quantity;
    const q = parse(quantity);
    if (!isPositive(q) || within(q, rules.min_quantity, rules.max_quantity) < 0) {
      errors.quantity = `Quantity must be at least ${rules.min_quantity} ${rules.base_asset} (lot ${rules.lot_size}).`;
    } else if (within(q, rules.min_quantity, rules.max_quantity) > 0) {
      errors.quantity = `Quantity must be at most ${rules.max_quantity} ${rules.base_asset}.`;
    }
  }

  if (draft.type === "LIMIT") {
    const price = roundPrice(rules, draft.price, draft.side);
    if (draft.price.trim() === "") errors.price = "Enter a price.";
    else if (price === null) errors.price = "Price must be a positive decimal number.";
    else {
      out.price = price;
      const p = parse(price);
      const band = rules.price_band;
      if (!isPositive(p) || within(p, rules.min_price, rules.max_price) < 0) {
        errors.price = `Price must be at least ${rules.min_price} (tick ${rules.tick_size}).`;
      } else if (within(p, rules.min_price, rules.max_price) > 0) {
        errors.price = `Price must be at most ${rules.max_price}.`;
      } else if (band && within(p, band.low, band.high) !== 0) {
        errors.price = `Price must lie within the price band ${band.low} – ${band.high}.`;
      }
    }
    if (draft.postOnly && draft.timeInForce !== "GTC") {
      errors.form = "Post only needs time in force GTC.";
    }
  } else if (draft.side === "BUY" && draft.quoteBudget.trim() !== "") {
    const budget = parseInput(draft.quoteBudget);
    if (budget === null || !isPositive(rescale(budget, rules.quote_decimals, "down"))) {
      errors.quoteBudget = `Quote budget must be a positive amount of ${rules.quote_asset}.`;
    } else {
      out.quoteBudget = format(rescale(budget, rules.quote_decimals, "down"));
    }
  }

  out.reserve = reserveOf(rules, draft.side, draft.type, out);
  if (Object.keys(errors).length) return out;

  const order: PlaceOrder = {
    symbol: rules.symbol,
    side: draft.side,
    type: draft.type,
    quantity: out.quantity as string,
    time_in_force: draft.type === "MARKET" ? "IOC" : draft.timeInForce,
  };
  if (draft.type === "LIMIT") {
    order.price = out.price as string;
    if (draft.postOnly) order.post_only = true;
  } else if (out.quoteBudget !== null) {
    order.quote_budget = out.quoteBudget;
  }
  out.order = order;
  return out;
}

/** What the matcher holds for the order: quote price*quantity for a limit buy (exact, in
 * the quote asset's minor units, rounded up), the budget (or all available quote) for a
 * market buy, the quantity of base for a sell. Null while the inputs are incomplete. */
export function reserveOf(
  rules: Rules,
  side: Side,
  type: OrderType,
  values: Pick<Prepared, "price" | "quantity" | "quoteBudget">,
): Reserve | null {
  if (side === "SELL") {
    return values.quantity === null ? null : { asset: rules.base_asset, amount: values.quantity };
  }
  if (type === "MARKET") return { asset: rules.quote_asset, amount: values.quoteBudget };
  if (values.price === null || values.quantity === null) return null;
  const quote = rescale(mul(parse(values.price), parse(values.quantity)), rules.quote_decimals, "up");
  return { asset: rules.quote_asset, amount: format(quote) };
}

/** What this market's matcher has available of `asset` (balances are per market): only the
 * market's allocation counts, not the wallet or other markets; "0" for an asset not here. */
export function availableFor(balances: readonly Balance[], symbol: string, asset: string): string {
  const row = balances.find((b) => b.asset === asset);
  return row?.markets.find((m) => m.symbol === symbol)?.available ?? "0";
}

/** Whether `available` falls short of the reserve (an unknown amount or balance never does). */
export function isShort(reserve: Reserve | null, available: string | null): boolean {
  if (!reserve || reserve.amount === null || available === null) return false;
  return cmp(parse(available), parse(reserve.amount)) < 0;
}
