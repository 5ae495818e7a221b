import { describe, expect, it } from "vitest";
import { BookTracker } from "./bookStats";

describe("book tracker", () => {
  it("counts messages drawn once their state is committed", () => {
    const t = new BookTracker();
    const a = {};
    const b = {};
    t.received(a);
    t.received(b);
    expect(t.stats).toEqual({ received: 2, drawn: 0 });
    t.drawn(b); // React skipped `a`: `b` holds both messages
    expect(t.stats).toEqual({ received: 2, drawn: 2 });
  });

  it("counts a message that changed nothing as drawn when its state is shown", () => {
    const t = new BookTracker();
    const a = {};
    t.received(a);
    t.drawn(a);
    t.received(a); // stale: the same state back, no render follows
    expect(t.stats).toEqual({ received: 2, drawn: 2 });
  });

  it("leaves a resync's state at what was received", () => {
    const t = new BookTracker();
    const a = {};
    const resynced = {};
    t.received(a);
    t.tag(resynced);
    t.drawn(resynced);
    expect(t.stats).toEqual({ received: 1, drawn: 1 });
  });
});
