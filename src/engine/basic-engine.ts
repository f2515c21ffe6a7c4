import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { MIN_BLOCK } from '../codec/row-key.js'
import { META_COLD_MAX_BLOCK_KEY } from '../codec/schema.js'
import { UnavailableError, ValidationError } from '../model/errors.js'
import { compileSelector } from '../model/matcher.js'
import { seriesKeyOf } from '../model/series-key.js'
import type {
  DeleteRequest,
  DeleteResult,
  QueryRequest,
  Selector,
  SeriesPoints,
  SeriesRef,
  WriteBatch,
  WriteResult,
} from '../model/types.js'
import {
  type NormalizedBatch,
  type NormalizedSeries,
  ValidatedSeriesCache,
  validateWriteBatch,
} from '../model/validate.js'
import { type AggregateInput, aggregateSteps, filterValues, SUMMARIZABLE } from './aggregate.js'
import { type PartialGroup, partialSteps } from './aggregate-partial.js'
import { DecodedBlockCache, queryKey, ResultCache } from './caches.js'
import {
  type BasicEngineOptions,
  type Clock,
  type EngineConfig,
  type EngineDeps,
  type Logger,
  resolveEngineConfig,
  silentLogger,
  syncsWrites,
  systemClock,
} from './config.js'
import { DecodePool } from './decode-pool.js'
import { digestEntries } from './digest.js'
import {
  type Counters,
  type EngineCore,
  META_COLD_BLOCKS,
  META_COLD_MIN_BLOCK,
  META_COLD_RUNS,
  META_HOT_BLOCKS,
  META_NEXT_SEQ,
  META_POINTS_WRITTEN,
  mapLimit,
  retentionCutoffMs,
  type TierState,
  type VersionMarks,
} from './engine-core.js'
import {
  applyRetention,
  deleteSeriesData,
  dropSeriesBatch,
  findHotMinBlock,
  moveCold,
  putCounters,
  sealBlocks,
} from './engine-maintenance.js'
import { PointBudget, readLatest, readMany, readManyForAggregate } from './engine-read.js'
import { expireVersions, findVersionMarks, keepAgainstStored, storedVersions } from './engine-versions.js'
import { Head } from './head.js'
import { LatencyRecorder } from './latency.js'
import { LatestCache } from './latest-cache.js'
import { Mutex } from './mutex.js'
import { RocksStore, WAL_FLUSH_BYTES } from './rocks-store.js'
import { type SeriesEntry, SeriesIndex } from './series-index.js'
import type { BlockDigest, SeriesBuckets, SeriesFilter, ShardEngine } from './shard.js'
import { checkSignal, LARGE_WORK_SERIES, largeWork, Slicer } from './slicer.js'
import type {
  CallContext,
  CompactResult,
  EngineStats,
  PointsListener,
  StorageEngine,
  Subscription,
} from './storage-engine.js'
import { SubscriptionHub } from './subscriptions.js'
import { bufferKey, bufferSeq, decodeBufferRecord, encodeBufferRecord, RecordScratch } from './write-buffer.js'

/** A request of a commit: its record's sequence, its series and their index entries, in the same order. */
interface AppliedWrite {
  readonly seq: number
  readonly series: readonly NormalizedSeries[]
  readonly entries: readonly SeriesEntry[]
}

/** A group of requests written to RocksDB: each request's record, and the series the write created. */
interface WrittenGroup {
  readonly applied: readonly AppliedWrite[]
  readonly created: readonly SeriesEntry[]
}

/**
 * What one commit takes at most, unless a single request is bigger: a commit holds the event loop
 * from its first series to its last, and creating a series costs tens of µs. Four writers of 5,000
 * new series a request, committed together, held the loop 724 ms at a time (scratch); a commit
 * of 5,000 series, about 214 ms. A commit of this size takes far longer than the log sync that one
 * more commit adds.
 */
const GROUP_MAX_SERIES = 5_000
const GROUP_MAX_POINTS = 50_000

interface PendingWrite {
  readonly batch: NormalizedBatch
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

type State = 'new' | 'opening' | 'open' | 'closing' | 'closed'

/** How many times max_points_per_query a query may read to compute its answer (an aggregation's inputs, a value filter's). */
const READ_BUDGET_TIMES = 10

/** The points a query returns (`result`) and the raw points it reads to feed aggregations and value filters (`read`), bounded more loosely. */
interface QueryBudgets {
  readonly result: PointBudget
  readonly read: PointBudget
}

/**
 * The basic (single-node) engine: RocksDB with a write buffer, 30-second hot blocks and long cold
 * runs. Write path: validate, normalize, resolve series, append a buffer record (the write is
 * acknowledged once that record is in RocksDB's write-ahead log), then keep the points in memory
 * until the sealer writes their blocks.
 */
/** The entries a filter accepts; all of them without one. */
function filterEntries(index: SeriesIndex, entries: SeriesEntry[], filter: SeriesFilter | undefined): SeriesEntry[] {
  return filter === undefined ? entries : entries.filter((e) => filter.accepts(e.key, index.tokenOf(e)))
}

export class BasicEngine implements StorageEngine, ShardEngine, EngineCore {
  readonly config: EngineConfig
  readonly clock: Clock
  readonly logger: Logger
  readonly store: RocksStore
  readonly index: SeriesIndex
  readonly head = new Head()
  readonly latestCache = new LatestCache()
  readonly resultCache: ResultCache
  readonly decodedCache: DecodedBlockCache
  readonly decodePool: DecodePool
  readonly tiers: TierState = {
    hotMinBlock: Number.NEGATIVE_INFINITY,
    coldMaxBlock: Number.NEGATIVE_INFINITY,
    coldMinBlock: Number.POSITIVE_INFINITY,
  }
  readonly counters: Counters = { pointsWritten: 0, hotBlocks: 0, coldRuns: 0, coldBlocks: 0 }
  readonly versionMarks: VersionMarks = { minBlock: Number.POSITIVE_INFINITY, maxBlock: Number.NEGATIVE_INFINITY }
  nextSeq = 0
  bufferTrimmedTo = 0
  /** The first record of each group written to RocksDB whose points are not in the head yet, oldest first. */
  private readonly unappliedSeqs: number[] = []

  private state: State = 'new'
  private readonly jobs = new Mutex()
  private readonly validated = new ValidatedSeriesCache()
  /** The buffer each write-buffer record is encoded into before its batch copies it (see RecordScratch). */
  private readonly recordScratch = new RecordScratch()
  private readonly writeLatency = new LatencyRecorder()
  private readonly queryLatency = new LatencyRecorder()
  private queue: PendingWrite[] = []
  private draining: Promise<void> | undefined
  /** The last group's commit begun; it never rejects, and ends after every earlier one. */
  private committing: Promise<void> = Promise.resolve()
  private sealing: Promise<void> | undefined
  /** Failed seals: in a row and in all, when the timer tries next, and the last failure logged. */
  private readonly sealTrouble = {
    inARow: 0,
    total: 0,
    retryAtMs: 0,
    message: '',
    loggedAtMs: Number.NEGATIVE_INFINITY,
  }
  private timers: NodeJS.Timeout[] = []
  private readonly subscriptions: SubscriptionHub

  constructor(options: BasicEngineOptions, deps: EngineDeps = {}) {
    this.config = resolveEngineConfig(options)
    this.clock = deps.clock ?? systemClock
    this.logger = deps.logger ?? silentLogger
    this.store = new RocksStore(this.config.dataDir, WAL_FLUSH_BYTES, this.logger)
    this.index = new SeriesIndex(this.store)
    this.resultCache = new ResultCache(this.config.resultCachePoints)
    this.decodedCache = new DecodedBlockCache(this.config.decodedCachePoints)
    this.decodePool = new DecodePool(this.config.decodeWorkers)
    this.subscriptions = new SubscriptionHub(this.logger)
  }

  async open(): Promise<void> {
    if (this.state !== 'new') throw new UnavailableError(`cannot open the engine: it is ${this.state}`)
    this.state = 'opening'
    try {
      await this.store.open(this.config.blockCacheBytes)
      await this.index.load()
      await this.loadCounters()
      this.tiers.hotMinBlock = await findHotMinBlock(this)
      await findVersionMarks(this)
      await this.replayBuffer()
    } catch (err) {
      this.state = 'closed'
      await this.store.close().catch(() => {})
      throw err
    }
    this.state = 'open'
    // After a failed seal the timer waits longer between attempts (see sealFailed).
    this.every(this.config.sealIntervalMs, () =>
      performance.now() < this.sealTrouble.retryAtMs ? Promise.resolve() : this.seal(false),
    )
    this.every(this.config.moveIntervalMs, () =>
      this.jobs.run(async () => {
        await moveCold(this)
        await expireVersions(this)
      }),
    )
    if (this.config.retentionMs > 0) {
      this.every(this.config.retentionIntervalMs, () => this.jobs.run(() => applyRetention(this)))
    }
    this.logger.info(
      { dataDir: this.config.dataDir, series: this.index.size, buffered: this.head.bufferedPoints },
      'engine open',
    )
  }

  async close(): Promise<void> {
    if (this.state !== 'open') return
    this.state = 'closing'
    for (const timer of this.timers) clearInterval(timer)
    this.timers = []
    await this.draining
    await this.committing
    // Every step runs whatever the one before did, and the first failure is thrown at the end: a seal
    // that fails (a log that cannot be synced) leaves its points in the write buffer, which the next
    // open replays, and the database and the workers are released either way.
    let failure: unknown
    for (const step of [
      () => this.jobs.run(() => sealBlocks(this, true)),
      () => this.store.close(),
      () => this.decodePool.close(),
    ]) {
      await step().catch((err: unknown) => {
        failure ??= err
      })
    }
    this.state = 'closed'
    if (failure !== undefined) throw failure
  }

  async write(batch: WriteBatch, ctx?: CallContext): Promise<WriteResult> {
    this.assertOpen()
    if (batch.series.length >= LARGE_WORK_SERIES) await largeWork.enter(ctx)
    return this.writeValidated(validateWriteBatch(batch, this.config.limits, this.validated), ctx)
  }

  async writeValidated(normalized: NormalizedBatch, ctx?: CallContext): Promise<WriteResult> {
    this.assertOpen()
    const started = performance.now()
    checkSignal(ctx)
    // Backpressure: a producer faster than the sealer waits here instead of growing the buffer.
    if (this.head.bufferedPoints > 2 * this.config.maxBufferedPoints) await this.seal(false)
    // Once versions are stored (a cluster node), a write may meet sealed points of higher versions (a
    // late hint, a repair): those points are left out here, so that reads, which merge the head over
    // stored blocks, never show them. The seal resolves them again, as the authority.
    const batch =
      this.versionMarks.minBlock <= this.versionMarks.maxBlock ? await this.dropSuperseded(normalized) : normalized
    if (batch.series.length > 0) {
      await new Promise<void>((resolve, reject) => {
        this.queue.push({ batch, resolve, reject })
        if (!this.draining) this.draining = this.drain()
      })
    }
    this.writeLatency.record(performance.now() - started)
    // Superseded points count as written: the write succeeded, a newer one of those points had come first.
    return { pointsWritten: normalized.points, seriesWritten: normalized.series.length }
  }

  /** The batch without the points whose sealed copies have higher versions (see keepAgainstStored). */
  private async dropSuperseded(normalized: NormalizedBatch): Promise<NormalizedBatch> {
    const keeps = await keepAgainstStored(
      this,
      normalized.series.map((s) => ({ entry: this.index.get(s.key), ts: s.timestamps, vers: s.versions ?? s.version })),
    )
    if (keeps.every((keep) => keep === undefined)) return normalized
    const series: NormalizedSeries[] = []
    let points = 0
    normalized.series.forEach((s, i) => {
      const keep = keeps[i]
      if (keep === undefined) {
        series.push(s)
        points += s.timestamps.length
        return
      }
      if (keep.length === 0) return
      const pick = (a: Float64Array): Float64Array => Float64Array.from(keep, (k) => a[k] as number)
      const kept = { ...s, timestamps: pick(s.timestamps), values: pick(s.values) }
      series.push(s.versions === undefined ? kept : { ...kept, versions: pick(s.versions) })
      points += keep.length
    })
    return { series, points }
  }

  /**
   * Group commit: the requests queued while the previous write was in flight go to RocksDB in one
   * batch (one fsync under the group policy), up to GROUP_MAX_SERIES series or GROUP_MAX_POINTS
   * points (a request bigger than that alone); under `always` each request is its own batch.
   *
   * Two groups overlap: a group goes to RocksDB while the one before waits for its log sync, and
   * its own sync follows that one (see LogSyncer.sync), so a write that comes during a sync does not
   * wait for it to end before its RocksDB write begins. Under remote write at 2 requests in flight
   * a group was one request, and its sync took 0.75 ms of the request's 3 (2 cores, Node 20). The
   * groups reach the head, and their writers their answers, in order.
   */
  private async drain(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve))
    try {
      while (this.queue.length > 0) {
        let next = this.nextGroup()
        if (next.series >= LARGE_WORK_SERIES) {
          // A large group waits for its turn in the queue, so that writes arriving meanwhile still join.
          await largeWork.enter()
          next = this.nextGroup()
        }
        const group = this.queue.splice(0, next.take)
        const before = this.committing
        const writing = this.writeGroup(group)
        // Set before the RocksDB write, so that whoever waits for the commits (a delete) waits for this one too.
        this.committing = writing.then((written) =>
          written === undefined ? before : this.finishGroup(group, written, before),
        )
        await writing
        // No third group goes to RocksDB before the one before this one is in the head.
        await before
      }
    } finally {
      this.draining = undefined
    }
  }

  /** The requests at the head of the queue that go to RocksDB together, and their series. */
  private nextGroup(): { take: number; series: number } {
    let series = this.queue[0]?.batch.series.length ?? 0
    if (this.config.sync === 'always') return { take: 1, series }
    let points = this.queue[0]?.batch.points ?? 0
    let take = 1
    for (; take < this.queue.length; take++) {
      const next = this.queue[take]!.batch
      if (series + next.series.length > GROUP_MAX_SERIES || points + next.points > GROUP_MAX_POINTS) break
      series += next.series.length
      points += next.points
    }
    return { take, series }
  }

  /**
   * The oldest write-buffer record whose points are not in the head yet: a seal that trims the write
   * buffer keeps it and every later one.
   */
  get committingSeq(): number | undefined {
    return this.unappliedSeqs[0]
  }

  /**
   * The group's records, in one RocksDB batch written unsynced; undefined when the write failed,
   * and then its writers have their answer.
   */
  private async writeGroup(group: PendingWrite[]): Promise<WrittenGroup | undefined> {
    const rocks = this.store.db.batch()
    const created: SeriesEntry[] = []
    // No object per series: a request's entries pair by position with its normalized series.
    const applied: AppliedWrite[] = []
    let points = 0
    for (const pending of group) points += pending.batch.points
    const firstSeq = this.nextSeq
    // Until the points are in the head, a seal that trims the write buffer must keep these records.
    this.unappliedSeqs.push(firstSeq)
    try {
      this.nextSeq += group.length
      this.counters.pointsWritten += points
      // The counters go first: RocksDB's batch is one growing string, and small records appended
      // after a request's record (hundreds of KiB) would make it reallocate and copy that record.
      putCounters(this, rocks)
      for (let g = 0; g < group.length; g++) {
        const pending = group[g]!
        const seq = firstSeq + g
        const series = pending.batch.series
        const entries: SeriesEntry[] = []
        for (const s of series) {
          let entry = this.index.get(s.key)
          if (entry === undefined) {
            const ensured = this.index.ensure(s.key, s.metric, s.tags, rocks)
            entry = ensured.entry
            if (ensured.created) created.push(entry)
          }
          entries.push(entry)
        }
        // The batch copies the record at put(), so every record of the group can use the one scratch.
        const record = encodeBufferRecord(entries, series, this.recordScratch)
        rocks._put(bufferKey(seq), record, { column: this.store.columns.buffer })
        applied.push({ seq, series, entries })
      }
      // Unsynced here, and synced in finishGroup, so that a failed write and a failed sync answer apart.
      await this.store.writeBatch(rocks, false)
      return { applied, created }
    } catch (err) {
      this.unappliedSeqs.splice(this.unappliedSeqs.indexOf(firstSeq), 1)
      this.counters.pointsWritten -= points
      for (const entry of created) this.index.forget(entry)
      const failure = new UnavailableError(`cannot write to the database: ${(err as Error).message}`, { cause: err })
      for (const pending of group) pending.reject(failure)
      return undefined
    }
  }

  /**
   * The rest of a group's commit, once `before` (the group before it) is done: its log synced, its
   * points in the head, its writers answered. Never rejects.
   */
  private async finishGroup(group: PendingWrite[], written: WrittenGroup, before: Promise<void>): Promise<void> {
    // The batch is in RocksDB, and its log in the kernel's hands: a kill -9 no longer loses it. The
    // fsync runs in the thread pool (see LogSyncer.write), so calls are served meanwhile, and
    // the next group is written meanwhile; the points join the head, where queries see them, once it
    // is done. From here the engine's state follows the batch whatever the sync says; only the
    // writers' answer depends on it.
    let unsynced: Error | undefined
    if (syncsWrites(this.config)) {
      try {
        await this.store.syncWal()
      } catch (err) {
        unsynced = err as Error
      }
    }
    await before
    const { applied, created } = written
    for (const { seq, series, entries } of applied) {
      for (let k = 0; k < series.length; k++) {
        const s = series[k]!
        const handle = entries[k]!.handle
        const ts = s.timestamps
        this.head.append(handle, ts, s.values, seq, s.versions ?? s.version)
        // Normalized timestamps are sorted: the first and last bound what the write touched.
        this.resultCache.changed(handle, ts[0] as number, ts[ts.length - 1] as number)
      }
    }
    this.unappliedSeqs.shift()
    for (const entry of created) {
      this.resultCache.metricChanged(entry.metric)
      // A new series has nothing stored yet: its stored latest point is known (none), so Latest
      // never scans for it; seals raise it from here.
      this.latestCache.store(entry.handle, this.latestCache.generation(entry.handle), null)
    }
    if (this.subscriptions.size > 0) {
      this.subscriptions.publish(
        applied.flatMap(({ series, entries }) =>
          series.map((s, k) => ({
            key: entries[k]!.key,
            metric: entries[k]!.metric,
            tags: entries[k]!.tags,
            timestamps: s.timestamps,
            values: s.values,
          })),
        ),
      )
    }
    if (unsynced !== undefined) {
      const failure = new UnavailableError(
        `the write reached the database, but its write-ahead log could not be synced to disk: ${unsynced.message}`,
        { cause: unsynced },
      )
      for (const pending of group) pending.reject(failure)
    } else {
      for (const pending of group) pending.resolve()
    }
    if (this.head.bufferedPoints > this.config.maxBufferedPoints) void this.seal(false)
  }

  async query(request: QueryRequest, ctx?: CallContext): Promise<SeriesPoints[]> {
    return (await this.queryShard(request, undefined, ctx)).flat()
  }

  async queryShard(
    request: QueryRequest,
    filter: SeriesFilter | undefined,
    ctx?: CallContext,
  ): Promise<SeriesPoints[][]> {
    return this.eachSelector(request, (one, budgets) => this.queryOne(one, budgets, filter, ctx))
  }

  async queryPartials(
    request: QueryRequest,
    filter: SeriesFilter | undefined,
    ctx?: CallContext,
  ): Promise<PartialGroup[][]> {
    if (!request.aggregation) throw ValidationError.field('aggregation', 'is required for partial aggregates')
    return this.eachSelector(request, async (one, budgets) => {
      const slicer = new Slicer(ctx)
      const entries = filterEntries(this.index, await this.index.selectSliced(one.selector, slicer), filter)
      const inputs = await this.aggregateInputs(one, entries, budgets, ctx)
      const groups = await slicer.drive(partialSteps(inputs, request.aggregation!, one.startMs, one.endMs))
      for (const g of groups) budgets.result.take(g.starts.length)
      return groups
    })
  }

  /**
   * Answers the request's selector and each additional selector as if queried alone, in order,
   * under one budget, so that many selectors cannot take more than one query may.
   */
  private async eachSelector<T>(
    request: QueryRequest,
    one: (request: QueryRequest, budgets: QueryBudgets) => Promise<T[]>,
  ): Promise<T[][]> {
    this.assertOpen()
    const started = performance.now()
    checkRange(request.startMs, request.endMs)
    const max = this.config.maxPointsPerQuery
    const budgets: QueryBudgets = { result: new PointBudget(max), read: new PointBudget(max, READ_BUDGET_TIMES) }
    const parts = await Promise.all([
      one(request, budgets),
      ...(request.additionalSelectors ?? []).map((selector, i) =>
        one({ ...request, selector }, budgets).catch((err: unknown) => {
          throw err instanceof ValidationError ? err.renamed('selector', `additional_selectors[${i}]`) : err
        }),
      ),
    ])
    this.queryLatency.record(performance.now() - started)
    return parts
  }

  /** The points (and, where they answer the function, whole-run summaries) an aggregation folds. */
  private async aggregateInputs(
    request: QueryRequest,
    entries: readonly SeriesEntry[],
    budgets: QueryBudgets,
    ctx: CallContext | undefined,
  ): Promise<AggregateInput[]> {
    const agg = request.aggregation!
    if (!Number.isSafeInteger(agg.stepMs) || agg.stepMs < 0) {
      throw ValidationError.field('aggregation.step_ms', 'must be a non-negative integer number of milliseconds')
    }
    const filter = request.valueFilter
    const inputs =
      SUMMARIZABLE.has(agg.func) && !filter
        ? await readManyForAggregate(this, entries, request.startMs, request.endMs, agg.stepMs, budgets.read, ctx)
        : await readMany(this, entries, request.startMs, request.endMs, budgets.read, ctx)
    return filter ? filterValues(inputs, filter) : inputs
  }

  /** One selector's answer; `request.additionalSelectors` is not looked at. */
  private async queryOne(
    request: QueryRequest,
    budgets: QueryBudgets,
    seriesFilter: SeriesFilter | undefined,
    ctx: CallContext | undefined,
  ): Promise<SeriesPoints[]> {
    const slicer = new Slicer(ctx)
    const entries = filterEntries(this.index, await this.index.selectSliced(request.selector, slicer), seriesFilter)
    // A disabled result cache is not asked by key: building the key cost more than the rest of a miss.
    const key = !this.resultCache.enabled
      ? undefined
      : seriesFilter === undefined
        ? queryKey(request)
        : `${queryKey(request)}\u0003${seriesFilter.key}`
    const cached = key === undefined ? this.resultCache.miss() : this.resultCache.get(key, retentionCutoffMs(this))
    if (cached) {
      for (const s of cached) budgets.result.take(s.timestamps.length)
      return cached
    }
    const token = this.resultCache.begin()
    const filter = request.valueFilter
    let result: SeriesPoints[]
    if (!request.aggregation) {
      if (filter === undefined) {
        result = await readMany(this, entries, request.startMs, request.endMs, budgets.result, ctx)
      } else {
        // The points the filter keeps count against the limit; those it reads, against the read budget.
        const read = await readMany(this, entries, request.startMs, request.endMs, budgets.read, ctx)
        result = filterValues(read, filter)
        for (const s of result) budgets.result.take(s.timestamps.length)
      }
    } else {
      const inputs = await this.aggregateInputs(request, entries, budgets, ctx)
      result = await slicer.drive(aggregateSteps(inputs, request.aggregation, request.startMs, request.endMs))
      for (const s of result) budgets.result.take(s.timestamps.length)
    }
    if (key !== undefined)
      this.resultCache.set(
        key,
        token,
        request,
        result,
        entries.map((e) => e.handle),
      )
    return result
  }

  async latest(selector: Selector, ctx?: CallContext): Promise<SeriesPoints[]> {
    return this.latestShard(selector, undefined, ctx)
  }

  async latestShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesPoints[]> {
    this.assertOpen()
    const started = performance.now()
    const slicer = new Slicer(ctx)
    const entries = filterEntries(this.index, await this.index.selectSliced(selector, slicer), filter)
    // Cached latest points answer without I/O, so only the slicer lets other calls in between.
    const points = await mapLimit(entries, this.config.queryConcurrency, async (entry) => {
      checkSignal(ctx)
      await slicer.pause()
      return readLatest(this, entry)
    })
    const out: SeriesPoints[] = []
    entries.forEach((entry, i) => {
      const p = points[i]
      if (p)
        out.push({
          metric: entry.metric,
          tags: entry.tags,
          timestamps: Float64Array.of(p.ts),
          values: Float64Array.of(p.val),
        })
    })
    this.queryLatency.record(performance.now() - started)
    return out
  }

  async listSeries(selector: Selector, ctx?: CallContext): Promise<SeriesRef[]> {
    return this.listSeriesShard(selector, undefined, ctx)
  }

  async listSeriesShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesRef[]> {
    this.assertOpen()
    const entries = filterEntries(this.index, await this.index.selectSliced(selector, new Slicer(ctx)), filter)
    return entries.map((e) => ({ metric: e.metric, tags: e.tags }))
  }

  async digestShard(buckets: SeriesBuckets, startMs: number, endMs: number, ctx?: CallContext): Promise<BlockDigest[]> {
    this.assertOpen()
    checkRange(startMs, endMs)
    return digestEntries(this, this.index.all(), buckets, startMs, endMs, ctx)
  }

  async versionsOf(series: SeriesRef, timestamps: Float64Array, ctx?: CallContext): Promise<Float64Array> {
    this.assertOpen()
    checkSignal(ctx)
    const entry = this.index.get(seriesKeyOf(series.metric, series.tags))
    if (entry === undefined) return new Float64Array(timestamps.length)
    // The head's copy is the one reads return while it is buffered; the stored version otherwise.
    const out = this.head.versionsAt(entry.handle, timestamps)
    const unknown: number[] = []
    out.forEach((v, i) => {
      if (v < 0) unknown.push(i)
    })
    if (unknown.length === 0) return out
    const stored = await storedVersions(
      this,
      entry,
      Float64Array.from(unknown, (i) => timestamps[i] as number),
    )
    unknown.forEach((i, k) => {
      out[i] = stored[k] as number
    })
    return out
  }

  async readShard(filter: SeriesFilter, startMs: number, endMs: number, ctx?: CallContext): Promise<SeriesPoints[]> {
    this.assertOpen()
    checkRange(startMs, endMs)
    const entries = filterEntries(this.index, this.index.all(), filter)
    return readMany(this, entries, startMs, endMs, new PointBudget(Number.POSITIVE_INFINITY), ctx)
  }

  async deleteSeries(request: DeleteRequest, ctx?: CallContext): Promise<DeleteResult> {
    return this.deleteSeriesCounted(request, undefined, ctx)
  }

  async deleteSeriesCounted(
    request: DeleteRequest,
    countFilter: SeriesFilter | undefined,
    ctx?: CallContext,
  ): Promise<DeleteResult> {
    this.assertOpen()
    // A selector of every metric would delete every series: a delete must name its metric.
    compileSelector(request.selector, { requireMetric: true, regexes: this.index.regexes })
    const ranged = request.startMs !== undefined || request.endMs !== undefined
    if (ranged) checkRange(request.startMs ?? 0, request.endMs ?? 0)
    const entries = await this.index.selectSliced(request.selector, new Slicer(ctx))
    let raced = 0
    await this.jobs.run(async () => {
      // Seal first, so that no write-buffer record can bring deleted points back after a restart.
      await sealBlocks(this, true)
      for (const entry of entries) {
        checkSignal(ctx)
        raced += await deleteSeriesData(this, entry, request.startMs, request.endMs)
      }
    })
    // The seal above trims the records of the writes before it; this trims those of writes that
    // raced the delete, whose points it dropped from the buffer (a restart would replay them): a
    // write that took a deleted series just before the delete, as dropShard does, or one whose
    // points fell in a deleted range.
    if ((!ranged && entries.length > 0) || raced > 0) await this.trimRacingRecords()
    return { seriesMatched: filterEntries(this.index, entries, countFilter).length }
  }

  async dropShard(
    filter: SeriesFilter,
    ctx?: CallContext,
  ): Promise<{ readonly series: number; readonly points: number }> {
    this.assertOpen()
    const slicer = new Slicer(ctx)
    // Series created after the drop began are left alone: it drops what the node held when asked.
    const end = this.index.handleEnd
    let handle = 0
    const next = async (): Promise<SeriesEntry | undefined> => {
      while (handle < end) {
        // A filter looks up every series (a ring lookup in a cluster): millions of them take seconds.
        await slicer.pause()
        const entry = this.index.byHandle(handle++)
        if (entry !== undefined && filter.accepts(entry.key, this.index.tokenOf(entry))) return entry
      }
      return undefined
    }
    let series = 0
    let points = 0
    // One batch at a time under the job lock, so that seals and moves run in between and a writer
    // waiting on a full write buffer is not held up for the whole drop.
    while (handle < end) {
      checkSignal(ctx)
      const dropped = await this.jobs.run(async () => {
        this.assertOpen()
        // Seal first, as deleteSeries does, so that no write-buffer record can bring dropped points
        // back after a restart.
        await sealBlocks(this, true)
        return dropSeriesBatch(this, next, DROP_CONCURRENCY, DROP_BATCH_OPERATIONS)
      })
      series += dropped.series
      points += dropped.points
    }
    // Each batch's seal trims the records of the writes before it; this one trims those of the last
    // batch.
    if (series > 0) await this.trimRacingRecords()
    return { series, points }
  }

  /**
   * The last step of a delete or drop of whole series. A write that raced the delete of its own
   * series left a write-buffer record naming the deleted series, which a restart would replay into
   * the series written again (or fail on, were it not). Once the write that may have taken a
   * deleted series just before the delete went is in, a forced seal trims its record.
   */
  private async trimRacingRecords(): Promise<void> {
    await this.committing
    await this.jobs.run(() => sealBlocks(this, true))
  }

  async compact(ctx?: CallContext): Promise<CompactResult> {
    this.assertOpen()
    return this.jobs.run(async () => {
      const blocksSealed = await sealBlocks(this, true)
      checkSignal(ctx)
      const blocksMoved = await moveCold(this)
      await expireVersions(this)
      checkSignal(ctx)
      const seriesExpired = await applyRetention(this)
      return { blocksSealed, blocksMoved, seriesExpired }
    })
  }

  async stats(): Promise<EngineStats> {
    this.assertOpen()
    return {
      series: this.index.size,
      pointsWritten: this.counters.pointsWritten,
      bufferedPoints: this.head.bufferedPoints,
      hotBlocks: this.counters.hotBlocks,
      coldRuns: this.counters.coldRuns,
      coldBlocks: this.counters.coldBlocks,
      bytesOnDisk: await folderBytes(this.config.dataDir),
      writes: this.writeLatency.summary(),
      queries: this.queryLatency.summary(),
      caches: {
        results: { ...this.resultCache.counters },
        decodedBlocks: { ...this.decodedCache.counters },
        selectors: { ...this.index.selectCounters },
      },
    }
  }

  subscribe(selector: Selector, listener: PointsListener): Subscription {
    this.assertOpen()
    return this.subscriptions.subscribe(selector, listener)
  }

  /**
   * The RocksDB properties worth watching. The binding reads properties of the default column
   * family only: the database-wide ones (compactions, flushes, stalls, background errors) are
   * exact, while the memtable and pending-compaction figures cover that family alone, not the data
   * families, so their names say so. Block cache usage is not readable through it at all.
   */
  async properties(): Promise<Record<string, number>> {
    this.assertOpen()
    const out: Record<string, number> = {}
    for (const name of ROCKSDB_PROPERTIES) {
      const text = this.store.db.getProperty(name)
      if (/^\d+$/.test(text)) out[name] = Number(text)
    }
    out['v3.seal-failures'] = this.sealTrouble.total
    out['v3.disk-free-bytes'] = await this.store.freeBytes()
    return out
  }

  /**
   * A failed seal (a full disk, say) leaves its points in the write buffer and is tried again: the
   * timer's next attempt waits twice as long after each failure in a row, up to SEAL_RETRY_MAX_MS,
   * and the same failure is logged again only after SEAL_LOG_REPEAT_MS, with the count, instead of
   * every second with its stack.
   */
  private sealFailed(err: unknown): void {
    const t = this.sealTrouble
    t.inARow++
    t.total++
    const now = performance.now()
    const backoff = this.config.sealIntervalMs * 2 ** Math.min(t.inARow - 1, 10)
    t.retryAtMs = now + Math.min(SEAL_RETRY_MAX_MS, backoff)
    const message = err instanceof Error ? err.message : String(err)
    if (message === t.message && now - t.loggedAtMs < SEAL_LOG_REPEAT_MS) return
    const repeat = message === t.message
    t.message = message
    t.loggedAtMs = now
    this.logger.error(
      repeat ? { err: message, failuresInARow: t.inARow } : { err },
      'sealing blocks failed; the points stay buffered',
    )
  }

  private sealSucceeded(): void {
    const t = this.sealTrouble
    if (t.inARow > 0) this.logger.info({ failuresInARow: t.inARow }, 'sealing blocks works again')
    t.inARow = 0
    t.retryAtMs = 0
    t.message = ''
    t.loggedAtMs = Number.NEGATIVE_INFINITY
  }

  /** Seals due blocks; one run at a time. Never rejects: a failed seal is logged and retried later. */
  private seal(force: boolean): Promise<void> {
    if (!this.sealing) {
      this.sealing = this.jobs
        .run(() => sealBlocks(this, force))
        .then(
          () => this.sealSucceeded(),
          (err: unknown) => this.sealFailed(err),
        )
        .finally(() => {
          this.sealing = undefined
        })
    }
    return this.sealing
  }

  private every(ms: number, job: () => Promise<unknown>): void {
    let running = false
    const timer = setInterval(() => {
      if (running || this.state !== 'open') return
      running = true
      job()
        .catch((err: unknown) => this.logger.error({ err }, 'background job failed'))
        .finally(() => {
          running = false
        })
    }, ms)
    timer.unref()
    this.timers.push(timer)
  }

  private assertOpen(): void {
    if (this.state !== 'open')
      throw new UnavailableError(`the engine is ${this.state === 'new' ? 'not open' : this.state}`)
  }

  private async loadCounters(): Promise<void> {
    const read = async (name: string): Promise<number | undefined> => (await this.store.getMeta(name))?.readDoubleBE(0)
    this.counters.pointsWritten = (await read(META_POINTS_WRITTEN)) ?? 0
    this.counters.hotBlocks = (await read(META_HOT_BLOCKS)) ?? 0
    this.counters.coldRuns = (await read(META_COLD_RUNS)) ?? 0
    this.counters.coldBlocks = (await read(META_COLD_BLOCKS)) ?? 0
    this.tiers.coldMaxBlock = (await read(META_COLD_MAX_BLOCK_KEY)) ?? Number.NEGATIVE_INFINITY
    // Data folders written before the mark existed have runs from anywhere on: no lower bound.
    const anyCold = this.tiers.coldMaxBlock !== Number.NEGATIVE_INFINITY
    this.tiers.coldMinBlock = (await read(META_COLD_MIN_BLOCK)) ?? (anyCold ? MIN_BLOCK : Number.POSITIVE_INFINITY)
    this.nextSeq = (await read(META_NEXT_SEQ)) ?? 0
  }

  /** Puts back the acknowledged points that were not sealed before the last stop. */
  private async replayBuffer(): Promise<void> {
    await this.store.scan({ column: this.store.columns.buffer }, (page) => {
      for (const [key, value] of page) {
        const seq = bufferSeq(key)
        for (const s of decodeBufferRecord(value, seq)) {
          const entry = this.index.byId(s.id)
          if (!entry) throw new Error(`BUG: write-buffer record ${seq} names unknown series ${s.id.toString('hex')}`)
          this.head.append(entry.handle, s.ts, s.vals, seq, s.vers)
        }
        if (seq >= this.nextSeq) this.nextSeq = seq + 1
      }
    })
  }
}

/** Series whose data a drop reads and deletes at once. */
const DROP_CONCURRENCY = 8
/**
 * Deletes and rewrites in one batch of a drop (each RocksDB operation about 30 bytes), give or take
 * the operations of the series staged at once. A cold run is decoded to keep the block counters,
 * as deleteSeries does: 20 000 runs of 360 points held the job lock for about 0.5 s (16 000 runs
 * of one point, 0.5 s), so the sealer waits at most about that long between batches.
 */
const DROP_BATCH_OPERATIONS = 20_000

/** The longest wait between the timer's attempts to seal after failures in a row. */
const SEAL_RETRY_MAX_MS = 30_000
/** How long the same seal failure goes unlogged after it was logged. */
const SEAL_LOG_REPEAT_MS = 60_000

const ROCKSDB_PROPERTIES = [
  'rocksdb.num-running-compactions',
  'rocksdb.num-running-flushes',
  'rocksdb.background-errors',
  'rocksdb.is-write-stopped',
  'rocksdb.actual-delayed-write-rate',
  'rocksdb.cur-size-all-mem-tables',
  'rocksdb.estimate-pending-compaction-bytes',
  'rocksdb.block-cache-usage',
] as const

function checkRange(startMs: number, endMs: number): void {
  if (!Number.isSafeInteger(startMs))
    throw ValidationError.field('start_ms', 'must be an integer number of milliseconds')
  if (!Number.isSafeInteger(endMs)) throw ValidationError.field('end_ms', 'must be an integer number of milliseconds')
  if (endMs <= startMs)
    throw ValidationError.field('end_ms', `must be greater than start_ms (${startMs}), got ${endMs}`)
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir)) {
    const info = await stat(join(dir, name)).catch(() => undefined)
    if (info?.isFile()) total += info.size
  }
  return total
}
