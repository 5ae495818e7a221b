// @vitest-environment jsdom
import { act, useState } from "react";
import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/client";
import type { MarketMode, Order, PlaceOrder } from "../api/types";
import { testMarket } from "../test/fixtures";
import { mountScreen } from "../test/dom";
import { OrderForm, type OrderFormProps } from "./OrderForm";

const screen = mountScreen();
const { button, choose, field, testId, type } = screen;


function render(change: Partial<OrderFormProps> & { mode?: MarketMode | null } = {}) {
  const props: OrderFormProps = {
    market: testMarket(),
    mode: "NORMAL",
    signedIn: true,
    balances: [],
    place: vi.fn(),
    error: null,
    onError: () => {},
    ...change,
  };
  // `error` is the page's state: keep it in a small wrapper so refusals show up.
  function Host() {
    const [error, setError] = useState<ApiError | null>(props.error);
    return <OrderForm {...props} error={error} onError={setError} />;
  }
  screen.render(<Host />);
  return props;
}


describe("OrderForm", () => {
  it("rounds price to the tick and quantity to the lot and sends them", async () => {
    const place = vi.fn(async (order: PlaceOrder) => ({ order_id: "BTC-USDT:7", status: "ACCEPTED", ...order }) as unknown as Order);
    render({ place });
    type("Price", "100.037");
    type("Quantity", "0.12345");
    expect((field("Price") as HTMLInputElement).value).toBe("100.03");
    expect((field("Quantity") as HTMLInputElement).value).toBe("0.1234");
    // 100.03 * 0.1234, exactly; nothing of USDT held
    expect(testId("order-reserve")?.textContent).toBe("Reserve: 12.343702 USDT (available 0.000000) insufficient");
    await act(async () => button("Place order").click());
    expect(place).toHaveBeenCalledWith({
      symbol: "BTC-USDT",
      side: "BUY",
      type: "LIMIT",
      time_in_force: "GTC",
      price: "100.03",
      quantity: "0.1234",
    });
    expect(testId("order-placed")?.textContent).toBe("BTC-USDT:7 ACCEPTED");
  });

  it("shows the reserve in base for a sell and the budget for a market buy", () => {
    render();
    choose("Side", "SELL");
    type("Quantity", "2");
    expect(testId("order-reserve")?.textContent).toContain("2.00000000 BTC");
    choose("Side", "BUY");
    choose("Type", "MARKET");
    expect((field("Price") as HTMLInputElement).disabled).toBe(true);
    expect([...(field("Time in force") as HTMLSelectElement).options].map((o) => o.value)).toEqual(["IOC"]);
    expect(testId("order-reserve")?.textContent).toContain("all available USDT");
    type("Quote budget", "50.5");
    expect(testId("order-reserve")?.textContent).toContain("50.500000 USDT");
  });

  it("keeps the button disabled while the quantity is below the minimum", () => {
    render({ market: testMarket({ min_quantity: "0.0010" }) });
    type("Price", "100");
    type("Quantity", "0.0005");
    expect(screen.container.textContent).toContain("Quantity must be at least 0.0010 BTC");
    expect(button("Place order").disabled).toBe(true);
  });

  it("is disabled in CANCEL_ONLY, saying why", () => {
    render({ mode: "CANCEL_ONLY" });
    expect(testId("order-blocked")?.textContent).toMatch(/^CANCEL_ONLY: /);
    expect(button("Place order").disabled).toBe(true);
    expect((screen.container.querySelector("fieldset") as HTMLFieldSetElement).disabled).toBe(true);
  });

  it("in SOFT_HALT takes only a post-only limit order", () => {
    render({ mode: "SOFT_HALT" });
    type("Price", "100");
    type("Quantity", "1");
    expect(button("Place order").disabled).toBe(true);
    expect(testId("order-blocked")?.textContent).toMatch(/^SOFT_HALT: /);
    const post = field("Post only") as HTMLInputElement;
    act(() => post.click());
    expect(testId("order-blocked")).toBeNull();
    expect(button("Place order").disabled).toBe(false);
  });

  it("asks to log in when there is no session", () => {
    render({ signedIn: false });
    expect(testId("order-blocked")?.textContent).toBe("Log in to place orders.");
    expect(button("Place order").disabled).toBe(true);
  });

  it("shows a refusal with the API's code and message", async () => {
    const place = vi.fn(async () => {
      throw new ApiError("insufficient_funds", "the matcher refused the command: insufficient_funds", 400);
    });
    render({ place });
    type("Price", "100");
    type("Quantity", "1");
    await act(async () => button("Place order").click());
    expect(testId("order-error")?.textContent).toBe(
      "insufficient_funds: the matcher refused the command: insufficient_funds",
    );
  });

  it("shows a sequenced rejection as a refusal too", async () => {
    const place = vi.fn(async () => ({ order_id: "BTC-USDT:9", status: "REJECTED", reject_reason: "post_only_would_take" }) as unknown as Order);
    render({ place });
    type("Price", "100");
    type("Quantity", "1");
    await act(async () => button("Place order").click());
    expect(testId("order-error")?.textContent).toContain("post_only_would_take");
  });
});
