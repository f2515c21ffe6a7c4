import type { ColumnHandle } from '@nxtedition/rocksdb'
import { decodeBlock } from '../codec/block-codec.js'
import { coldRun, coldSummary, type RunSummaryWithSpan } from '../codec/cold-value.js'
import {
  blockKeyRange,
  blockOfKey,
  blockStartMs,
  encodeRowKey,
  MAX_BLOCK,
  MAX_TIMESTAMP_MS,
  MIN_BLOCK,
  MIN_TIMESTAMP_MS,
  RUN_MS,
  runStartBlock,
} from '../codec/row-key.js'
import { decodeRun } from '../codec/run-codec.js'
import { BLOCK_MS, RUN_BLOCKS } from '../codec/schema.js'
import { LimitError } from '../model/errors.js'
import { firstAtLeast } from '../model/timestamps.js'
import type { SeriesPoints } from '../model/types.js'
import { type AggregateInput, bucketStart } from './aggregate.js'
import { type EngineCore, mapLimit, retentionCutoffMs } from './engine-core.js'
import { concatRuns, mergeRuns, type PointRun } from './head.js'
import type { Point } from './latest-cache.js'
import { type RangeCursor, SYNC_GET_MAX_KEYS } from './rocks-store.js'
import type { SeriesEntry } from './series-index.js'
import { checkSignal, Slicer } from './slicer.js'
import type { CallContext } from './storage-engine.js'

const EMPTY: PointRun = { ts: new Float64Array(0), vals: new Float64Array(0) }

/** Blocks [from, to) of a series, clamped to the storable range. */
export function clampedRange(id: Buffer, from: number, to: number): { gte: Buffer; lt: Buffer } {
  const lo = Math.min(Math.max(MIN_BLOCK, from), MAX_BLOCK + 1)
  const hi = Math.min(Math.max(MIN_BLOCK, to), MAX_BLOCK + 1)
  return blockKeyRange(id, lo, hi)
}

/**
 * Shared by the series of one query: stops it once it would return too many points, or, as a read
 * budget (`times` > 1), once it would read more than `times` the limit to compute its answer.
 */
export class PointBudget {
  private used = 0
  constructor(
    private readonly max: number,
    private readonly times = 1,
  ) {}

  take(n: number): void {
    this.used += n
    if (this.used > this.max * this.times) {
      throw new LimitError(
        'max_points_per_query',
        this.max,
        this.times === 1
          ? `the query would return more than ${this.max} points`
          : `the query would read more than ${this.times} times that many points`,
      )
    }
  }
}

/**
 * The part of [startMs, endMs) that stored points can lie in: the storable time range, without
 * what retention hides. Empty (from >= to) when nothing can be there, so a range as wide as the
 * request format allows costs what the data in it costs.
 */
function readableRange(core: EngineCore, startMs: number, endMs: number): { from: number; to: number } {
  return {
    from: Math.max(startMs, retentionCutoffMs(core), MIN_TIMESTAMP_MS),
    to: Math.min(endMs, MAX_TIMESTAMP_MS + 1),
  }
}

/** The cold run ('c') or hot block ('h') of a series at `block`, decoded, from the decoded-block cache when it holds it. */
function decoded(
  core: EngineCore,
  family: 'c' | 'h',
  seriesHex: string,
  block: number,
  value: Buffer,
  generation: number,
): PointRun {
  const cached = core.decodedCache.get(family, seriesHex, block)
  if (cached) return cached
  const start = blockStartMs(block)
  const d = family === 'c' ? decodeRun(coldRun(value), start) : decodeBlock(value, start)
  const run = { ts: d.timestamps, vals: d.values }
  core.decodedCache.set(family, seriesHex, block, run, generation)
  return run
}

/** The part of a decoded run or block inside [startMs, endMs); runs are sorted, so two binary searches. */
function clip(ts: Float64Array, vals: Float64Array, startMs: number, endMs: number): PointRun {
  let lo = 0
  let hi = ts.length
  if (ts.length > 0 && ((ts[0] as number) < startMs || (ts[ts.length - 1] as number) >= endMs)) {
    lo = firstAtLeast(ts, 0, startMs)
    hi = firstAtLeast(ts, 0, endMs)
  }
  if (lo === 0 && hi === ts.length) return { ts, vals }
  return { ts: ts.subarray(lo, hi), vals: vals.subarray(lo, hi) }
}

/**
 * Reads one series over [startMs, endMs): cold runs, hot blocks and the write buffer, newer tiers
 * winning on equal timestamps. The buffer is copied and both iterators (with their snapshots) are
 * created in the same tick, or the cold runs read by key in it, so a concurrent seal or move can
 * neither hide a point nor show it twice.
 */
export async function readSeries(
  core: EngineCore,
  entry: SeriesEntry,
  startMs: number,
  endMs: number,
  taken?: TakenTogether,
): Promise<PointRun> {
  const fromBlock = Math.floor(startMs / BLOCK_MS)
  const toBlock = Math.floor((endMs - 1) / BLOCK_MS)
  const generation = taken?.generation ?? core.decodedCache.generation(entry.idHex)
  const buffered = taken === undefined ? (core.head.read(entry.handle, startMs, endMs) ?? EMPTY) : taken.buffered
  const cols = core.store.columns
  const coldPieces: PointRun[] = []
  // A long range decodes its runs in a worker, off the event loop every call shares.
  const runSpan = Math.floor((toBlock - runStartBlock(fromBlock)) / RUN_BLOCKS) + 1
  const inWorker = core.decodePool.enabled && runSpan >= core.config.workerDecodeMinRuns
  const coldItems: Array<{ block: number; value: Buffer; run: PointRun | undefined }> = []
  const hotPieces: PointRun[] = []
  const reads: Promise<void>[] = []
  // A short range's runs are read by their keys, here and now, in the tick of the buffer copy: no
  // iterator to open and close, no hand-off to the thread pool (see getManyNow).
  const coldNow =
    fromBlock <= core.tiers.coldMaxBlock && !inWorker ? readColdRunsNow(core, entry, fromBlock, toBlock) : undefined
  if (coldNow) {
    for (const [key, value] of coldNow) {
      const run = decoded(core, 'c', entry.idHex, blockOfKey(key), value, generation)
      const piece = clip(run.ts, run.vals, startMs, endMs)
      if (piece.ts.length > 0) coldPieces.push(piece)
    }
  } else if (fromBlock <= core.tiers.coldMaxBlock) {
    // The runs are decoded once all are read (below).
    const takeCold = (page: Array<[Buffer, Buffer]>): void => {
      for (const [key, value] of page) {
        const block = blockOfKey(key)
        coldItems.push({ block, value, run: core.decodedCache.get('c', entry.idHex, block) })
      }
    }
    const range = clampedRange(entry.id, runStartBlock(fromBlock), Math.min(toBlock, core.tiers.coldMaxBlock) + 1)
    readRange(core, cols.cold, taken?.cold, range, coldRuns(core, fromBlock, toBlock).count + 1, takeCold, reads)
  }
  const hotMinBlock = taken?.hotMinBlock ?? core.tiers.hotMinBlock
  if (toBlock >= hotMinBlock) {
    const hotFrom = Math.max(fromBlock, hotMinBlock)
    const takeHot = (page: Array<[Buffer, Buffer]>): void => {
      for (const [key, value] of page) {
        const block = decoded(core, 'h', entry.idHex, blockOfKey(key), value, generation)
        const piece = clip(block.ts, block.vals, startMs, endMs)
        if (piece.ts.length > 0) hotPieces.push(piece)
      }
    }
    readHot(core, entry, taken?.hot, hotFrom, toBlock + 1, takeHot, reads)
  }
  await Promise.all(reads)
  const misses = coldItems.filter((item) => item.run === undefined)
  if (inWorker && misses.length > 0) {
    const runs = await core.decodePool.decodeRuns(
      misses.map((m) => ({ runStartMs: blockStartMs(m.block), bytes: coldRun(m.value) })),
    )
    misses.forEach((m, i) => {
      m.run = runs[i]
      if (m.run) core.decodedCache.set('c', entry.idHex, m.block, m.run, generation)
    })
  }
  for (const item of coldItems) {
    const run = item.run ?? decoded(core, 'c', entry.idHex, item.block, item.value, generation)
    const piece = clip(run.ts, run.vals, startMs, endMs)
    if (piece.ts.length > 0) coldPieces.push(piece)
  }
  return mergeRuns(mergeRuns(concatRuns(coldPieces), concatRuns(hotPieces)), buffered)
}

/**
 * The rows of one series at blocks from, from + step, ... up to `to` (exclusive) of a family, read
 * by their keys on the calling thread, in key order, absent ones left out; undefined when they are
 * more than getManyNow takes, and the caller scans them instead. No iterator to open (about 48 µs
 * in a profile of one-series reads) and no hand-off to the thread pool and back.
 */
function readRowsNow(
  core: EngineCore,
  column: ColumnHandle,
  entry: SeriesEntry,
  from: number,
  to: number,
  step: number,
): Array<[Buffer, Buffer]> | undefined {
  if (Math.ceil((to - from) / step) > SYNC_GET_MAX_KEYS) return undefined
  const keys: Buffer[] = []
  for (let block = from; block < to; block += step) keys.push(encodeRowKey(entry.id, block))
  const values = keys.length === 0 ? [] : core.store.getManyNow(column, keys)
  if (values === undefined) return undefined
  const out: Array<[Buffer, Buffer]> = []
  values.forEach((value, i) => {
    if (value) out.push([keys[i] as Buffer, value])
  })
  return out
}

/** The cold runs of one series that may hold blocks [fromBlock, toBlock], as readRowsNow reads them. */
function readColdRunsNow(
  core: EngineCore,
  entry: SeriesEntry,
  fromBlock: number,
  toBlock: number,
): Array<[Buffer, Buffer]> | undefined {
  const { firstRun, lastRun } = coldRuns(core, fromBlock, toBlock)
  return readRowsNow(core, core.store.columns.cold, entry, firstRun, lastRun + 1, RUN_BLOCKS)
}

/**
 * Hands one series' hot blocks [fromBlock, toExclusive) to `take`: through the shared cursor when
 * there is one, by their keys at once when they are few (readRowsNow), else through a scan whose
 * promise joins `reads`.
 */
function readHot(
  core: EngineCore,
  entry: SeriesEntry,
  cursor: RangeCursor | undefined,
  fromBlock: number,
  toExclusive: number,
  take: (page: Array<[Buffer, Buffer]>) => void,
  reads: Promise<void>[],
): void {
  const hot = core.store.columns.hot
  const now = cursor === undefined ? readRowsNow(core, hot, entry, fromBlock, toExclusive, 1) : undefined
  if (now) take(now)
  else
    readRange(core, hot, cursor, clampedRange(entry.id, fromBlock, toExclusive), toExclusive - fromBlock, take, reads)
}

interface ColdValue {
  readonly runStart: number
  readonly value: Buffer
}

/** Cold runs that one multi-get may fetch for a query; beyond this, series are scanned one by one. */
const MAX_BATCHED_RUN_KEYS = 50_000
/** Series whose hot blocks one query scans at once; beyond this, series are read one by one. */
const MAX_BATCHED_HOT_SCANS = 256

/**
 * Reads the series an aggregation needs, with summaries where they can stand in for points: a cold
 * run that lies inside the range and inside one bucket, in an hour where neither the hot family nor
 * the write buffer has a point, contributes its stored summary instead of its decoded points.
 *
 * The runs of every series are fetched with one multi-get of their exact keys rather than one
 * iterator per series. Reads go in the order points flow, write buffer, then hot, then cold, each
 * starting no earlier than the one before, so a concurrent seal or move cannot hide a point.
 */
export async function readManyForAggregate(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  startMs: number,
  endMs: number,
  stepMs: number,
  budget: PointBudget,
  ctx: CallContext | undefined,
): Promise<AggregateInput[]> {
  const { from, to } = readableRange(core, startMs, endMs)
  if (from >= to || entries.length === 0) return []
  const fromBlock = Math.floor(from / BLOCK_MS)
  const toBlock = Math.floor((to - 1) / BLOCK_MS)
  const runsPerSeries = coldRuns(core, fromBlock, toBlock).count
  const readsHot = toBlock >= core.tiers.hotMinBlock
  const slicer = new Slicer(ctx)
  if (entries.length * runsPerSeries > MAX_BATCHED_RUN_KEYS || (readsHot && entries.length > MAX_BATCHED_HOT_SCANS)) {
    // A series' few runs are read by their keys on this thread, as readSeries reads them, rather
    // than through an iterator of their own.
    const byKeys = runsPerSeries <= SYNC_GET_MAX_KEYS
    const all = await readEach(core, entries, from, to, ctx, slicer, async (entry, taken) => {
      const [one] = await readGroupForAggregate(core, [entry], from, to, stepMs, budget, byKeys, slicer, taken)
      return one as AggregateInput
    })
    return all.filter((s) => s.timestamps.length > 0 || (s.summaries?.length ?? 0) > 0)
  }
  checkSignal(ctx)
  const all = await readGroupForAggregate(core, entries, from, to, stepMs, budget, true, slicer)
  return all.filter((s) => s.timestamps.length > 0 || (s.summaries?.length ?? 0) > 0)
}

/**
 * The first and last cold run a read of blocks [fromBlock, toBlock] may find: within the runs the
 * cold family holds at all, so the count of runs to fetch by key follows the data, not the range.
 */
function coldRuns(
  core: EngineCore,
  fromBlock: number,
  toBlock: number,
): { firstRun: number; lastRun: number; count: number } {
  const firstRun = Math.max(runStartBlock(fromBlock), core.tiers.coldMinBlock)
  const lastRun = Math.min(toBlock, core.tiers.coldMaxBlock)
  return { firstRun, lastRun, count: lastRun >= firstRun ? Math.floor((lastRun - firstRun) / RUN_BLOCKS) + 1 : 0 }
}

/**
 * Hands the entries of a key range of a family to `take`: through the shared cursor at once when
 * there is one (`most` bounds the entries, see RangeCursor.read), else through a scan of its own,
 * whose promise joins `reads`.
 */
function readRange(
  core: EngineCore,
  column: ColumnHandle,
  cursor: RangeCursor | undefined,
  range: { gte: Buffer; lt: Buffer },
  most: number,
  take: (page: Array<[Buffer, Buffer]>) => void,
  reads: Promise<void>[],
): void {
  if (cursor === undefined) reads.push(core.store.scan({ ...range, column }, take))
  else take(cursor.read(range.gte, range.lt, most))
}

async function readGroupForAggregate(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  startMs: number,
  endMs: number,
  stepMs: number,
  budget: PointBudget,
  /** Fetch the runs by their exact keys (few runs in the range), or scan each series' runs (many). */
  byKeys: boolean,
  slicer: Slicer,
  /** For a single series of a read of many: what was taken for it with the others. */
  taken?: TakenTogether,
): Promise<AggregateInput[]> {
  const fromBlock = Math.floor(startMs / BLOCK_MS)
  const toBlock = Math.floor((endMs - 1) / BLOCK_MS)
  // Taken in the same tick as the hot reads below: the listing of runs yields to the event
  // loop, and a move meanwhile must not let a run's summary count points the hot reads hold too.
  const hotMinBlock = taken?.hotMinBlock ?? core.tiers.hotMinBlock
  const cols = core.store.columns
  const generations = taken ? [taken.generation] : entries.map((e) => core.decodedCache.generation(e.idHex))
  const buffered = taken ? [taken.buffered] : entries.map((e) => core.head.read(e.handle, startMs, endMs) ?? EMPTY)
  const hotPieces: PointRun[][] = entries.map(() => [])
  const reads: Promise<void>[] = []
  if (toBlock >= hotMinBlock) {
    const hotFrom = Math.max(fromBlock, hotMinBlock)
    // Several series here share one cursor, opened in this tick like the copies above.
    const own =
      taken === undefined && entries.length > 1
        ? cursorOver(core, cols.hot, idBounds(entries), hotFrom, toBlock + 1)
        : undefined
    const cursor = taken?.hot ?? own
    entries.forEach((entry, i) => {
      const takeHot = (page: Array<[Buffer, Buffer]>): void => {
        for (const [key, value] of page) {
          const block = decoded(core, 'h', entry.idHex, blockOfKey(key), value, generations[i] as number)
          const piece = clip(block.ts, block.vals, startMs, endMs)
          if (piece.ts.length > 0) hotPieces[i]?.push(piece)
        }
      }
      readHot(core, entry, cursor, hotFrom, toBlock + 1, takeHot, reads)
    })
    if (own) reads.push(own.close())
  }
  // The hot reads are done, or their iterators exist (with their snapshots), before the cold reads
  // below start.
  const coldValues: ColdValue[][] = entries.map(() => [])
  const cachedSummaries: RunSummaryWithSpan[][] = entries.map(() => [])
  const { firstRun, lastRun, count } = coldRuns(core, fromBlock, toBlock)
  if (!byKeys) {
    entries.forEach((entry, i) => {
      if (fromBlock > lastRun) return
      const takeCold = (page: Array<[Buffer, Buffer]>): void => {
        for (const [key, value] of page) coldValues[i]?.push({ runStart: blockOfKey(key), value })
      }
      const range = clampedRange(entry.id, runStartBlock(fromBlock), lastRun + 1)
      readRange(core, cols.cold, taken?.cold, range, count + 1, takeCold, reads)
    })
  } else {
    const runKeys: Buffer[] = []
    const runOwner: Array<{ entry: number; runStart: number }> = []
    for (let run = firstRun; run <= lastRun; run += RUN_BLOCKS) {
      if (slicer.due()) await slicer.pause()
      // A run that no hot block can overlap (the hot family starts after it) and whose summary
      // alone answers its bucket is not read at all when its summary is cached.
      const summaryMayDo = run + RUN_BLOCKS <= hotMinBlock && summaryAnswers(run, startMs, endMs, stepMs)
      entries.forEach((entry, i) => {
        if (summaryMayDo && !hasPointsIn(buffered[i] ?? EMPTY, run)) {
          const summary = core.decodedCache.getSummary(entry.idHex, run)
          if (summary) {
            cachedSummaries[i]?.push(summary)
            return
          }
        }
        runKeys.push(encodeRowKey(entry.id, run))
        runOwner.push({ entry: i, runStart: run })
      })
    }
    if (runKeys.length > 0) {
      const take = (values: Array<Buffer | undefined>): void => {
        values.forEach((value, k) => {
          const owner = runOwner[k]
          if (value && owner) coldValues[owner.entry]?.push({ runStart: owner.runStart, value })
        })
      }
      // A few keys are read here and now, after the hot iterators as the order above asks. A
      // failure joins the reads, so that the hot scans' promises are still awaited.
      try {
        const now = core.store.getManyNow(cols.cold, runKeys)
        if (now) take(now)
        else reads.push(core.store.getMany(cols.cold, runKeys).then(take))
      } catch (err) {
        reads.push(Promise.reject(err))
      }
    }
  }
  await Promise.all(reads)
  const out: AggregateInput[] = []
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as SeriesEntry
    const merged = await assembleForAggregate(
      core,
      entry,
      generations[i] as number,
      coldValues[i] ?? [],
      hotPieces[i] ?? [],
      buffered[i] ?? EMPTY,
      { startMs, endMs, stepMs },
      slicer,
    )
    merged.summaries.push(...(cachedSummaries[i] ?? []))
    budget.take(merged.run.ts.length)
    out.push({
      metric: entry.metric,
      tags: entry.tags,
      timestamps: merged.run.ts,
      values: merged.run.vals,
      summaries: merged.summaries,
    })
  }
  return out
}

/** Whether a cold run lies wholly in [startMs, endMs) and in one bucket, so its summary answers it. */
function summaryAnswers(runStart: number, startMs: number, endMs: number, stepMs: number): boolean {
  const runStartMs = blockStartMs(runStart)
  const runEndMs = runStartMs + RUN_MS
  if (runStartMs < startMs || runEndMs > endMs) return false
  return stepMs === 0 || bucketStart(runStartMs, stepMs, startMs) === bucketStart(runEndMs - 1, stepMs, startMs)
}

/** Whether sorted points have one in the run starting at block `runStart`. */
function hasPointsIn(points: PointRun, runStart: number): boolean {
  const from = blockStartMs(runStart)
  const i = firstAtLeast(points.ts, 0, from)
  return i < points.ts.length && (points.ts[i] as number) < from + RUN_MS
}

async function assembleForAggregate(
  core: EngineCore,
  entry: SeriesEntry,
  generation: number,
  coldValues: readonly ColdValue[],
  hotPieces: PointRun[],
  buffered: PointRun,
  { startMs, endMs, stepMs }: { startMs: number; endMs: number; stepMs: number },
  slicer: Slicer,
): Promise<{ run: PointRun; summaries: RunSummaryWithSpan[] }> {
  // Hours with newer points in the hot family or the buffer must be merged point by point.
  const dirty = new Set<number>()
  for (const piece of [...hotPieces, buffered]) {
    for (let i = 0; i < piece.ts.length; i++) dirty.add(runStartBlock(Math.floor((piece.ts[i] as number) / BLOCK_MS)))
  }
  const coldPieces: PointRun[] = []
  const summaries: RunSummaryWithSpan[] = []
  for (const { runStart, value } of coldValues) {
    // Decoding is the bulk of a large aggregation's work: other calls get their turn in between.
    if (slicer.due()) await slicer.pause()
    const runStartMs = blockStartMs(runStart)
    if (summaryAnswers(runStart, startMs, endMs, stepMs) && !dirty.has(runStart)) {
      const summary = coldSummary(value, runStartMs)
      core.decodedCache.setSummary(entry.idHex, runStart, summary, generation)
      summaries.push(summary)
      continue
    }
    const run = decoded(core, 'c', entry.idHex, runStart, value, generation)
    const piece = clip(run.ts, run.vals, startMs, endMs)
    if (piece.ts.length > 0) coldPieces.push(piece)
  }
  return { run: mergeRuns(mergeRuns(concatRuns(coldPieces), concatRuns(hotPieces)), buffered), summaries }
}

/**
 * What a read of many series (readMany) takes for all of them in one tick, before it reads any:
 * each one's write-buffer points and decoded-cache generation, and one cursor over the hot family
 * whose snapshot then stands for every series' hot blocks. Read in that order, as readSeries does
 * for one series, a concurrent seal or move can neither hide a point nor show it twice: what a
 * seal takes from the buffer afterwards is in the copies, and what a move takes from the hot
 * family afterwards is in the cold family, which each series reads later.
 */
interface TakenTogether {
  readonly buffered: PointRun
  readonly generation: number
  readonly hot: RangeCursor | undefined
  /** The hot family's first block when the cursor was opened. */
  readonly hotMinBlock: number
  /** One cursor over the cold family, opened in the same tick, for series whose runs are scanned. */
  readonly cold?: RangeCursor | undefined
}

/**
 * Takes what a read of many series over [from, to) needs of each, in one tick (see TakenTogether),
 * with the order to read them in (by key, so that the cursors' seeks move forward); undefined for
 * a single series, or a range that neither reaches the hot family nor holds more cold runs than a
 * series reads by their keys, which are read one by one.
 */
function takeTogether(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  from: number,
  to: number,
): { readonly taken: TakenTogether[]; readonly order: number[]; close(): Promise<void> } | undefined {
  const fromBlock = Math.floor(from / BLOCK_MS)
  const toBlock = Math.floor((to - 1) / BLOCK_MS)
  const hotMinBlock = core.tiers.hotMinBlock
  const scansCold = coldRuns(core, fromBlock, toBlock).count > SYNC_GET_MAX_KEYS
  if (entries.length < 2 || (toBlock < hotMinBlock && !scansCold)) return undefined
  const order = keyOrder(entries)
  const bounds = { lo: entries[order[0]!]!, hi: entries[order[order.length - 1]!]! }
  const buffered = entries.map((entry) => core.head.read(entry.handle, from, to) ?? EMPTY)
  const cols = core.store.columns
  const hot =
    toBlock >= hotMinBlock
      ? cursorOver(core, cols.hot, bounds, Math.max(fromBlock, hotMinBlock), toBlock + 1)
      : undefined
  const cold = scansCold
    ? cursorOver(core, cols.cold, bounds, runStartBlock(fromBlock), Math.min(toBlock, core.tiers.coldMaxBlock) + 1)
    : undefined
  const taken = entries.map((entry, i) => ({
    buffered: buffered[i]!,
    generation: core.decodedCache.generation(entry.idHex),
    hot,
    hotMinBlock,
    cold,
  }))
  return { taken, order, close: async () => void (await Promise.all([hot?.close(), cold?.close()])) }
}

/** Entries below this many are ordered by a numeric sort of their ids' first 4 bytes (see keyOrder). */
const PACKED_SORT_MAX = 2 ** 21

/**
 * The indexes of `entries` in the order of their ids' bytes. A comparison sort of 150,000 ids' hex
 * strings took most of the 400-500 ms that takeTogether held the event loop: instead each id's
 * first 4 bytes, times 2^21, plus the entry's index, sort as plain numbers (53 bits hold both), and
 * only entries whose first 4 bytes are equal, a few among hundreds of thousands, are compared by
 * their hex.
 */
function keyOrder(entries: readonly SeriesEntry[]): number[] {
  const byHex = (a: number, b: number): number => (entries[a]!.idHex < entries[b]!.idHex ? -1 : 1)
  if (entries.length > PACKED_SORT_MAX) return entries.map((_, i) => i).sort(byHex)
  const packed = new Float64Array(entries.length)
  for (let i = 0; i < entries.length; i++) packed[i] = entries[i]!.id.readUInt32BE(0) * PACKED_SORT_MAX + i
  packed.sort()
  const order = new Array<number>(entries.length)
  for (let i = 0; i < order.length; i++) order[i] = packed[i]! % PACKED_SORT_MAX
  for (let i = 0; i < order.length; ) {
    const prefix = Math.floor(packed[i]! / PACKED_SORT_MAX)
    let j = i + 1
    while (j < order.length && Math.floor(packed[j]! / PACKED_SORT_MAX) === prefix) j++
    if (j - i > 1) order.splice(i, j - i, ...order.slice(i, j).sort(byHex))
    i = j
  }
  return order
}

/**
 * Reads series one by one, queryConcurrency at a time, with what takeTogether took for each (when
 * it took anything); answers in the order of `entries`. The slicer yields between series, and the
 * call's deadline or cancellation stops the read.
 */
async function readEach<T>(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  from: number,
  to: number,
  ctx: CallContext | undefined,
  slicer: Slicer,
  read: (entry: SeriesEntry, taken: TakenTogether | undefined) => Promise<T>,
): Promise<T[]> {
  const together = takeTogether(core, entries, from, to)
  const out = new Array<T>(entries.length)
  try {
    await mapLimit(together?.order ?? entries.map((_, i) => i), core.config.queryConcurrency, async (i) => {
      checkSignal(ctx)
      await slicer.pause()
      out[i] = await read(entries[i]!, together?.taken[i])
    })
  } finally {
    await together?.close()
  }
  return out
}

/** The series of the smallest and of the largest id among `entries` (not empty). */
function idBounds(entries: readonly SeriesEntry[]): { readonly lo: SeriesEntry; readonly hi: SeriesEntry } {
  let lo = entries[0]!
  let hi = lo
  for (const entry of entries) {
    if (entry.idHex < lo.idHex) lo = entry
    if (entry.idHex > hi.idHex) hi = entry
  }
  return { lo, hi }
}

/** One cursor over blocks [from, to) of every series from `lo` to `hi` by id, in a family (see RangeCursor). */
function cursorOver(
  core: EngineCore,
  column: ColumnHandle,
  { lo, hi }: { readonly lo: SeriesEntry; readonly hi: SeriesEntry },
  from: number,
  to: number,
): RangeCursor {
  return core.store.cursor(column, clampedRange(lo.id, from, to).gte, clampedRange(hi.id, from, to).lt)
}

/** Raw points of every selected series over the range, sorted; empty series left out. */
export async function readMany(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  startMs: number,
  endMs: number,
  budget: PointBudget,
  ctx: CallContext | undefined,
): Promise<SeriesPoints[]> {
  const { from, to } = readableRange(core, startMs, endMs)
  if (from >= to || entries.length === 0) return []
  const runs = await readEach(core, entries, from, to, ctx, new Slicer(ctx), async (entry, taken) => {
    const run = await readSeries(core, entry, from, to, taken)
    budget.take(run.ts.length)
    return run
  })
  const out: SeriesPoints[] = []
  entries.forEach((entry, i) => {
    const run = runs[i]
    if (run && run.ts.length > 0)
      out.push({ metric: entry.metric, tags: entry.tags, timestamps: run.ts, values: run.vals })
  })
  return out
}

/** The last point of a series: the newer of the write buffer's and the stored one (cached). */
export async function readLatest(core: EngineCore, entry: SeriesEntry): Promise<Point | undefined> {
  const buffered = core.head.last(entry.handle)
  let stored = core.latestCache.get(entry.handle)
  if (stored === undefined) {
    const generation = core.latestCache.generation(entry.handle)
    stored = (await readStoredLatest(core, entry)) ?? null
    core.latestCache.store(entry.handle, generation, stored)
  }
  // Ties go to the write buffer: it is newer.
  let best = stored ?? undefined
  if (buffered && (!best || buffered.ts >= best.ts)) best = buffered
  if (best && best.ts < retentionCutoffMs(core)) return undefined
  return best
}

/** The newest of the last hot block and the last cold run. */
async function readStoredLatest(core: EngineCore, entry: SeriesEntry): Promise<Point | undefined> {
  const cols = core.store.columns
  let hot: Point | undefined
  let cold: Point | undefined
  // Blocks before hotMinBlock in the hot family are deleted (tombstones until RocksDB compacts
  // them away), so the reverse scans start at the tier marks instead of the series' ends.
  const reads: Promise<void>[] = []
  if (core.tiers.hotMinBlock !== Number.POSITIVE_INFINITY) {
    const range = clampedRange(entry.id, core.tiers.hotMinBlock, MAX_BLOCK + 1)
    reads.push(
      core.store.scan({ ...range, reverse: true, limit: 1, column: cols.hot }, (page) => {
        for (const [key, value] of page) {
          const d = decodeBlock(value, blockStartMs(blockOfKey(key)))
          const n = d.timestamps.length
          if (n > 0) hot = { ts: d.timestamps[n - 1] as number, val: d.values[n - 1] as number }
        }
      }),
    )
  }
  if (core.tiers.coldMaxBlock !== Number.NEGATIVE_INFINITY) {
    const range = clampedRange(entry.id, MIN_BLOCK, core.tiers.coldMaxBlock + 1)
    reads.push(
      core.store.scan({ ...range, reverse: true, limit: 1, column: cols.cold }, (page) => {
        for (const [key, value] of page) {
          const d = decodeRun(coldRun(value), blockStartMs(blockOfKey(key)))
          const n = d.timestamps.length
          if (n > 0) cold = { ts: d.timestamps[n - 1] as number, val: d.values[n - 1] as number }
        }
      }),
    )
  }
  await Promise.all(reads)
  // Ties go to the hot family: it is newer.
  if (hot && (!cold || hot.ts >= cold.ts)) return hot
  return cold
}
