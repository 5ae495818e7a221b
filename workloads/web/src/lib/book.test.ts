import { describe, expect, it } from "vitest";
import {
  applyBook,
  checksum,
  crc32,
  EMPTY_BOOK,
  requestResync,
  top,
  type BookMessage,
  type BookState,
} from "./book";

const snapshot = (seq: number, bids: string[][], asks: string[][]): BookMessage => ({
  type: "snapshot",
  seq,
  bids,
  asks,
});
const diff = (prev_seq: number, seq: number, bids: string[][], asks: string[][] = []): BookMessage => ({
  type: "diff",
  prev_seq,
  seq,
  bids,
  asks,
});

function live(): BookState {
  const [state, outcome] = applyBook(
    EMPTY_BOOK,
    snapshot(10, [["100.01", "0.5000"], ["100.00", "1.0000"]], [["100.02", "0.2500"]]),
  );
  expect(outcome).toBe("snapshot");
  return state;
}

describe("book sequencing", () => {
  it("applies chained diffs in order, absolute quantities, zero removes", () => {
    let [state, outcome] = applyBook(live(), diff(10, 12, [["100.00", "3.0000"]]));
    expect(outcome).toBe("applied");
    expect(state.seq).toBe(12);
    [state, outcome] = applyBook(state, diff(12, 13, [["100.01", "0"]], [["100.03", "2.0000"]]));
    expect(outcome).toBe("applied");
    expect(top(state, 5)).toEqual({
      bids: [["100.00", "3.0000"]],
      asks: [
        ["100.02", "0.2500"],
        ["100.03", "2.0000"],
      ],
    });
  });

  it("applies a diff that overlaps what is held (prev_seq < seq held < seq)", () => {
    const [state, outcome] = applyBook(live(), diff(8, 11, [["99.99", "1.0000"]]));
    expect(outcome).toBe("applied");
    expect(state.seq).toBe(11);
    expect(state.bids.get("99.99")).toBe("1.0000");
  });

  it("ignores stale diffs after a snapshot", () => {
    const held = live();
    const [state, outcome] = applyBook(held, diff(5, 10, [["100.01", "9.0000"]]));
    expect(outcome).toBe("stale");
    expect(state).toBe(held);
    expect(state.bids.get("100.01")).toBe("0.5000");
  });

  it("detects a gap and waits for a snapshot, keeping later diffs", () => {
    let [state, outcome] = applyBook(live(), diff(11, 12, [["100.00", "7.0000"]]));
    expect(outcome).toBe("gap");
    expect(state.status).toBe("resyncing");
    [state, outcome] = applyBook(state, diff(12, 14, [["99.50", "1.0000"]]));
    expect(outcome).toBe("buffered");
    // the REST snapshot (no `type`) at 12 covers the first diff; the second follows it
    [state, outcome] = applyBook(state, {
      seq: 12,
      bids: [["100.00", "7.0000"]],
      asks: [["100.02", "0.2500"]],
    });
    expect(outcome).toBe("snapshot");
    expect(state.status).toBe("live");
    expect(state.seq).toBe(14);
    expect(top(state, 5).bids).toEqual([
      ["100.00", "7.0000"],
      ["99.50", "1.0000"],
    ]);
  });

  it("asks again when the snapshot does not reach the buffered diffs", () => {
    let [state] = applyBook(live(), diff(20, 21, [["1", "1"]]));
    let outcome;
    [state, outcome] = applyBook(state, snapshot(15, [], []));
    expect(outcome).toBe("gap");
    expect(state.status).toBe("resyncing");
  });

  it("ignores an older snapshot while live, takes any after a resync request", () => {
    const held = live();
    const [same, outcome] = applyBook(held, snapshot(9, [], []));
    expect(outcome).toBe("stale");
    expect(same).toBe(held);
    const [fresh, again] = applyBook(requestResync(held), snapshot(9, [], []));
    expect(again).toBe("snapshot");
    expect(fresh.seq).toBe(9);
  });

  it("sorts prices as numbers, not strings", () => {
    const [state] = applyBook(
      EMPTY_BOOK,
      snapshot(1, [["9.5", "1"], ["10.25", "1"], ["100", "1"]], [["1000", "1"], ["99.9", "1"]]),
    );
    const levels = top(state, 10);
    expect(levels.bids.map((l) => l[0])).toEqual(["100", "10.25", "9.5"]);
    expect(levels.asks.map((l) => l[0])).toEqual(["99.9", "1000"]);
  });
});

describe("book checksum", () => {
  it("is zlib's CRC-32", () => {
    expect(crc32("100.01:0.5000,100.00:1.0000|100.02:0.2500")).toBe(1293211668); // Python's
    expect(crc32("|")).toBe(2343686810);
    expect(checksum(live())).toBe(1293211668);
  });

  it("accepts a diff whose checksum matches and resyncs on a mismatch", () => {
    const good = { ...diff(10, 11, [["100.00", "0"]], [["100.03", "2.0000"]]), checksum: 2345818917 };
    const [state, outcome] = applyBook(live(), good);
    expect(outcome).toBe("applied");
    const bad = { ...diff(11, 12, [["100.00", "1.0000"]]), checksum: 1 };
    const [after, mismatch] = applyBook(state, bad);
    expect(mismatch).toBe("checksum");
    expect(after.status).toBe("resyncing");
  });
});
