/**
 * The 30-second block: Gorilla-style delta-of-delta timestamps and XOR floats
 * (docs/format/block.md). The timestamp and XOR streams are also the body of a Gorilla cold run,
 * so they are exported for run-codec.ts.
 *
 * Values are read and written as two uint32 halves through a Uint32Array view of the caller's
 * Float64Array: no double passes through a JavaScript number, so NaN payloads, -0 and subnormals
 * keep their exact bits, and the 64-bit XOR needs no BigInt.
 */
import { bug } from '../model/errors.js'
import { BitReader, BitWriter, peek32 } from './bit-stream.js'
import type { CorruptDataError } from './errors.js'
import { BLOCK_MS, ENCODING_BLOCK_GORILLA } from './schema.js'

/** Decoded points, columnar: timestamps[i] (ms since the epoch) pairs with values[i]. */
export interface DecodedPoints {
  readonly timestamps: Float64Array
  readonly values: Float64Array
}

/** Index of the high (sign, exponent) half of a float64 in a Uint32Array view on this machine. */
export const HI = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1 ? 1 : 0
export const LO = 1 - HI

/**
 * Worst case bits of one point after the first: a 32-bit timestamp bucket (5 + 32) and a new XOR
 * window with all 64 bits meaningful (2 + 11 + 64).
 */
export const MAX_POINT_BITS = 37 + 77

/** Header bytes at most: encoding, count and first offset varints, first value. */
const MAX_BLOCK_HEADER_BYTES = 1 + 8 + 8 + 8

// One writer and one reader serve every call: encoding and decoding are synchronous, and reusing
// their buffers saves an allocation per block on the ingest path.
const writer = new BitWriter()
const reader = new BitReader()

/**
 * The float64 bits of typed arrays as uint32 pairs, sharing their memory. Making a view costs about
 * as much as encoding a three-point block, and callers pass subarrays of the same few buffers, so
 * the view of the last buffer is kept (which keeps that one buffer alive until another replaces it).
 */
export class BitsView {
  private buffer: ArrayBufferLike | null = null
  private view: Uint32Array = new Uint32Array(0)

  /** The view over arr's whole buffer; arr's first element is at index arr.byteOffset / 4. */
  of(arr: Float64Array): Uint32Array {
    const buffer = arr.buffer
    // The length test also catches a resizable buffer that has grown since the view was made.
    if (buffer !== this.buffer || this.view.length * 4 < arr.byteOffset + arr.byteLength) {
      this.view = new Uint32Array(buffer, 0, buffer.byteLength >>> 2)
      this.buffer = buffer
    }
    return this.view
  }
}

const encodeBits = new BitsView()
const decodeBits = new BitsView()

/**
 * Encodes count points. timestamps are integer milliseconds, strictly increasing, all in
 * [blockStartMs, blockStartMs + BLOCK_MS); the caller sorts and deduplicates them.
 */
export function encodeBlock(
  timestamps: Float64Array,
  values: Float64Array,
  count: number,
  blockStartMs: number,
): Buffer {
  checkCount(timestamps, values, count, BLOCK_MS)
  if (blockStartMs % BLOCK_MS !== 0) throw bug(`block start ${blockStartMs} is not on the ${BLOCK_MS} ms grid`)
  const first = firstOffset(timestamps, blockStartMs, BLOCK_MS)
  const bits = encodeBits.of(values)
  const base = values.byteOffset >>> 2
  const w = writer
  w.reset(MAX_BLOCK_HEADER_BYTES + Math.ceil((count * MAX_POINT_BITS) / 8))
  w.writeBits(ENCODING_BLOCK_GORILLA, 8)
  w.writeUvarint(count)
  w.writeUvarint(first)
  // The first value has nothing to XOR with, so it is stored whole, at a fixed place in the header
  // where a reader can take it without decoding the stream.
  w.writeBits(bits[base + HI]!, 32)
  w.writeBits(bits[base + LO]!, 32)
  writeTimestamps(w, timestamps, count, blockStartMs, BLOCK_MS)
  writeXorValues(w, bits, base, count)
  return w.finish()
}

/**
 * Points a decode into new arrays goes through scratch arrays for (see decodeViaScratch); 32 KiB
 * each, kept for the process.
 */
export const SCRATCH_DECODE_POINTS = 4096
const scratchTimestamps = new Float64Array(SCRATCH_DECODE_POINTS)
const scratchValues = new Float64Array(SCRATCH_DECODE_POINTS)

/**
 * Decodes count points with `into` into new arrays. Up to SCRATCH_DECODE_POINTS they are decoded
 * into the scratch arrays and copied out: the XOR decoder writes through a view of its output's
 * buffer, and asking a new array of a few points for its buffer moves it off the V8 heap, an
 * allocation per block that cost more than the decode (a copy out of the scratch does not).
 */
export function decodeViaScratch(
  count: number,
  into: (timestamps: Float64Array, values: Float64Array) => void,
): DecodedPoints {
  if (count > SCRATCH_DECODE_POINTS) {
    const timestamps = new Float64Array(count)
    const values = new Float64Array(count)
    into(timestamps, values)
    return { timestamps, values }
  }
  into(scratchTimestamps, scratchValues)
  return { timestamps: scratchTimestamps.slice(0, count), values: scratchValues.slice(0, count) }
}

/** Decodes a block into new arrays. */
export function decodeBlock(buf: Uint8Array, blockStartMs: number): DecodedPoints {
  return decodeViaScratch(blockCount(buf), (timestamps, values) =>
    decodeBlockInto(buf, blockStartMs, timestamps, values, 0),
  )
}

/**
 * Decodes a block into timestamps and values from index offset on, so a query can fill one pair
 * of arrays from many blocks without allocating. Returns the number of points written.
 */
export function decodeBlockInto(
  buf: Uint8Array,
  blockStartMs: number,
  timestamps: Float64Array,
  values: Float64Array,
  offset: number,
): number {
  const r = reader
  r.reset(buf, 'block')
  const count = readHeaderCount(r, ENCODING_BLOCK_GORILLA, BLOCK_MS)
  const firstPos = r.pos
  const first = r.readUvarint()
  if (first >= BLOCK_MS) throw r.corrupt(`first timestamp offset ${first} outside the block`, firstPos)
  const hi = r.readBits(32)
  const lo = r.readBits(32)
  checkRoom(timestamps, values, offset, count)
  // Each point after the first takes at least two bits; a count that the stream cannot hold is
  // caught here, before it sizes any work.
  if (count - 1 > r.remainingBits() / 2) throw r.corrupt(`count ${count} exceeds the stream`, 8)
  readTimestamps(r, timestamps, offset, count, blockStartMs, first, BLOCK_MS)
  readXorValues(r, decodeBits.of(values), (values.byteOffset >>> 2) + 2 * offset, count, hi, lo)
  r.finish()
  return count
}

/** The number of points in a block, from its header alone. */
export function blockCount(buf: Uint8Array): number {
  const r = reader
  r.reset(buf.subarray(0, Math.min(buf.length, 4)), 'block')
  const count = readHeaderCount(r, ENCODING_BLOCK_GORILLA, BLOCK_MS)
  if (r.remainingBits() < 0) throw r.corrupt('header')
  return count
}

/** Reads the encoding byte and the count varint, checking both. */
export function readHeaderCount(r: BitReader, encoding: number, maxCount: number): number {
  const enc = r.readBits(8)
  if (enc !== encoding)
    throw r.corrupt(`encoding byte 0x${enc.toString(16).padStart(2, '0')} is not 0x${encoding.toString(16)}`, 0)
  const count = r.readUvarint()
  if (count < 1 || count > maxCount) throw r.corrupt(`count ${count} outside [1, ${maxCount}]`, 8)
  return count
}

/** Checks the arguments of an encoder: a count that the arrays hold and the span allows. */
export function checkCount(timestamps: Float64Array, values: Float64Array, count: number, span: number): void {
  if (!Number.isInteger(count) || count < 1 || count > span || count > timestamps.length || count > values.length) {
    throw bug(`cannot encode ${count} points from ${timestamps.length} timestamps and ${values.length} values`)
  }
}

/** The first timestamp's offset from start, checked to be an integer inside [0, span). */
export function firstOffset(timestamps: Float64Array, start: number, span: number): number {
  const first = timestamps[0]! - start
  if (!(first >= 0 && first < span) || Math.floor(first) !== first) {
    throw bug(`timestamp ${timestamps[0]} is not an integer in [${start}, ${start + span})`)
  }
  return first
}

/** Checks that decoding count points at offset fits the caller's arrays. */
export function checkRoom(timestamps: Float64Array, values: Float64Array, offset: number, count: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + count > timestamps.length || offset + count > values.length) {
    throw new RangeError(
      `cannot decode ${count} points at ${offset} into ${timestamps.length} timestamps and ${values.length} values`,
    )
  }
}

/*
 * Timestamp buckets. Delta-of-delta (dod) codes, with the delta before the first one taken as 0:
 *   '0'                 dod = 0
 *   '10'    +  7 bits   dod in [-63, 64]          scrape jitter of a few ms
 *   '110'   +  9 bits   dod in [-255, 256]
 *   '1110'  + 12 bits   dod in [-2047, 2048]
 *   '11110' + 16 bits   dod in [-32767, 32768]    any change inside one 30 s block
 *   '11111' + 32 bits   dod as int32              runs: deltas up to an hour
 * Each payload is dod plus the bucket's bias, unsigned.
 */

/** Writes timestamps 1..count-1 as delta-of-delta codes; timestamps[0] is in the header. */
export function writeTimestamps(w: BitWriter, ts: Float64Array, count: number, start: number, span: number): void {
  writeTimestampCodes(w, ts, 1, count, start, span)
}

/**
 * Writes timestamps from..to-1 (from >= 1) as delta-of-delta codes, the delta before the first
 * of them being the one ending at timestamps[from - 1] (0 when from is 1).
 */
export function writeTimestampCodes(
  w: BitWriter,
  ts: Float64Array,
  from: number,
  to: number,
  start: number,
  span: number,
): void {
  let prev = ts[from - 1]! - start
  let prevDelta = from >= 2 ? ts[from - 1]! - ts[from - 2]! : 0
  for (let i = from; i < to; i++) {
    const off = ts[i]! - start
    const delta = off - prev
    // Rejects unsorted, duplicate, fractional and NaN timestamps and those past the span: any of
    // them would make a value that decodes to different points or not at all.
    if (!(delta >= 1 && off < span) || (delta | 0) !== delta) throw unstorableTimestamp(ts, i, start, span)
    const dod = delta - prevDelta
    if (dod === 0) w.writeBits(0, 1)
    else if (dod >= -63 && dod <= 64) w.writeBits((0b10 << 7) | (dod + 63), 9)
    else if (dod >= -255 && dod <= 256) w.writeBits((0b110 << 9) | (dod + 255), 12)
    else if (dod >= -2047 && dod <= 2048) w.writeBits((0b1110 << 12) | (dod + 2047), 16)
    else if (dod >= -32767 && dod <= 32768) w.writeBits((0b11110 << 16) | (dod + 32767), 21)
    else {
      w.writeBits(0b11111, 5)
      w.writeBits(dod >>> 0, 32)
    }
    prev = off
    prevDelta = delta
  }
}

/** The caller's bug of a timestamp that cannot be stored after the one before it (see writeTimestampCodes). */
export function unstorableTimestamp(ts: Float64Array, i: number, start: number, span: number): Error {
  return bug(`timestamps[${i}] = ${ts[i]} is not an integer after ${ts[i - 1]} and before ${start + span}`)
}

/** The error of a decoded timestamp `i` at offset `off` that is not after the one before or leaves the span. */
export function timestampOutOfOrder(r: BitReader, pos: number, i: number, off: number): CorruptDataError {
  r.pos = pos
  return r.corrupt(`timestamp ${i} at offset ${off} out of order or outside the span`)
}

/** The length in bits of the delta-of-delta code of dod. */
export function timestampCodeBits(dod: number): number {
  if (dod === 0) return 1
  if (dod >= -63 && dod <= 64) return 9
  if (dod >= -255 && dod <= 256) return 12
  if (dod >= -2047 && dod <= 2048) return 16
  return dod >= -32767 && dod <= 32768 ? 21 : 37
}

/**
 * Reads count timestamps into out from index at: the first at start + first, the rest from the
 * stream. Every one must come after the one before and stay inside the span.
 */
export function readTimestamps(
  r: BitReader,
  out: Float64Array,
  at: number,
  count: number,
  start: number,
  first: number,
  span: number,
): void {
  out[at] = start + first
  readTimestampCodes(r, out, at, 1, count, start, span)
}

/**
 * Reads the codes of timestamps from..to-1 (from >= 1) into out[at + i], continuing from the
 * timestamps already at out[at + from - 1] and before, as writeTimestampCodes wrote them.
 */
export function readTimestampCodes(
  r: BitReader,
  out: Float64Array,
  at: number,
  from: number,
  to: number,
  start: number,
  span: number,
): void {
  const data = r.data
  const limit = r.limitBits
  let pos = r.pos
  let prev = out[at + from - 1]! - start
  let prevDelta = from >= 2 ? out[at + from - 1]! - out[at + from - 2]! : 0
  for (let i = from; i < to; i++) {
    // Stops at the end of a truncated stream, before any read leaves the reader's padding.
    if (pos > limit) break
    // The bucket prefix and its payload are at most 21 bits, so one peek serves both.
    const w = peek32(data, pos)
    let dod = 0
    if (w >= 0) pos += 1
    else {
      const ones = Math.clz32(~w)
      if (ones === 1) {
        dod = ((w << 2) >>> 25) - 63
        pos += 9
      } else if (ones === 2) {
        dod = ((w << 3) >>> 23) - 255
        pos += 12
      } else if (ones === 3) {
        dod = ((w << 4) >>> 20) - 2047
        pos += 16
      } else if (ones === 4) {
        dod = ((w << 5) >>> 16) - 32767
        pos += 21
      } else {
        dod = peek32(data, pos + 5)
        pos += 37
      }
    }
    const delta = prevDelta + dod
    const off = prev + delta
    if (delta < 1 || off >= span) throw timestampOutOfOrder(r, pos, i, off)
    out[at + i] = start + off
    prev = off
    prevDelta = delta
  }
  r.pos = pos
  if (pos > limit) throw r.corrupt('timestamps')
}

/*
 * XOR values, Gorilla control codes:
 *   '0'                                    same value as the one before
 *   '10' + meaningful bits                 XOR fits the previous window (leading/trailing zeros)
 *   '11' + 5 bits leading zeros + 6 bits length (0 means 64) + meaningful bits   a new window
 */

/**
 * Writes values 1..count-1 as XORs with the value before; value 0, whose bits start at index base
 * of the uint32 view, is in the header. Gives up, returning false, once the stream passes maxBits:
 * a run encoder that already has a smaller encoding need not finish this one.
 */
export function writeXorValues(
  w: BitWriter,
  bits: Uint32Array,
  base: number,
  count: number,
  maxBits = Number.POSITIVE_INFINITY,
): boolean {
  let prevHi = bits[base + HI]!
  let prevLo = bits[base + LO]!
  // No window yet: a leading count of 65 can never be reused.
  let winLead = 65
  let winTrail = 0
  let winLen = 0
  for (let i = 1; i < count; i++) {
    const hi = bits[base + 2 * i + HI]!
    const lo = bits[base + 2 * i + LO]!
    const xh = hi ^ prevHi
    const xl = lo ^ prevLo
    prevHi = hi
    prevLo = lo
    if ((i & 63) === 0 && w.bitLength() > maxBits) return false
    if ((xh | xl) === 0) {
      w.writeBits(0, 1)
      continue
    }
    const lead = xh !== 0 ? Math.clz32(xh) : 32 + Math.clz32(xl)
    const trail = xl !== 0 ? 31 - Math.clz32(xl & -xl) : 63 - Math.clz32(xh & -xh)
    // Five bits hold leading counts up to 31; more leading zeros are written as meaningful bits.
    const newLead = Math.min(lead, 31)
    const len = 64 - newLead - trail
    // Reusing the window costs its length; a new one costs 11 header bits plus the exact length.
    // Reuse only when it is no dearer, so one wide XOR does not tax every value after it.
    if (lead >= winLead && trail >= winTrail && winLen <= len + 11) {
      w.writeBits(0b10, 2)
      writeShifted(w, xh, xl, winTrail, winLen)
      continue
    }
    w.writeBits((0b11 << 11) | (newLead << 6) | (len & 63), 13)
    writeShifted(w, xh, xl, trail, len)
    winLead = newLead
    winTrail = trail
    winLen = len
  }
  return true
}

/** Writes the len bits of the 64-bit (xh, xl) that sit above its trail lowest bits. */
function writeShifted(w: BitWriter, xh: number, xl: number, trail: number, len: number): void {
  let h = xh
  let l = xl
  if (trail >= 32) {
    l = xh >>> (trail - 32)
    h = 0
  } else if (trail > 0) {
    l = (xl >>> trail) | (xh << (32 - trail))
    h = xh >>> trail
  }
  if (len > 32) {
    w.writeBits(h, len - 32)
    w.writeBits(l, 32)
  } else {
    w.writeBits(l, len)
  }
}

/** Reads count values into the uint32 view bits from index base on; the first is (hi, lo). */
export function readXorValues(
  r: BitReader,
  bits: Uint32Array,
  base: number,
  count: number,
  hi: number,
  lo: number,
): void {
  const data = r.data
  const limit = r.limitBits
  let pos = r.pos
  let j = base
  bits[j + HI] = hi
  bits[j + LO] = lo
  let trail = 0
  let len = 0
  for (let i = 1; i < count; i++) {
    if (pos > limit) break
    j += 2
    const w = peek32(data, pos)
    if (w < 0) {
      if ((w & 0x4000_0000) !== 0) {
        // '11': a new window, 5 bits of leading zeros and 6 of length (0 meaning 64).
        len = (w >>> 19) & 63 || 64
        trail = 64 - ((w >>> 25) & 31) - len
        pos += 13
        if (trail < 0) {
          r.pos = pos
          throw r.corrupt(`XOR window of ${(w >>> 25) & 31} leading and ${len} meaningful bits`)
        }
      } else {
        if (len === 0) {
          r.pos = pos
          throw r.corrupt('XOR window reused before one was set')
        }
        pos += 2
      }
      let h = 0
      let l: number
      if (len > 32) {
        h = peek32(data, pos) >>> (64 - len)
        pos += len - 32
        l = peek32(data, pos)
        pos += 32
      } else {
        l = peek32(data, pos) >>> (32 - len)
        pos += len
      }
      if (trail >= 32) {
        h = l << (trail - 32)
        l = 0
      } else if (trail > 0) {
        h = (h << trail) | (l >>> (32 - trail))
        l <<= trail
      }
      hi ^= h
      lo ^= l
    } else {
      pos += 1
    }
    bits[j + HI] = hi
    bits[j + LO] = lo
  }
  r.pos = pos
  if (pos > limit) throw r.corrupt('values')
}
