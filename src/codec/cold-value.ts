import { CorruptDataError } from './errors.js'
import { pow10, readRunHeader, readScaledRunHeader } from './run-codec.js'
import { ENCODING_COLD_SUMMARY, ENCODING_COLD_SUMMARY_SCALED } from './schema.js'

/** The fold of a run's points that mergeable aggregations need (count and timestamps come from the run header). */
export interface RunSummary {
  /** Compensated sum of the values. */
  readonly sum: number
  /** Smallest and largest value; NaN only when every value is NaN. */
  readonly min: number
  readonly max: number
  /** Values at the first and last timestamp. */
  readonly first: number
  readonly last: number
}

/** A run's summary with the span and count its header gives. */
export interface RunSummaryWithSpan extends RunSummary {
  readonly count: number
  readonly firstMs: number
  readonly lastMs: number
}

const SUMMARY_BYTES = 1 + 5 * 8
/** Encoding byte and sum of a scaled summary, before its three varints. */
const SCALED_SUMMARY_FIXED_BYTES = 1 + 8
/** Bytes of a LEB128 varint below 2^53, at most. */
const MAX_VARINT_BYTES = 8

/**
 * Wraps an encoded run with its summary, in one of two forms (docs/format/cold-value.md):
 * │ 0x30 │ sum f64be │ min f64be │ max f64be │ first f64be │ last f64be │ run … │
 * 41 bytes a run, about 0.11 bytes a point for 10-second data; or, when the run is scaled:
 * │ 0x31 │ sum f64be │ min, max, last: zigzag varints of their scaled integers minus x₀ │ run … │
 * where the first value is the run's own x₀ / 10^d: 13 to 15 bytes for most metrics.
 */
export function encodeColdValue(run: Uint8Array, summary: RunSummary): Buffer {
  const scaled = scaledSummary(run, summary)
  if (scaled !== undefined) {
    const out = Buffer.allocUnsafe(scaled.length + run.length)
    out.set(scaled, 0)
    out.set(run, scaled.length)
    return out
  }
  const out = Buffer.allocUnsafe(SUMMARY_BYTES + run.length)
  out[0] = ENCODING_COLD_SUMMARY
  out.writeDoubleBE(summary.sum, 1)
  out.writeDoubleBE(summary.min, 9)
  out.writeDoubleBE(summary.max, 17)
  out.writeDoubleBE(summary.first, 25)
  out.writeDoubleBE(summary.last, 33)
  out.set(run, SUMMARY_BYTES)
  return out
}

/** The 0x31 summary of a scaled run, or undefined when the run is not scaled. */
function scaledSummary(run: Uint8Array, summary: RunSummary): Buffer | undefined {
  const start = readScaledRunHeader(run, 0)
  if (start === undefined) return undefined
  const p = pow10(start.decimals)
  // Every value of a scaled run is x / p for an integer x, so min, max and last are too; the checks
  // only keep a summary that does not come from this run from being written wrong.
  if (summary.first !== start.x0 / p) return undefined
  const out = Buffer.allocUnsafe(SCALED_SUMMARY_FIXED_BYTES + 3 * MAX_VARINT_BYTES)
  out[0] = ENCODING_COLD_SUMMARY_SCALED
  out.writeDoubleBE(summary.sum, 1)
  let at = SCALED_SUMMARY_FIXED_BYTES
  for (const v of [summary.min, summary.max, summary.last]) {
    const x = Math.round(v * p)
    if (x / p !== v) return undefined
    const d = x - start.x0
    let z = d >= 0 ? d * 2 : -d * 2 - 1
    while (z >= 128) {
      out[at++] = (z % 128) | 128
      z = Math.floor(z / 128)
    }
    out[at++] = z
  }
  return out.subarray(0, at)
}

/** Where the run starts in a cold value: after its summary, whose form the first byte says. */
function runOffset(buf: Uint8Array): number {
  if (buf[0] === ENCODING_COLD_SUMMARY && buf.length > SUMMARY_BYTES) return SUMMARY_BYTES
  if (buf[0] === ENCODING_COLD_SUMMARY_SCALED) {
    let at = SCALED_SUMMARY_FIXED_BYTES
    for (let n = 0; n < 3; n++) at = varintEnd(buf, at)
    if (at < buf.length) return at
  }
  throw new CorruptDataError('cold value', `encoding ${buf[0]} or length ${buf.length} is not a summarized run`, 0)
}

/** The index after the varint at `at`; throws when it runs past the value or past 8 bytes. */
function varintEnd(buf: Uint8Array, at: number): number {
  for (let i = at; i < Math.min(buf.length, at + MAX_VARINT_BYTES); i++) if (buf[i]! < 128) return i + 1
  throw new CorruptDataError('cold value', `summary varint at byte ${at} is cut short`, at)
}

/** The zigzag varint at `at`, below 2^53. */
function zigzagAt(buf: Uint8Array, at: number): number {
  let z = 0
  let scale = 1
  for (let i = at; ; i++) {
    const byte = buf[i]!
    z += (byte & 127) * scale
    if (byte < 128) break
    scale *= 128
  }
  return z % 2 === 0 ? z / 2 : -(z + 1) / 2
}

/** The encoded run inside a cold value, for decodeRun. */
export function coldRun(buf: Uint8Array): Uint8Array {
  return buf.subarray(runOffset(buf))
}

/** The summary of a cold value and its run's count and span, without decoding any point. */
export function coldSummary(buf: Uint8Array, runStartMs: number): RunSummaryWithSpan {
  const offset = runOffset(buf)
  const run = buf.subarray(offset)
  const view = new DataView(buf.buffer, buf.byteOffset, offset)
  if (buf[0] === ENCODING_COLD_SUMMARY) {
    const { count, firstMs, lastMs } = readRunHeader(run, runStartMs)
    return {
      sum: view.getFloat64(1),
      min: view.getFloat64(9),
      max: view.getFloat64(17),
      first: view.getFloat64(25),
      last: view.getFloat64(33),
      count,
      firstMs,
      lastMs,
    }
  }
  const header = readScaledRunHeader(run, runStartMs)
  if (header === undefined) {
    throw new CorruptDataError('cold value', `a scaled summary in front of run encoding ${run[0]}`, offset)
  }
  const { x0, count, firstMs, lastMs } = header
  const p = pow10(header.decimals)
  const minAt = SCALED_SUMMARY_FIXED_BYTES
  const maxAt = varintEnd(buf, minAt)
  const lastAt = varintEnd(buf, maxAt)
  return {
    sum: view.getFloat64(1),
    min: (x0 + zigzagAt(buf, minAt)) / p,
    max: (x0 + zigzagAt(buf, maxAt)) / p,
    first: x0 / p,
    last: (x0 + zigzagAt(buf, lastAt)) / p,
    count,
    firstMs,
    lastMs,
  }
}
