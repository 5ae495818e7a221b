// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import type { Balance } from "../api/types";
import { mountScreen } from "../test/dom";
import { Balances } from "./AccountTables";

const screen = mountScreen();


const USDT: Balance = {
  asset: "USDT",
  wallet: "400.000000",
  available: "100.000000",
  hold: "500.000000",
  total: "1000.000000",
  markets: [{ symbol: "BTC-USDT", available: "100.000000", hold: "500.000000" }],
};

function cells(): string[][] {
  return [...screen.container.querySelectorAll("tr")].map((tr) =>
    [...tr.querySelectorAll("th, td")].map((c) => c.textContent ?? ""),
  );
}

describe("Balances", () => {
  it("shows the wallet beside the markets' available and hold, and the total of the three", () => {
    const btc: Balance = {
      asset: "BTC", // only in the wallet
      wallet: "0.50000000",
      available: "0.00000000",
      hold: "0.00000000",
      total: "0.50000000",
      markets: [],
    };
    screen.render(<Balances balances={[btc, USDT]} error={undefined} places={{ BTC: 8, USDT: 2 }} />);
    expect(cells()).toEqual([
      ["Asset", "Available", "Hold", "Wallet", "Total"],
      ["BTC", "0.00000000", "0.00000000", "0.50000000", "0.50000000"],
      ["USDT", "100.00", "500.00", "400.00", "1,000.00"],
    ]);
    expect(screen.container.querySelector('[data-testid="wallet-unread"]')).toBeNull();
  });

  it("says so when the wallet could not be read", () => {
    const unread = { ...USDT, wallet: null, total: "600.000000" };
    screen.render(<Balances balances={[unread]} error={undefined} places={{ USDT: 6 }} />);
    expect(cells()[1]).toEqual(["USDT", "100.000000", "500.000000", "—", "600.000000"]);
    expect(screen.container.querySelector('[data-testid="wallet-unread"]')?.textContent).toMatch(/cannot be read/);
  });
});
