import { ValidationError } from '../model/errors.js'
import type { Precision, RawTimestamp, SeriesWrite, Tag, WriteBatch } from '../model/types.js'

/**
 * A hand-written decoder for WriteRequest (and WriteStreamRequest, which has the same fields),
 * used in place of the generated one on the write path for two reasons: the generated decoder turns
 * every int64 into a bigint and then a string, which costs more than the rest of the write path, and
 * it refuses nanosecond timestamps (they exceed 2^53). This one reads varints as two 32-bit halves,
 * yields a number wherever the value is exact as a double and a bigint otherwise, and copies packed
 * doubles straight into a Float64Array. Field numbers are those of proto/v3storage/v1/common.proto
 * and write_service.proto; a test checks it against the generated decoder.
 */
export class WireError extends Error {
  constructor(message: string) {
    super(`cannot decode the write request: ${message}`)
    this.name = 'WireError'
  }
}

const PRECISIONS: Record<number, Precision> = { 0: 'ms', 1: 's', 2: 'ms', 3: 'us', 4: 'ns' }
const TWO_32 = 0x1_0000_0000
const decoder = new TextDecoder('utf-8', { fatal: false })

class Reader {
  pos: number
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.pos = start
  }

  /** A varint of at most 32 significant bits (tags, lengths, enums). */
  uint32(): number {
    const b = this.buf
    let result = 0
    let shift = 0
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError('truncated varint')
      const byte = b[this.pos++] as number
      if (shift < 32) result += (byte & 0x7f) * 2 ** shift
      if (byte < 0x80) return result > 0xffff_ffff ? result % TWO_32 : result
      shift += 7
    }
    throw new WireError('varint longer than 10 bytes')
  }

  /** An int64 varint: exact as a number when it fits 53 bits, else a bigint. */
  int64(): RawTimestamp {
    const b = this.buf
    let lo = 0
    let hi = 0
    let i = 0
    for (; i < 4; i++) {
      if (this.pos >= this.end) throw new WireError('truncated varint')
      const byte = b[this.pos++] as number
      lo = (lo | ((byte & 0x7f) << (i * 7))) >>> 0
      if (byte < 0x80) return lo
    }
    if (this.pos >= this.end) throw new WireError('truncated varint')
    let byte = b[this.pos++] as number
    lo = (lo | ((byte & 0x7f) << 28)) >>> 0
    hi = (byte & 0x7f) >> 4
    if (byte >= 0x80) {
      for (i = 0; i < 5; i++) {
        if (this.pos >= this.end) throw new WireError('truncated varint')
        byte = b[this.pos++] as number
        hi = (hi | ((byte & 0x7f) << (i * 7 + 3))) >>> 0
        if (byte < 0x80) break
      }
      if (byte >= 0x80) throw new WireError('varint longer than 10 bytes')
    }
    if (hi < 0x20_0000) return hi * TWO_32 + lo
    if (hi >= 0xffe0_0000 && (hi !== 0xffe0_0000 || lo !== 0)) {
      // Negative and at least -(2^53 - 1): exact as a double.
      return -((~hi >>> 0) * TWO_32 + (~lo >>> 0) + 1)
    }
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo))
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.int64()
        return
      case 1:
        this.advance(8)
        return
      case 2:
        this.advance(this.uint32())
        return
      case 5:
        this.advance(4)
        return
      default:
        throw new WireError(`unsupported wire type ${wireType}`)
    }
  }

  advance(n: number): void {
    if (this.pos + n > this.end) throw new WireError('truncated field')
    this.pos += n
  }

  string(): string {
    const n = this.uint32()
    this.advance(n)
    return decoder.decode(this.buf.subarray(this.pos - n, this.pos))
  }
}

function readTag(r: Reader, end: number): Tag {
  let key = ''
  let value = ''
  const sub = new Reader(r.buf, r.pos, end)
  while (sub.pos < end) {
    const tag = sub.uint32()
    const field = tag >>> 3
    if (field === 1 && (tag & 7) === 2) key = sub.string()
    else if (field === 2 && (tag & 7) === 2) value = sub.string()
    else sub.skip(tag & 7)
  }
  r.pos = end
  return { key, value }
}

function readSeries(r: Reader, end: number): SeriesWrite {
  const sub = new Reader(r.buf, r.pos, end)
  let metric = ''
  const tags: Tag[] = []
  const timestamps: RawTimestamp[] = []
  const valueChunks: Float64Array[] = []
  let valueCount = 0
  while (sub.pos < end) {
    const tag = sub.uint32()
    const field = tag >>> 3
    const wire = tag & 7
    if (field === 1 && wire === 2) {
      metric = sub.string()
    } else if (field === 2 && wire === 2) {
      const n = sub.uint32()
      const tagEnd = sub.pos + n
      if (tagEnd > end) throw new WireError('truncated tag')
      tags.push(readTag(sub, tagEnd))
    } else if (field === 3 && wire === 2) {
      const n = sub.uint32()
      const packedEnd = sub.pos + n
      if (packedEnd > end) throw new WireError('truncated timestamps')
      const packed = new Reader(sub.buf, sub.pos, packedEnd)
      while (packed.pos < packedEnd) timestamps.push(packed.int64())
      sub.pos = packedEnd
    } else if (field === 3 && wire === 0) {
      timestamps.push(sub.int64())
    } else if (field === 4 && wire === 2) {
      const n = sub.uint32()
      if (n % 8 !== 0) throw new WireError('packed values length is not a multiple of 8')
      sub.advance(n)
      const chunk = new Float64Array(n / 8)
      new Uint8Array(chunk.buffer).set(sub.buf.subarray(sub.pos - n, sub.pos))
      valueChunks.push(chunk)
      valueCount += chunk.length
    } else if (field === 4 && wire === 1) {
      sub.advance(8)
      const chunk = new Float64Array(1)
      new Uint8Array(chunk.buffer).set(sub.buf.subarray(sub.pos - 8, sub.pos))
      valueChunks.push(chunk)
      valueCount++
    } else {
      sub.skip(wire)
    }
  }
  r.pos = end
  let values: Float64Array
  if (valueChunks.length === 1) values = valueChunks[0] as Float64Array
  else {
    values = new Float64Array(valueCount)
    let off = 0
    for (const c of valueChunks) {
      values.set(c, off)
      off += c.length
    }
  }
  return { metric, tags, timestamps, values }
}

/** Decodes a serialized WriteRequest or WriteStreamRequest into the engine's WriteBatch. */
export function decodeWriteRequest(buf: Uint8Array): WriteBatch {
  const r = new Reader(buf, 0, buf.length)
  const series: SeriesWrite[] = []
  let precision: Precision = 'ms'
  while (r.pos < r.end) {
    const tag = r.uint32()
    const field = tag >>> 3
    const wire = tag & 7
    if (field === 1 && wire === 2) {
      const n = r.uint32()
      const end = r.pos + n
      if (end > r.end) throw new WireError('truncated series')
      series.push(readSeries(r, end))
    } else if (field === 2 && wire === 0) {
      const p = r.uint32()
      const known = PRECISIONS[p]
      if (!known) throw ValidationError.field('precision', `unknown precision ${p}`)
      precision = known
    } else {
      r.skip(wire)
    }
  }
  return { series, precision }
}
