/**
 * Prometheus remote write 1.0 and remote read (the SAMPLES response type): snappy block format
 * around protobuf messages of the `prometheus` package (prompb/remote.proto, types.proto).
 *
 * The messages are decoded by hand, without generated code: a write request is an ingest hot path,
 * and reading the few fields it has straight from the bytes allocates only the series' label
 * strings and two arrays per series. Sample values are copied as their 8 bytes, never through a
 * JavaScript number, so that Prometheus' staleness marker (a signalling NaN) keeps its bit pattern.
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { uncompressSync } from 'snappy'
import { ValidationError } from '../model/errors.js'
import type { Matcher, SeriesPoints, SeriesWrite, Tag } from '../model/types.js'

/** The label that carries the metric name. */
const NAME_LABEL = '__name__'

/** A body the server will not take, with the HTTP status that says why. */
export class BodyError extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.name = 'BodyError'
    this.status = status
  }
}

/**
 * Decompresses a snappy block. The block starts with the uncompressed length as a varint; it is
 * checked against maxBytes before anything is allocated, so a few hostile bytes cannot make the
 * server reserve gigabytes.
 */
export function snappyDecode(body: Uint8Array, maxBytes: number): Buffer {
  let declared = 0
  let shift = 1
  let i = 0
  for (; ; i++) {
    if (i >= body.length || i >= 5) throw new BodyError(400, 'cannot decompress the snappy block: bad length header')
    const b = body[i]!
    declared += (b & 0x7f) * shift
    shift *= 128
    if (b < 0x80) break
  }
  if (declared > maxBytes) {
    throw new BodyError(413, `the snappy block declares ${declared} bytes, more than the limit of ${maxBytes}`)
  }
  try {
    return uncompressSync(body, { asBuffer: true }) as Buffer
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new BodyError(400, `cannot decompress the snappy block: ${reason}`)
  }
}

/** Reads protobuf wire format from a buffer; every read checks the bounds of its message. */
class Reader {
  pos: number
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start
  }

  fail(what: string): never {
    throw new BodyError(400, `cannot decode the protobuf message: ${what} at byte ${this.pos}`)
  }

  /** A varint as a number; values beyond 2^53 (only a negative int64 here) go through bigint. */
  varint(): number {
    const buf = this.buf
    let result = 0
    let shift = 1
    for (let n = 0; n < 7; n++) {
      if (this.pos >= this.end) this.fail('truncated varint')
      const b = buf[this.pos++]!
      result += (b & 0x7f) * shift
      if (b < 0x80) return result
      shift *= 128
    }
    let big = BigInt(result)
    let bigShift = 49n
    for (let n = 7; n < 10; n++) {
      if (this.pos >= this.end) this.fail('truncated varint')
      const b = buf[this.pos++]!
      big |= BigInt(b & 0x7f) << bigShift
      if (b < 0x80) return Number(BigInt.asIntN(64, big))
      bigShift += 7n
    }
    return this.fail('varint longer than 10 bytes')
  }

  /** The end of a length-delimited field starting at pos. */
  lengthEnd(): number {
    const length = this.varint()
    const end = this.pos + length
    if (end > this.end) this.fail('length beyond the end of its message')
    return end
  }

  string(): string {
    const end = this.lengthEnd()
    const text = this.buf.toString('utf8', this.pos, end)
    this.pos = end
    return text
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WireType.Varint:
        this.varint()
        return
      case WireType.Bit64:
        this.pos += 8
        break
      case WireType.LengthDelimited:
        this.pos = this.lengthEnd()
        return
      case WireType.Bit32:
        this.pos += 4
        break
      default:
        this.fail(`unsupported wire type ${wireType}`)
    }
    if (this.pos > this.end) this.fail('truncated field')
  }
}

/** Prometheus' rule for label names: `[a-zA-Z_][a-zA-Z0-9_]*`. */
function isLabelName(name: string): boolean {
  if (name.length === 0) return false
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    const letter = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f
    if (!letter && !(i > 0 && c >= 0x30 && c <= 0x39)) return false
  }
  return true
}

export interface DecodedWrite {
  readonly series: SeriesWrite[]
  readonly samples: number
}

/** Reads a Label { name = 1; value = 2 } ending at end. */
function readLabel(r: Reader, end: number): { name: string; value: string } {
  let name = ''
  let value = ''
  while (r.pos < end) {
    const tag = r.varint()
    if (tag === 0x0a) name = r.string()
    else if (tag === 0x12) value = r.string()
    else r.skip(tag & 7)
  }
  return { name, value }
}

/**
 * Decodes one TimeSeries { labels = 1; samples = 2 (Sample { value = 1 double; timestamp = 2
 * int64 })); exemplars = 3; histograms = 4 } ending at end. Exemplars are skipped: they annotate
 * samples and V3 has nowhere to keep them. Native histograms are refused: dropping them silently
 * would lose data the sender believes stored.
 */
function readTimeSeries(r: Reader, end: number, index: number): SeriesWrite | undefined {
  const start = r.pos
  let sampleCount = 0
  // First pass: count the samples, so that their arrays are allocated once at their size.
  while (r.pos < end) {
    const tag = r.varint()
    if (tag === 0x12) sampleCount++
    else if (tag === 0x22) {
      throw ValidationError.field(
        `timeseries[${index}].histograms`,
        'native histograms cannot be stored; send float samples only (send_native_histograms: false)',
      )
    }
    r.skip(tag & 7)
  }
  r.pos = start
  let metric: string | undefined
  const tags: Tag[] = []
  const seen: string[] = []
  const timestamps = new Float64Array(sampleCount)
  const values = new Float64Array(sampleCount)
  const valueBytes = new Uint8Array(values.buffer)
  const buf = r.buf
  let n = 0
  let labelIndex = 0
  while (r.pos < end) {
    const tag = r.varint()
    if (tag === 0x0a) {
      const labelEnd = r.lengthEnd()
      const { name, value } = readLabel(r, labelEnd)
      const field = `timeseries[${index}].labels[${labelIndex}]`
      if (!isLabelName(name)) {
        throw ValidationError.field(`${field}.name`, `must match [a-zA-Z_][a-zA-Z0-9_]*, got ${JSON.stringify(name)}`)
      }
      if (seen.includes(name))
        throw ValidationError.field(`${field}.name`, `label ${JSON.stringify(name)} appears twice`)
      seen.push(name)
      // Prometheus treats a label with an empty value as absent.
      if (value !== '') {
        if (name === NAME_LABEL) metric = value
        else tags.push({ key: name, value })
      }
      labelIndex++
    } else if (tag === 0x12) {
      const sampleEnd = r.lengthEnd()
      // A field left out holds protobuf's default, 0, which is what the arrays start with.
      let timestamp = 0
      while (r.pos < sampleEnd) {
        const t = r.varint()
        if (t === 0x09) {
          if (r.pos + 8 > sampleEnd) r.fail('truncated double')
          const o = n * 8
          const p = r.pos
          valueBytes[o] = buf[p]!
          valueBytes[o + 1] = buf[p + 1]!
          valueBytes[o + 2] = buf[p + 2]!
          valueBytes[o + 3] = buf[p + 3]!
          valueBytes[o + 4] = buf[p + 4]!
          valueBytes[o + 5] = buf[p + 5]!
          valueBytes[o + 6] = buf[p + 6]!
          valueBytes[o + 7] = buf[p + 7]!
          r.pos = p + 8
        } else if (t === 0x10) timestamp = r.varint()
        else r.skip(t & 7)
      }
      timestamps[n] = timestamp
      n++
    } else r.skip(tag & 7)
  }
  if (metric === undefined) {
    throw ValidationError.field(
      `timeseries[${index}].labels`,
      'has no __name__ label: every series needs a metric name',
    )
  }
  if (n === 0) return undefined
  return { metric, tags, timestamps, values }
}

/**
 * Decodes a `prometheus.WriteRequest` { timeseries = 1; metadata = 3 } (metadata ignored). Series
 * without samples are left out. Throws BodyError for bytes that are not the message and
 * ValidationError, naming the field, for a series V3 cannot take.
 */
export function decodeWriteRequest(buf: Buffer): DecodedWrite {
  const r = new Reader(buf, 0, buf.length)
  const series: SeriesWrite[] = []
  let samples = 0
  let index = 0
  while (r.pos < r.end) {
    const tag = r.varint()
    if (tag === 0x0a) {
      const end = r.lengthEnd()
      const entry = readTimeSeries(r, end, index)
      r.pos = end
      if (entry !== undefined) {
        series.push(entry)
        samples += entry.timestamps.length
      }
      index++
    } else r.skip(tag & 7)
  }
  return { series, samples }
}

export const RESPONSE_SAMPLES = 0
export const RESPONSE_STREAMED_XOR_CHUNKS = 1

export interface RemoteQuery {
  readonly startMs: number
  readonly endMs: number
  readonly matchers: readonly Matcher[]
}

export interface DecodedRead {
  readonly queries: readonly RemoteQuery[]
  /** The response types the client accepts; empty means SAMPLES (remote read before 2.13). */
  readonly acceptedResponseTypes: readonly number[]
}

const MATCH_OPS = ['eq', 'neq', 'regex', 'not_regex'] as const

function readQuery(r: Reader, end: number, index: number): RemoteQuery {
  let startMs = 0
  let endMs = 0
  const matchers: Matcher[] = []
  while (r.pos < end) {
    const tag = r.varint()
    if (tag === 0x08) startMs = r.varint()
    else if (tag === 0x10) endMs = r.varint()
    else if (tag === 0x1a) {
      const matcherEnd = r.lengthEnd()
      let type = 0
      let name = ''
      let value = ''
      while (r.pos < matcherEnd) {
        const t = r.varint()
        if (t === 0x08) type = r.varint()
        else if (t === 0x12) name = r.string()
        else if (t === 0x1a) value = r.string()
        else r.skip(t & 7)
      }
      const op = MATCH_OPS[type]
      if (op === undefined) {
        throw ValidationError.field(
          `queries[${index}].matchers[${matchers.length}].type`,
          `unknown matcher type ${type}`,
        )
      }
      matchers.push({ key: name, value, op })
    } else r.skip(tag & 7)
  }
  return { startMs, endMs, matchers }
}

/** Decodes a `prometheus.ReadRequest` { queries = 1; accepted_response_types = 2 }. */
export function decodeReadRequest(buf: Buffer): DecodedRead {
  const r = new Reader(buf, 0, buf.length)
  const queries: RemoteQuery[] = []
  const acceptedResponseTypes: number[] = []
  while (r.pos < r.end) {
    const tag = r.varint()
    if (tag === 0x0a) {
      const end = r.lengthEnd()
      queries.push(readQuery(r, end, queries.length))
      r.pos = end
    } else if (tag === 0x10) acceptedResponseTypes.push(r.varint())
    else if (tag === 0x12) {
      // The packed form of the repeated enum.
      const end = r.lengthEnd()
      while (r.pos < end) acceptedResponseTypes.push(r.varint())
    } else r.skip(tag & 7)
  }
  return { queries, acceptedResponseTypes }
}

/**
 * Encodes a `prometheus.ReadResponse` { results = 1 (QueryResult { timeseries = 1 })}, one result
 * per query in order. Labels go out sorted by name with `__name__` first, as Prometheus sorts
 * them; values are written as their 8 bytes so that a staleness marker reaches the reader intact.
 */
export function encodeReadResponse(results: readonly (readonly SeriesPoints[])[]): Uint8Array {
  const w = new BinaryWriter()
  for (const series of results) {
    w.tag(1, WireType.LengthDelimited).fork()
    for (const s of series) {
      w.tag(1, WireType.LengthDelimited).fork()
      w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(NAME_LABEL)
      w.tag(2, WireType.LengthDelimited).string(s.metric).join()
      const tags = s.tags.slice().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      for (const t of tags) {
        w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(t.key)
        w.tag(2, WireType.LengthDelimited).string(t.value).join()
      }
      const bytes = new Uint8Array(s.values.buffer, s.values.byteOffset, s.values.byteLength)
      for (let i = 0; i < s.timestamps.length; i++) {
        w.tag(2, WireType.LengthDelimited).fork()
        w.tag(1, WireType.Bit64).raw(bytes.subarray(i * 8, i * 8 + 8))
        w.tag(2, WireType.Varint).int64(s.timestamps[i]!)
        w.join()
      }
      w.join()
    }
    w.join()
  }
  return w.finish()
}
