/**
 * The cold run: one hour (RUN_BLOCKS 30-second blocks) of a series in one value
 * (docs/format/run.md). Long streams are where compression pays: the header and the first raw
 * value are spread over hundreds of points instead of three.
 *
 * Two encodings of the values, and encodeRun keeps the smaller:
 * - ENCODING_RUN_GORILLA: the block's delta-of-delta timestamps and XOR floats over the whole run;
 *   ENCODING_RUN_GORILLA_PACKED the same with packed timestamps (see planPackedTimestamps).
 * - ENCODING_RUN_SCALED: as VictoriaMetrics does, values with at most 9 decimals become integers
 *   scaled by 10^d; their deltas (or deltas of deltas) are zigzagged and bit-packed in groups of
 *   32 with one width per group. A random walk rounded to 2 decimals costs about 10 bits a point
 *   here against about 54 as XOR floats (2-decimal fractions have full binary mantissas).
 */
import { bug } from '../model/errors.js'
import { BitReader, BitWriter, peek32 } from './bit-stream.js'
import {
  BitsView,
  checkCount,
  checkRoom,
  type DecodedPoints,
  decodeViaScratch,
  firstOffset,
  HI,
  LO,
  MAX_POINT_BITS,
  readHeaderCount,
  readTimestampCodes,
  readTimestamps,
  readXorValues,
  timestampCodeBits,
  timestampOutOfOrder,
  unstorableTimestamp,
  writeTimestampCodes,
  writeTimestamps,
  writeXorValues,
} from './block-codec.js'
import { CorruptDataError } from './errors.js'
import { RUN_MS } from './row-key.js'
import { ENCODING_RUN_GORILLA, ENCODING_RUN_GORILLA_PACKED, ENCODING_RUN_SCALED } from './schema.js'

type RunEncoding = typeof ENCODING_RUN_GORILLA | typeof ENCODING_RUN_GORILLA_PACKED | typeof ENCODING_RUN_SCALED

/** A run's encoding from its first byte; an unknown byte reads as Gorilla, whose check then refuses it. */
function encodingOf(buf: Uint8Array): RunEncoding {
  const b = buf[0]
  return b === ENCODING_RUN_SCALED || b === ENCODING_RUN_GORILLA_PACKED ? b : ENCODING_RUN_GORILLA
}

/** What a run's header says, read without decoding its points. */
export interface RunHeader {
  readonly encoding: RunEncoding
  readonly count: number
  /** The first and last timestamps of the run, milliseconds since the epoch; a query skips runs outside its range. */
  readonly firstMs: number
  readonly lastMs: number
}

/** Residuals are bit-packed in groups of this many, each group with its own 6-bit width. */
const GROUP = 32
/** Widest residual, in bits: the zigzag of a delta of deltas of integers below SCALED_LIMIT. */
const MAX_WIDTH = 53
/**
 * Scaled integers stay below 2^50 in magnitude (stricter than the 2^53 of exact doubles) so that
 * their deltas of deltas and the zigzag of those stay exact integers below 2^53.
 */
const SCALED_LIMIT = 2 ** 50
/** Exact powers of ten for d = 0..9; a value with more decimals stays a Gorilla float. */
const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
const MAX_DECIMALS = POW10.length - 1
const TWO_POW_32 = 4_294_967_296
/** Mode byte of a scaled run: the low 4 bits are d, this bit says deltas of deltas. */
const MODE_DOD = 0x10
/** Mode bit of a scaled run whose timestamps are packed around a base delta (see planPackedTimestamps). */
const MODE_PACKED_TS = 0x20
/** The group code of packed timestamps that says the group is delta-of-delta codes instead. */
const TS_ESCAPE = 63
/** Widest packed timestamp residual: the zigzag of a delta minus the base, both under an hour. */
const MAX_TS_WIDTH = 23
/** Deltas sampled for the base of packed timestamps. */
const MEDIAN_SAMPLE = 64
/** Bits of the code in front of each group of packed timestamps, and of each residual group's width. */
const CODE_BITS = 6

/** Header bytes at most: encoding, count, first and last offsets, and first value or mode and first integer. */
const MAX_RUN_HEADER_BYTES = 1 + 4 + 4 + 4 + 1 + 8

// Shared by every call: see block-codec.ts. ints holds the scaled integers, residuals their zigzags.
const writer = new BitWriter()
const reader = new BitReader()
const encodeBits = new BitsView()
const decodeBits = new BitsView()
/** Scratch arrays grown past this many points for one large run are dropped afterwards. */
const KEEP_POINTS = 1 << 17
let ints = new Float64Array(1024)
let residuals = new Float64Array(1024)
// The timestamp deltas of a run being encoded, a sample of them reordered to find their median,
// and per group of packed timestamps its code: a width, or TS_ESCAPE.
let deltas = new Float64Array(1024)
const sortedDeltas = new Float64Array(MEDIAN_SAMPLE)
let tsCodes = new Uint8Array(64)

/**
 * Encodes count points of one run. timestamps are integer milliseconds, strictly increasing, all
 * in [runStartMs, runStartMs + RUN_MS); runStartMs is on the run grid.
 */
export function encodeRun(timestamps: Float64Array, values: Float64Array, count: number, runStartMs: number): Buffer {
  checkCount(timestamps, values, count, RUN_MS)
  if (runStartMs % RUN_MS !== 0) throw bug(`run start ${runStartMs} is not on the ${RUN_MS} ms grid`)
  const first = firstOffset(timestamps, runStartMs, RUN_MS)
  const last = timestamps[count - 1]! - runStartMs
  const decimals = scale(values, count)
  const base = planPackedTimestamps(timestamps, count)
  let out: Buffer
  if (decimals < 0) out = encodeGorilla(timestamps, values, count, runStartMs, first, last, base)!
  else {
    const scaled = encodeScaled(timestamps, count, runStartMs, first, last, decimals, base)
    // Both streams share the timestamps, so Gorilla wins only where XOR beats the scaled
    // residuals, as for values that jump between a few distant levels; usually it is abandoned early.
    const gorilla = encodeGorilla(timestamps, values, count, runStartMs, first, last, base, scaled.length * 8)
    out = gorilla !== null && gorilla.length < scaled.length ? gorilla : scaled
  }
  // A run of one point a millisecond needs 29 MB of scratch each; it is not kept for the next call.
  if (ints.length > KEEP_POINTS) {
    ints = new Float64Array(1024)
    residuals = new Float64Array(1024)
  }
  if (deltas.length > KEEP_POINTS) {
    deltas = new Float64Array(1024)
    tsCodes = new Uint8Array(64)
  }
  return out
}

/** Decodes a run into new arrays. */
export function decodeRun(buf: Uint8Array, runStartMs: number): DecodedPoints {
  return decodeViaScratch(runCount(buf), (timestamps, values) => decodeRunInto(buf, runStartMs, timestamps, values, 0))
}

/** Decodes a run into timestamps and values from index offset on; returns the number of points. */
export function decodeRunInto(
  buf: Uint8Array,
  runStartMs: number,
  timestamps: Float64Array,
  values: Float64Array,
  offset: number,
): number {
  const r = reader
  r.reset(buf, 'run')
  const encoding = encodingOf(buf)
  const count = readHeaderCount(r, encoding, RUN_MS)
  const first = r.readUvarint()
  const last = r.readUvarint()
  checkSpan(r, count, first, last)
  checkRoom(timestamps, values, offset, count)
  if (encoding !== ENCODING_RUN_SCALED) {
    const hi = r.readBits(32)
    const lo = r.readBits(32)
    const packed = encoding === ENCODING_RUN_GORILLA_PACKED
    // At least two bits a point after the first, or one and 6 bits a group of 32 with packed
    // timestamps: a count the stream cannot hold is caught before it sizes any work.
    const leastBits = packed ? count - 1 + Math.ceil((count - 1) / GROUP) * CODE_BITS : 2 * (count - 1)
    if (leastBits > r.remainingBits()) throw r.corrupt(`count ${count} exceeds the stream`, 8)
    if (packed) readPackedTimestamps(r, timestamps, offset, count, runStartMs, first)
    else readTimestamps(r, timestamps, offset, count, runStartMs, first, RUN_MS)
    readXorValues(r, decodeBits.of(values), (values.byteOffset >>> 2) + 2 * offset, count, hi, lo)
  } else {
    const mode = readMode(r)
    const decimals = mode & 0x0f
    const x0 = r.readZigzagVarint()
    const packed = (mode & MODE_PACKED_TS) !== 0
    // A point takes a bit at least, or a group of them a timestamp code and a residual width when
    // the timestamps are packed.
    const leastBits = packed ? Math.ceil((count - 1) / GROUP) * 2 * CODE_BITS : count - 1
    if (leastBits > r.remainingBits()) throw r.corrupt(`count ${count} exceeds the stream`, 8)
    if (packed) readPackedTimestamps(r, timestamps, offset, count, runStartMs, first)
    else readTimestamps(r, timestamps, offset, count, runStartMs, first, RUN_MS)
    readResiduals(r, values, offset, count, x0, POW10[decimals]!, (mode & MODE_DOD) !== 0)
  }
  r.finish()
  if (timestamps[offset + count - 1] !== runStartMs + last) {
    throw new CorruptDataError('run', `last timestamp offset ${last} in the header does not match the stream`, -1)
  }
  return count
}

/** The number of points in a run, from its header alone. */
export function runCount(buf: Uint8Array): number {
  return readRunHeader(buf, 0).count
}

/** Reads a run's header: encoding, count, first and last timestamps. */
export function readRunHeader(buf: Uint8Array, runStartMs: number): RunHeader {
  // Encoding 1 and three varints of 4 bytes at most.
  return readHeaderOf(buf, runStartMs, 13)
}

/** A scaled run's header, with its decimals and first scaled integer: its first value is x0 / 10^decimals. */
export interface ScaledRunHeader extends RunHeader {
  readonly decimals: number
  readonly x0: number
}

/** Reads a scaled run's header, mode and first integer without decoding its points; undefined for a Gorilla run. */
export function readScaledRunHeader(buf: Uint8Array, runStartMs: number): ScaledRunHeader | undefined {
  if (buf[0] !== ENCODING_RUN_SCALED) return undefined
  // The header, mode 1, x0 of 8 bytes at most.
  const header = readHeaderOf(buf, runStartMs, 22)
  const r = reader
  const decimals = readMode(r) & 0x0f
  const x0 = r.readZigzagVarint()
  if (r.remainingBits() < 0 || !(x0 < SCALED_LIMIT && x0 > -SCALED_LIMIT)) throw r.corrupt(`first scaled integer ${x0}`)
  const { encoding, count, firstMs, lastMs } = header
  return { encoding, count, firstMs, lastMs, decimals, x0 }
}

/** Reads the header from the first `bytes` of buf, leaving the shared reader after it. */
function readHeaderOf(buf: Uint8Array, runStartMs: number, bytes: number): RunHeader {
  const r = reader
  r.reset(buf.subarray(0, Math.min(buf.length, bytes)), 'run')
  const encoding = encodingOf(buf)
  const count = readHeaderCount(r, encoding, RUN_MS)
  const first = r.readUvarint()
  const last = r.readUvarint()
  checkSpan(r, count, first, last)
  return { encoding, count, firstMs: runStartMs + first, lastMs: runStartMs + last }
}

/** Reads a scaled run's mode byte: d in the low 4 bits, and the MODE_ bits. */
function readMode(r: BitReader): number {
  const modePos = r.pos
  const mode = r.readBits(8)
  if ((mode & ~(MODE_DOD | MODE_PACKED_TS | 0x0f)) !== 0 || (mode & 0x0f) > MAX_DECIMALS) {
    throw r.corrupt(`mode byte ${mode}`, modePos)
  }
  return mode
}

/** 10^d for d in 0..9, exact. */
export function pow10(decimals: number): number {
  return POW10[decimals]!
}

function checkSpan(r: BitReader, count: number, first: number, last: number): void {
  if (r.remainingBits() < 0) throw r.corrupt('header')
  if (!(first <= last && last < RUN_MS && last - first + 1 >= count) || (count === 1 && first !== last)) {
    throw r.corrupt(`${count} points cannot span offsets ${first} to ${last}`)
  }
}

function writeHeader(w: BitWriter, encoding: number, count: number, first: number, last: number): void {
  w.writeBits(encoding, 8)
  w.writeUvarint(count)
  w.writeUvarint(first)
  w.writeUvarint(last)
}

/**
 * The Gorilla encoding, or null when it grows past maxBits; with packed timestamps around
 * tsBase (planned by planPackedTimestamps) unless that is 0.
 */
function encodeGorilla(
  timestamps: Float64Array,
  values: Float64Array,
  count: number,
  start: number,
  first: number,
  last: number,
  tsBase: number,
  maxBits = Number.POSITIVE_INFINITY,
): Buffer | null {
  const bits = encodeBits.of(values)
  const base = values.byteOffset >>> 2
  const w = writer
  // Header, the timestamps' base delta, and per point its codes and a group code's share.
  w.reset(MAX_RUN_HEADER_BYTES + 8 + Math.ceil((count * (MAX_POINT_BITS + 6)) / 8))
  writeHeader(w, tsBase > 0 ? ENCODING_RUN_GORILLA_PACKED : ENCODING_RUN_GORILLA, count, first, last)
  w.writeBits(bits[base + HI]!, 32)
  w.writeBits(bits[base + LO]!, 32)
  if (tsBase > 0) writePackedTimestamps(w, timestamps, count, start, tsBase)
  else writeTimestamps(w, timestamps, count, start, RUN_MS)
  if (!writeXorValues(w, bits, base, count, maxBits)) return null
  return w.finish()
}

/**
 * The smallest d in 0..9 for which every value is an integer scaled by 10^d, with the integers
 * left in ints; -1 when there is none, or a value is NaN, infinite or -0 (a scaled integer would
 * lose the sign of zero and NaN payloads).
 */
function scale(values: Float64Array, count: number): number {
  if (ints.length < count) ints = new Float64Array(Math.max(count, ints.length * 2))
  let d = 0
  // Values before the one that last raised d were checked at a smaller d, and a larger d can, in
  // rare binary cases, fail for one of them, so they are checked again until a pass raises nothing.
  let end = count
  for (;;) {
    let raised = false
    let stale = 0
    for (let i = 0; i < end; i++) {
      const v = values[i]!
      if (!Number.isFinite(v) || Object.is(v, -0)) return -1
      for (;;) {
        const p = POW10[d]!
        const x = Math.round(v * p)
        if (x / p === v && x < SCALED_LIMIT && x > -SCALED_LIMIT) {
          ints[i] = x
          break
        }
        if (++d > MAX_DECIMALS) return -1
        raised = true
        stale = i
      }
    }
    if (!raised) return d
    // After a full pass only the values before the last raise are stale; after a raise in a
    // partial pass, the values past it were checked at the old d too.
    end = end === count ? stale : count
  }
}

function encodeScaled(
  timestamps: Float64Array,
  count: number,
  start: number,
  first: number,
  last: number,
  decimals: number,
  base: number,
): Buffer {
  if (residuals.length < count) residuals = new Float64Array(Math.max(count, residuals.length * 2))
  const dod = preferDod(count)
  fillResiduals(count, dod)
  const w = writer
  // Header, the timestamps' base delta, timestamps of at most 37 bits and a group code, and
  // residuals of at most 6 + 53 bits each.
  w.reset(MAX_RUN_HEADER_BYTES + 8 + Math.ceil((count * (37 + 6 + 6 + MAX_WIDTH)) / 8))
  writeHeader(w, ENCODING_RUN_SCALED, count, first, last)
  w.writeBits(decimals | (dod ? MODE_DOD : 0) | (base > 0 ? MODE_PACKED_TS : 0), 8)
  w.writeZigzagVarint(ints[0]!)
  if (base > 0) writePackedTimestamps(w, timestamps, count, start, base)
  else writeTimestamps(w, timestamps, count, start, RUN_MS)
  const z = residuals
  for (let g = 1; g < count; g += GROUP) {
    const end = Math.min(g + GROUP, count)
    let max = 0
    for (let i = g; i < end; i++) if (z[i]! > max) max = z[i]!
    const width = widthOf(max)
    w.writeBits(width, CODE_BITS)
    if (width === 0) continue
    if (width <= 32) for (let i = g; i < end; i++) w.writeBits(z[i]!, width)
    else for (let i = g; i < end; i++) w.writeWide(z[i]!, width)
  }
  return w.finish()
}

/**
 * Whether deltas of deltas of ints pack into fewer bits than deltas: they do for counters and
 * ramps, deltas do for random walks.
 */
function preferDod(count: number): boolean {
  const x = ints
  let prevDelta = 0
  let deltaBits = 0
  let dodBits = 0
  for (let g = 1; g < count; g += GROUP) {
    const end = Math.min(g + GROUP, count)
    let maxDelta = 0
    let maxDod = 0
    for (let i = g; i < end; i++) {
      const delta = x[i]! - x[i - 1]!
      const dod = delta - prevDelta
      prevDelta = delta
      const zd = delta >= 0 ? delta * 2 : -delta * 2 - 1
      const zdd = dod >= 0 ? dod * 2 : -dod * 2 - 1
      if (zd > maxDelta) maxDelta = zd
      if (zdd > maxDod) maxDod = zdd
    }
    deltaBits += widthOf(maxDelta) * (end - g)
    dodBits += widthOf(maxDod) * (end - g)
  }
  return dodBits < deltaBits
}

/** Fills residuals[1..count) with the zigzagged deltas, or deltas of deltas, of ints. */
function fillResiduals(count: number, dod: boolean): void {
  const x = ints
  const z = residuals
  let prevDelta = 0
  for (let i = 1; i < count; i++) {
    const delta = x[i]! - x[i - 1]!
    const r = dod ? delta - prevDelta : delta
    prevDelta = delta
    z[i] = r >= 0 ? r * 2 : -r * 2 - 1
  }
}

/*
 * Packed timestamps (a Gorilla run of encoding 0x22, or the MODE_PACKED_TS bit of a scaled run):
 * a base delta, then the timestamps after the first in groups of GROUP, each group a code of
 * CODE_BITS and its points. A code of 0 to MAX_TS_WIDTH is a width, and each point is the zigzag
 * of its delta minus the base in that many bits; TS_ESCAPE says the group's points are
 * delta-of-delta codes as a Gorilla stream has them.
 * Regular timestamps cost 6 bits a group instead of one bit a point, jittered ones a few bits less
 * than their delta-of-delta codes, and a gap or a change of interval only its own group's codes.
 */

/**
 * Plans the packed timestamps of a run: the base is the median delta, and each group takes
 * whichever of its two forms is smaller. Returns the base, or 0 when the delta-of-delta stream
 * alone is no larger than the packed one.
 */
function planPackedTimestamps(timestamps: Float64Array, count: number): number {
  if (count < 2) return 0
  if (deltas.length < count) {
    deltas = new Float64Array(Math.max(count, deltas.length * 2))
  }
  const groups = Math.ceil((count - 1) / GROUP)
  if (tsCodes.length < groups) tsCodes = new Uint8Array(Math.max(groups, tsCodes.length * 2))
  for (let i = 1; i < count; i++) deltas[i] = timestamps[i]! - timestamps[i - 1]!
  // writeTimestampCodes checks each delta as it writes; until then a bad one only makes a bad plan.
  // The median of up to MEDIAN_SAMPLE deltas spread over the run: as good a base as the median of
  // all of them on regular and jittered data, at a fixed cost.
  const n = Math.min(count - 1, MEDIAN_SAMPLE)
  for (let j = 0; j < n; j++) sortedDeltas[j] = deltas[1 + Math.floor((j * (count - 1)) / n)]!
  const base = nthSmallest(sortedDeltas, n, n >>> 1)
  if (!(base >= 1 && base < RUN_MS)) return 0
  let plain = 0
  let packed = 8 * varintBytes(base)
  let prevDelta = 0
  for (let g = 1, k = 0; g < count; g += GROUP, k++) {
    const end = Math.min(g + GROUP, count)
    let codeBits = 0
    let max = 0
    for (let i = g; i < end; i++) {
      const delta = deltas[i]!
      codeBits += timestampCodeBits(delta - prevDelta)
      prevDelta = delta
      const r = delta - base
      const z = r >= 0 ? r * 2 : -r * 2 - 1
      if (z > max) max = z
    }
    const width = widthOf(max)
    const widthBits = width <= MAX_TS_WIDTH ? width * (end - g) : Number.POSITIVE_INFINITY
    tsCodes[k] = widthBits <= codeBits ? width : TS_ESCAPE
    plain += codeBits
    packed += CODE_BITS + Math.min(widthBits, codeBits)
  }
  return packed < plain ? base : 0
}

/**
 * The k-th smallest (from 0) of xs[0..n), by quickselect, reordering xs: linear on average where
 * a sort of a run's jittered deltas cost more than the rest of its encoding.
 */
function nthSmallest(xs: Float64Array, n: number, k: number): number {
  let lo = 0
  let hi = n - 1
  while (lo < hi) {
    const pivot = xs[(lo + hi) >>> 1]!
    let i = lo
    let j = hi
    while (i <= j) {
      while (xs[i]! < pivot) i++
      while (xs[j]! > pivot) j--
      if (i <= j) {
        const t = xs[i]!
        xs[i++] = xs[j]!
        xs[j--] = t
      }
    }
    if (k <= j) hi = j
    else if (k >= i) lo = i
    else return xs[k]!
  }
  return xs[k]!
}

/** Bytes of the LEB128 varint of v. */
function varintBytes(v: number): number {
  let n = 1
  for (let x = v; x >= 128; x = Math.floor(x / 128)) n++
  return n
}

/** Writes timestamps 1..count-1 as planPackedTimestamps planned them around base. */
function writePackedTimestamps(
  w: BitWriter,
  timestamps: Float64Array,
  count: number,
  start: number,
  base: number,
): void {
  w.writeUvarint(base)
  for (let g = 1, k = 0; g < count; g += GROUP, k++) {
    const end = Math.min(g + GROUP, count)
    const code = tsCodes[k]!
    w.writeBits(code, CODE_BITS)
    if (code === TS_ESCAPE) {
      writeTimestampCodes(w, timestamps, g, end, start, RUN_MS)
      continue
    }
    for (let i = g; i < end; i++) {
      const off = timestamps[i]! - start
      const delta = off - (timestamps[i - 1]! - start)
      if (!(delta >= 1 && off < RUN_MS) || (delta | 0) !== delta)
        throw unstorableTimestamp(timestamps, i, start, RUN_MS)
      const r = delta - base
      if (code > 0) w.writeBits(r >= 0 ? r * 2 : -r * 2 - 1, code)
    }
  }
}

/** Reads packed timestamps into out from index at: the first at start + first, the rest from the stream. */
function readPackedTimestamps(
  r: BitReader,
  out: Float64Array,
  at: number,
  count: number,
  start: number,
  first: number,
): void {
  out[at] = start + first
  const basePos = r.pos
  const base = r.readUvarint()
  if (!(base >= 1 && base < RUN_MS)) throw r.corrupt(`base delta ${base}`, basePos)
  const data = r.data
  const limit = r.limitBits
  let pos = r.pos
  let prev = first
  for (let g = 1; g < count; g += GROUP) {
    // Stops at the end of a truncated stream, before any read leaves the reader's padding.
    if (pos > limit) break
    const end = Math.min(g + GROUP, count)
    const code = peek32(data, pos) >>> (32 - CODE_BITS)
    pos += CODE_BITS
    if (code === TS_ESCAPE) {
      r.pos = pos
      readTimestampCodes(r, out, at, g, end, start, RUN_MS)
      pos = r.pos
      prev = out[at + end - 1]! - start
      continue
    }
    if (code > MAX_TS_WIDTH) {
      r.pos = pos - CODE_BITS
      throw r.corrupt(`timestamp group code ${code}`)
    }
    for (let i = g; i < end; i++) {
      let delta = base
      if (code > 0) {
        const z = peek32(data, pos) >>> (32 - code)
        pos += code
        delta += (z >>> 1) ^ -(z & 1)
      }
      const off = prev + delta
      if (delta < 1 || off >= RUN_MS) throw timestampOutOfOrder(r, pos, i, off)
      out[at + i] = start + off
      prev = off
    }
  }
  r.pos = pos
  if (pos > limit) throw r.corrupt('timestamps')
}

/** Bits needed for an unsigned integer below 2^53. */
function widthOf(v: number): number {
  return v < TWO_POW_32 ? 32 - Math.clz32(v) : 64 - Math.clz32(Math.floor(v / TWO_POW_32))
}

/** Reads the residual groups and rebuilds count values from x0 into out from index at. */
function readResiduals(
  r: BitReader,
  out: Float64Array,
  at: number,
  count: number,
  x0: number,
  p: number,
  dod: boolean,
): void {
  const data = r.data
  const limit = r.limitBits
  let pos = r.pos
  let x = x0
  if (!(x < SCALED_LIMIT && x > -SCALED_LIMIT)) throw r.corrupt(`first scaled integer ${x}`)
  out[at] = x / p
  let delta = 0
  for (let g = 1; g < count; g += GROUP) {
    // Stops at the end of a truncated stream, before any read leaves the reader's padding.
    if (pos > limit) break
    const end = Math.min(g + GROUP, count)
    const width = peek32(data, pos) >>> (32 - CODE_BITS)
    if (width > MAX_WIDTH) {
      r.pos = pos
      throw r.corrupt(`residual width ${width}`)
    }
    pos += CODE_BITS
    for (let i = g; i < end; i++) {
      let res = 0
      if (width === 0) res = 0
      else if (width <= 32) {
        const z = peek32(data, pos) >>> (32 - width)
        pos += width
        res = (z >>> 1) ^ -(z & 1)
      } else {
        const z = (peek32(data, pos) >>> (64 - width)) * TWO_POW_32 + (peek32(data, pos + width - 32) >>> 0)
        pos += width
        res = z % 2 === 0 ? z / 2 : -(z + 1) / 2
      }
      delta = dod ? delta + res : res
      x += delta
      if (!(x < SCALED_LIMIT && x > -SCALED_LIMIT)) {
        r.pos = pos
        throw r.corrupt(`scaled integer ${x} of point ${i}`)
      }
      out[at + i] = x / p
    }
  }
  r.pos = pos
  if (pos > limit) throw r.corrupt('values')
}
