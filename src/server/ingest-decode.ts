/**
 * Decoding an ingest body (gzip or snappy, line protocol or a remote-write protobuf) into a compact
 * form that crosses from a worker thread to the main thread cheaply: every timestamp in one
 * Float64Array and every value in another (transferred, not copied, with their bits: a staleness
 * marker stays the NaN it was), plus per series a small integer id and its offsets.
 *
 * A series' metric and tags cross only the first time that worker sees it: both sides keep a table
 * of the series seen so far, the worker's SeriesIds and the main thread's SeriesDirectory, grown by
 * the definitions each answer carries. The directory freezes the tags once, so the engine is handed
 * the same frozen array for the same series on every request and its validation cache hits.
 */
import { gunzipSync } from 'node:zlib'
import { type FieldViolation, ValidationError } from '../model/errors.js'
import type { SeriesWrite, Tag } from '../model/types.js'
import { normalTimestamps, type Points, sortDedup } from '../model/validate.js'
import { type LinePrecision, PrefixCache, parseLineProtocol } from './line-protocol.js'
import { BodyError, decodeWriteRequest, LabelSetCache, snappyDecode, WriteColumns } from './prom-remote.js'

/**
 * A request body as it came off the socket: its chunks (each owning its memory, so that they can be
 * handed to a worker without copying) and their total size. Joining them is the worker's work.
 */
export interface BodyChunks {
  readonly chunks: readonly Uint8Array[]
  readonly size: number
}

/** The body in one buffer: the chunk itself when there is one, else a copy of them all. */
export function joinChunks(body: BodyChunks): Buffer {
  const [only] = body.chunks
  if (body.chunks.length === 1 && only !== undefined) return Buffer.from(only.buffer, only.byteOffset, only.byteLength)
  return Buffer.concat(body.chunks, body.size)
}

/** A body to decode; `id` pairs the answer with it. */
export type IngestJob =
  | {
      readonly id: number
      readonly kind: 'line'
      readonly body: BodyChunks
      readonly gzip: boolean
      readonly maxBytes: number
      readonly precision: LinePrecision
      readonly nowMs: number
    }
  | { readonly id: number; readonly kind: 'remote'; readonly body: BodyChunks; readonly maxBytes: number }

/** Why a body was refused, as plain data: errors do not cross threads with their class. */
export type DecodeFailure =
  | { readonly kind: 'body'; readonly status: number; readonly message: string }
  | { readonly kind: 'validation'; readonly violations: readonly FieldViolation[] }
  | { readonly kind: 'other'; readonly message: string }

/** The series a worker saw for the first time while decoding one body. */
export interface NewSeries {
  /** The worker emptied its table before this body: ids start again from 0. */
  readonly reset: boolean
  /** Tag sets, numbered on from the last one defined. */
  readonly tagSets: readonly Tag[][]
  /** Series, numbered on from the last one defined: a metric and the number of its tag set. */
  readonly metrics: readonly string[]
  readonly metricTagSets: readonly number[]
}

/** The points of a decoded body, series by series. */
export interface PackedWrite {
  /** The series id of each entry. */
  readonly ids: Int32Array
  /** Entry i holds points [offsets[i], offsets[i + 1]). */
  readonly offsets: Int32Array
  readonly timestamps: Float64Array
  readonly values: Float64Array
  /** Line protocol: the line where each entry first appears. */
  readonly firstLines?: Int32Array
  /** Points in the body as sent; a merge (see EntryMerger) may keep fewer. */
  readonly points: number
  /**
   * Set when the entries are in the engine's normal form (see WriteBatch.normalized): one entry per
   * series, timestamps integer milliseconds, storable and strictly ascending. Remote write only.
   */
  readonly normalized?: true
  /** Set when entries were merged: for each entry, the index of the body's first entry of its series. */
  readonly firstEntries?: Int32Array
}

export interface IngestAnswer {
  readonly id: number
  readonly defined: NewSeries
  readonly packed?: PackedWrite
  readonly failure?: DecodeFailure
}

/** What an IngestDecoder makes of a body on its own thread. */
export type Decoded = { readonly defined: NewSeries } & ({ readonly packed: PackedWrite } | { readonly error: unknown })

/** The answer a worker sends for a decoded body: the points, or why the body was refused, as plain data. */
export function answerOf(id: number, d: Decoded): IngestAnswer {
  if ('packed' in d) return { id, defined: d.defined, packed: d.packed }
  return { id, defined: d.defined, failure: failureOf(d.error) }
}

/** The error a main-thread decode would have thrown, from its description. */
export function failureError(f: DecodeFailure): Error {
  if (f.kind === 'body') return new BodyError(f.status, f.message)
  if (f.kind === 'validation') return new ValidationError(f.violations)
  return new Error(`cannot decode the body in a worker: ${f.message}`)
}

function failureOf(err: unknown): DecodeFailure {
  if (err instanceof BodyError) return { kind: 'body', status: err.status, message: err.message }
  if (err instanceof ValidationError) return { kind: 'validation', violations: err.violations }
  return { kind: 'other', message: err instanceof Error ? err.message : String(err) }
}

/** The refusal for a gzip body that does not inflate within maxBytes, or at all. */
export function gzipError(err: Error, maxBytes: number): BodyError {
  if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
    return new BodyError(413, `the body inflates to more than the limit of ${maxBytes} bytes`)
  }
  return new BodyError(400, `cannot inflate the gzip body: ${err.message}`)
}

function gunzipBounded(body: Uint8Array, maxBytes: number): Buffer {
  try {
    return gunzipSync(body, { maxOutputLength: maxBytes })
  } catch (err) {
    throw gzipError(err as Error, maxBytes)
  }
}

/**
 * The worker's side of the series table: an id per series (metric and tags array) it has seen. The
 * tags arrays come from the parsers' caches (PrefixCache, LabelSetCache), which hand out the
 * same array for the same series, so they are found by identity. Bounded: when full it empties at
 * the start of the next body, never during one, so that the ids of a body are all defined by then.
 */
export class SeriesIds {
  private readonly tagSets = new Map<readonly Tag[], { readonly id: number; readonly metrics: Map<string, number> }>()
  private nextTagSet = 0
  private nextSeries = 0
  /** Counts the times the table emptied: an id learnt before is valid while the epoch is the same. */
  epoch = 0
  private defined: { reset: boolean; tagSets: Tag[][]; metrics: string[]; metricTagSets: number[] } = {
    reset: false,
    tagSets: [],
    metrics: [],
    metricTagSets: [],
  }

  constructor(private readonly maxSeries = 100_000) {}

  begin(): void {
    const reset = this.nextSeries >= this.maxSeries
    if (reset) {
      this.tagSets.clear()
      this.nextTagSet = 0
      this.nextSeries = 0
      this.epoch++
    }
    this.defined = { reset, tagSets: [], metrics: [], metricTagSets: [] }
  }

  idOf(metric: string, tags: readonly Tag[]): number {
    let set = this.tagSets.get(tags)
    if (set === undefined) {
      set = { id: this.nextTagSet++, metrics: new Map() }
      this.tagSets.set(tags, set)
      this.defined.tagSets.push(tags.slice())
    }
    let id = set.metrics.get(metric)
    if (id === undefined) {
      id = this.nextSeries++
      set.metrics.set(metric, id)
      this.defined.metrics.push(metric)
      this.defined.metricTagSets.push(set.id)
    }
    return id
  }

  /** What this body defined, to send with its answer (or its failure). */
  end(): NewSeries {
    return this.defined
  }
}

/**
 * The main thread's side of one worker's series table. Each tag set is frozen once, so the engine
 * sees one frozen array per series for as long as the table keeps it.
 */
export class SeriesDirectory {
  private tagSets: (readonly Tag[])[] = []
  private metrics: string[] = []
  private tags: (readonly Tag[])[] = []

  learn(n: NewSeries): void {
    if (n.reset) {
      this.tagSets = []
      this.metrics = []
      this.tags = []
    }
    for (const set of n.tagSets) {
      for (const tag of set) Object.freeze(tag)
      this.tagSets.push(Object.freeze(set))
    }
    for (let i = 0; i < n.metrics.length; i++) {
      const tags = this.tagSets[n.metricTagSets[i]!]
      if (tags === undefined) throw new Error('BUG: an ingest worker named a tag set it never defined')
      this.metrics.push(n.metrics[i]!)
      this.tags.push(tags)
    }
  }

  /** The engine's series for a packed body, their points views of its two arrays. */
  series(p: PackedWrite): SeriesWrite[] {
    const out: SeriesWrite[] = new Array(p.ids.length)
    for (let i = 0; i < p.ids.length; i++) {
      const id = p.ids[i]!
      const metric = this.metrics[id]
      const tags = this.tags[id]
      if (metric === undefined || tags === undefined) throw new Error('BUG: an ingest worker named an unknown series')
      const from = p.offsets[i]!
      const to = p.offsets[i + 1]!
      out[i] = { metric, tags, timestamps: p.timestamps.subarray(from, to), values: p.values.subarray(from, to) }
    }
    return out
  }
}

function pack(
  series: readonly SeriesWrite[],
  points: number,
  ids: SeriesIds,
  firstLines?: readonly number[],
): PackedWrite {
  const idOf = new Int32Array(series.length)
  const offsets = new Int32Array(series.length + 1)
  const timestamps = new Float64Array(points)
  const values = new Float64Array(points)
  let at = 0
  for (let i = 0; i < series.length; i++) {
    const s = series[i]!
    idOf[i] = ids.idOf(s.metric, s.tags)
    offsets[i] = at
    const ts = s.timestamps as ArrayLike<number>
    const n = ts.length
    for (let k = 0; k < n; k++) timestamps[at + k] = ts[k]!
    // A Float64Array carries non-finite values whose bits must survive: set() copies the bits.
    if (s.values instanceof Float64Array) values.set(s.values, at)
    else for (let k = 0; k < n; k++) values[at + k] = s.values[k]!
    at += n
  }
  offsets[series.length] = at
  return {
    ids: idOf,
    offsets,
    timestamps,
    values,
    ...(firstLines === undefined ? {} : { firstLines: Int32Array.from(firstLines) }),
    points: at,
  }
}

/**
 * A decoded remote-write body as a PackedWrite, its arrays copied out of the reused columns at
 * their size. A label set the LabelSetCache knows keeps the id its series got in this epoch of the
 * table, so that a series seen before costs no lookup by its tags and metric.
 */
function packColumns(c: WriteColumns, ids: SeriesIds): PackedWrite {
  const entries = c.entries
  const idOf = new Int32Array(entries)
  for (let i = 0; i < entries; i++) {
    const known = c.known[i]
    if (known !== undefined && known.refEpoch === ids.epoch) {
      idOf[i] = known.ref
      continue
    }
    const id = ids.idOf(c.metrics[i]!, c.tags[i]!)
    idOf[i] = id
    if (known !== undefined) {
      known.ref = id
      known.refEpoch = ids.epoch
    }
  }
  return {
    ids: idOf,
    offsets: c.offsets.slice(0, entries + 1),
    timestamps: c.timestamps.slice(0, c.samples),
    // The same element type: slice copies the bytes, and every NaN keeps its bits.
    values: c.values.slice(0, c.samples),
    points: c.samples,
  }
}

/**
 * Puts a remote-write body's entries in the engine's normal form, so that the main thread's
 * validation takes them as they are instead of merging them: Prometheus sends each sample as an
 * entry of its own with the series' full label set, so a request that holds two samples of a series
 * holds two entries of it. Entries of one series are joined in request order and, where that is not
 * strictly ascending, sorted by validation's own sortDedup (a repeated timestamp keeps its last
 * point: last write wins). Values go from Float64Array to Float64Array, so a staleness marker stays
 * the NaN it was. A body with a timestamp the engine cannot store is left as it is, for validation
 * to report, and so is a body larger than any request the defaults take.
 */
export class EntryMerger {
  /** For each series id, the merged entry it has in the body being merged; -1 for none. */
  private mergedOf = new Int32Array(0)

  /**
   * Bodies of more points are left as sent: validation checks the request's limits (by default at
   * most 1,000,000 points) before any work per point, which a merge here would do first.
   */
  constructor(private readonly maxPoints = 1_000_000) {}

  merge(p: PackedWrite): PackedWrite {
    if (p.points > this.maxPoints) return p
    const { ids, offsets } = p
    const entries = ids.length
    let maxId = -1
    for (let i = 0; i < entries; i++) maxId = Math.max(maxId, ids[i]!)
    if (this.mergedOf.length <= maxId) {
      this.mergedOf = new Int32Array(Math.max(maxId + 1, 2 * this.mergedOf.length)).fill(-1)
    }
    const mergedOf = this.mergedOf
    /** The merged entry of each entry; the first entry and the point count of each merged one. */
    const target = new Int32Array(entries)
    const firstEntries: number[] = []
    const counts: number[] = []
    for (let i = 0; i < entries; i++) {
      const id = ids[i]!
      let m = mergedOf[id]!
      if (m < 0) {
        m = firstEntries.length
        mergedOf[id] = m
        firstEntries.push(i)
        counts.push(0)
      }
      target[i] = m
      counts[m]! += offsets[i + 1]! - offsets[i]!
    }
    for (let i = 0; i < entries; i++) mergedOf[ids[i]!] = -1
    if (firstEntries.length === entries) {
      let normal = true
      for (let i = 0; i < entries && normal; i++) normal = normalTimestamps(p.timestamps, offsets[i], offsets[i + 1])
      if (normal) return { ...p, normalized: true }
    }
    return mergeInto(p, target, firstEntries, counts) ?? p
  }
}

/**
 * The merged entries: each series' points side by side in request order, then sorted and
 * deduplicated where they need it. Undefined when a series holds a timestamp the engine cannot store.
 */
function mergeInto(
  p: PackedWrite,
  target: Int32Array,
  firstEntries: readonly number[],
  counts: readonly number[],
): PackedWrite | undefined {
  const merged = firstEntries.length
  const starts = new Int32Array(merged + 1)
  for (let m = 0; m < merged; m++) starts[m + 1] = starts[m]! + counts[m]!
  const joined = { timestamps: new Float64Array(starts[merged]!), values: new Float64Array(starts[merged]!) }
  const cursor = starts.slice(0, merged)
  const { timestamps: toTimes, values: toValues } = joined
  const { offsets: from, timestamps: fromTimes, values: fromValues } = p
  for (let i = 0; i < target.length; i++) {
    const m = target[i]!
    let at = cursor[m]!
    for (let k = from[i]!, end = from[i + 1]!; k < end; k++, at++) {
      toTimes[at] = fromTimes[k]!
      toValues[at] = fromValues[k]!
    }
    cursor[m] = at
  }
  const firsts = Int32Array.from(firstEntries)
  const ids = Int32Array.from(firstEntries, (i) => p.ids[i]!)
  // Usually every series is already in order (a scrape's samples of a series come in time order):
  // the joined arrays are then the answer as they are. Otherwise those before the first series
  // out of order need nothing more.
  let inOrder = 0
  while (inOrder < merged && normalTimestamps(joined.timestamps, starts[inOrder], starts[inOrder + 1])) inOrder++
  if (inOrder === merged) {
    return { ids, offsets: starts, ...joined, points: p.points, normalized: true, firstEntries: firsts }
  }
  const series: Points[] = []
  for (let m = 0; m < merged; m++) {
    const one = {
      timestamps: joined.timestamps.subarray(starts[m], starts[m + 1]),
      values: joined.values.subarray(starts[m], starts[m + 1]),
    }
    if (m < inOrder || (m > inOrder && normalTimestamps(one.timestamps))) {
      series.push(one)
      continue
    }
    // Sorted, a series whose timestamps are still not normal holds one the engine cannot store.
    const sorted = sortDedup(one)
    if (!normalTimestamps(sorted.timestamps)) return undefined
    series.push(sorted)
  }
  const offsets = new Int32Array(merged + 1)
  for (let m = 0; m < merged; m++) offsets[m + 1] = offsets[m]! + series[m]!.timestamps.length
  const timestamps = new Float64Array(offsets[merged]!)
  const values = new Float64Array(offsets[merged]!)
  series.forEach((s, m) => {
    timestamps.set(s.timestamps, offsets[m]!)
    values.set(s.values, offsets[m]!)
  })
  return { ids, offsets, timestamps, values, points: p.points, normalized: true, firstEntries: firsts }
}

/**
 * The largest body a worker joins into memory it keeps for the next body. A body comes in chunks of
 * the socket's size (64 KiB) and the decoders want it whole; joined into fresh memory, a body of a
 * few MiB costs the worker a page fault for every 4 KiB it writes (the join took about 7% of the
 * worker's time decoding the bench's line protocol in one profile, 2 cores, Node 20). Larger bodies
 * are joined into memory of their own, so that one large body does not leave its size held for good.
 */
const JOIN_SCRATCH_MAX_BYTES = 8 * 2 ** 20

/** What a worker keeps from body to body. */
export class IngestDecoder {
  private readonly prefixes = new PrefixCache()
  private readonly headers = new LabelSetCache()
  private readonly ids: SeriesIds
  private readonly merger = new EntryMerger()
  private readonly columns = new WriteColumns()
  private scratch = Buffer.alloc(0)

  /** `maxSeries`: the series the table of ids holds before it empties (see SeriesIds). */
  constructor(maxSeries?: number) {
    this.ids = new SeriesIds(maxSeries)
  }

  /**
   * The body's points, or what refused it as a decoder threw it, with the series the body defined
   * either way: the decoder remembers them whether or not the body is taken.
   */
  decode(job: IngestJob): Decoded {
    this.ids.begin()
    try {
      const packed = this.packed(job)
      return { defined: this.ids.end(), packed }
    } catch (error) {
      return { defined: this.ids.end(), error }
    }
  }

  /**
   * The body in one buffer, valid until the next body: the chunk itself when there is one, else the
   * chunks copied into the decoder's scratch (past JOIN_SCRATCH_MAX_BYTES, into a buffer of their
   * own). Every decoder copies what it keeps out of the body, so the next body may reuse the memory.
   */
  private joined(body: BodyChunks): Buffer {
    if (body.chunks.length === 1 || body.size > JOIN_SCRATCH_MAX_BYTES) return joinChunks(body)
    if (this.scratch.length < body.size)
      this.scratch = Buffer.allocUnsafe(Math.min(JOIN_SCRATCH_MAX_BYTES, 2 * body.size))
    return joinInto(this.scratch, body)
  }

  private packed(job: IngestJob): PackedWrite {
    if (job.kind === 'remote') {
      decodeWriteRequest(snappyDecode(this.joined(job.body), job.maxBytes), this.columns, this.headers)
      return this.merger.merge(packColumns(this.columns, this.ids))
    }
    const whole = this.joined(job.body)
    const parsed = parseLineProtocol(
      job.gzip ? gunzipBounded(whole, job.maxBytes) : whole,
      job.precision,
      job.nowMs,
      this.prefixes,
    )
    return pack(parsed.series, parsed.points, this.ids, parsed.firstLines)
  }
}

/** The body's chunks copied one after another into `scratch`, which holds them all; a view of their bytes. */
function joinInto(scratch: Buffer, body: BodyChunks): Buffer {
  let at = 0
  for (const c of body.chunks) {
    scratch.set(c, at)
    at += c.byteLength
  }
  return scratch.subarray(0, at)
}

/** The arrays an answer hands over without copying. */
export function transferList(answer: IngestAnswer): ArrayBuffer[] {
  const p = answer.packed
  if (p === undefined) return []
  const list = [p.ids.buffer, p.offsets.buffer, p.timestamps.buffer, p.values.buffer]
  if (p.firstLines !== undefined) list.push(p.firstLines.buffer)
  if (p.firstEntries !== undefined) list.push(p.firstEntries.buffer)
  return list as ArrayBuffer[]
}
