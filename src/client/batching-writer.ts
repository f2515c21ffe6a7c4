import { type Client, type ClientDuplexStream, Metadata, status } from '@grpc/grpc-js'
import type { Precision as ProtoPrecision } from '../../gen/v3storage/v1/common.js'
import { IngestResponse, StreamServiceService } from '../../gen/v3storage/v1/stream_service.js'
import { ValidationError } from '../model/errors.js'
import { nameViolation } from '../model/series-key.js'
import type { ConsistencyLevel, Precision, RawTimestamp, Tag } from '../model/types.js'
import { identityViolation } from '../model/validate.js'
import { encodeIngestWrite } from '../wire/ingest-codec.js'
import { EncodedHeaderCache } from '../wire/series-codec.js'
import { consistencyToProto, precisionToProto } from './consistency.js'
import { closedError, toClientError, V3ClientError } from './errors.js'
import { type ConnectionOptions, openChannel, type TagsInput, tagsToList } from './v3-client.js'

export interface BatchingWriterOptions extends ConnectionOptions {
  /** A batch is sent once it holds this many points. Default 10,000. */
  readonly batchPoints?: number
  /** A batch that is not full is sent this long after its first point, in ms. Default 100. */
  readonly flushIntervalMs?: number
  /** Batches sent and not yet acknowledged, at most; more wait in the writer. Default 8. */
  readonly maxUnacknowledgedBatches?: number
  /** write() returns false while more points than this are pending; see whenWritable(). Default 1,000,000. */
  readonly highWaterMark?: number
  /** Precision of every timestamp handed to write(). Default ms. */
  readonly precision?: Precision
  /**
   * How many owners of each series must have a batch durable before the server acknowledges it:
   * one, a majority (quorum) or all. Absent: the server's --write-consistency (quorum unless set).
   */
  readonly consistency?: ConsistencyLevel
  /** Delay before the first reconnection after UNAVAILABLE, in ms; doubled per failure. Default 100. */
  readonly retryDelayMs?: number
  /** Upper bound of the reconnection delay, in ms. Default 5,000. */
  readonly maxRetryDelayMs?: number
  /**
   * Called for each batch the server rejects (bad names, values, limits). Without it, the next
   * flush() or close() fails with the first rejection instead, so that none goes unnoticed.
   */
  readonly onReject?: (rejection: IngestRejection) => void
  /**
   * Called each time the connection failed with UNAVAILABLE (the server down, restarting, or out of
   * disk) while batches wait for their acknowledgement, before the writer retries them: the
   * failure, how many retries in a row this is, and the delay before it. The writer retries for as
   * long as it runs; this is how an application sees that it does.
   */
  readonly onRetry?: (retry: IngestRetry) => void
}

/** A reconnection the writer is about to make (see BatchingWriterOptions.onRetry). */
export interface IngestRetry {
  readonly error: V3ClientError
  /** 1 for the first retry since the last acknowledged batch, then 2, 3… */
  readonly attempt: number
  readonly delayMs: number
  /** Points sent and not yet acknowledged, which the retry sends again. */
  readonly unacknowledgedPoints: number
}

/** A batch the server refused; its points are not stored. */
export interface IngestRejection {
  /** The batch's sequence number; 0 for a batch the writer could not encode, which it never sent. */
  readonly sequence: number
  readonly points: number
  readonly error: V3ClientError
}

/** A tag set the writer has seen: its number, and the list sent for it (the same array every time). */
interface TagSet {
  readonly id: number
  readonly list: Tag[]
}

/**
 * The tag set an application's tags object stood for when the writer last saw it, and its keys
 * and values then, in its own order: an object changed since (one object reused for host a, then
 * host b) no longer matches them and is looked up again.
 */
interface SeenTags {
  readonly tagSet: TagSet
  readonly pairs: readonly string[]
}

/** The keys and values of `tags` in their order, flat: [key0, value0, key1, value1, …]. */
function pairsOf(tags: TagsInput): string[] {
  const out: string[] = []
  if (Array.isArray(tags)) for (const t of tags as readonly Tag[]) out.push(t.key, t.value)
  else for (const [key, value] of Object.entries(tags)) out.push(key, value)
  return out
}

/** Whether `tags` still holds the keys and values `pairs` recorded, in the same order. */
function samePairs(tags: TagsInput, pairs: readonly string[]): boolean {
  let i = 0
  if (Array.isArray(tags)) {
    for (const t of tags as readonly Tag[]) {
      if (t.key !== pairs[i] || t.value !== pairs[i + 1]) return false
      i += 2
    }
  } else {
    for (const key in tags) {
      if (key !== pairs[i] || (tags as Readonly<Record<string, string>>)[key] !== pairs[i + 1]) return false
      i += 2
    }
  }
  return i === pairs.length
}

/**
 * The error of a point write() refuses. A function of the module, not a closure made in write():
 * tsx names every closure it makes (Object.defineProperty), and one made for each point cost the
 * writer run through tsx about 40 % of its rate; the compiled client showed no difference.
 */
function invalid(field: string, problem: string): V3ClientError {
  return toClientError(ValidationError.field(field, problem))
}

const MIN_INT64 = -(2n ** 63n)
const MAX_INT64 = 2n ** 63n - 1n

/** Throws unless a point's timestamp and value can be encoded. */
function checkPoint(timestamp: RawTimestamp, value: number): void {
  if (typeof timestamp === 'number') {
    if (!Number.isSafeInteger(timestamp)) throw invalid('timestamp', `must be an integer, got ${timestamp}`)
  } else if (typeof timestamp === 'bigint') {
    if (timestamp < MIN_INT64 || timestamp > MAX_INT64) {
      throw invalid('timestamp', 'does not fit a signed 64-bit integer')
    }
  } else throw invalid('timestamp', `must be a number or a bigint, got ${typeof timestamp}`)
  if (typeof value !== 'number') throw invalid('value', 'must be a number')
}

/** A series bound by BatchingWriter.series(). */
export interface WriterSeries {
  /** Buffers one point of the series: the same return and errors as BatchingWriter.write(). */
  write(timestamp: RawTimestamp, value: number): boolean
}

/** What a bound series keeps: its identity, and where its points went in the batch last filled. */
interface Bound {
  readonly metric: string
  readonly tagSet: TagSet
  batch: Map<string, Map<number, SeriesBatch>> | undefined
  series: SeriesBatch | undefined
}

interface SeriesBatch {
  readonly metric: string
  readonly tags: Tag[]
  readonly timestamps: RawTimestamp[]
  readonly values: number[]
}

interface Batch {
  readonly sequence: number
  readonly message: Buffer
  readonly points: number
}

interface Waiter {
  readonly through: number
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

function identity(bytes: Buffer): Buffer {
  return bytes
}

/**
 * Buffers points and streams them to the server over one Ingest call, in numbered batches that the
 * server acknowledges once durable. A batch stays in the writer until acknowledged: when the
 * connection fails with UNAVAILABLE (the server restarts, the network drops) the writer reconnects
 * with backoff and sends again every batch after the last acknowledged one, which is harmless for
 * those the server had stored already (a rewrite of a series and timestamp changes nothing). So
 * every point handed to write() is stored exactly once, unless the server rejects its batch.
 *
 * `address` may be a function, asked at every reconnection: a server restarted on another port is
 * found again.
 */
export class BatchingWriter {
  private readonly address: () => string
  private readonly options: BatchingWriterOptions
  private readonly batchLimit: number
  private readonly window: number
  private readonly highWaterMark: number
  private readonly precision: ProtoPrecision
  private readonly consistency: number
  /**
   * A small number and the list sent per distinct tag set, found by the identity of the object the
   * application passes (computed once per object) and, for a new object, by the canonical text of
   * its tags, so that equal tags in different objects land in the same series.
   */
  private readonly tagSets = new WeakMap<object, SeenTags>()
  private readonly tagSetsByText = new Map<string, TagSet>()
  /** Metric names checked already (see write); cleared when large. */
  private readonly metrics = new Set<string>()
  /** The encoded metric and tags of each series, keyed by its tag set's list: encoded once, copied after. */
  private readonly headers = new EncodedHeaderCache()
  private nextTagId = 0
  /** The batch being filled: metric -> tag-set number -> points. Two levels keep per-point work to two lookups. */
  private batch = new Map<string, Map<number, SeriesBatch>>()
  private batchCount = 0
  private timer: NodeJS.Timeout | undefined
  private nextSequence = 1
  private acknowledged = 0
  private readonly unacknowledged: Batch[] = []
  private unacknowledgedPoints = 0
  /** How many of the unacknowledged batches went out on the current call. */
  private sent = 0
  private client: Client | undefined
  private clientAddress = ''
  private call: ClientDuplexStream<Buffer, IngestResponse> | undefined
  private generation = 0
  private waitingForDrain = false
  private retryTimer: NodeJS.Timeout | undefined
  private failures = 0
  private fatal: V3ClientError | undefined
  private unreported: V3ClientError | undefined
  private closed = false
  private flushWaiters: Waiter[] = []
  private writableWaiters: Array<() => void> = []

  constructor(address: string | (() => string), options: BatchingWriterOptions = {}) {
    this.address = typeof address === 'string' ? () => address : address
    this.options = options
    this.batchLimit = options.batchPoints ?? 10_000
    this.window = options.maxUnacknowledgedBatches ?? 8
    this.highWaterMark = options.highWaterMark ?? 1_000_000
    this.precision = precisionToProto(options.precision)
    this.consistency = consistencyToProto(options.consistency)
  }

  /** Points handed to write() and not yet acknowledged by the server (nor rejected). */
  get pending(): number {
    return this.batchCount + this.unacknowledgedPoints
  }

  /** The highest sequence the server has acknowledged. */
  get acknowledgedThrough(): number {
    return this.acknowledged
  }

  /**
   * Buffers one point. Returns false when more than highWaterMark points are pending: the
   * application should then wait for whenWritable() before writing more, or memory grows.
   */
  write(metric: string, tags: TagsInput, timestamp: RawTimestamp, value: number): boolean {
    this.checkOpen()
    // Everything the encoder needs is checked here, point by point: a bad point found when its
    // batch is sealed would take the batch's good points with it.
    this.checkMetric(metric)
    checkPoint(timestamp, value)
    const tagSet = this.tagSetOf(tags)
    return this.append(this.seriesBatch(metric, tagSet), timestamp, value)
  }

  /**
   * One series, bound: its metric and tags are checked, and its tags copied, once, here; each point
   * written through it is then only checked and appended, without the lookups write() makes for
   * every point (the tags object's keys and values read again, the series found by metric and
   * tags). A tags object changed afterwards does not change the bound series. Its write() returns
   * and throws as write() does.
   */
  series(metric: string, tags: TagsInput): WriterSeries {
    this.checkOpen()
    this.checkMetric(metric)
    const bound: Bound = { metric, tagSet: this.tagSetOf(tags), batch: undefined, series: undefined }
    return { write: (timestamp, value) => this.writeBound(bound, timestamp, value) }
  }

  private writeBound(bound: Bound, timestamp: RawTimestamp, value: number): boolean {
    this.checkOpen()
    checkPoint(timestamp, value)
    // The series of the batch being filled, found again only once a new batch began.
    let series = bound.series
    if (series === undefined || bound.batch !== this.batch) {
      series = this.seriesBatch(bound.metric, bound.tagSet)
      bound.series = series
      bound.batch = this.batch
    }
    return this.append(series, timestamp, value)
  }

  private checkOpen(): void {
    if (this.closed) throw closedError('the writer')
    if (this.fatal) throw this.fatal
  }

  private checkMetric(metric: string): void {
    if (typeof metric !== 'string') throw invalid('metric', `must be a string, got ${typeof metric}`)
    if (!this.metrics.has(metric)) {
      const refused = nameViolation(metric)
      if (refused !== undefined) throw invalid('metric', refused)
      if (this.metrics.size >= 100_000) this.metrics.clear()
      this.metrics.add(metric)
    }
  }

  /** The tag set `tags` stands for now, numbered once per distinct set. */
  private tagSetOf(tags: TagsInput): TagSet {
    if (typeof tags !== 'object' || tags === null) throw invalid('tags', `must be an object or a list, got ${tags}`)
    const seen = this.tagSets.get(tags)
    if (seen !== undefined && samePairs(tags, seen.pairs)) return seen.tagSet
    const list = tagsToList(tags)
    // A tag set that cannot be sent, or that every server refuses, would take the points of its
    // batch's other series with it.
    const refused = identityViolation('m', list)
    if (refused !== undefined) throw invalid(refused.field, refused.description)
    const text = JSON.stringify(list.map((t) => [t.key, t.value]))
    let tagSet = this.tagSetsByText.get(text)
    if (tagSet === undefined) {
      // Numbers are never reused, so forgetting texts (to bound memory) cannot merge two tag sets;
      // it only lets one tag set take two numbers, which the server merges again.
      if (this.tagSetsByText.size >= 1_000_000) this.tagSetsByText.clear()
      tagSet = { id: this.nextTagId++, list }
      this.tagSetsByText.set(text, tagSet)
    }
    this.tagSets.set(tags, { tagSet, pairs: pairsOf(tags) })
    return tagSet
  }

  /** The points of (metric, tag set) in the batch being filled, made when it has none yet. */
  private seriesBatch(metric: string, tagSet: TagSet): SeriesBatch {
    let perMetric = this.batch.get(metric)
    if (perMetric === undefined) {
      perMetric = new Map()
      this.batch.set(metric, perMetric)
    }
    let series = perMetric.get(tagSet.id)
    if (series === undefined) {
      series = { metric, tags: tagSet.list, timestamps: [], values: [] }
      perMetric.set(tagSet.id, series)
    }
    return series
  }

  private append(series: SeriesBatch, timestamp: RawTimestamp, value: number): boolean {
    series.timestamps.push(timestamp)
    series.values.push(value)
    this.batchCount++
    if (this.batchCount >= this.batchLimit) this.seal()
    else this.timer ??= setTimeout(() => this.seal(), this.options.flushIntervalMs ?? 100)
    return this.pending <= this.highWaterMark
  }

  /** Resolves once no more than highWaterMark points are pending. */
  whenWritable(): Promise<void> {
    if (this.pending <= this.highWaterMark || this.fatal) return Promise.resolve()
    return new Promise((resolve) => this.writableWaiters.push(resolve))
  }

  /** Sends what is buffered and resolves once every point written so far is acknowledged. */
  flush(): Promise<void> {
    this.seal()
    const through = this.nextSequence - 1
    return new Promise<void>((resolve, reject) => {
      this.flushWaiters.push({ through, resolve, reject })
      this.settleWaiters()
    })
  }

  /** Flushes, then ends the stream and the connection. */
  async close(): Promise<void> {
    if (this.closed) return
    try {
      await this.flush()
    } finally {
      this.closed = true
      this.shutdown()
    }
  }

  /** Drops what is not acknowledged and closes at once; pending flushes fail. */
  abort(): void {
    this.closed = true
    this.fail(toClientError(new Error('the writer was aborted')))
    this.shutdown()
  }

  private shutdown(): void {
    clearTimeout(this.timer)
    clearTimeout(this.retryTimer)
    this.generation++
    this.call?.end()
    this.call = undefined
    this.client?.close()
    this.client = undefined
  }

  /** Turns the buffered points into the next numbered batch. */
  private seal(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.batchCount === 0) return
    const series: SeriesBatch[] = []
    for (const perMetric of this.batch.values()) for (const one of perMetric.values()) series.push(one)
    const sequence = this.nextSequence
    const points = this.batchCount
    this.batch = new Map()
    this.batchCount = 0
    let message: Buffer
    try {
      message = encodeIngestWrite(sequence, series, this.precision, this.consistency, this.headers)
    } catch (err) {
      // write() checks what encoding needs; should a batch still not encode, it is rejected as the
      // server would reject it (sequence 0: it never had one; the server takes no gap in them),
      // and the writer goes on: a throw here, from the flush timer, would end the process.
      this.reject({ sequence: 0, points, error: toClientError(err) })
      this.settleWaiters()
      return
    }
    this.nextSequence++
    this.unacknowledged.push({ sequence, message, points })
    this.unacknowledgedPoints += points
    this.pump()
  }

  /** Sends the batches that fit the window, opening a call when there is none. */
  private pump(): void {
    if (this.fatal || this.closed || this.retryTimer !== undefined) return
    if (this.sent >= this.unacknowledged.length) return
    const call = this.call ?? this.connect()
    while (!this.waitingForDrain && this.sent < this.unacknowledged.length && this.sent < this.window) {
      const batch = this.unacknowledged[this.sent++]!
      if (!call.write(batch.message)) {
        this.waitingForDrain = true
        const generation = this.generation
        call.once('drain', () => {
          if (generation !== this.generation) return
          this.waitingForDrain = false
          this.pump()
        })
      }
    }
  }

  private connect(): ClientDuplexStream<Buffer, IngestResponse> {
    const address = this.address()
    if (this.client === undefined || address !== this.clientAddress) {
      this.client?.close()
      this.client = openChannel(address, this.options)
      this.clientAddress = address
    }
    const metadata = new Metadata()
    if (this.options.token !== undefined) metadata.set('authorization', `Bearer ${this.options.token}`)
    const def = StreamServiceService.ingest
    const call = this.client.makeBidiStreamRequest(
      def.path,
      identity,
      (b: Buffer) => IngestResponse.decode(b),
      metadata,
      {},
    )
    const generation = ++this.generation
    this.call = call
    // A new call starts again from the first unacknowledged batch.
    this.sent = 0
    this.waitingForDrain = false
    call.on('data', (ack: IngestResponse) => {
      if (generation === this.generation) this.onAcknowledgement(ack)
    })
    call.on('error', (err: unknown) => {
      if (generation === this.generation) this.onCallEnded(toClientError(err))
    })
    call.on('status', (s: { code: number }) => {
      // An OK status ends a call only when the writer ended it; otherwise resend on a new one.
      if (s.code === status.OK && generation === this.generation) this.onCallEnded(undefined)
    })
    return call
  }

  private onAcknowledgement(ack: IngestResponse): void {
    if (ack.rejectedSequence > 0) {
      const batch = this.unacknowledged.find((b) => b.sequence === ack.rejectedSequence)
      const reason = ack.error
      const error = new V3ClientError(
        reason?.code ?? status.UNKNOWN,
        reason?.message ?? 'rejected',
        reason?.field ? [{ field: reason.field, description: reason.message }] : [],
      )
      this.reject({ sequence: ack.rejectedSequence, points: batch?.points ?? 0, error })
    }
    while (this.unacknowledged.length > 0 && this.unacknowledged[0]!.sequence <= ack.durableThrough) {
      const batch = this.unacknowledged.shift()!
      this.unacknowledgedPoints -= batch.points
      this.sent = Math.max(0, this.sent - 1)
    }
    if (ack.durableThrough > this.acknowledged) this.acknowledged = ack.durableThrough
    this.failures = 0
    this.settleWaiters()
    this.pump()
  }

  /** Tells the application of a batch whose points are not stored. */
  private reject(rejection: IngestRejection): void {
    if (this.options.onReject) this.options.onReject(rejection)
    else this.unreported ??= rejection.error
  }

  private onCallEnded(error: V3ClientError | undefined): void {
    this.call = undefined
    this.generation++
    // What went out on the ended call goes out again on the next one, from the first batch not
    // acknowledged: the retry below must find it unsent.
    this.sent = 0
    this.waitingForDrain = false
    if (this.closed) return
    if (error !== undefined && error.code !== status.UNAVAILABLE) {
      this.fail(error)
      return
    }
    // Nothing to resend: the next batch opens a new call.
    if (this.unacknowledged.length === 0) return
    const base = this.options.retryDelayMs ?? 100
    // Jitter spreads the reconnections of many writers after a server restart.
    const delay = Math.min(this.options.maxRetryDelayMs ?? 5000, base * 2 ** this.failures) * (0.5 + Math.random() / 2)
    this.failures++
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      this.pump()
    }, delay)
    if (error !== undefined) {
      const retry = { error, attempt: this.failures, delayMs: delay, unacknowledgedPoints: this.unacknowledgedPoints }
      this.options.onRetry?.(retry)
    }
  }

  private fail(error: V3ClientError): void {
    this.fatal ??= error
    for (const waiter of this.flushWaiters) waiter.reject(this.fatal)
    this.flushWaiters = []
    this.releaseWritable()
  }

  private settleWaiters(): void {
    const remaining: Waiter[] = []
    for (const waiter of this.flushWaiters) {
      if (this.fatal) waiter.reject(this.fatal)
      else if (this.acknowledged >= waiter.through || this.unacknowledged.length === 0) {
        if (this.unreported) {
          waiter.reject(this.unreported)
          this.unreported = undefined
        } else {
          waiter.resolve()
        }
      } else remaining.push(waiter)
    }
    this.flushWaiters = remaining
    if (this.pending <= this.highWaterMark) this.releaseWritable()
  }

  private releaseWritable(): void {
    const waiters = this.writableWaiters
    this.writableWaiters = []
    for (const resolve of waiters) resolve()
  }
}
