import { describe, expect, it } from "vitest";
import type { Balance } from "../api/types";
import { testMarket } from "../test/fixtures";
import { emptyTransfer, isShortOf, prepareTransfer, sourceOf, type TransferDraft } from "./transferForm";

const market = testMarket();
const draft = (change: Partial<TransferDraft>): TransferDraft => ({ ...emptyTransfer(market), ...change });

describe("transfer rules", () => {
  it("sends a positive whole number of the asset's minor units, as typed", () => {
    expect(prepareTransfer(market, draft({ amount: " 12.500 " }))).toEqual({
      request: { symbol: "BTC-USDT", asset: "USDT", amount: "12.5", direction: "to_market" },
      error: null,
    });
    const sat = prepareTransfer(market, draft({ asset: "BTC", amount: ".00000001", direction: "to_wallet" }));
    expect(sat.request?.amount).toBe("0.00000001"); // below the lot: a transfer is no order
    expect(prepareTransfer(market, draft({ amount: "" }))).toEqual({ request: null, error: null });
    expect(prepareTransfer(market, draft({ amount: "0.0000001" })).error).toBe("USDT has at most 6 decimals");
    expect(prepareTransfer(market, draft({ amount: "0.000" })).error).toBe("Amount must be more than 0");
    expect(prepareTransfer(market, draft({ amount: "-1" })).error).toMatch(/^Amount must be a number/);
    expect(prepareTransfer(market, draft({ amount: "1e3" })).error).toMatch(/^Amount must be a number/);
  });

  it("takes from the wallet to a market and from the market's available back", () => {
    const row = (change: Partial<Balance>): Balance => ({
      asset: "USDT",
      wallet: "7.000000",
      available: "3.000000",
      hold: "0.000000",
      total: "10.000000",
      markets: [{ symbol: "BTC-USDT", available: "3.000000", hold: "0.000000" }],
      ...change,
    });
    expect(sourceOf([row({})], "BTC-USDT", "USDT", "to_market")).toBe("7.000000");
    expect(sourceOf([row({})], "BTC-USDT", "USDT", "to_wallet")).toBe("3.000000");
    expect(sourceOf([row({})], "ETH-USDT", "USDT", "to_wallet")).toBe("0");
    expect(sourceOf([row({})], "BTC-USDT", "BTC", "to_market")).toBe("0");
    expect(sourceOf([row({ wallet: null })], "BTC-USDT", "USDT", "to_market")).toBeNull();
    expect(sourceOf(undefined, "BTC-USDT", "USDT", "to_market")).toBeNull();
    const request = prepareTransfer(market, draft({ amount: "7.000001" })).request;
    expect(isShortOf(request, "7.000000")).toBe(true);
    expect(isShortOf(request, "7.000001")).toBe(false);
    expect(isShortOf(request, null)).toBe(false);
    expect(isShortOf(null, "0")).toBe(false);
  });
});
