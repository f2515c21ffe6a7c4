/**
 * Values as CSV cells, in the form export and `query --format csv` write and import reads back to
 * the same 64 bits: JavaScript's shortest round-trip decimal, `-0` for negative zero, `NaN` for the
 * NaN JavaScript makes, and `NaN(0x…)` with the bits of any other NaN (Prometheus' staleness marker
 * is `NaN(0x7ff0000000000002)`), which String() would print as a plain `NaN`.
 */

const bits = new BigUint64Array(1)
const float = new Float64Array(bits.buffer)
float[0] = Number.NaN
/** The bits of the NaN JavaScript makes (0x7ff8000000000000 on every platform V8 runs on). */
const DEFAULT_NAN_BITS = bits[0]!

const EXPONENT_BITS = 0x7ff0000000000000n
const FRACTION_BITS = 0x000fffffffffffffn
const NAN_CELL = /^NaN\(0x([0-9a-fA-F]{16})\)$/

/** The cell for `value`. */
export function formatValue(value: number): string {
  if (value === 0) return Object.is(value, -0) ? '-0' : '0'
  if (!Number.isNaN(value)) return String(value)
  float[0] = value
  const b = bits[0]!
  return b === DEFAULT_NAN_BITS ? 'NaN' : `NaN(0x${b.toString(16).padStart(16, '0')})`
}

/**
 * The value of a cell: a decimal number (what Number() reads, written in base 10), `NaN`,
 * `NaN(0x…)` with the 16 hex digits of a NaN, or ±Infinity; a string saying why not otherwise.
 */
export function parseValue(text: string): number | string {
  if (text === 'NaN') return Number.NaN
  const nan = NAN_CELL.exec(text)
  if (nan !== null) {
    const b = BigInt(`0x${nan[1]}`)
    if ((b & EXPONENT_BITS) !== EXPONENT_BITS || (b & FRACTION_BITS) === 0n) {
      return `value ${JSON.stringify(text)}: the bits are not those of a NaN`
    }
    bits[0] = b
    return float[0]!
  }
  // Number() also reads hex, octal and binary literals (0x10 is 16): a cell is decimal only.
  const trimmed = text.trim()
  const v = trimmed === '' || /^[+-]?0[xob]/i.test(trimmed) ? Number.NaN : Number(trimmed)
  return Number.isNaN(v) ? `value ${JSON.stringify(text)} is not a number` : v
}
