import { describe, expect, it } from "vitest";
import {
  add,
  cmp,
  DecimalError,
  display,
  format,
  mul,
  normalize,
  onStep,
  parse,
  parseInput,
  rescale,
  roundToStep,
  sub,
  toUnits,
  unitsToString,
} from "./decimal";

const f = (text: string) => format(parse(text));

describe("decimal", () => {
  it("adds 0.1 and 0.2 to exactly 0.3", () => {
    expect(format(add(parse("0.1"), parse("0.2")))).toBe("0.3");
    expect(0.1 + 0.2).not.toBe(0.3); // the reason this module exists
  });

  it("keeps integers beyond 2^53 exact", () => {
    const big = "9007199254740993"; // 2^53 + 1: a float rounds it to ...992
    expect(String(Number(big))).not.toBe(big);
    expect(f(big)).toBe(big);
    expect(format(add(parse(big), parse("0.000000000000000001")))).toBe(
      "9007199254740993.000000000000000001",
    );
    expect(format(mul(parse("123456789012345678.9"), parse("1000000000.01")))).toBe(
      "123456789013580246790123456.789", // Python Decimal,
    );
  });

  it("parses and formats round trip, signs and leading zeros included", () => {
    for (const text of ["0", "0.00", "1.2300", "-0.5", "12345678901234567890.123456789"]) {
      expect(f(text)).toBe(text);
    }
    expect(f("007.5")).toBe("7.5");
    expect(format(normalize(parse("1.2300")))).toBe("1.23");
    expect(format(normalize(parse("100")))).toBe("100");
  });

  it("refuses what is not a plain decimal string", () => {
    for (const text of ["", "1e5", "1.", ".5", " 1", "0x10", "1,5", "NaN", "+1"]) {
      expect(() => parse(text), text).toThrow(DecimalError);
    }
  });

  it("reads what a person types leniently, never a sign or exponent", () => {
    expect(format(parseInput(" .5 ")!)).toBe("0.5");
    expect(format(parseInput("5.")!)).toBe("5");
    expect(parseInput("-1")).toBeNull();
    expect(parseInput("1e3")).toBeNull();
    expect(parseInput(".")).toBeNull();
    expect(parseInput("")).toBeNull();
  });

  it("subtracts and compares across scales", () => {
    expect(format(sub(parse("1"), parse("0.001")))).toBe("0.999");
    expect(cmp(parse("1.10"), parse("1.1"))).toBe(0);
    expect(cmp(parse("-2"), parse("1"))).toBe(-1);
    expect(cmp(parse("100000000000000000001"), parse("100000000000000000000.9"))).toBe(1);
  });

  it("rescales exactly or rounds as asked, also below zero", () => {
    expect(format(rescale(parse("1.25"), 4))).toBe("1.2500");
    expect(() => rescale(parse("1.25"), 1)).toThrow(DecimalError);
    expect(format(rescale(parse("1.25"), 1, "down"))).toBe("1.2");
    expect(format(rescale(parse("1.21"), 1, "up"))).toBe("1.3");
    expect(format(rescale(parse("-1.25"), 1, "down"))).toBe("-1.3");
    expect(format(rescale(parse("-1.25"), 1, "up"))).toBe("-1.2");
  });

  it("rounds to a step down or up", () => {
    expect(format(roundToStep(parse("100.037"), parse("0.01")))).toBe("100.030");
    expect(format(roundToStep(parse("100.031"), parse("0.01"), "up"))).toBe("100.040");
    expect(format(roundToStep(parse("17"), parse("5")))).toBe("15");
    expect(format(roundToStep(parse("0.00019"), parse("0.0001")))).toBe("0.00010");
    expect(onStep(parse("0.0003"), parse("0.0001"))).toBe(true);
    expect(onStep(parse("0.00031"), parse("0.0001"))).toBe(false);
    expect(() => roundToStep(parse("1"), parse("0"))).toThrow(DecimalError);
  });

  it("converts to and from integer minor units", () => {
    expect(toUnits("1.5", 8)).toBe(150000000n);
    expect(toUnits("123456789.123456", 6)).toBe(123456789123456n);
    expect(() => toUnits("0.1234567", 6)).toThrow(DecimalError);
    expect(unitsToString(150000000n, 8)).toBe("1.50000000");
    expect(unitsToString(5n, 6)).toBe("0.000005");
    expect(unitsToString(-5n, 2)).toBe("-0.05");
  });

  it("displays with grouping and the market's places, rounding down", () => {
    expect(display("1234567.891", 2)).toBe("1,234,567.89");
    expect(display("-1234.5", 2)).toBe("-1,234.50");
    expect(display("999", 0)).toBe("999");
    expect(display(null)).toBe("—");
    expect(display("garbage")).toBe("garbage");
  });
});
