// The transfer form's rules, as pure functions: an amount is a positive whole number of the
// asset's minor units, and what it is taken from is the wallet (to a market) or this market's
// available (back to the wallet). The ledger and the matcher check it again; these exist so a
// trader sees the problem before sending.
import type { Balance, Market, TransferDirection, TransferRequest } from "../api/types";
import { cmp, format, isPositive, normalize, parse, parseInput } from "./decimal";
import { availableFor } from "./orderForm";

export interface TransferDraft {
  asset: string;
  amount: string;
  direction: TransferDirection;
}

export function emptyTransfer(market: Pick<Market, "quote_asset">): TransferDraft {
  return { asset: market.quote_asset, amount: "", direction: "to_market" };
}

export interface PreparedTransfer {
  /** what is sent, or null while the draft is incomplete or wrong */
  request: TransferRequest | null;
  /** the amount's problem, once something is typed */
  error: string | null;
}

type Assets = Pick<Market, "symbol" | "base_asset" | "quote_asset" | "base_decimals" | "quote_decimals">;

export function assetDecimals(market: Assets, asset: string): number {
  return asset === market.base_asset ? market.base_decimals : market.quote_decimals;
}

export function prepareTransfer(market: Assets, draft: TransferDraft): PreparedTransfer {
  const typed = draft.amount.trim();
  if (typed === "") return { request: null, error: null };
  const value = parseInput(typed);
  if (value === null) return { request: null, error: "Amount must be a number such as 1.25" };
  if (!isPositive(value)) return { request: null, error: "Amount must be more than 0" };
  const places = assetDecimals(market, draft.asset);
  const exact = normalize(value);
  if (exact.scale > places) {
    return { request: null, error: `${draft.asset} has at most ${places} decimals` };
  }
  return {
    request: {
      symbol: market.symbol,
      asset: draft.asset,
      amount: format(exact),
      direction: draft.direction,
    },
    error: null,
  };
}

/** What the transfer takes from: the wallet (to the market) or the market's available (back);
 * null when unknown (balances not loaded, the ledger not readable). */
export function sourceOf(
  balances: readonly Balance[] | undefined,
  symbol: string,
  asset: string,
  direction: TransferDirection,
): string | null {
  if (!balances) return null;
  if (direction === "to_wallet") return availableFor(balances, symbol, asset);
  if (balances.some((b) => b.wallet === null)) return null; // the ledger could not be read
  return balances.find((b) => b.asset === asset)?.wallet ?? "0";
}

/** Whether the source holds less than the amount (an unknown source never does). */
export function isShortOf(request: TransferRequest | null, source: string | null): boolean {
  if (!request || source === null) return false;
  return cmp(parse(source), parse(request.amount)) < 0;
}
