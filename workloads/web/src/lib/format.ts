// Display helpers. Amounts go through decimal.ts (strings and BigInt); only times are numbers.
import type { Market } from "../api/types";
import { placesOf } from "./decimal";

export interface Scales {
  price: number;
  quantity: number;
  base: number;
  quote: number;
}

/** The decimal places a market writes prices, quantities and its two assets with. */
export function scalesOf(market: Market): Scales {
  return {
    price: placesOf(market.tick_size),
    quantity: placesOf(market.lot_size),
    base: market.base_decimals,
    quote: market.quote_decimals,
  };
}

const pad = (n: number) => String(n).padStart(2, "0");

/** Epoch ms as local `HH:MM:SS`. */
export function clock(ms: number | null | undefined): string {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Epoch ms as local `YYYY-MM-DD HH:MM:SS`. */
export function stamp(ms: number | null | undefined): string {
  if (!ms) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms)}`;
}
