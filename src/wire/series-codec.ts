/**
 * A hand-written protobuf codec for the messages that carry points: WriteRequest on the way in and
 * QueryResponse, QueryStreamResponse and LatestResponse on the way out. They all hold
 * `repeated SeriesPoints series = 1`, so one codec serves them.
 *
 * The ts-proto code in gen/ is correct for these messages but not suited to them: it decodes int64
 * as number and throws above 2^53, which nanosecond timestamps are, and it goes through a BigInt
 * or a string per timestamp. This codec reads packed varints straight into a Float64Array, copies
 * packed doubles in one move, and keeps a timestamp as bigint only when it does not fit a double.
 * It lives beside the client because both the client and the server use it.
 */
import { endianness } from 'node:os'
import { ValidationError } from '../model/errors.js'
import { SeriesMemo } from '../model/series-key.js'
import type { RawTimestamp, Tag } from '../model/types.js'
import { varintSize, writeVarint } from '../model/varint.js'

/** One series as the codec reads it; timestamps are a Float64Array unless one did not fit a double. */
export interface WireSeries {
  readonly metric: string
  readonly tags: Tag[]
  readonly timestamps: Float64Array | RawTimestamp[]
  readonly values: Float64Array
}

/** One series as the codec writes it. */
export interface WireSeriesInput {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly timestamps: ArrayLike<RawTimestamp>
  readonly values: ArrayLike<number>
}

/**
 * Recently seen series headers (the metric and tag fields of a SeriesPoints, as bytes) with their
 * decoded form. Writers send the same series again and again; a hit costs one latin1 slice and a
 * lookup instead of decoding every string, and hands out the same frozen tags array each time,
 * which lets validation remember that it already checked it. Bounded: cleared when full.
 */
export class SeriesHeaderCache {
  private readonly entries = new Map<string, { readonly metric: string; readonly tags: Tag[] }>()
  constructor(private readonly maxEntries = 100_000) {}

  get(bytes: string): { readonly metric: string; readonly tags: Tag[] } | undefined {
    return this.entries.get(bytes)
  }

  set(bytes: string, metric: string, tags: Tag[]): void {
    if (this.entries.size >= this.maxEntries) this.entries.clear()
    for (const tag of tags) Object.freeze(tag)
    this.entries.set(bytes, { metric, tags: Object.freeze(tags) as Tag[] })
  }
}

/**
 * The encoded metric and tag fields of series a server sends again and again (the engine hands out
 * the same tags array for a series every time), keyed by that array: a response copies the bytes
 * instead of encoding every string. Entries go with their arrays (a WeakMap).
 */
export class EncodedHeaderCache extends SeriesMemo<Buffer> {
  constructor() {
    super(encodedHeader)
  }
}

/** The metric and tag fields of a series as the encoder writes them. */
function encodedHeader(metric: string, tags: readonly Tag[]): Buffer {
  const sizes = seriesSizes({ metric, tags, timestamps: [], values: [] }, 'series')
  const w = new Writer(Buffer.allocUnsafe(sizes.series))
  writeHeader(w, { metric, tags }, sizes)
  return w.buf
}

/** A WriteRequest: the series and the raw Precision and Consistency enum numbers (0 when absent). */
export interface WireWriteRequest {
  readonly series: WireSeries[]
  readonly precision: number
  readonly consistency: number
}

const LITTLE_ENDIAN = endianness() === 'LE'
// A leading U+FEFF in a protobuf string is text, not a byte-order mark: it stays.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A malformed message: truncated, an impossible wire type, or a string that is not UTF-8. */
function malformed(field: string, description: string): ValidationError {
  return ValidationError.field(field, description)
}

/**
 * Names, tags and values are short and nearly always ASCII, and TextDecoder costs more per call than
 * a latin1 slice, which reads ASCII the same; anything else goes through the strict decoder.
 */
function decodeUtf8(buf: Buffer, start: number, end: number, field: string): string {
  let ascii = true
  for (let i = start; i < end; i++) {
    if (buf[i]! >= 0x80) {
      ascii = false
      break
    }
  }
  if (ascii) return buf.toString('latin1', start, end)
  try {
    return utf8.decode(buf.subarray(start, end))
  } catch {
    throw malformed(field, 'not valid UTF-8')
  }
}

class Reader {
  pos: number
  readonly end: number
  constructor(
    readonly buf: Buffer,
    start: number,
    end: number,
  ) {
    this.pos = start
    this.end = end
  }

  /** A varint read as uint32 (higher bits dropped, as protobuf does): tags, lengths, enum values. */
  uint32(field: string): number {
    let result = 0
    let shift = 0
    while (this.pos < this.end) {
      const b = this.buf[this.pos++]!
      if (shift < 28) {
        result |= (b & 0x7f) << shift
      } else if (shift === 28) {
        result |= (b & 0x0f) << 28
      }
      if ((b & 0x80) === 0) return result >>> 0
      shift += 7
      if (shift >= 70) break
    }
    throw malformed(field, 'malformed varint')
  }

  /** Skips the value of a field of the given wire type. */
  skip(wireType: number, field: string): void {
    switch (wireType) {
      case 0:
        this.int64(field)
        return
      case 1:
        this.need(8, field)
        this.pos += 8
        return
      case 2: {
        const len = this.uint32(field)
        this.need(len, field)
        this.pos += len
        return
      }
      case 5:
        this.need(4, field)
        this.pos += 4
        return
      default:
        throw malformed(field, `unsupported wire type ${wireType}`)
    }
  }

  need(n: number, field: string): void {
    if (this.end - this.pos < n) throw malformed(field, 'message truncated')
  }

  /** A length-delimited field's extent; the reader moves past it. */
  bytes(field: string): [number, number] {
    const len = this.uint32(field)
    this.need(len, field)
    const start = this.pos
    this.pos += len
    return [start, this.pos]
  }

  string(field: string): string {
    const [start, end] = this.bytes(field)
    return decodeUtf8(this.buf, start, end, field)
  }

  /**
   * A signed 64-bit varint. Values below 2^49 (7 bytes) are summed as numbers, which is exact; longer
   * ones, including every negative value (10 bytes in two's complement), go through BigInt and stay
   * bigint only when they do not fit a double exactly.
   */
  int64(field: string): RawTimestamp {
    const buf = this.buf
    let value = 0
    let scale = 1
    const start = this.pos
    for (let i = 0; i < 7 && this.pos < this.end; i++) {
      const b = buf[this.pos++]!
      value += (b & 0x7f) * scale
      if ((b & 0x80) === 0) return value
      scale *= 128
    }
    this.pos = start
    let big = 0n
    let shift = 0n
    while (this.pos < this.end) {
      const b = buf[this.pos++]!
      big |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) {
        const signed = BigInt.asIntN(64, big)
        return signed >= MIN_SAFE && signed <= MAX_SAFE ? Number(signed) : signed
      }
      shift += 7n
      if (shift >= 70n) break
    }
    throw malformed(field, 'malformed varint')
  }
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER)
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/**
 * Where some of a series' points sit in the message: a packed run, or one unpacked element, which
 * reads the same way (a varint, or 8 bytes of double).
 */
interface Segment {
  readonly start: number
  readonly end: number
}

/** A series after the first pass: its identity decoded, its points located and counted. */
interface SeriesLayout {
  readonly path: string
  metric: string
  tags: Tag[]
  readonly timestamps: Segment[]
  readonly values: Segment[]
  timestampCount: number
  valueCount: number
}

/** The field names of each message by field number, for the error when a known field comes with another wire type. */
const TAG_FIELDS: readonly (string | undefined)[] = [undefined, 'key', 'value']
const SERIES_FIELDS: readonly (string | undefined)[] = [undefined, 'metric', 'tags', 'timestamps', 'values']
const SERIES_LIST_FIELDS: readonly (string | undefined)[] = [undefined, 'series']
const WRITE_REQUEST_FIELDS: readonly (string | undefined)[] = [undefined, 'series', 'precision', 'consistency']

/**
 * Skips a field this decoder does not read. An unknown field number is skipped, as protobuf
 * requires; a known one with a wire type it cannot have (a parser would misread it) is an error
 * naming the field.
 */
function skipUnknown(r: Reader, tag: number, path: string, fields: readonly (string | undefined)[]): void {
  const name = fields[tag >>> 3]
  if (name !== undefined) {
    throw malformed(
      path === '' ? name : `${path}.${name}`,
      `came with wire type ${tag & 7}, which this field does not take`,
    )
  }
  r.skip(tag & 7, path === '' ? 'request' : path)
}

function decodeTag(r: Reader, path: string): Tag {
  let key = ''
  let value = ''
  while (r.pos < r.end) {
    const tag = r.uint32(path)
    switch (tag) {
      case 0x0a:
        key = r.string(`${path}.key`)
        break
      case 0x12:
        value = r.string(`${path}.value`)
        break
      default:
        skipUnknown(r, tag, path, TAG_FIELDS)
    }
  }
  return { key, value }
}

/** First pass over one SeriesPoints: decodes metric and tags, locates and counts the points. */
function layoutSeries(r: Reader, path: string, headers?: SeriesHeaderCache): SeriesLayout {
  const layout: SeriesLayout = {
    path,
    metric: '',
    tags: [],
    timestamps: [],
    values: [],
    timestampCount: 0,
    valueCount: 0,
  }
  const buf = r.buf
  // The metric and tag fields usually lead the message: look their bytes up in the cache.
  let headerKey: string | undefined
  let headerEnd = r.pos
  let shared = false
  if (headers) {
    headerEnd = headerSpanEnd(buf, r.pos, r.end)
    if (headerEnd > r.pos) {
      headerKey = buf.toString('latin1', r.pos, headerEnd)
      const known = headers.get(headerKey)
      if (known) {
        layout.metric = known.metric
        layout.tags = known.tags
        shared = true
        r.pos = headerEnd
      }
    }
  }
  let interleaved = false
  while (r.pos < r.end) {
    const fieldStart = r.pos
    const tag = r.uint32(path)
    switch (tag) {
      case 0x0a:
        if (fieldStart >= headerEnd) interleaved = true
        layout.metric = r.string(`${path}.metric`)
        break
      case 0x12: {
        if (fieldStart >= headerEnd) interleaved = true
        if (shared) {
          // A tag after the cached header: the shared array stays as it is.
          layout.tags = [...layout.tags]
          shared = false
        }
        const [start, end] = r.bytes(`${path}.tags`)
        layout.tags.push(decodeTag(new Reader(buf, start, end), `${path}.tags[${layout.tags.length}]`))
        break
      }
      case 0x1a: {
        // Packed timestamps: one per byte without the continuation bit.
        const [start, end] = r.bytes(`${path}.timestamps`)
        let count = 0
        for (let i = start; i < end; i++) if (buf[i]! < 0x80) count++
        layout.timestampCount += count
        layout.timestamps.push({ start, end })
        break
      }
      case 0x18: {
        // Unpacked timestamps: proto3 parsers must accept both encodings of a repeated scalar.
        const start = r.pos
        r.int64(`${path}.timestamps`)
        layout.timestamps.push({ start, end: r.pos })
        layout.timestampCount++
        break
      }
      case 0x22: {
        const field = `${path}.values`
        const [start, end] = r.bytes(field)
        if ((end - start) % 8 !== 0) throw malformed(field, 'packed doubles not a multiple of 8 bytes')
        layout.values.push({ start, end })
        layout.valueCount += (end - start) / 8
        break
      }
      case 0x21:
        r.need(8, `${path}.values`)
        layout.values.push({ start: r.pos, end: r.pos + 8 })
        r.pos += 8
        layout.valueCount++
        break
      default:
        skipUnknown(r, tag, path, SERIES_FIELDS)
    }
  }
  if (headers && headerKey !== undefined && !shared && !interleaved) headers.set(headerKey, layout.metric, layout.tags)
  return layout
}

/**
 * Reads a packed run of varints into out from index at; returns the index after the last one, or
 * -1 at the first varint longer than 7 bytes (a negative or a nanosecond timestamp), which the
 * caller then reads the slow way. Values below 2^49 are summed exactly as doubles.
 */
function readPackedFast(buf: Buffer, start: number, end: number, out: Float64Array, at: number): number {
  // The first four bytes gather in an int32 (28 bits), the next three in another (21 bits): integer
  // shifts instead of a multiplication per byte. A millisecond timestamp takes six bytes.
  let pos = start
  outer: while (pos < end) {
    // Six bytes, a millisecond timestamp of these decades, in one step.
    if (pos + 6 <= end && buf[pos + 4]! >= 0x80 && buf[pos + 5]! < 0x80) {
      const b0 = buf[pos]!
      const b1 = buf[pos + 1]!
      const b2 = buf[pos + 2]!
      const b3 = buf[pos + 3]!
      if ((b0 & b1 & b2 & b3) >= 0x80) {
        const lo = (b0 & 0x7f) | ((b1 & 0x7f) << 7) | ((b2 & 0x7f) << 14) | ((b3 & 0x7f) << 21)
        out[at++] = lo + ((buf[pos + 4]! & 0x7f) | (buf[pos + 5]! << 7)) * 268435456
        pos += 6
        continue
      }
    }
    let b = buf[pos++]!
    let lo = b & 0x7f
    if (b < 0x80) {
      out[at++] = lo
      continue
    }
    for (let shift = 7; shift < 28; shift += 7) {
      if (pos >= end) return -1
      b = buf[pos++]!
      lo |= (b & 0x7f) << shift
      if (b < 0x80) {
        out[at++] = lo
        continue outer
      }
    }
    let hi = 0
    for (let shift = 0; shift < 21; shift += 7) {
      if (pos >= end) return -1
      b = buf[pos++]!
      hi |= (b & 0x7f) << shift
      if (b < 0x80) {
        out[at++] = lo + hi * 268435456
        continue outer
      }
    }
    return -1
  }
  return at
}

/** Every timestamp of a series the slow way, for a series that holds a long varint. */
function readTimestampsSlow(buf: Buffer, layout: SeriesLayout): RawTimestamp[] {
  const field = `${layout.path}.timestamps`
  const out: RawTimestamp[] = []
  for (const segment of layout.timestamps) {
    const r = new Reader(buf, segment.start, segment.end)
    while (r.pos < r.end) out.push(r.int64(field))
  }
  return out
}

/**
 * Second pass: every series' points go into one Float64Array for the timestamps and one for the
 * values of the whole message, each series a view of its part. Allocating a typed array costs
 * microseconds, more than decoding a small series, so one pair per message rather than per series.
 */
function fillPoints(buf: Buffer, layouts: readonly SeriesLayout[]): WireSeries[] {
  let timestampTotal = 0
  let valueTotal = 0
  for (const layout of layouts) {
    timestampTotal += layout.timestampCount
    valueTotal += layout.valueCount
  }
  const timestamps = new Float64Array(timestampTotal)
  const values = new Float64Array(valueTotal)
  const valueBytes = new Uint8Array(values.buffer)
  let tsAt = 0
  let valueAt = 0
  return layouts.map((layout) => {
    const tsStart = tsAt
    let slow = false
    for (const segment of layout.timestamps) {
      const next = readPackedFast(buf, segment.start, segment.end, timestamps, tsAt)
      if (next < 0) {
        slow = true
        break
      }
      tsAt = next
    }
    tsAt = tsStart + layout.timestampCount
    const valueStart = valueAt
    for (const segment of layout.values) {
      if (LITTLE_ENDIAN) {
        valueBytes.set(buf.subarray(segment.start, segment.end), valueAt * 8)
        valueAt += (segment.end - segment.start) / 8
      } else {
        for (let i = segment.start; i < segment.end; i += 8) values[valueAt++] = buf.readDoubleLE(i)
      }
    }
    return {
      metric: layout.metric,
      tags: layout.tags,
      timestamps: slow ? readTimestampsSlow(buf, layout) : timestamps.subarray(tsStart, tsAt),
      values: values.subarray(valueStart, valueAt),
    }
  })
}

/** Where the leading run of metric (1) and tag (2) fields of a SeriesPoints ends; start when there is none. */
function headerSpanEnd(buf: Buffer, start: number, end: number): number {
  let p = start
  while (p < end && (buf[p] === 0x0a || buf[p] === 0x12)) {
    let len = 0
    let shift = 0
    let q = p + 1
    for (;;) {
      if (q >= end || shift > 28) return p
      const b = buf[q++] as number
      len += (b & 0x7f) * 2 ** shift
      if (b < 0x80) break
      shift += 7
    }
    if (q + len > end) return p
    p = q + len
  }
  return p
}

/**
 * Decodes the series of a message, and with writeFields the enum fields of a WriteRequest:
 * precision (2) and consistency (3). The enum numbers are returned as they came; convert.ts checks them.
 */
function decode(bytes: Uint8Array, writeFields: boolean, headers?: SeriesHeaderCache): WireWriteRequest {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const r = new Reader(buf, 0, buf.length)
  const layouts: SeriesLayout[] = []
  let precision = 0
  let consistency = 0
  while (r.pos < r.end) {
    const tag = r.uint32('request')
    if (tag === 0x0a) {
      const path = `series[${layouts.length}]`
      const [start, end] = r.bytes(path)
      layouts.push(layoutSeries(new Reader(buf, start, end), path, headers))
    } else if (writeFields && tag === 0x10) {
      // Enums are int32: a negative number comes as a 64-bit varint and reads back negative.
      precision = r.uint32('precision') | 0
    } else if (writeFields && tag === 0x18) {
      consistency = r.uint32('consistency') | 0
    } else {
      skipUnknown(r, tag, '', writeFields ? WRITE_REQUEST_FIELDS : SERIES_LIST_FIELDS)
    }
  }
  return { series: fillPoints(buf, layouts), precision, consistency }
}

/** Decodes a WriteRequest (or WriteStreamRequest). Throws ValidationError naming the field when malformed. */
export function decodeWriteRequest(bytes: Uint8Array, headers?: SeriesHeaderCache): WireWriteRequest {
  return decode(bytes, true, headers)
}

/** Decodes a QueryResponse, QueryStreamResponse or LatestResponse: their `series` field. */
export function decodeSeriesList(bytes: Uint8Array, headers?: SeriesHeaderCache): WireSeries[] {
  return decode(bytes, false, headers).series
}

/**
 * UTF-8 length of a string. Names and tags are short and ASCII, where a loop over the characters
 * beats a call into Buffer.byteLength.
 */
function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s)
  return s.length
}

function int64Size(t: RawTimestamp): number {
  if (typeof t === 'number') return t >= 0 ? varintSize(t) : 10
  if (t < 0n) return 10
  let size = 1
  let v = t
  while (v >= 128n) {
    v >>= 7n
    size++
  }
  return size
}

function checkTimestamp(t: RawTimestamp, field: string): void {
  if (typeof t === 'bigint') {
    if (t < -(2n ** 63n) || t >= 2n ** 63n) throw ValidationError.field(field, 'does not fit a signed 64-bit integer')
  } else if (Number.isInteger(t) && !Number.isSafeInteger(t)) {
    // Nanoseconds since the epoch as a number (Date.now() * 1e6) land here: a double has lost them.
    throw ValidationError.field(field, `${t} is beyond ±2^53 and not exact as a number; pass it as a bigint`)
  } else if (!Number.isSafeInteger(t)) {
    throw ValidationError.field(field, `must be an integer, got ${t}`)
  }
}

interface Sizes {
  readonly tags: number[]
  readonly timestamps: number
  readonly series: number
}

function seriesSizes(s: WireSeriesInput, path: string): Sizes {
  if (s.timestamps.length !== s.values.length) {
    throw ValidationError.field(
      `${path}.values`,
      `has ${s.values.length} values for ${s.timestamps.length} timestamps; the counts must be equal`,
    )
  }
  // Types a caller without TypeScript may get wrong: the encoder would size and write them apart.
  if (typeof s.metric !== 'string')
    throw ValidationError.field(`${path}.metric`, `must be a string, got ${typeof s.metric}`)
  const metricBytes = utf8Length(s.metric)
  let size = metricBytes > 0 ? 1 + varintSize(metricBytes) + metricBytes : 0
  const tags: number[] = []
  for (const [j, tag] of s.tags.entries()) {
    if (typeof tag?.key !== 'string' || typeof tag.value !== 'string') {
      const field = typeof tag?.key !== 'string' ? 'key' : 'value'
      throw ValidationError.field(`${path}.tags[${j}].${field}`, `must be a string, got ${typeof tag?.[field]}`)
    }
    const k = utf8Length(tag.key)
    const v = utf8Length(tag.value)
    const tagSize = (k > 0 ? 1 + varintSize(k) + k : 0) + (v > 0 ? 1 + varintSize(v) + v : 0)
    tags.push(tagSize)
    size += 1 + varintSize(tagSize) + tagSize
  }
  let timestamps = 0
  const ts = s.timestamps
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i]!
    // The common case inline: a non-negative safe integer.
    if (typeof t === 'number' && t >= 0 && t <= Number.MAX_SAFE_INTEGER && Math.floor(t) === t) {
      timestamps += varintSize(t)
    } else {
      checkTimestamp(t, `${path}.timestamps[${i}]`)
      timestamps += int64Size(t)
    }
  }
  const n = s.values.length
  // Values in a plain array are checked: setFloat64 would store null as 0 and '1.5' as 1.5.
  if (!(s.values instanceof Float64Array)) {
    for (let i = 0; i < n; i++) {
      const v = s.values[i]
      if (typeof v !== 'number') {
        throw ValidationError.field(`${path}.values[${i}]`, `must be a number, got ${v === null ? 'null' : typeof v}`)
      }
    }
  }
  if (n > 0) size += 1 + varintSize(timestamps) + timestamps + 1 + varintSize(n * 8) + n * 8
  return { tags, timestamps, series: size }
}

class Writer {
  pos = 0
  private readonly view: DataView
  constructor(readonly buf: Buffer) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  /** A non-negative integer below 2^53. */
  varint(n: number): void {
    this.pos = writeVarint(this.buf, this.pos, n)
  }

  /** Any int64, through BigInt: negative values take 10 bytes in two's complement. */
  int64(t: RawTimestamp): void {
    let v = BigInt.asUintN(64, BigInt(t))
    while (v >= 128n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80
      v >>= 7n
    }
    this.buf[this.pos++] = Number(v)
  }

  string(tag: number, s: string): void {
    if (s.length === 0) return
    const len = utf8Length(s)
    this.buf[this.pos++] = tag
    this.varint(len)
    if (len === s.length) {
      // ASCII: one byte per character.
      const buf = this.buf
      let pos = this.pos
      for (let i = 0; i < len; i++) buf[pos++] = s.charCodeAt(i)
      this.pos = pos
    } else {
      this.pos += this.buf.write(s, this.pos, 'utf8')
    }
  }

  /** Packed doubles: a Float64Array in one copy where the platform is little-endian, anything else one by one. */
  doubles(values: ArrayLike<number>): void {
    if (LITTLE_ENDIAN && values instanceof Float64Array) {
      this.buf.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), this.pos)
      this.pos += values.byteLength
      return
    }
    const view = this.view
    let pos = this.pos
    for (let i = 0; i < values.length; i++) {
      view.setFloat64(pos, values[i]!, true)
      pos += 8
    }
    this.pos = pos
  }
}

function writeHeader(w: Writer, s: { readonly metric: string; readonly tags: readonly Tag[] }, sizes: Sizes): void {
  w.string(0x0a, s.metric)
  s.tags.forEach((tag, i) => {
    w.buf[w.pos++] = 0x12
    w.varint(sizes.tags[i]!)
    w.string(0x0a, tag.key)
    w.string(0x12, tag.value)
  })
}

/** The integers whose varint takes six bytes, [2^35, 2^42): milliseconds from 1971 to 2109. */
const SIX_BYTES_MIN = 2 ** 35
const SIX_BYTES_END = 2 ** 42

/**
 * The packed timestamps, with the buffer and position in locals, for the thousands of points of a
 * raw answer: the six-byte varint of a millisecond timestamp of these decades written without
 * loops, any other through writeVarint.
 */
function writeTimestamps(w: Writer, ts: ArrayLike<RawTimestamp>, n: number): void {
  const buf = w.buf
  let pos = w.pos
  for (let i = 0; i < n; i++) {
    const t = ts[i]!
    if (typeof t !== 'number' || t < 0) {
      w.pos = pos
      w.int64(t)
      pos = w.pos
      continue
    }
    if (t >= SIX_BYTES_MIN && t < SIX_BYTES_END) {
      // A store keeps the low 8 bits of each value.
      const lo = t >>> 0
      const hi = (t - lo) / 4294967296
      buf[pos] = lo | 0x80
      buf[pos + 1] = (lo >>> 7) | 0x80
      buf[pos + 2] = (lo >>> 14) | 0x80
      buf[pos + 3] = (lo >>> 21) | 0x80
      buf[pos + 4] = (lo >>> 28) | (hi << 4) | 0x80
      buf[pos + 5] = hi >>> 3
      pos += 6
    } else pos = writeVarint(buf, pos, t)
  }
  w.pos = pos
}

function writeSeries(w: Writer, s: WireSeriesInput, sizes: Sizes, header: Buffer | undefined): void {
  w.buf[w.pos++] = 0x0a
  w.varint(sizes.series)
  if (header) {
    header.copy(w.buf, w.pos)
    w.pos += header.length
  } else {
    writeHeader(w, s, sizes)
  }
  const n = s.values.length
  if (n === 0) return
  w.buf[w.pos++] = 0x1a
  w.varint(sizes.timestamps)
  writeTimestamps(w, s.timestamps, n)
  w.buf[w.pos++] = 0x22
  w.varint(n * 8)
  w.doubles(s.values)
}

function encode(
  series: readonly WireSeriesInput[],
  precision: number,
  consistency: number,
  headers?: EncodedHeaderCache,
  prefixBytes?: (size: number) => number,
): Buffer {
  const cached = headers ? series.map((s) => headers.get(s.metric, s.tags)) : undefined
  const sizes = series.map((s, i) => {
    const header = cached?.[i]
    // With the header's bytes known, only the points are sized.
    if (!header) return seriesSizes(s, `series[${i}]`)
    const points = seriesSizes({ metric: '', tags: [], timestamps: s.timestamps, values: s.values }, `series[${i}]`)
    return { tags: [], timestamps: points.timestamps, series: header.length + points.series }
  })
  let total = (precision !== 0 ? 1 + varintSize(precision) : 0) + (consistency !== 0 ? 1 + varintSize(consistency) : 0)
  for (const size of sizes) total += 1 + varintSize(size.series) + size.series
  const prefix = prefixBytes?.(total) ?? 0
  const out = Buffer.allocUnsafe(prefix + total)
  const w = new Writer(prefix === 0 ? out : out.subarray(prefix))
  series.forEach((s, i) => {
    writeSeries(w, s, sizes[i]!, cached?.[i])
  })
  if (precision !== 0) {
    w.buf[w.pos++] = 0x10
    w.varint(precision)
  }
  if (consistency !== 0) {
    w.buf[w.pos++] = 0x18
    w.varint(consistency)
  }
  if (w.pos !== total) throw new Error(`BUG: encoded ${w.pos} bytes, sized ${total}`)
  return out
}

/**
 * Encodes a WriteRequest (or WriteStreamRequest) with the Precision and Consistency enum numbers; 0
 * leaves a field out. Throws ValidationError naming the field for what cannot be encoded at all: a
 * timestamp that is not an integer, or unequal counts of timestamps and values.
 */
export function encodeWriteRequest(series: readonly WireSeriesInput[], precision: number, consistency = 0): Buffer {
  return encode(series, precision, consistency)
}

/**
 * Encodes a WriteRequest behind prefixBytes(size) free bytes, size being the WriteRequest's own, for
 * the message that carries it to write its field header there: wrapping it then copies nothing.
 * headers, when given, keeps each series' encoded metric and tags for the next request.
 */
export function encodeWriteRequestBehind(
  series: readonly WireSeriesInput[],
  precision: number,
  consistency: number,
  headers: EncodedHeaderCache | undefined,
  prefixBytes: (size: number) => number,
): Buffer {
  return encode(series, precision, consistency, headers, prefixBytes)
}

/** Encodes a QueryResponse, QueryStreamResponse or LatestResponse. */
export function encodeSeriesList(series: readonly WireSeriesInput[], headers?: EncodedHeaderCache): Buffer {
  return encode(series, 0, 0, headers)
}

/**
 * The encoded size of one SeriesPoints inside a series list, points excluded: what a chunk of the
 * series costs before its first point. Used to cut streamed results under the message size limit.
 */
export function seriesOverheadBytes(s: WireSeriesInput): number {
  const sizes = seriesSizes({ metric: s.metric, tags: s.tags, timestamps: [], values: [] }, 'series')
  // The field tag, a length prefix of at most 5 bytes, and the two packed-field headers (a tag and
  // a length prefix of at most 5 bytes each).
  return 1 + 5 + sizes.series + 2 * (1 + 5)
}

/** The encoded size of one point of a raw or aggregated result: its timestamp varint and its double. */
export function pointBytes(timestampMs: number): number {
  return int64Size(timestampMs) + 8
}
