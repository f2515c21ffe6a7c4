/**
 * Prometheus remote write 1.0 and remote read (the SAMPLES response type): snappy block format
 * around protobuf messages of the `prometheus` package (prompb/remote.proto, types.proto).
 *
 * The messages are decoded by hand, without generated code: a write request is an ingest hot path,
 * and reading the few fields it has straight from the bytes into reused columns (WriteColumns)
 * allocates only the label strings of series not seen before. Sample values are copied as their 8
 * bytes, never through a JavaScript number, so that Prometheus' staleness marker (a signalling NaN)
 * keeps its bit pattern.
 */
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { ValidationError } from '../model/errors.js'
import type { Matcher, SeriesPoints, Tag } from '../model/types.js'
import { snappy } from './snappy.js'

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
    // Copying the output into a V8 buffer measured several times faster than handing over the
    // native one (an external buffer), for blocks of the size remote write sends.
    return snappy().uncompressSync(body, { asBuffer: true, copyOutputData: true }) as Buffer
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err)
    throw new BodyError(400, `cannot decompress the snappy block: ${reason}`)
  }
}

/** Strings up to this many bytes are interned; longer ones are rarely repeated. */
const MAX_INTERNED_BYTES = 64

function sameAscii(text: string, buf: Buffer, start: number, length: number): boolean {
  if (text.length !== length) return false
  for (let i = 0; i < length; i++) if (text.charCodeAt(i) !== buf[start + i]) return false
  return true
}

/** A label set seen before: a copy of its bytes, and its metric and frozen tags as decoded then. */
export interface KnownLabels {
  readonly view: DataView
  readonly metric: string
  readonly tags: Tag[]
  /** The label set that came after this one last time (see readTimeSeries). */
  next: KnownLabels | undefined
  /** A number the decoder's caller files the series under (see WriteColumns.known), with its table's epoch. */
  ref: number
  refEpoch: number
}

/**
 * Label sets seen before, found by their bytes. Prometheus sends every sample as a TimeSeries with
 * its whole label set, the same bytes scrape after scrape: a hit skips decoding and checking the
 * labels and hands out the same frozen tags array, which the engine's validation remembers. The
 * bytes are hashed and compared four at a time (about 45 reads for a set of 11 labels) instead of
 * being made into a string key, whose slice and hash took about a fifth of a worker's time on
 * remote write. Bounded: cleared when full.
 */
export class LabelSetCache {
  private readonly buckets = new Map<number, KnownLabels[]>()
  private size = 0

  constructor(private readonly maxEntries = 100_000) {}

  /** The label set whose bytes are view[start, end), if seen before; `hash` is hashBytes() of them. */
  find(view: DataView, start: number, end: number, hash: number): KnownLabels | undefined {
    const bucket = this.buckets.get(hash)
    if (bucket === undefined) return undefined
    for (const known of bucket) if (sameBytes(known.view, view, start, end)) return known
    return undefined
  }

  add(buf: Buffer, start: number, end: number, hash: number, metric: string, tags: Tag[]): KnownLabels {
    if (this.size >= this.maxEntries) {
      this.buckets.clear()
      this.size = 0
    }
    for (const tag of tags) Object.freeze(tag)
    const known: KnownLabels = {
      view: viewOf(Buffer.from(buf.subarray(start, end))),
      metric,
      tags: Object.freeze(tags) as Tag[],
      next: undefined,
      ref: 0,
      refEpoch: -1,
    }
    const bucket = this.buckets.get(hash)
    if (bucket === undefined) this.buckets.set(hash, [known])
    else bucket.push(known)
    this.size++
    return known
  }
}

function viewOf(buf: Buffer): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
}

/** A hash of view[start, end), four bytes at a time: the key LabelSetCache files label sets under. */
export function hashBytes(view: DataView, start: number, end: number): number {
  let hash = 0x811c9dc5 ^ (end - start)
  let i = start
  for (; i + 4 <= end; i += 4) hash = Math.imul(hash ^ view.getInt32(i, true), 0x01000193)
  for (; i < end; i++) hash = Math.imul(hash ^ view.getUint8(i), 0x01000193)
  return hash
}

function sameBytes(known: DataView, view: DataView, start: number, end: number): boolean {
  const length = end - start
  if (known.byteLength !== length) return false
  let i = 0
  // Eight bytes at a time, read as doubles: equal doubles have equal bits, except +0 and -0 (equal
  // as numbers) and NaNs (never equal), so a word that reads as one of those, or as unequal, is
  // compared as two integers.
  for (; i + 8 <= length; i += 8) {
    const word = known.getFloat64(i, true)
    if (word !== view.getFloat64(start + i, true) || word === 0) {
      if (known.getInt32(i, true) !== view.getInt32(start + i, true)) return false
      if (known.getInt32(i + 4, true) !== view.getInt32(start + i + 4, true)) return false
    }
  }
  for (; i + 4 <= length; i += 4) if (known.getInt32(i, true) !== view.getInt32(start + i, true)) return false
  for (; i < length; i++) if (known.getUint8(i) !== view.getUint8(start + i)) return false
  return true
}

/** Reads protobuf wire format from a buffer; every read checks the bounds of its message. */
class Reader {
  pos: number
  /** The label set of the series read last, when the cache holds it: its `next` is the guess for the next series. */
  lastKnown: KnownLabels | undefined
  /** The label readLabel read last, kept here rather than in a new object per label. */
  labelName = ''
  labelValue = ''
  /** The names of the labels of the series being read, to find a repeated one. */
  readonly seen: string[] = []
  /**
   * Short ASCII strings already decoded in this message, by a hash of their bytes: label names and
   * most label values repeat from series to series, and a lookup is cheaper than decoding again.
   */
  private readonly interned = new Map<number, string[]>()
  /** The buffer as a DataView, made on first use: label sets are hashed and compared through it. */
  private dataView: DataView | undefined

  constructor(
    readonly buf: Buffer,
    start: number,
    /** Where the message being read ends; enter() narrows it to a nested message. */
    public end: number,
  ) {
    this.pos = start
  }

  get view(): DataView {
    this.dataView ??= viewOf(this.buf)
    return this.dataView
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

  /**
   * Bounds every read to the nested message starting at pos (its length first) until leave(), so
   * that a nested length cannot make the reader run on into the next message.
   */
  enter(): number {
    const outer = this.end
    this.end = this.lengthEnd()
    return outer
  }

  /** Moves past the nested message and restores the bound enter() returned. */
  leave(outer: number): void {
    this.pos = this.end
    this.end = outer
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
    const start = this.pos
    this.pos = end
    const length = end - start
    if (length === 0) return ''
    if (length > MAX_INTERNED_BYTES) return this.buf.toString('utf8', start, end)
    const buf = this.buf
    let hash = 0x811c9dc5
    let ascii = true
    for (let i = start; i < end; i++) {
      const b = buf[i]!
      if (b >= 0x80) ascii = false
      hash = Math.imul(hash ^ b, 0x01000193)
    }
    if (!ascii) return buf.toString('utf8', start, end)
    const bucket = this.interned.get(hash)
    if (bucket !== undefined) {
      for (const known of bucket) if (sameAscii(known, buf, start, length)) return known
    }
    const text = buf.toString('latin1', start, end)
    if (bucket === undefined) this.interned.set(hash, [text])
    else bucket.push(text)
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

/**
 * The samples of a decoded write request, column by column: every timestamp in one array and every
 * value in another (its 8 bytes as sent, so that a staleness marker keeps its bits), and per entry
 * (a TimeSeries with samples) its metric, tags and range of samples. Nothing is allocated per
 * sample: Prometheus sends each sample as a TimeSeries of its own, and an object and two arrays for
 * each were garbage for the worker's collector. One instance is reused body after body (it keeps
 * the columns of the largest, which the body limit bounds); what decodeWriteRequest wrote is valid
 * until the next call.
 */
export class WriteColumns {
  timestamps = new Float64Array(1024)
  values = new Float64Array(1024)
  private valueBytes = new Uint8Array(this.values.buffer)
  /** Entry i holds samples [offsets[i], offsets[i + 1]). */
  offsets = new Int32Array(1025)
  readonly metrics: string[] = []
  readonly tags: (readonly Tag[])[] = []
  /** The cached label set of each entry, when the LabelSetCache had or took it. */
  readonly known: (KnownLabels | undefined)[] = []
  samples = 0
  entries = 0

  clear(): void {
    this.samples = 0
    this.entries = 0
    this.metrics.length = 0
    this.tags.length = 0
    this.known.length = 0
  }

  /** Appends a sample: its timestamp, and its value as the 8 bytes at buf[at, at + 8). */
  sample(timestamp: number, buf: Uint8Array, at: number): void {
    const n = this.samples
    if (n === this.timestamps.length) this.grow()
    this.timestamps[n] = timestamp
    const bytes = this.valueBytes
    const to = n * 8
    for (let k = 0; k < 8; k++) bytes[to + k] = buf[at + k]!
    this.samples = n + 1
  }

  /** Ends an entry: the samples appended since the last one are this series'. */
  entry(metric: string, tags: readonly Tag[], known: KnownLabels | undefined): void {
    const e = this.entries
    if (e + 1 === this.offsets.length) {
      const grown = new Int32Array(2 * this.offsets.length)
      grown.set(this.offsets)
      this.offsets = grown
    }
    this.offsets[e + 1] = this.samples
    this.metrics.push(metric)
    this.tags.push(tags)
    this.known.push(known)
    this.entries = e + 1
  }

  /** Drops the samples appended since the last entry ended. */
  dropSince(samples: number): void {
    this.samples = samples
  }

  private grow(): void {
    const timestamps = new Float64Array(2 * this.timestamps.length)
    timestamps.set(this.timestamps)
    const values = new Float64Array(2 * this.values.length)
    // As bytes, so that every NaN keeps its bits.
    new Uint8Array(values.buffer).set(this.valueBytes)
    this.timestamps = timestamps
    this.values = values
    this.valueBytes = new Uint8Array(values.buffer)
  }
}

/** Reads a Label { name = 1; value = 2 } ending at end into r.name and r.value. */
function readLabel(r: Reader): void {
  r.labelName = ''
  r.labelValue = ''
  while (r.pos < r.end) {
    const tag = r.varint()
    if (tag === 0x0a) r.labelName = r.string()
    else if (tag === 0x12) r.labelValue = r.string()
    else r.skip(tag & 7)
  }
}

/**
 * Decodes one TimeSeries { labels = 1; samples = 2 (Sample { value = 1 double; timestamp = 2
 * int64 })); exemplars = 3; histograms = 4 } ending at end. Exemplars are skipped: they annotate
 * samples and V3 has nowhere to keep them. Native histograms are refused: dropping them silently
 * would lose data the sender believes stored.
 * Its samples are appended to `out`, which gets an entry for the series when it has any.
 */
function readTimeSeries(r: Reader, index: number, headers: LabelSetCache | undefined, out: WriteColumns): void {
  const start = r.pos
  const firstSample = out.samples
  const end = r.end
  // The labels come first and together, as Prometheus writes them: their bytes find a series seen
  // before with its metric and frozen tags, already checked.
  let known: KnownLabels | undefined
  let labelsEnd = start
  let hash = 0
  const previous = r.lastKnown
  if (headers !== undefined) {
    // Senders write their series in the same order request after request: the set that followed
    // the previous series last time is compared in place first, without finding the labels' end
    // or hashing them. Its bytes are whole labels, so they match only where the series' labels
    // begin with exactly those; the byte after them must not start another label.
    const guess = previous?.next
    const guessEnd = guess === undefined ? 0 : start + guess.view.byteLength
    if (
      guess !== undefined &&
      guessEnd <= end &&
      (guessEnd === end || r.buf[guessEnd] !== 0x0a) &&
      sameBytes(guess.view, r.view, start, guessEnd)
    ) {
      known = guess
      r.pos = labelsEnd = guessEnd
    } else {
      while (r.pos < end && r.buf[r.pos] === 0x0a) {
        r.pos++
        r.pos = r.lengthEnd()
      }
      labelsEnd = r.pos
      if (labelsEnd > start) {
        hash = hashBytes(r.view, start, labelsEnd)
        known = headers.find(r.view, start, labelsEnd, hash)
      }
      if (known === undefined) r.pos = start
      else if (previous !== undefined) previous.next = known
    }
  }
  let metric: string | undefined = known?.metric
  const tags: Tag[] = known?.tags ?? []
  let labelIndex = 0
  /**
   * A label read after another field (a sample, an unknown field): the label bytes before that field,
   * which the cache would file the series under, are then not its whole label set.
   */
  let scattered = false
  while (r.pos < end) {
    const fieldAt = r.pos
    const tag = r.varint()
    if (tag === 0x0a) {
      // A label after the samples: the cached identity (if any) may not be the whole series.
      if (known !== undefined) {
        r.pos = start
        out.dropSince(firstSample)
        readTimeSeries(r, index, undefined, out)
        return
      }
      if (fieldAt >= labelsEnd) scattered = true
      const outer = r.enter()
      readLabel(r)
      r.leave(outer)
      const name = r.labelName
      const value = r.labelValue
      if (!isLabelName(name)) {
        throw ValidationError.field(
          `timeseries[${index}].labels[${labelIndex}].name`,
          `must match [a-zA-Z_][a-zA-Z0-9_]*, got ${JSON.stringify(name)}`,
        )
      }
      if (labelIndex > 0 && hasLabel(r.seen, labelIndex, name)) {
        throw ValidationError.field(
          `timeseries[${index}].labels[${labelIndex}].name`,
          `label ${JSON.stringify(name)} appears twice`,
        )
      }
      r.seen[labelIndex] = name
      // Prometheus treats a label with an empty value as absent.
      if (value !== '') {
        if (name === NAME_LABEL) metric = value
        else tags.push({ key: name, value })
      }
      labelIndex++
    } else if (tag === 0x12) {
      const outer = r.enter()
      // A field left out holds protobuf's default, 0.
      let timestamp = 0
      let valueAt = -1
      while (r.pos < r.end) {
        const t = r.varint()
        if (t === 0x09) {
          valueAt = r.pos
          if (valueAt + 8 > r.end) r.fail('truncated double')
          r.pos = valueAt + 8
        } else if (t === 0x10) timestamp = r.varint()
        else r.skip(t & 7)
      }
      r.leave(outer)
      if (valueAt < 0) out.sample(timestamp, ZERO_DOUBLE, 0)
      else out.sample(timestamp, r.buf, valueAt)
    } else if (tag === 0x22) {
      throw ValidationError.field(
        `timeseries[${index}].histograms`,
        'native histograms cannot be stored; send float samples only (send_native_histograms: false)',
      )
    } else r.skip(tag & 7)
  }
  if (metric === undefined) {
    throw ValidationError.field(
      `timeseries[${index}].labels`,
      'has no __name__ label: every series needs a metric name',
    )
  }
  if (known === undefined && !scattered && labelsEnd > start && headers !== undefined) {
    known = headers.add(r.buf, start, labelsEnd, hash, metric, tags)
    if (previous !== undefined) previous.next = known
  }
  r.lastKnown = known
  if (out.samples > firstSample) out.entry(metric, tags, known)
}

/** The bytes of a double 0, the value of a sample that leaves it out. */
const ZERO_DOUBLE = new Uint8Array(8)

function hasLabel(seen: readonly string[], count: number, name: string): boolean {
  for (let i = 0; i < count; i++) if (seen[i] === name) return true
  return false
}

/**
 * Decodes a `prometheus.WriteRequest` { timeseries = 1; metadata = 3 } (metadata ignored) into
 * `out`, which it clears first: an entry per TimeSeries with samples, in the order sent. With
 * headers, a series whose label bytes were seen before skips decoding and checking them, and gets
 * the same frozen tags array, which the engine's validation remembers too. Throws BodyError for
 * bytes that are not the message and ValidationError, naming the field, for a series V3 cannot take.
 */
export function decodeWriteRequest(buf: Buffer, out: WriteColumns, headers?: LabelSetCache): void {
  out.clear()
  const r = new Reader(buf, 0, buf.length)
  let index = 0
  while (r.pos < r.end) {
    const tag = r.varint()
    if (tag === 0x0a) {
      const outer = r.enter()
      readTimeSeries(r, index, headers, out)
      r.leave(outer)
      index++
    } else r.skip(tag & 7)
  }
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

function readQuery(r: Reader, index: number): RemoteQuery {
  let startMs = 0
  let endMs = 0
  const matchers: Matcher[] = []
  while (r.pos < r.end) {
    const tag = r.varint()
    if (tag === 0x08) startMs = r.varint()
    else if (tag === 0x10) endMs = r.varint()
    else if (tag === 0x1a) {
      const outer = r.enter()
      let type = 0
      let name = ''
      let value = ''
      while (r.pos < r.end) {
        const t = r.varint()
        if (t === 0x08) type = r.varint()
        else if (t === 0x12) name = r.string()
        else if (t === 0x1a) value = r.string()
        else r.skip(t & 7)
      }
      r.leave(outer)
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
      const outer = r.enter()
      queries.push(readQuery(r, queries.length))
      r.leave(outer)
    } else if (tag === 0x10) acceptedResponseTypes.push(r.varint())
    else if (tag === 0x12) {
      // The packed form of the repeated enum.
      const outer = r.enter()
      while (r.pos < r.end) acceptedResponseTypes.push(r.varint())
      r.leave(outer)
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
