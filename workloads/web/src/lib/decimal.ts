// Exact decimal arithmetic on strings and BigInt. Prices, quantities and amounts arrive as
// decimal strings and leave as decimal strings; no value ever passes through a JS number
// (a float cannot hold 0.1 or anything above 2^53 exactly).

/** A decimal value: `units / 10**scale`. `scale` is never negative. */
export interface Dec {
  readonly units: bigint;
  readonly scale: number;
}

export type Rounding = "down" | "up";

export class DecimalError extends Error {
  override name = "DecimalError";
}

const STRICT = /^(-?)([0-9]+)(?:\.([0-9]+))?$/;
const LENIENT = /^([0-9]*)(?:\.([0-9]*))?$/;
const MAX_DIGITS = 60;

function pow10(n: number): bigint {
  return 10n ** BigInt(n);
}

function make(sign: string, whole: string, fraction: string): Dec {
  if (whole.length + fraction.length > MAX_DIGITS) {
    throw new DecimalError(`more than ${MAX_DIGITS} digits`);
  }
  const digits = BigInt((whole || "0") + fraction);
  return { units: sign === "-" ? -digits : digits, scale: fraction.length };
}

/** Parses the API's decimal string (`-?digits(.digits)?`); throws DecimalError otherwise. */
export function parse(text: string): Dec {
  const found = STRICT.exec(text);
  if (!found) throw new DecimalError(`not a decimal string: ${JSON.stringify(text)}`);
  return make(found[1] ?? "", found[2] ?? "", found[3] ?? "");
}

/** What a person typed: trimmed, `.5` and `5.` allowed, no sign or exponent; null if not
 * a non-negative decimal. */
export function parseInput(text: string): Dec | null {
  const trimmed = text.trim();
  const found = LENIENT.exec(trimmed);
  if (!found || trimmed === "" || trimmed === ".") return null;
  try {
    return make("", found[1] ?? "", found[2] ?? "");
  } catch {
    return null;
  }
}

export function fromUnits(units: bigint, scale: number): Dec {
  if (scale < 0 || !Number.isInteger(scale)) throw new DecimalError(`bad scale ${scale}`);
  return { units, scale };
}

/** The decimal places a step such as "0.01" or "0.0001" is written with. */
export function placesOf(step: string): number {
  return parse(step).scale;
}

function divRound(n: bigint, d: bigint, mode: Rounding | "exact"): bigint {
  const q = n / d; // truncates toward zero
  const r = n % d;
  if (r === 0n) return q;
  if (mode === "exact") throw new DecimalError("not representable at this scale");
  // floor for "down", ceiling for "up", whatever the sign
  if (mode === "down") return n < 0n ? q - 1n : q;
  return n > 0n ? q + 1n : q;
}

/** The same value at another scale; dropping digits rounds as asked (`exact` throws). */
export function rescale(d: Dec, scale: number, mode: Rounding | "exact" = "exact"): Dec {
  if (scale >= d.scale) return { units: d.units * pow10(scale - d.scale), scale };
  return { units: divRound(d.units, pow10(d.scale - scale), mode), scale };
}

function aligned(a: Dec, b: Dec): [bigint, bigint, number] {
  const scale = Math.max(a.scale, b.scale);
  return [rescale(a, scale).units, rescale(b, scale).units, scale];
}

export function add(a: Dec, b: Dec): Dec {
  const [x, y, scale] = aligned(a, b);
  return { units: x + y, scale };
}

export function sub(a: Dec, b: Dec): Dec {
  const [x, y, scale] = aligned(a, b);
  return { units: x - y, scale };
}

/** The exact product (its scale is the sum of the scales). */
export function mul(a: Dec, b: Dec): Dec {
  return { units: a.units * b.units, scale: a.scale + b.scale };
}

export function cmp(a: Dec, b: Dec): -1 | 0 | 1 {
  const [x, y] = aligned(a, b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function isZero(d: Dec): boolean {
  return d.units === 0n;
}

export function isPositive(d: Dec): boolean {
  return d.units > 0n;
}

export function max(a: Dec, b: Dec): Dec {
  return cmp(a, b) >= 0 ? a : b;
}

export function min(a: Dec, b: Dec): Dec {
  return cmp(a, b) <= 0 ? a : b;
}

/** The largest (`down`) or smallest (`up`) multiple of `step` on that side of `value`. */
export function roundToStep(value: Dec, step: Dec, mode: Rounding = "down"): Dec {
  if (step.units <= 0n) throw new DecimalError("step must be positive");
  const [v, s, scale] = aligned(value, step);
  return { units: divRound(v, s, mode) * s, scale };
}

/** Whether `value` is a whole number of `step`s. */
export function onStep(value: Dec, step: Dec): boolean {
  return cmp(roundToStep(value, step), value) === 0;
}

/** Without trailing fractional zeros (1.2300 -> 1.23). */
export function normalize(d: Dec): Dec {
  let { units, scale } = d;
  while (scale > 0 && units % 10n === 0n) {
    units /= 10n;
    scale -= 1;
  }
  return { units, scale };
}

/** The decimal string, exactly, with `places` decimals when given (rounding as asked when
 * that drops digits; `exact`, the default, throws instead). */
export function format(d: Dec, places?: number, mode: Rounding | "exact" = "exact"): string {
  const v = places === undefined ? d : rescale(d, places, mode);
  const negative = v.units < 0n;
  const digits = (negative ? -v.units : v.units).toString().padStart(v.scale + 1, "0");
  const whole = digits.slice(0, digits.length - v.scale);
  const fraction = v.scale ? "." + digits.slice(digits.length - v.scale) : "";
  return (negative ? "-" : "") + whole + fraction;
}

/** A decimal string for display: `places` decimals (down), thousands separated. */
export function display(text: string | null | undefined, places?: number): string {
  if (text === null || text === undefined || text === "") return "—";
  let d: Dec;
  try {
    d = parse(text);
  } catch {
    return text;
  }
  const plain = format(d, places, "down");
  const [whole = "", fraction] = plain.split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const grouped = whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + grouped + (fraction !== undefined ? "." + fraction : "");
}

/** Integer minor units of an asset with `decimals` places as a decimal string. */
export function unitsToString(units: bigint, decimals: number): string {
  return format(fromUnits(units, decimals));
}

/** A decimal string in integer minor units (`exact` throws when it has more places). */
export function toUnits(text: string, decimals: number, mode: Rounding | "exact" = "exact"): bigint {
  return rescale(parse(text), decimals, mode).units;
}
