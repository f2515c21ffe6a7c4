/**
 * Codecs of the internal peer contract (proto/v3storage/internal/v1/peer.proto): the write payload,
 * the request envelope as a receiver must check it, and the mapping between domain errors and
 * response statuses. Every decoder here takes bytes from another process and therefore throws a
 * typed error on bad input, never anything else.
 */
import { endianness } from 'node:os'
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire'
import {
  PeerKind,
  PeerRequest,
  PeerResponse,
  type PeerSeries,
  PeerStatus,
} from '../../gen/v3storage/internal/v1/peer.js'
import {
  DeadlineError,
  LimitError,
  NotFoundError,
  UnavailableError,
  V3Error,
  ValidationError,
} from '../model/errors.js'
import { isVersion } from '../model/hlc.js'
import { SeriesMemo } from '../model/series-key.js'
import type { SeriesPoints, Tag } from '../model/types.js'
import { varintSize, writeVarint } from '../model/varint.js'

/** The wire stores float64 little-endian; on such a host the arrays' own bytes are the wire bytes. */
const LITTLE_ENDIAN_HOST = endianness() === 'LE'

/** The wire bytes of `array`: a view of its memory on a little-endian host, a swapped copy otherwise. */
export function float64Bytes(array: Float64Array): Buffer {
  if (LITTLE_ENDIAN_HOST) return Buffer.from(array.buffer, array.byteOffset, array.byteLength)
  const out = Buffer.allocUnsafe(array.byteLength)
  for (let i = 0; i < array.length; i++) out.writeDoubleLE(array[i] as number, i * 8)
  return out
}

/**
 * An aligned Float64Array holding `bytes`, from `into` when given (a slice of one allocation for a
 * whole message) or fresh. Wire bytes sit at any offset of a received frame, and a Float64Array
 * view needs an offset that is a multiple of 8, so one copy is unavoidable; it is a memcpy, and it
 * keeps NaN payloads and the sign of zero because no value passes through a float register.
 */
export function float64Array(bytes: Uint8Array, into?: Float64Array): Float64Array {
  const out = into ?? new Float64Array(bytes.byteLength / 8)
  if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes)
  else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const outView = new DataView(out.buffer, out.byteOffset, out.byteLength)
    for (let i = 0; i < bytes.byteLength; i += 8) outView.setBigUint64(i, view.getBigUint64(i, true))
  }
  return out
}

/**
 * The point arrays of one decoded message, sliced out of one allocation as large as the message:
 * a write of a thousand series would otherwise allocate two thousand small ArrayBuffers, each a
 * native allocation that the garbage collector tracks and frees one by one.
 */
class PointArena {
  private readonly memory: Float64Array
  private readonly bytes: Uint8Array
  private used = 0

  constructor(messageBytes: number) {
    this.memory = new Float64Array(Math.floor(messageBytes / 8))
    this.bytes = new Uint8Array(this.memory.buffer)
  }

  /** The `length` bytes of `from` at `offset` (a whole number of doubles) as an aligned array. */
  copyRange(from: Uint8Array, offset: number, length: number): Float64Array {
    const n = length / 8
    if (n === 0) return new Float64Array(0)
    const source = from.subarray(offset, offset + length)
    if (!LITTLE_ENDIAN_HOST || this.used + n > this.memory.length) return float64Array(source)
    this.bytes.set(source, this.used * 8)
    const slice = this.memory.subarray(this.used, this.used + n)
    this.used += n
    return slice
  }
}

/**
 * One series entry of a peer write: its points and their write version (model/hlc.ts), absent or
 * 0 for none. A write request of a client is the same shape (SeriesWrite) with version unset.
 */
export interface PeerWriteEntry extends SeriesPoints {
  readonly version?: number
}

/**
 * A PeerSeries as SeriesPoints, with its points copied into aligned arrays. Throws a
 * ValidationError naming `field` when the point bytes are not whole doubles or their counts differ,
 * or when the metric or a tag key is empty.
 */
export function decodePeerSeries(series: PeerSeries, field = 'series'): SeriesPoints {
  checkIdentity(series.metric, series.tags, field)
  checkPointBytes(series.timestamps.byteLength, series.values.byteLength, field)
  return {
    metric: series.metric,
    tags: series.tags.map((t) => ({ key: t.key, value: t.value })),
    timestamps: float64Array(series.timestamps),
    values: float64Array(series.values),
  }
}

/** Throws a ValidationError naming the field when the metric or a tag key is empty. */
function checkIdentity(metric: string, tags: readonly Tag[], field: string): void {
  if (metric === '') throw ValidationError.field(`${field}.metric`, 'is empty')
  for (let i = 0; i < tags.length; i++) {
    if ((tags[i] as Tag).key === '') throw ValidationError.field(`${field}.tags[${i}].key`, 'is empty')
  }
}

/** Throws a ValidationError naming the field when the point bytes are not whole doubles or their counts differ. */
function checkPointBytes(timestampsBytes: number, valuesBytes: number, field: string): void {
  if (timestampsBytes % 8 !== 0) {
    throw ValidationError.field(`${field}.timestamps`, `${timestampsBytes} bytes is not a whole number of float64`)
  }
  if (valuesBytes % 8 !== 0) {
    throw ValidationError.field(`${field}.values`, `${valuesBytes} bytes is not a whole number of float64`)
  }
  if (timestampsBytes !== valuesBytes) {
    throw ValidationError.field(
      `${field}.values`,
      `${valuesBytes / 8} values for ${timestampsBytes / 8} timestamps; the counts must be equal`,
    )
  }
}

/** A length-delimited field: its tag byte (field numbers here are below 16), length and bytes. */
function fieldSize(length: number): number {
  return 1 + varintSize(length) + length
}

/**
 * What the peer write encoder takes of a series: a PeerWriteEntry, or a validated series (which
 * brings its canonical key, by which its encoded identity is cached).
 */
export interface PeerWriteSource extends PeerWriteEntry {
  readonly key?: string
}

/** How many series a PeerIdentityBytes or a PeerSeriesHeaders keeps before it starts again. */
const SERIES_CACHE_ENTRIES = 100_000

/**
 * The encoded identity (the metric and tag fields of a PeerSeries) of the series a coordinator
 * forwards, by canonical series key. A node forwards the same series in write after write; without
 * this, every write encodes a dozen short strings per series, each a call into the runtime, and
 * that costs more than copying the points. Bounded: it starts again when full. One per node.
 */
export class PeerIdentityBytes implements IdentitySource {
  private readonly known = new Map<string, Buffer>()

  of(series: PeerWriteSource): Buffer {
    const key = series.key
    if (key === undefined) return encodeIdentity(series.metric, series.tags)
    let bytes = this.known.get(key)
    if (bytes === undefined) {
      if (this.known.size >= SERIES_CACHE_ENTRIES) this.known.clear()
      bytes = encodeIdentity(series.metric, series.tags)
      this.known.set(key, bytes)
    }
    return bytes
  }
}

/** Where the peer series encoders take a series' encoded identity (its metric and tag fields) from. */
export interface IdentitySource {
  of(series: PeerWriteSource): Buffer
}

/**
 * The encoded identities of the series a node answers reads with, by the series' tags array: an
 * engine answers every read of a series with the tags array its index keeps, so each identity is
 * encoded once. Entries go with their arrays (a WeakMap). One per node's peer service.
 */
export class AnswerIdentities implements IdentitySource {
  private readonly memo = new SeriesMemo<Buffer>(encodeIdentity)

  of(series: PeerWriteSource): Buffer {
    return this.memo.get(series.metric, series.tags)
  }
}

/** Writes the tag and length of length-delimited field `field`; returns the offset of its bytes. */
function fieldHead(out: Buffer, at: number, field: number, length: number): number {
  out[at] = (field << 3) | 2
  return writeVarint(out, at + 1, length)
}

/** The metric and tag fields of a PeerSeries; proto3 leaves empty strings out, as the generated encoder does. */
function encodeIdentity(metric: string, tags: readonly Tag[]): Buffer {
  const textSize = (text: string) => (text === '' ? 0 : fieldSize(Buffer.byteLength(text)))
  const tagSize = (tag: Tag) => textSize(tag.key) + textSize(tag.value)
  let size = textSize(metric)
  for (const tag of tags) size += fieldSize(tagSize(tag))
  const out = Buffer.allocUnsafe(size)
  let at = 0
  const stringField = (field: number, text: string): void => {
    if (text === '') return
    at = fieldHead(out, at, field, Buffer.byteLength(text))
    at += out.write(text, at, 'utf8')
  }
  stringField(1, metric)
  for (const tag of tags) {
    at = fieldHead(out, at, 2, tagSize(tag))
    stringField(1, tag.key)
    stringField(2, tag.value)
  }
  return out
}

/** What writing a list of PeerSeries takes: each series' encoded identity and size, and the size of all. */
interface SeriesListLayout {
  readonly heads: readonly Buffer[]
  readonly sizes: readonly number[]
  /** The bytes of the list: each series as a length-delimited field 1. */
  readonly bytes: number
}

function layoutSeriesList(
  series: readonly PeerWriteSource[],
  version: number,
  identities: IdentitySource | undefined,
): SeriesListLayout {
  const heads = series.map((s) => (identities === undefined ? encodeIdentity(s.metric, s.tags) : identities.of(s)))
  const sizes = series.map((s, i) => {
    let size = heads[i]!.byteLength
    if (s.timestamps.byteLength > 0) size += fieldSize(s.timestamps.byteLength)
    if (s.values.byteLength > 0) size += fieldSize(s.values.byteLength)
    // The version is a double (field 5, wire type 1): a tag byte and 8 bytes, left out when 0.
    if ((s.version ?? version) !== 0) size += 9
    return size
  })
  let bytes = 0
  for (const size of sizes) bytes += fieldSize(size)
  return { heads, sizes, bytes }
}

/** Writes the series as `layout` measured them, from `at`; returns the offset after them. */
function writeSeriesList(
  out: Buffer,
  at: number,
  series: readonly PeerWriteSource[],
  version: number,
  layout: SeriesListLayout,
): number {
  const bytesField = (field: number, bytes: Uint8Array): void => {
    at = fieldHead(out, at, field, bytes.byteLength)
    out.set(bytes, at)
    at += bytes.byteLength
  }
  for (let i = 0; i < series.length; i++) {
    const s = series[i]!
    const head = layout.heads[i]!
    at = fieldHead(out, at, 1, layout.sizes[i]!)
    out.set(head, at)
    at += head.byteLength
    if (s.timestamps.byteLength > 0) bytesField(3, float64Bytes(s.timestamps))
    if (s.values.byteLength > 0) bytesField(4, float64Bytes(s.values))
    const v = s.version ?? version
    if (v !== 0) {
      out[at++] = (5 << 3) | 1
      at = out.writeDoubleLE(v, at)
    }
  }
  return at
}

/**
 * A message whose field 1 is `repeated PeerSeries`, written straight into one buffer of its exact
 * size: the body of a PEER_KIND_WRITE request (PeerWriteRequest), and the read answers of the same
 * shape (PeerLatestResponse, PeerRepairReadResponse), as decodePeerSeriesList reads all of them.
 * The generated encoder copies every point array into a chunk and then all chunks into the result,
 * and encodes every series' metric and tags again; on the forwarding path those copies and their
 * garbage cost more than the routing. The bytes are exactly what the generated encoders write (a
 * test compares them). Each series carries its own version, else `version` (0: none);
 * `identities` caches the encoded identities (PeerIdentityBytes of keyed series, AnswerIdentities
 * of an engine's answers).
 */
export function encodePeerWrite(
  series: readonly PeerWriteSource[],
  version = 0,
  identities?: IdentitySource,
): Uint8Array {
  const layout = layoutSeriesList(series, version, identities)
  const out = Buffer.allocUnsafe(layout.bytes)
  const end = writeSeriesList(out, 0, series, version, layout)
  if (end !== layout.bytes) throw new Error(`BUG: encoded ${end} bytes of a ${layout.bytes}-byte write`)
  return out
}

/**
 * A PeerQueryResponse of raw points or final aggregates: one PeerSelectorResult per selector (its
 * series as encodePeerWrite writes them), no partials, in one buffer, every point copied once.
 */
export function encodePeerQueryAnswer(
  results: readonly (readonly SeriesPoints[])[],
  identities: IdentitySource,
): Uint8Array {
  const layouts = results.map((list) => layoutSeriesList(list, 0, identities))
  let total = 0
  for (const layout of layouts) total += fieldSize(layout.bytes)
  const out = Buffer.allocUnsafe(total)
  let at = 0
  results.forEach((list, i) => {
    const layout = layouts[i]!
    at = writeSeriesList(out, fieldHead(out, at, 1, layout.bytes), list, 0, layout)
  })
  if (at !== total) throw new Error(`BUG: encoded ${at} bytes of a ${total}-byte query answer`)
  return out
}

/**
 * The identities (metric and tags) of series a node has received before, by the bytes that
 * encode them: the same series arrives with the same bytes in write after write, and handing back
 * the same frozen tags array lets the engine's validated-series cache skip the name checks, the
 * sort and the key. Bounded: it starts again when full. Each reader keeps its own: a node's peer
 * service for the writes it receives, its cluster engine for the answers to its reads.
 */
export class PeerSeriesHeaders {
  private readonly known = new Map<string, { readonly metric: string; readonly tags: readonly Tag[] }>()

  /** The identity whose bytes, read as latin1, are `bytes`. */
  get(bytes: string): { readonly metric: string; readonly tags: readonly Tag[] } | undefined {
    return this.known.get(bytes)
  }

  /** Keeps an identity by its bytes (as latin1), its tags frozen; returns it as kept. */
  set(bytes: string, metric: string, tags: readonly Tag[]): { readonly metric: string; readonly tags: readonly Tag[] } {
    if (this.known.size >= SERIES_CACHE_ENTRIES) this.known.clear()
    // The tags too: every answer and write of the series shares them, and caches keyed by the array
    // (its encoded header, its canonical key) would go stale if one were changed.
    const identity = { metric, tags: Object.freeze(tags.map((t) => Object.freeze({ key: t.key, value: t.value }))) }
    this.known.set(bytes, identity)
    return identity
  }
}

/**
 * Decodes a message whose field 1 is `repeated PeerSeries`, passing over its other fields: the
 * body of a PEER_KIND_WRITE request (PeerWriteRequest), a PeerLatestResponse, or one
 * PeerSelectorResult's series. Hand-written rather than the generated decoder because it must
 * reject invalid UTF-8 (the generated one substitutes U+FFFD, which would store a different series
 * than the sender meant) and because it copies each point array once, straight from the frame
 * into its aligned array. It walks the frame by offsets, allocating nothing for the fields it
 * passes over. With `headers`, a series whose identity bytes were seen before gets the same
 * frozen tags array as then, without decoding them. Throws a ValidationError on any defect.
 */
export function decodePeerSeriesList(bytes: Uint8Array, headers?: PeerSeriesHeaders): PeerWriteEntry[] {
  const out: PeerWriteEntry[] = []
  const frame = new Frame(bytes)
  const arena = new PointArena(bytes.byteLength)
  try {
    eachFirstField(frame, (start, end) => out.push(readSeries(frame, start, end, out.length, headers, arena)))
  } catch (err) {
    if (err instanceof ValidationError) throw err
    throw ValidationError.field(`series[${out.length}]`, `cannot decode the series: ${(err as Error).message}`)
  }
  return out
}

/**
 * The series of each selector of a PeerQueryResponse that holds raw points or final aggregates, in
 * order (see decodePeerSeriesList); partial states, which such a response does not carry, are
 * passed over.
 */
export function decodePeerQuerySeries(bytes: Uint8Array, headers?: PeerSeriesHeaders): PeerWriteEntry[][] {
  const results: PeerWriteEntry[][] = []
  const frame = new Frame(bytes)
  try {
    eachFirstField(frame, (start, end) => results.push(decodePeerSeriesList(frame.bytes.subarray(start, end), headers)))
  } catch (err) {
    if (err instanceof ValidationError) throw err.renamed('series', `results[${results.length}].series`)
    throw ValidationError.field(`results[${results.length}]`, `cannot decode: ${(err as Error).message}`)
  }
  return results
}

/**
 * Calls `visit` with the bounds of each occurrence of field 1 (length-delimited: the repeated
 * message of every list this file decodes), passing over the other fields.
 */
function eachFirstField(frame: Frame, visit: (start: number, end: number) => void): void {
  while (frame.pos < frame.end) {
    const tag = frame.varint()
    if (tag === ((1 << 3) | 2)) {
      const length = frame.varint()
      const start = frame.pos
      frame.advance(length)
      visit(start, frame.pos)
    } else frame.skip(tag & 7)
  }
}

/** A received frame read by offsets: the hot path of decodePeerSeriesList, which allocates nothing per field. */
class Frame {
  pos = 0
  readonly end: number
  /** A plain view of the frame: a Buffer's subarray builds a Buffer, which costs several times more. */
  readonly bytes: Uint8Array
  readonly view: DataView
  readonly buffer: Buffer

  constructor(bytes: Uint8Array) {
    this.end = bytes.byteLength
    this.bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    this.buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  /** A varint of at most 32 bits: tags and lengths. */
  varint(): number {
    let value = 0
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= this.end) throw new Error('premature EOF')
      const byte = this.bytes[this.pos++] as number
      value += (byte & 0x7f) * 2 ** shift
      if (byte < 0x80) return value
    }
    throw new Error('invalid varint')
  }

  advance(length: number): void {
    if (this.pos + length > this.end) throw new Error('premature EOF')
    this.pos += length
  }

  skip(wireType: number): void {
    if (wireType === WireType.Varint) this.varint()
    else if (wireType === WireType.Bit64) this.advance(8)
    else if (wireType === WireType.LengthDelimited) this.advance(this.varint())
    else if (wireType === WireType.Bit32) this.advance(4)
    else throw new Error(`unsupported wire type ${wireType}`)
  }
}

function readSeries(
  frame: Frame,
  start: number,
  end: number,
  index: number,
  headers: PeerSeriesHeaders | undefined,
  arena: PointArena,
): PeerWriteEntry {
  // The encoder writes metric and tags first: the bytes before the first other field are the
  // series identity, looked up whole when known and decoded only when new.
  let identityEnd = -1
  let scattered = false
  let timestamps = -1
  let timestampsBytes = 0
  let values = -1
  let valuesBytes = 0
  let version = 0
  frame.pos = start
  while (frame.pos < end) {
    const at = frame.pos
    const tag = frame.varint()
    const no = tag >>> 3
    const wireType = tag & 7
    if (no === 1 || no === 2) {
      if (identityEnd >= 0) scattered = true
    } else if (identityEnd < 0) identityEnd = at
    if (wireType === WireType.LengthDelimited && (no === 3 || no === 4)) {
      const length = frame.varint()
      if (no === 3) {
        timestamps = frame.pos
        timestampsBytes = length
      } else {
        values = frame.pos
        valuesBytes = length
      }
      frame.advance(length)
    } else if (no === 5 && wireType === WireType.Bit64) {
      frame.advance(8)
      version = frame.view.getFloat64(frame.pos - 8, true)
    } else frame.skip(wireType)
  }
  if (frame.pos !== end) throw new Error('premature EOF')
  if (identityEnd < 0) identityEnd = end
  const cacheable = headers !== undefined && !scattered && identityEnd > start
  const key = cacheable ? frame.buffer.toString('latin1', start, identityEnd) : ''
  let identity = cacheable ? headers.get(key) : undefined
  if (identity === undefined) {
    // New identity bytes (or identity fields after the points): decoded strictly and checked.
    const decoded = readIdentity(frame.bytes.subarray(start, scattered ? end : identityEnd), seriesField(index))
    identity = cacheable ? headers.set(key, decoded.metric, decoded.tags) : decoded
  }
  checkPointBytes(timestampsBytes, valuesBytes, seriesField(index))
  if (!isVersion(version)) {
    throw ValidationError.field(
      `${seriesField(index)}.version`,
      `must be a non-negative integer below 2^53, got ${version}`,
    )
  }
  return {
    metric: identity.metric,
    tags: identity.tags as Tag[],
    timestamps: arena.copyRange(frame.bytes, timestamps, timestampsBytes),
    values: arena.copyRange(frame.bytes, values, valuesBytes),
    version,
  }
}

function seriesField(index: number): string {
  return `series[${index}]`
}

/** The metric and tags of a PeerSeries, read from its fields 1 and 2 (others passed over) and checked. */
function readIdentity(bytes: Uint8Array, field: string): { metric: string; tags: Tag[] } {
  const reader = new BinaryReader(bytes)
  let metric = ''
  const tags: Tag[] = []
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag()
    if (wireType === WireType.LengthDelimited && no === 1) metric = strictString(reader, `${field}.metric`)
    else if (wireType === WireType.LengthDelimited && no === 2)
      tags.push(readTag(new BinaryReader(reader.bytes()), `${field}.tags[${tags.length}]`))
    else reader.skip(wireType, no)
  }
  checkIdentity(metric, tags, field)
  return { metric, tags }
}

function readTag(reader: BinaryReader, field: string): Tag {
  let key = ''
  let value = ''
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag()
    if (no === 1 && wireType === WireType.LengthDelimited) key = strictString(reader, `${field}.key`)
    else if (no === 2 && wireType === WireType.LengthDelimited) value = strictString(reader, `${field}.value`)
    else reader.skip(wireType, no)
  }
  return { key, value }
}

function strictString(reader: BinaryReader, field: string): string {
  try {
    return reader.string(true)
  } catch (err) {
    // A bounds error is a truncated message, reported by the caller; only bad text is this field's.
    if (err instanceof TypeError) throw ValidationError.field(field, 'is not valid UTF-8')
    throw err
  }
}

/** The body field of PeerRequest and of PeerResponse (peer.proto). */
const REQUEST_BODY_FIELD = 7
const RESPONSE_BODY_FIELD = 5

/**
 * Splits an envelope into the bytes of its other fields and a view of its body field (the last
 * occurrence, as protobuf decodes a repeated scalar field). The generated decoders copy a bytes
 * field into a new Buffer, and a peer write's body is the whole write: decoding the envelope
 * without the body and viewing the body in the frame saves that copy, and the garbage collections
 * that such copies bring on by adding to the process's external memory. The scan stops where the
 * generated decoder stops (an end-group tag or tag 0); it throws on a truncated field, as that does.
 */
function splitBody(frame: Uint8Array, bodyField: number): { head: Uint8Array; body: Buffer } {
  const reader = new BinaryReader(frame)
  let bodyStart = 0
  let bodyEnd = 0
  const cut: [number, number][] = []
  while (reader.pos < reader.len) {
    const start = reader.pos
    const tag = reader.uint32()
    const wireType = tag & 7
    if (wireType === WireType.EndGroup || tag === 0) break
    if (tag >>> 3 === bodyField && wireType === WireType.LengthDelimited) {
      const length = reader.uint32()
      bodyStart = reader.pos
      bodyEnd = bodyStart + length
      if (bodyEnd > reader.len) throw new RangeError(`premature EOF in field ${bodyField}`)
      reader.pos = bodyEnd
      cut.push([start, bodyEnd])
    } else reader.skip(wireType)
  }
  const body = Buffer.from(frame.buffer, frame.byteOffset + bodyStart, bodyEnd - bodyStart)
  if (cut.length === 0) return { head: frame, body }
  // Earlier releases put the body last: the head is then a view of the bytes before it.
  const last = cut[cut.length - 1]!
  if (cut.length === 1 && last[1] === frame.byteLength) return { head: frame.subarray(0, last[0]), body }
  const parts: Uint8Array[] = []
  let at = 0
  for (const [from, to] of cut) {
    parts.push(frame.subarray(at, from))
    at = to
  }
  parts.push(frame.subarray(at))
  return { head: Buffer.concat(parts), body }
}

/** PeerRequest.decode, with the body a view of `frame` instead of a copy (see splitBody). */
export function decodePeerRequest(frame: Uint8Array): PeerRequest {
  const { head, body } = splitBody(frame, REQUEST_BODY_FIELD)
  return { ...PeerRequest.decode(head), body }
}

/** PeerResponse.decode, with the body a view of `frame` instead of a copy (see splitBody). */
export function decodePeerResponse(frame: Uint8Array): PeerResponse {
  const { head, body } = splitBody(frame, RESPONSE_BODY_FIELD)
  return { ...PeerResponse.decode(head), body }
}

/**
 * A request from its frames (see PeerFrames): the envelope alone, its body, if any, inside it (as a
 * sender of an earlier release encodes it), or the envelope and then the body in a frame of its
 * own. Throws on any other number of frames, or on a body given both ways.
 */
export function decodeRequestFrames(frames: readonly Uint8Array[]): PeerRequest {
  return decodeFrames(frames, decodePeerRequest)
}

/** A response from its frames, as decodeRequestFrames reads a request's. */
export function decodeResponseFrames(frames: readonly Uint8Array[]): PeerResponse {
  return decodeFrames(frames, decodePeerResponse)
}

/** The envelope of `frames` decoded, with the body of its second frame (a view) when there is one. */
function decodeFrames<T extends { readonly body: Uint8Array }>(
  frames: readonly Uint8Array[],
  decodeEnvelope: (frame: Uint8Array) => T,
): T {
  const [envelope, body] = frames
  if (envelope === undefined || frames.length > 2) throw new Error(`${frames.length} frames instead of 1 or 2`)
  const decoded = decodeEnvelope(envelope)
  if (body === undefined) return decoded
  if (decoded.body.byteLength > 0) throw new Error('a body both in the envelope and in a frame of its own')
  return { ...decoded, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength) }
}

/** PeerKind values a receiver accepts: every named kind but UNSPECIFIED, read from the generated enum. */
const KNOWN_KINDS: ReadonlySet<number> = new Set(
  Object.values(PeerKind).filter((v): v is number => typeof v === 'number' && v > 0),
)

/** A frame that is not a valid PeerRequest; requestId is set when the frame named one, so it can be answered. */
export class PeerFrameError extends ValidationError {
  readonly requestId: number

  constructor(requestId: number, field: string, description: string) {
    super([{ field, description }])
    this.name = 'PeerFrameError'
    this.requestId = requestId
  }
}

/**
 * Checks a decoded request against the rules the contract states. `routingId` is the identity of
 * the connection it came on; a request naming another sender is rejected, since replies and the
 * receiver's per-sender bounds are keyed by that identity.
 */
export function checkPeerRequest(request: PeerRequest, routingId: Uint8Array): PeerRequest {
  const id = request.requestId
  if (id === 0) throw new PeerFrameError(0, 'request_id', 'is 0')
  if (!KNOWN_KINDS.has(request.kind)) throw new PeerFrameError(id, 'kind', `${request.kind} is not a known PeerKind`)
  if (request.sender === '') throw new PeerFrameError(id, 'sender', 'is empty')
  if (!Buffer.from(request.sender).equals(routingId)) {
    throw new PeerFrameError(id, 'sender', `${request.sender} is not the routing id of its connection`)
  }
  if (request.deadlineMs < 0) throw new PeerFrameError(id, 'deadline_ms', `${request.deadlineMs} is negative`)
  if (request.sequence === 0) throw new PeerFrameError(id, 'sequence', 'is 0')
  return request
}

/** An unexpected failure on a peer, or a peer answer that breaks the contract. */
export class PeerInternalError extends Error {
  /** The node the failure came from. */
  readonly node: string

  constructor(node: string, message: string) {
    super(message)
    this.name = 'PeerInternalError'
    this.node = node
  }
}

/** The error fields of the response that reports `err`. */
export function errorResponseFields(err: unknown): Pick<PeerResponse, 'status' | 'message' | 'violations' | 'limit'> {
  const message = err instanceof Error ? err.message : String(err)
  if (err instanceof ValidationError) {
    return {
      status: PeerStatus.PEER_STATUS_INVALID_ARGUMENT,
      message,
      violations: err.violations.map((v) => ({ field: v.field, description: v.description })),
    }
  }
  if (err instanceof LimitError) {
    return {
      status: PeerStatus.PEER_STATUS_RESOURCE_EXHAUSTED,
      message,
      violations: [],
      limit: { limit: err.limit, value: err.value, reason: err.reason },
    }
  }
  if (err instanceof V3Error) {
    const status = {
      invalid_argument: PeerStatus.PEER_STATUS_INVALID_ARGUMENT,
      limit_exceeded: PeerStatus.PEER_STATUS_RESOURCE_EXHAUSTED,
      not_found: PeerStatus.PEER_STATUS_NOT_FOUND,
      unavailable: PeerStatus.PEER_STATUS_UNAVAILABLE,
      deadline_exceeded: PeerStatus.PEER_STATUS_DEADLINE_EXCEEDED,
    }[err.code]
    return { status, message, violations: [] }
  }
  return { status: PeerStatus.PEER_STATUS_INTERNAL, message, violations: [] }
}

/**
 * The error a failed response stands for: the domain error the handler on `node` threw, with the
 * same message (and violations or limit), so the server maps it to the status a single node would
 * give. Anything else becomes a PeerInternalError naming the node.
 */
export function responseError(response: PeerResponse, node: string): Error {
  const message = response.message
  switch (response.status) {
    case PeerStatus.PEER_STATUS_INVALID_ARGUMENT: {
      const err = new ValidationError(response.violations.map((v) => ({ field: v.field, description: v.description })))
      if (response.violations.length === 0) err.message = message
      return err
    }
    case PeerStatus.PEER_STATUS_RESOURCE_EXHAUSTED:
      if (response.limit !== undefined)
        return new LimitError(response.limit.limit, response.limit.value, response.limit.reason)
      return new LimitError('peer', 0, message)
    case PeerStatus.PEER_STATUS_UNAVAILABLE:
      return new UnavailableError(message)
    case PeerStatus.PEER_STATUS_DEADLINE_EXCEEDED:
      return new DeadlineError(message)
    case PeerStatus.PEER_STATUS_NOT_FOUND:
      return new NotFoundError(message)
    case PeerStatus.PEER_STATUS_INTERNAL:
      return new PeerInternalError(node, `node ${node} failed: ${message}`)
    default:
      return new PeerInternalError(node, `node ${node} answered with status ${response.status}: ${message}`)
  }
}
