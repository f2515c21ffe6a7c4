/**
 * Correctly rounded reading of decimals with 16 to 19 significant digits, the text most measured
 * values take (a double printed in full has 16 or 17), without cutting a string out for Number().
 *
 * The digits make an integer w = a * 10^k + b (a the first 15 digits, b the k others), and the value
 * is w / 10^s. w is held exactly as two doubles (hi + lo); a quotient q of doubles, corrected once
 * by the remainder, is checked by its exact remainder w - q * 10^s (products split as Dekker does,
 * without a fused multiply-add): q is the answer when the exact value lies within half a gap of it.
 * Values too close to halfway between two doubles for that test give NaN, and the caller reads them
 * with Number(): ties, and the few next to them.
 */

/** Exact powers of ten, 10^0 to 10^22. */
export const POW10 = Array.from({ length: 23 }, (_, i) => 10 ** i)
const SPLITTER = 134_217_729 // 2^27 + 1

// One double's bits, big-endian: the first word holds the sign, the exponent and the top 20 bits
// of the mantissa.
const word = new DataView(new ArrayBuffer(8))

/** 2^e for a normal exponent e, built from its bits. */
function powerOfTwo(e: number): number {
  word.setUint32(0, (e + 1023) << 20)
  word.setUint32(4, 0)
  return word.getFloat64(0)
}

/** The gap from x (x > 0, normal) to the next double up, and down when `down`. */
function gap(x: number, down: boolean): number {
  word.setFloat64(0, x)
  const high = word.getUint32(0)
  const e = (high >>> 20) - 1075
  // Just below a power of two the doubles are twice as dense.
  const atPower = word.getUint32(4) === 0 && (high & 0xfffff) === 0
  return powerOfTwo(down && atPower ? e - 1 : e)
}

/** The exact product x * y as hi + lo, for |x * y| well inside the double range (Dekker). */
function twoProduct(x: number, y: number, out: Float64Array): void {
  const p = x * y
  let c = SPLITTER * x
  const xh = c - (c - x)
  const xl = x - xh
  c = SPLITTER * y
  const yh = c - (c - y)
  const yl = y - yh
  out[0] = p
  out[1] = xh * yh - p + xh * yl + xl * yh + xl * yl
}

const product = new Float64Array(2)

/**
 * hi + lo - q * 10^s for q near (hi + lo) / 10^s: q * 10^s as m + me exactly, hi - m exact
 * (Sterbenz), and the rest small, so the result is within a few 2^-52 of an ulp of hi.
 */
function remainder(q: number, hi: number, lo: number, p10: number): number {
  twoProduct(q, p10, product)
  return hi - product[0]! + (lo - product[1]!)
}

/**
 * a * 10^k + b divided by 10^s, rounded to nearest as Number() reads the decimal, or NaN when this
 * cannot tell. Requires integers 0 <= a < 10^15, 0 <= k <= 4, 0 <= b < 10^k, 0 <= s <= 22.
 */
export function scaledDecimal(a: number, k: number, b: number, s: number): number {
  const p10 = POW10[s]!
  // w exactly as hi + lo: a * 10^k exactly as two doubles, then b added with its rounding error.
  twoProduct(a, POW10[k]!, product)
  const p = product[0]!
  const pe = product[1]!
  const hi = p + b
  const bv = hi - p
  const sumErr = p - (hi - bv) + (b - bv)
  // Both errors are integers below 2^12 here, so their sum is exact.
  const lo = sumErr + pe
  if (hi === 0) return lo === 0 ? 0 : Number.NaN
  let q = hi / p10
  if (lo === 0 && hi <= 9_007_199_254_740_992) return q
  // hi is not w rounded (lo may reach a whole ulp of hi), so q may be a double or two off: one
  // step by the remainder brings it within about half an ulp, and the remainder of that is the test.
  q += remainder(q, hi, lo, p10) / p10
  const r = remainder(q, hi, lo, p10)
  // Half the gap to the neighbour on r's side, scaled as r is: q is the nearest double when the
  // exact value lies within it, by far more than r's error. Otherwise it is too near halfway (or q
  // is still off, which tests never met after the step above), and Number() decides.
  const half = (gap(q, r < 0) / 2) * p10
  return Math.abs(r) < half * (1 - 2 ** -40) ? q : Number.NaN
}
