// @vitest-environment jsdom
import { act } from "react";
import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/client";
import type { Balance, Transfer, TransferRequest } from "../api/types";
import { testMarket } from "../test/fixtures";
import { mountScreen } from "../test/dom";
import { TransferForm, type TransferFormProps } from "./TransferForm";

const screen = mountScreen();
const { button, choose, field, testId, type } = screen;


/** 400 USDT in the wallet, 100 available and 500 held in BTC-USDT; BTC only in the wallet. */
const BALANCES: Balance[] = [
  {
    asset: "BTC",
    wallet: "0.50000000",
    available: "0.00000000",
    hold: "0.00000000",
    total: "0.50000000",
    markets: [],
  },
  {
    asset: "USDT",
    wallet: "400.000000",
    available: "100.000000",
    hold: "500.000000",
    total: "1000.000000",
    markets: [{ symbol: "BTC-USDT", available: "100.000000", hold: "500.000000" }],
  },
];

function answer(request: TransferRequest, change: Partial<Transfer> = {}): Transfer {
  return {
    transfer_id: "t0123",
    status: "accepted",
    reject_reason: null,
    booked: true,
    created_at: 1_796_119_200_000,
    ...request,
    ...change,
  };
}

function render(change: Partial<TransferFormProps> = {}) {
  const props: TransferFormProps = {
    market: testMarket(),
    balances: BALANCES,
    transfer: vi.fn(),
    ...change,
  };
  screen.render(<TransferForm {...props} />);
  return props;
}

describe("TransferForm", () => {
  it("offers the market's two assets, the quote first, and sends to the market", async () => {
    const transfer = vi.fn(async (request: TransferRequest) => answer(request));
    render({ transfer });
    expect([...(field("Asset") as HTMLSelectElement).options].map((o) => o.value)).toEqual(["BTC", "USDT"]);
    expect(field("Asset").value).toBe("USDT");
    expect([...(field("Direction") as HTMLSelectElement).options].map((o) => o.textContent)).toEqual([
      "To market",
      "To wallet",
    ]);
    expect(testId("transfer-source")?.textContent).toBe("From wallet: 400.000000 USDT");
    expect(button("Transfer").disabled).toBe(true); // nothing typed yet
    type("Amount", "250.50");
    await act(async () => button("Transfer").click());
    expect(transfer).toHaveBeenCalledWith({
      symbol: "BTC-USDT",
      asset: "USDT",
      amount: "250.5",
      direction: "to_market",
    });
    expect(testId("transfer-done")?.textContent).toBe("250.5 USDT to BTC-USDT: accepted");
    expect((field("Amount") as HTMLInputElement).value).toBe(""); // ready for the next one
  });

  it("takes a transfer back to the wallet from the market's available", async () => {
    const transfer = vi.fn(async (request: TransferRequest) => answer(request));
    render({ transfer });
    choose("Direction", "to_wallet");
    expect(testId("transfer-source")?.textContent).toBe("From BTC-USDT: 100.000000 USDT");
    type("Amount", "100.000001");
    expect(testId("transfer-source")?.textContent).toContain("insufficient");
    type("Amount", "100");
    expect(testId("transfer-source")?.textContent).not.toContain("insufficient");
    choose("Asset", "BTC");
    expect(testId("transfer-source")?.textContent).toBe("From BTC-USDT: 0.00000000 BTC insufficient");
    choose("Direction", "to_market");
    type("Amount", "0.00000001");
    await act(async () => button("Transfer").click());
    expect(transfer).toHaveBeenCalledWith({
      symbol: "BTC-USDT",
      asset: "BTC",
      amount: "0.00000001",
      direction: "to_market",
    });
  });

  it("refuses an amount the asset cannot hold before sending it", () => {
    const transfer = vi.fn();
    render({ transfer });
    type("Amount", "1.0000001");
    expect(screen.container.textContent).toContain("USDT has at most 6 decimals");
    expect(button("Transfer").disabled).toBe(true);
    type("Amount", "0");
    expect(screen.container.textContent).toContain("Amount must be more than 0");
    type("Amount", "abc");
    expect(screen.container.textContent).toContain("Amount must be a number");
    expect((field("Amount") as HTMLInputElement).getAttribute("aria-invalid")).toBe("true");
    expect(transfer).not.toHaveBeenCalled();
  });

  it("shows a refusal with the API's code and message", async () => {
    const transfer = vi.fn(async () => {
      throw new ApiError("insufficient_funds", "the wallet holds too little: 400 < 500", 409);
    });
    render({ transfer });
    type("Amount", "500");
    await act(async () => button("Transfer").click());
    expect(testId("transfer-error")?.textContent).toBe(
      "insufficient_funds: the wallet holds too little: 400 < 500",
    );
    expect(testId("transfer-done")).toBeNull();
    expect((field("Amount") as HTMLInputElement).value).toBe("500"); // kept, to correct it
  });

  it("shows the matcher's rejection as a refusal too", async () => {
    const transfer = vi.fn(async (request: TransferRequest) =>
      answer(request, { status: "rejected", reject_reason: "insufficient_funds", booked: false }),
    );
    render({ transfer });
    choose("Direction", "to_wallet");
    type("Amount", "50");
    await act(async () => button("Transfer").click());
    expect(testId("transfer-error")?.textContent).toBe(
      "insufficient_funds: the matcher rejected transfer t0123",
    );
  });

  it("says pending while the market's matcher has not answered", async () => {
    const transfer = vi.fn(async (request: TransferRequest) =>
      answer(request, { status: "pending", booked: false }),
    );
    render({ transfer });
    type("Amount", "5");
    await act(async () => button("Transfer").click());
    expect(testId("transfer-done")?.textContent).toBe("5 USDT to BTC-USDT: pending");
  });

  it("does not guess the wallet when the ledger could not be read", () => {
    render({ balances: BALANCES.map((b) => ({ ...b, wallet: null })) });
    expect(testId("transfer-source")?.textContent).toBe("From wallet: —");
    type("Amount", "1000000");
    expect(testId("transfer-source")?.textContent).not.toContain("insufficient");
    expect(button("Transfer").disabled).toBe(false);
  });
});
