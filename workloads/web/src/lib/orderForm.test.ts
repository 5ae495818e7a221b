import { describe, expect, it } from "vitest";
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
} from "./orderForm";
import { testMarket } from "../test/fixtures";

const market = testMarket();
const draft = (change: Partial<Draft>): Draft => ({ ...EMPTY_DRAFT, ...change });

describe("rounding to tick and lot", () => {
  it("rounds a buy price down and a sell price up to the tick", () => {
    expect(roundPrice(market, "100.037", "BUY")).toBe("100.03");
    expect(roundPrice(market, "100.031", "SELL")).toBe("100.04");
    expect(roundPrice(market, "100", "BUY")).toBe("100.00");
    expect(roundPrice(market, "abc", "BUY")).toBeNull();
  });

  it("rounds a quantity down to the lot", () => {
    expect(roundQuantity(market, "0.123456")).toBe("0.1234");
    expect(roundQuantity(market, ".5")).toBe("0.5000");
    expect(roundQuantity(testMarket({ lot_size: "5" }), "17")).toBe("15");
  });

  it("sends the rounded values", () => {
    const p = prepareOrder(market, draft({ price: "100.039", quantity: "0.00015" }));
    expect(p.errors).toEqual({});
    expect(p.order).toEqual({
      symbol: "BTC-USDT",
      side: "BUY",
      type: "LIMIT",
      time_in_force: "GTC",
      price: "100.03",
      quantity: "0.0001",
    });
  });
});

describe("validation", () => {
  it("refuses a quantity under the minimum or one that rounds to zero", () => {
    const small = prepareOrder(market, draft({ price: "100", quantity: "0.00009" }));
    expect(small.order).toBeNull();
    expect(small.errors.quantity).toMatch(/at least 0.0001 BTC/);
    const under = prepareOrder(testMarket({ min_quantity: "0.0010" }), draft({ price: "1", quantity: "0.0009" }));
    expect(under.errors.quantity).toMatch(/at least 0.0010/);
  });

  it("refuses a quantity over the maximum and a price outside min/max", () => {
    expect(prepareOrder(market, draft({ price: "1", quantity: "100.0001" })).errors.quantity).toMatch(
      /at most 100.0000/,
    );
    expect(prepareOrder(market, draft({ price: "0.001", quantity: "1" })).errors.price).toMatch(/at least 0.01/);
    expect(prepareOrder(market, draft({ price: "10000000.01", quantity: "1" })).errors.price).toMatch(/at most/);
  });

  it("refuses a limit price outside the price band", () => {
    const banded = testMarket({ price_band_bps: 500, price_band: { low: "95.00", high: "105.00" } });
    expect(prepareOrder(banded, draft({ price: "105.01", quantity: "1" })).errors.price).toMatch(/price band/);
    expect(prepareOrder(banded, draft({ price: "94.99", quantity: "1" })).errors.price).toMatch(/price band/);
    expect(prepareOrder(banded, draft({ price: "105.00", quantity: "1" })).order).not.toBeNull();
  });

  it("refuses text that is not a number, and empty fields", () => {
    const p = prepareOrder(market, draft({ price: "1e3", quantity: "" }));
    expect(p.errors.price).toBeDefined();
    expect(p.errors.quantity).toBeDefined();
    expect(p.order).toBeNull();
  });

  it("allows post only with GTC limit orders only; a market order is IOC", () => {
    expect(prepareOrder(market, draft({ price: "1", quantity: "1", postOnly: true, timeInForce: "IOC" })).errors.form).toMatch(
      /GTC/,
    );
    expect(prepareOrder(market, draft({ price: "1", quantity: "1", postOnly: true })).order?.post_only).toBe(true);
    expect(allowedTimeInForce("MARKET")).toEqual(["IOC"]);
    const m = prepareOrder(market, draft({ type: "MARKET", quantity: "1", price: "5", timeInForce: "GTC" }));
    expect(m.order).toEqual({ symbol: "BTC-USDT", side: "BUY", type: "MARKET", time_in_force: "IOC", quantity: "1.0000" });
  });
});

describe("reserve", () => {
  it("is price times quantity in quote for a limit buy, exactly", () => {
    const p = prepareOrder(market, draft({ price: "12345.67", quantity: "0.0003" }));
    expect(p.reserve).toEqual({ asset: "USDT", amount: "3.703701" });
    const wide = testMarket({ max_quantity: "100000.0000" });
    const big = prepareOrder(wide, draft({ price: "9999999.99", quantity: "9999.9999" }));
    // 99999998900.000001 USDT: more minor units than 2^53 (Python's Decimal agrees)
    expect(big.reserve).toEqual({ asset: "USDT", amount: "99999998900.000001" });
  });

  it("rounds a limit buy's reserve up to the quote's minor unit", () => {
    const fine = testMarket({ tick_size: "0.001", quote_decimals: 2, lot_size: "0.1" });
    const p = prepareOrder(fine, draft({ price: "1.001", quantity: "0.1" }));
    expect(p.reserve).toEqual({ asset: "USDT", amount: "0.11" }); // 0.1001 -> 0.11
  });

  it("is the quantity of base for a sell, the budget (or all) for a market buy", () => {
    expect(prepareOrder(market, draft({ side: "SELL", price: "100", quantity: "0.25" })).reserve).toEqual({
      asset: "BTC",
      amount: "0.2500",
    });
    const budget = prepareOrder(market, draft({ type: "MARKET", quantity: "1", quoteBudget: "250.1234567" }));
    expect(budget.reserve).toEqual({ asset: "USDT", amount: "250.123456" });
    expect(budget.order?.quote_budget).toBe("250.123456");
    expect(prepareOrder(market, draft({ type: "MARKET", quantity: "1" })).reserve).toEqual({
      asset: "USDT",
      amount: null,
    });
  });

  it("compares the reserve with what this market has available", () => {
    const balances = [
      {
        asset: "USDT",
        wallet: "100.000000",
        available: "50.000000",
        hold: "0",
        total: "150.000000",
        markets: [{ symbol: "BTC-USDT", available: "5.000000", hold: "0" }],
      },
    ];
    const available = availableFor(balances, "BTC-USDT", "USDT");
    expect(available).toBe("5.000000");
    expect(isShort({ asset: "USDT", amount: "5.000001" }, available)).toBe(true);
    expect(isShort({ asset: "USDT", amount: "5" }, available)).toBe(false);
    expect(isShort({ asset: "USDT", amount: null }, "0")).toBe(false);
    expect(isShort({ asset: "USDT", amount: "1" }, null)).toBe(false); // balances not loaded
    expect(availableFor(balances, "BTC-USDT", "BTC")).toBe("0");
    expect(availableFor(balances, "ETH-USDT", "USDT")).toBe("0"); // the wallet is no market
  });
});

describe("market mode", () => {
  it("accepts orders in NORMAL", () => {
    expect(blockedReason("NORMAL", EMPTY_DRAFT)).toBeNull();
  });

  it("refuses new orders in CANCEL_ONLY and HARD_HALT, saying why", () => {
    expect(blockedReason("CANCEL_ONLY", EMPTY_DRAFT)).toMatch(/^CANCEL_ONLY: .*cancels only/);
    expect(blockedReason("HARD_HALT", draft({ postOnly: true }))).toMatch(/^HARD_HALT/);
    expect(blockedReason("SOMETHING_NEW", EMPTY_DRAFT)).toMatch(/^SOMETHING_NEW/);
  });

  it("refuses orders on a sample market without a matcher", () => {
    expect(blockedReason("NORMAL", EMPTY_DRAFT, false)).toMatch(/sample data only/);
  });

  it("takes only post-only GTC limit orders in SOFT_HALT", () => {
    expect(blockedReason("SOFT_HALT", EMPTY_DRAFT)).toMatch(/^SOFT_HALT/);
    expect(blockedReason("SOFT_HALT", draft({ postOnly: true }))).toBeNull();
    expect(blockedReason("SOFT_HALT", draft({ type: "MARKET", postOnly: true }))).toMatch(/^SOFT_HALT/);
  });
});
