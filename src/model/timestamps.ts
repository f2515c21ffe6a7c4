import type { Precision, RawTimestamp } from './types.js'

/**
 * Width of the fixed-length block a point belongs to. The codec's schema declares the same value
 * as BLOCK_MS; it is repeated here because the model may not import the codec.
 */
const BLOCK_WIDTH_MS = 30_000

/**
 * Blocks per cold run (the codec's RUN_BLOCKS). The storable range is whole runs of blocks whose
 * numbers fit the uint32 field biased by 2^31, so that every block's run start and every
 * exclusive upper bound is itself a storable key; codec/row-key.ts derives its block range from
 * these two constants.
 */
const RUN_WIDTH_BLOCKS = 120
const MIN_BLOCK = Math.ceil(-(2 ** 31) / RUN_WIDTH_BLOCKS) * RUN_WIDTH_BLOCKS
const END_BLOCK = Math.floor((2 ** 31 - 1) / RUN_WIDTH_BLOCKS) * RUN_WIDTH_BLOCKS

/** The earliest storable timestamp, in milliseconds since the epoch (about 72 BC). */
export const MIN_TIMESTAMP_MS = MIN_BLOCK * BLOCK_WIDTH_MS

/** The latest storable timestamp, in milliseconds since the epoch (about AD 4011). */
export const MAX_TIMESTAMP_MS = END_BLOCK * BLOCK_WIDTH_MS - 1

const MIN_TIMESTAMP_MS_BIG = BigInt(MIN_TIMESTAMP_MS)
const MAX_TIMESTAMP_MS_BIG = BigInt(MAX_TIMESTAMP_MS)

/**
 * Floor division of a safe integer by a power of ten. The remainder is exact in IEEE arithmetic and
 * so is the quotient of the multiple left after taking it out, so the result does not depend on
 * how `x / d` rounds.
 */
function floorDivNumber(x: number, d: number): number {
  const r = x % d
  return (x - r) / d - (r < 0 ? 1 : 0)
}

function floorDivBigInt(x: bigint, d: bigint): bigint {
  const q = x / d
  return x % d < 0n ? q - 1n : q
}

/**
 * Converts a raw timestamp in the given precision to milliseconds since the epoch, rounding down
 * (towards negative infinity) for finer precisions, so -1 µs is in the millisecond -1.
 *
 * Returns NaN, instead of throwing, when a number is not a safe integer, when raw is neither a
 * number nor a bigint, or when the result lies outside [MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS]: the
 * write path calls this once per point, and the caller turns NaN into a ValidationError that names
 * the field. A bigint is converted exactly, so
 * nanosecond timestamps beyond 2^53 keep their value.
 */
export function normalizeTimestamp(raw: RawTimestamp, precision: Precision): number {
  if (typeof raw === 'number') {
    if (!Number.isSafeInteger(raw)) return Number.NaN
    let ms: number
    switch (precision) {
      case 'ms':
        ms = raw
        break
      case 's':
        // Any product inside the range is below 2^53 and therefore exact.
        ms = raw * 1000
        break
      case 'us':
        ms = floorDivNumber(raw, 1000)
        break
      case 'ns':
        ms = floorDivNumber(raw, 1_000_000)
        break
    }
    // Adding 0 turns -0 into 0, so a timestamp of zero is always stored the same way.
    return ms >= MIN_TIMESTAMP_MS && ms <= MAX_TIMESTAMP_MS ? ms + 0 : Number.NaN
  }
  // Callers outside TypeScript (decoded protobuf, CSV) may pass anything else, a string for one.
  if (typeof raw !== 'bigint') return Number.NaN
  let ms: bigint
  switch (precision) {
    case 'ms':
      ms = raw
      break
    case 's':
      ms = raw * 1000n
      break
    case 'us':
      ms = floorDivBigInt(raw, 1000n)
      break
    case 'ns':
      ms = floorDivBigInt(raw, 1_000_000n)
      break
  }
  return ms >= MIN_TIMESTAMP_MS_BIG && ms <= MAX_TIMESTAMP_MS_BIG ? Number(ms) : Number.NaN
}

// A date, `T` (or `t`, or a space, which RFC 3339 allows for readability), a time, optional
// fractional seconds, and a zone: `Z` or ±hh:mm.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/
/** The same with ISO 8601's expanded years too (±YYYYYY), as toISOString writes years before 0. */
const EXPANDED = /^(\d{4}|[+-]\d{6})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/

/**
 * RFC 3339 to milliseconds since the epoch, finer fractions rounded down; NaN when malformed or
 * when it names no real moment: a day its month lacks, an hour past 23, a minute or second past 59,
 * which Go's time.Parse (and so Prometheus) refuses. Date.parse alone would roll 2024-02-30 over to
 * March 1 and T24:00:00 to the next day. With `expandedYears`, a year may also be six digits with
 * a sign (`-000072-06-20T23:00:00Z`), the form the command line's dates take before year 0.
 */
export function parseRfc3339(text: string, expandedYears = false): number {
  const m = (expandedYears ? EXPANDED : RFC3339).exec(text)
  if (!m) return Number.NaN
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0 to 99 as 1900 to 1999.
  const lastDay = new Date(0)
  lastDay.setUTCFullYear(year, month, 0)
  const daysInMonth = lastDay.getUTCDate()
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) {
    return Number.NaN
  }
  const whole = Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[8]!.toUpperCase()}`)
  if (Number.isNaN(whole)) return Number.NaN
  return whole + Number(`${m[7] ?? ''}000`.slice(0, 3))
}

/** The first index in [from, ts.length) of ascending `ts` whose timestamp is at least `t`, or ts.length. */
export function firstAtLeast(ts: Float64Array, from: number, t: number): number {
  let lo = from
  let hi = ts.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((ts[mid] as number) < t) lo = mid + 1
    else hi = mid
  }
  return lo
}
