// A market as GET /v1/markets describes it, for tests: the gateway's default BTC-USDT
// (lot 10,000 sat = 0.0001 BTC, tick 0.01 USDT, USDT with 6 decimals).
import type { Market } from "../api/types";

export function testMarket(change: Partial<Market> = {}): Market {
  return {
    symbol: "BTC-USDT",
    base_asset: "BTC",
    quote_asset: "USDT",
    base_decimals: 8,
    quote_decimals: 6,
    tick_size: "0.01",
    lot_size: "0.0001",
    min_quantity: "0.0001",
    max_quantity: "100.0000",
    min_price: "0.01",
    max_price: "10000000.00",
    price_band_bps: 0,
    price_band: null,
    mode: "NORMAL",
    last_price: "100.00",
    trading: true,
    sample: false,
    ...change,
  };
}
