import type { ChainedBatch } from '@nxtedition/rocksdb'
import { blockCount, decodeBlock, encodeBlock } from '../codec/block-codec.js'
import { coldRun, coldSummary, encodeColdValue, type RunSummaryWithSpan } from '../codec/cold-value.js'
import { blockOfKey, blockStartMs, encodeRowKey, MIN_BLOCK, runStartBlock, seriesKeyRange } from '../codec/row-key.js'
import { decodeRun, encodeRun } from '../codec/run-codec.js'
import { BLOCK_MS, META_COLD_MAX_BLOCK_KEY, RUN_BLOCKS } from '../codec/schema.js'
import { firstAtLeast } from '../model/timestamps.js'
import { summarizePoints } from './aggregate.js'
import { syncsWrites } from './config.js'
import {
  type EngineCore,
  META_COLD_BLOCKS,
  META_COLD_MIN_BLOCK,
  META_COLD_RUNS,
  META_HOT_BLOCKS,
  META_NEXT_SEQ,
  META_POINTS_WRITTEN,
} from './engine-core.js'
import { clampedRange } from './engine-read.js'
import { deleteVersions, resolveSealing } from './engine-versions.js'
import { concatRuns, keepOutside, mergeRuns, type PointRun } from './head.js'
import { f64 } from './rocks-store.js'
import type { SeriesEntry } from './series-index.js'
import { Slicer } from './slicer.js'
import { bufferKey } from './write-buffer.js'

const SEAL_CHUNK = 20_000
const MOVE_CHUNK_RUNS = 2_000

/** Persists the counters and tier marks in the same batch as the change they describe. */
export function putCounters(core: EngineCore, batch: ChainedBatch): void {
  const c = core.counters
  core.store.putMeta(batch, META_POINTS_WRITTEN, f64(c.pointsWritten))
  core.store.putMeta(batch, META_HOT_BLOCKS, f64(c.hotBlocks))
  core.store.putMeta(batch, META_COLD_RUNS, f64(c.coldRuns))
  core.store.putMeta(batch, META_COLD_BLOCKS, f64(c.coldBlocks))
  core.store.putMeta(batch, META_COLD_MAX_BLOCK_KEY, f64(core.tiers.coldMaxBlock))
  core.store.putMeta(batch, META_COLD_MIN_BLOCK, f64(core.tiers.coldMinBlock))
  core.store.putMeta(batch, META_NEXT_SEQ, f64(core.nextSeq))
}

interface HotItem {
  readonly entry: SeriesEntry
  readonly block: number
  readonly run: PointRun
}

/**
 * Seals the due points of the write buffer. Points of a run that is already past the hot window,
 * in a time range where the hot family holds nothing, go straight into their cold run (back-filled
 * data would otherwise be written as 30-second blocks only to be re-packed minutes later); every
 * other block is merged with the stored hot block of the same series and time (buffered points
 * win) and written once. Then the write-buffer records that no buffered point needs any more are
 * dropped with one range delete. Returns the number of blocks sealed.
 */
export async function sealBlocks(core: EngineCore, force: boolean): Promise<number> {
  const now = core.clock.now()
  const overLimit = core.head.bufferedPoints > core.config.maxBufferedPoints
  // A run that ends by this block goes to the cold tier: past the hot window, and before any hot block.
  const coldBefore = Math.min(Math.floor((now - core.config.hotWindowMs) / BLOCK_MS), core.tiers.hotMinBlock)
  // The open cold runs of series being written stay buffered, up to half the buffer's limit.
  const hold = { coldRunsBeforeMs: coldBefore * BLOCK_MS, maxPoints: core.config.maxBufferedPoints / 2 }
  // The seal gives the event loop back between slices throughout: it may take hundreds of
  // thousands of series at once, and every other call waits while it holds the loop.
  const slicer = new Slicer(undefined)
  const taken = await slicer.drive(
    core.head.takeDueSteps(now, core.config.sealIdleMs, force || overLimit, force ? undefined : hold),
  )
  const toCold: RunGroup[] = []
  const toHot: HotItem[] = []
  let blocks = 0
  const entries: Array<{ entry: SeriesEntry; run: PointRun }> = []
  for (const t of taken) {
    const entry = core.index.byHandle(t.handle)
    if (entry) entries.push({ entry, run: t })
  }
  let resolved: Awaited<ReturnType<typeof resolveSealing>>
  try {
    // Points whose sealed copies have higher write versions lose here (none without versions).
    resolved = await resolveSealing(core, entries, slicer)
  } catch (err) {
    core.head.abortSeal(taken)
    throw err
  }
  const latest = new Map<number, { ts: number; val: number } | null>()
  for (let k = 0; k < entries.length; k++) {
    await slicer.pause()
    const { entry } = entries[k]!
    const { run: t, dropped } = resolved[k]!
    const n = t.ts.length
    // A dropped point may have been the latest, or shown by a cached result: its stored copy wins now.
    if (dropped) {
      const original = entries[k]!.run
      core.resultCache.changed(entry.handle, original.ts[0] as number, original.ts[original.ts.length - 1] as number)
      latest.set(entry.handle, null)
    } else if (n > 0) latest.set(entry.handle, { ts: t.ts[n - 1] as number, val: t.vals[n - 1] as number })
    // Points are sorted: cut them at block and run boundaries.
    let i = 0
    while (i < t.ts.length) {
      const block = Math.floor((t.ts[i] as number) / BLOCK_MS)
      const runStart = runStartBlock(block)
      const runEnd = runStart + RUN_BLOCKS
      if (runEnd <= coldBefore) {
        const j = firstAtLeast(t.ts, i, runEnd * BLOCK_MS)
        blocks += countBlocks(t.ts, i, j)
        toCold.push({ id: entry.id, runStart, pieces: [{ ts: t.ts.subarray(i, j), vals: t.vals.subarray(i, j) }] })
        i = j
      } else {
        const j = firstAtLeast(t.ts, i, (block + 1) * BLOCK_MS)
        blocks++
        toHot.push({ entry, block, run: { ts: t.ts.subarray(i, j), vals: t.vals.subarray(i, j) } })
        i = j
      }
    }
  }
  const written: WrittenRun[] = []
  try {
    for (let i = 0; i < toCold.length; i += MOVE_CHUNK_RUNS) {
      written.push(...(await writeRuns(core, toCold.slice(i, i + MOVE_CHUNK_RUNS))))
    }
    for (let i = 0; i < toHot.length; i += SEAL_CHUNK) await writeHotBlocks(core, toHot.slice(i, i + SEAL_CHUNK))
    warmSummaries(core, written)
  } catch (err) {
    // Whatever was written is written again by the next seal, to the same result.
    core.head.abortSeal(taken)
    throw err
  }
  // The points leave the head, and the latest cache learns of their stored copies, a thousand
  // series at a time between slices; each series' two steps happen together.
  for (let i = 0; i < taken.length; i += 1_000) {
    await slicer.pause()
    const part = taken.slice(i, i + 1_000)
    core.head.finishSeal(part)
    for (const { handle } of part) {
      const last = latest.get(handle)
      if (last === null) core.latestCache.invalidate(handle)
      else if (last !== undefined) core.latestCache.sealed(handle, last)
    }
  }
  await trimBuffer(core)
  await core.store.settleWal(core.clock.now())
  return blocks
}

function countBlocks(ts: Float64Array, from: number, to: number): number {
  let count = 0
  let last = Number.NaN
  for (let i = from; i < to; i++) {
    const b = Math.floor((ts[i] as number) / BLOCK_MS)
    if (b !== last) {
      count++
      last = b
    }
  }
  return count
}

async function writeHotBlocks(core: EngineCore, items: HotItem[]): Promise<void> {
  const cols = core.store.columns
  const keys = items.map((x) => encodeRowKey(x.entry.id, x.block))
  const stored = await core.store.getMany(cols.hot, keys)
  const batch = core.store.db.batch()
  let minBlock = core.tiers.hotMinBlock
  // Encoding thousands of blocks takes tens of ms: other calls get the loop between slices. The
  // seal holds the job lock, and the head shows the points being sealed until it ends.
  const slicer = new Slicer(undefined)
  for (let j = 0; j < items.length; j++) {
    await slicer.pause()
    const { block, run } = items[j] as HotItem
    const start = blockStartMs(block)
    let merged = run
    const old = stored[j]
    if (old) {
      const d = decodeBlock(old, start)
      merged = mergeRuns({ ts: d.timestamps, vals: d.values }, run)
    } else {
      core.counters.hotBlocks++
    }
    batch._put(keys[j] as Buffer, encodeBlock(merged.ts, merged.vals, merged.ts.length, start), { column: cols.hot })
    if (block < minBlock) minBlock = block
  }
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  core.tiers.hotMinBlock = minBlock
  // After the write: a read that began before it cannot cache what it decoded (see DecodedBlockCache).
  for (const item of items) core.decodedCache.invalidate(item.entry.idHex)
}

/** Drops the write-buffer records older than the oldest one a buffered block still needs. */
async function trimBuffer(core: EngineCore): Promise<void> {
  // A commit's records reach RocksDB before its points reach the head: they stay until then.
  const keep = Math.min(core.head.minSeq() ?? core.nextSeq, core.committingSeq ?? Number.POSITIVE_INFINITY)
  // Nothing new to drop: the sealer runs every second, and each call would add a range tombstone.
  if (keep <= core.bufferTrimmedTo) return
  await core.store.db.clear({ gte: bufferKey(0), lt: bufferKey(keep), column: core.store.columns.buffer })
  core.bufferTrimmedTo = keep
}

interface RunGroup {
  readonly id: Buffer
  readonly runStart: number
  /** Sorted, time-disjoint pieces in time order. */
  readonly pieces: PointRun[]
}

interface MoveGroup extends RunGroup {
  blocks: number
  readonly pieces: PointRun[]
}

/**
 * Moves hot blocks whose end is older than the hot window into the cold family, re-packed into
 * runs of RUN_BLOCKS blocks (one value per series and hour) that are merged with the run already
 * stored there; hot points win, being newer. Each series is read only from hotMinBlock to the
 * cutoff, so a pass reads just the blocks it moves (none when nothing has aged). A series' moved
 * blocks are removed with one range delete once their runs are written: a crash in between leaves
 * copies in both families, which the next pass merges again to the same result.
 */
export async function moveCold(core: EngineCore): Promise<number> {
  const cutoff = Math.floor((core.clock.now() - core.config.hotWindowMs) / BLOCK_MS)
  if (core.tiers.hotMinBlock >= cutoff) return 0
  const cols = core.store.columns
  let moved = 0
  let groups: MoveGroup[] = []
  let read: SeriesEntry[] = []
  const flush = async (): Promise<void> => {
    const written = await writeRuns(core, groups)
    for (const g of groups) moved += g.blocks
    for (const entry of read) {
      await core.store.db.clear({ ...clampedRange(entry.id, MIN_BLOCK, cutoff), column: cols.hot })
      core.decodedCache.invalidate(entry.idHex)
    }
    warmSummaries(core, written)
    groups = []
    read = []
  }
  for (const entry of core.index.all()) {
    let current: MoveGroup | undefined
    await core.store.scan({ ...clampedRange(entry.id, core.tiers.hotMinBlock, cutoff), column: cols.hot }, (page) => {
      for (const [key, value] of page) {
        const block = blockOfKey(key)
        const runStart = runStartBlock(block)
        if (!current || current.runStart !== runStart) {
          current = { id: entry.id, runStart, blocks: 0, pieces: [] }
          groups.push(current)
        }
        const d = decodeBlock(value, blockStartMs(block))
        current.blocks++
        current.pieces.push({ ts: d.timestamps, vals: d.values })
      }
    })
    read.push(entry)
    if (groups.length >= MOVE_CHUNK_RUNS) await flush()
  }
  await flush()
  core.counters.hotBlocks -= moved
  // Every block below the cutoff has moved.
  core.tiers.hotMinBlock = cutoff
  const batch = core.store.db.batch()
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  return moved
}

function distinctBlocks(ts: Float64Array): number {
  let count = 0
  let last = Number.NaN
  for (let i = 0; i < ts.length; i++) {
    const b = Math.floor((ts[i] as number) / BLOCK_MS)
    if (b !== last) {
      count++
      last = b
    }
  }
  return count
}

interface WrittenRun {
  readonly key: Buffer
  readonly summary: RunSummaryWithSpan
}

async function writeRuns(core: EngineCore, groups: RunGroup[]): Promise<WrittenRun[]> {
  if (groups.length === 0) return []
  const cols = core.store.columns
  const runKeys = groups.map((g) => encodeRowKey(g.id, g.runStart))
  const stored = await core.store.getMany(cols.cold, runKeys)
  const batch = core.store.db.batch()
  const written: WrittenRun[] = []
  // As in writeHotBlocks: encoding is cut into slices of the event loop.
  const slicer = new Slicer(undefined)
  for (let i = 0; i < groups.length; i++) {
    await slicer.pause()
    const g = groups[i] as RunGroup
    const start = blockStartMs(g.runStart)
    let run = concatRuns(g.pieces)
    const old = stored[i]
    if (old) {
      const d = decodeRun(coldRun(old), start)
      core.counters.coldBlocks -= distinctBlocks(d.timestamps)
      run = mergeRuns({ ts: d.timestamps, vals: d.values }, run)
    } else {
      core.counters.coldRuns++
    }
    core.counters.coldBlocks += distinctBlocks(run.ts)
    const value = encodeCold(run, start)
    written.push({ key: runKeys[i] as Buffer, summary: coldSummary(value, start) })
    batch._put(runKeys[i] as Buffer, value, { column: cols.cold })
    const lastBlock = g.runStart + RUN_BLOCKS - 1
    if (lastBlock > core.tiers.coldMaxBlock) core.tiers.coldMaxBlock = lastBlock
    if (g.runStart < core.tiers.coldMinBlock) core.tiers.coldMinBlock = g.runStart
  }
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  core.decodedCache.invalidateRuns(runKeys)
  return written
}

/**
 * Caches the summaries of runs just written, once every invalidation of their series is done:
 * they are what aggregations over the last hours ask for next, and a query then reads no run.
 */
function warmSummaries(core: EngineCore, written: readonly WrittenRun[]): void {
  for (const w of written) core.decodedCache.putSummary(w.key, w.summary)
}

/**
 * Removes what retention no longer keeps: per series, one range delete in the hot family up to the
 * cutoff block and one in the cold family up to the last whole run before it. A run that straddles
 * the cutoff stays until it is wholly expired; queries hide its expired points meanwhile.
 */
export async function applyRetention(core: EngineCore): Promise<number> {
  if (core.config.retentionMs <= 0) return 0
  const cutoffMs = core.clock.now() - core.config.retentionMs
  const cutoffBlock = Math.floor(cutoffMs / BLOCK_MS)
  const coldCutoff = runStartBlock(cutoffBlock)
  const cols = core.store.columns
  let expired = 0
  for (const entry of core.index.all()) {
    core.head.drop(entry.handle, Number.NEGATIVE_INFINITY, cutoffMs)
    core.latestCache.invalidate(entry.handle)
    const hotRange = clampedRange(entry.id, MIN_BLOCK, cutoffBlock)
    const coldRange = clampedRange(entry.id, MIN_BLOCK, coldCutoff)
    const removed = await countRange(core, hotRange, coldRange)
    if (removed.hotBlocks === 0 && removed.coldRuns === 0) continue
    expired++
    await core.store.db.clear({ ...hotRange, column: cols.hot })
    await core.store.db.clear({ ...coldRange, column: cols.cold })
    core.decodedCache.invalidate(entry.idHex)
    core.counters.hotBlocks -= removed.hotBlocks
    core.counters.coldRuns -= removed.coldRuns
    core.counters.coldBlocks -= removed.coldBlocks
  }
  const batch = core.store.db.batch()
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  return expired
}

/** Counts what a range delete is about to remove, reading only the keys and runs in the range. */
async function countRange(
  core: EngineCore,
  hotRange: { gte: Buffer; lt: Buffer },
  coldRange: { gte: Buffer; lt: Buffer },
): Promise<{ hotBlocks: number; coldRuns: number; coldBlocks: number }> {
  const cols = core.store.columns
  let hotBlocks = 0
  let coldRuns = 0
  let coldBlocks = 0
  await Promise.all([
    core.store.scan({ ...hotRange, column: cols.hot, values: false }, (page) => {
      hotBlocks += page.length
    }),
    core.store.scan({ ...coldRange, column: cols.cold }, (page) => {
      for (const [key, value] of page) {
        coldRuns++
        coldBlocks += distinctBlocks(decodeRun(coldRun(value), blockStartMs(blockOfKey(key))).timestamps)
      }
    }),
  ])
  return { hotBlocks, coldRuns, coldBlocks }
}

/**
 * Deletes the points of a series in [startMs, endMs): the stored blocks and runs that the range
 * covers are read, filtered and rewritten (or deleted when nothing is left). Without a range the
 * whole series goes, its index records included. The caller has sealed the write buffer, so the
 * buffered points the delete also drops (returned: how many) came from writes that raced it, whose
 * write-buffer records still hold them until a seal trims them (BasicEngine.trimRacingRecords).
 */
export async function deleteSeriesData(
  core: EngineCore,
  entry: SeriesEntry,
  startMs: number | undefined,
  endMs: number | undefined,
): Promise<number> {
  const whole = startMs === undefined || endMs === undefined
  const from = whole ? Number.NEGATIVE_INFINITY : startMs
  const to = whole ? Number.POSITIVE_INFINITY : endMs
  const batch = core.store.db.batch()
  await stageDelete(core, entry, from, to, batch)
  const buffered = applyDelete(core, entry, from, to, batch)
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  finishDelete(core, entry, from, to)
  return buffered
}

/** What stageDelete put in the batch. */
interface StagedDelete {
  /** For a whole series, the distinct points it had stored (see storedPoints); 0 for a range. */
  readonly points: number
  /** Puts and deletes. */
  readonly operations: number
}

/**
 * Deletes whole series in one batch, as deleteSeriesData does one at a time; the caller holds the
 * job lock and has sealed the write buffer, as for deleteSeriesData. Takes series from `next`, up
 * to `concurrency` at once, until it returns undefined or `maxOperations` batch operations are
 * staged, so that memory stays bounded however many series go. Returns the series deleted and the
 * distinct points they had stored.
 */
export async function dropSeriesBatch(
  core: EngineCore,
  next: () => Promise<SeriesEntry | undefined>,
  concurrency: number,
  maxOperations: number,
): Promise<{ series: number; points: number }> {
  const batch = core.store.db.batch()
  const staged: SeriesEntry[] = []
  const { hotBlocks, coldRuns, coldBlocks } = core.counters
  let operations = 0
  let points = 0
  let failed = false
  const worker = async (): Promise<void> => {
    while (!failed && operations < maxOperations) {
      const entry = await next()
      if (entry === undefined) return
      staged.push(entry)
      const drop = await stageDelete(core, entry, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, batch)
      operations += drop.operations
      points += drop.points
    }
  }
  // Every worker stops before this returns, so none changes the counters after a failure.
  const results = await Promise.allSettled(
    Array.from({ length: concurrency }, () =>
      worker().catch((err: unknown) => {
        failed = true
        throw err
      }),
    ),
  )
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failure) {
    // Nothing was written: the block counters go back (only holders of the job lock change them).
    Object.assign(core.counters, { hotBlocks, coldRuns, coldBlocks })
    throw failure.reason
  }
  if (staged.length === 0) return { series: 0, points: 0 }
  // In one synchronous step right before the write, so that a write racing the drop of its own
  // series meets either the old series, whose buffered points go here, or a new one, never both.
  for (const entry of staged) applyDelete(core, entry, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, batch)
  putCounters(core, batch)
  await core.store.writeBatch(batch, syncsWrites(core.config))
  for (const entry of staged) finishDelete(core, entry, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY)
  return { series: staged.length, points }
}

/**
 * Puts the deletes and rewrites of a series' stored blocks, runs and versions in [from, to) into
 * `batch` and adjusts the counters; the whole series when the range is infinite. Stored data does
 * not change meanwhile: the caller holds the job lock, which every writer of blocks takes.
 */
async function stageDelete(
  core: EngineCore,
  entry: SeriesEntry,
  from: number,
  to: number,
  batch: ChainedBatch,
): Promise<StagedDelete> {
  const cols = core.store.columns
  const whole = from === Number.NEGATIVE_INFINITY && to === Number.POSITIVE_INFINITY
  const fromBlock = Math.floor(from / BLOCK_MS)
  const toBlock = Math.floor((to - 1) / BLOCK_MS)
  const hotRange = whole ? seriesKeyRange(entry.id) : clampedRange(entry.id, fromBlock, toBlock + 1)
  const coldRange = whole ? seriesKeyRange(entry.id) : clampedRange(entry.id, runStartBlock(fromBlock), toBlock + 1)
  // Deleted points must not keep beating later writes of their timestamps. Versions are kept per
  // block: the other points of a block the range cuts through lose theirs too (they compare as 0).
  let operations = deleteVersions(core, entry, fromBlock, toBlock, batch)
  const hotCounts: Array<{ block: number; points: number }> = []
  const coldCounts = new Map<number, number>()
  await Promise.all([
    core.store.scan({ ...hotRange, column: cols.hot }, (page) => {
      for (const [key, value] of page) {
        operations++
        const start = blockStartMs(blockOfKey(key))
        if (whole) hotCounts.push({ block: blockOfKey(key), points: blockCount(value) })
        const kept = whole ? undefined : keepOutside(asRun(decodeBlock(value, start)), from, to)
        if (kept && kept.ts.length > 0) {
          batch._put(Buffer.from(key), encodeBlock(kept.ts, kept.vals, kept.ts.length, start), { column: cols.hot })
        } else {
          batch._del(Buffer.from(key), { column: cols.hot })
          core.counters.hotBlocks--
        }
      }
    }),
    core.store.scan({ ...coldRange, column: cols.cold }, (page) => {
      for (const [key, value] of page) {
        operations++
        const start = blockStartMs(blockOfKey(key))
        const old = decodeRun(coldRun(value), start)
        if (whole) coldCounts.set(blockOfKey(key), old.timestamps.length)
        core.counters.coldBlocks -= distinctBlocks(old.timestamps)
        const kept = whole ? undefined : keepOutside(asRun(old), from, to)
        if (kept && kept.ts.length > 0) {
          core.counters.coldBlocks += distinctBlocks(kept.ts)
          batch._put(Buffer.from(key), encodeCold(kept, start), { column: cols.cold })
        } else {
          batch._del(Buffer.from(key), { column: cols.cold })
          core.counters.coldRuns--
        }
      }
    }),
  ])
  return { points: whole ? await storedPoints(core, entry, hotCounts, coldCounts) : 0, operations }
}

/**
 * The distinct points a series has stored, from the counts in the block and run headers, which add
 * up, as blocks and runs hold disjoint time, except where a crash during a move to the cold family
 * left a block in both families (until the next move merges them): there the copies are read and
 * each timestamp counted once.
 */
async function storedPoints(
  core: EngineCore,
  entry: SeriesEntry,
  hotCounts: ReadonlyArray<{ block: number; points: number }>,
  coldCounts: ReadonlyMap<number, number>,
): Promise<number> {
  let points = 0
  for (const n of coldCounts.values()) points += n
  const both: number[] = []
  for (const h of hotCounts) {
    if (coldCounts.has(runStartBlock(h.block))) both.push(h.block)
    else points += h.points
  }
  if (both.length === 0) return points
  const cols = core.store.columns
  const hotValues = await core.store.getMany(
    cols.hot,
    both.map((b) => encodeRowKey(entry.id, b)),
  )
  const runStarts = [...new Set(both.map(runStartBlock))]
  const coldValues = await core.store.getMany(
    cols.cold,
    runStarts.map((r) => encodeRowKey(entry.id, r)),
  )
  const coldTimestamps = new Map<number, Set<number>>()
  runStarts.forEach((r, i) => {
    const value = coldValues[i]
    if (!value) throw new Error(`BUG: cold run ${r} of series ${entry.idHex} went while the job lock was held`)
    coldTimestamps.set(r, new Set(decodeRun(coldRun(value), blockStartMs(r)).timestamps))
  })
  both.forEach((block, i) => {
    const value = hotValues[i]
    if (!value) throw new Error(`BUG: hot block ${block} of series ${entry.idHex} went while the job lock was held`)
    const cold = coldTimestamps.get(runStartBlock(block))
    for (const t of decodeBlock(value, blockStartMs(block)).timestamps) if (!cold?.has(t)) points++
  })
  return points
}

/**
 * The in-memory half of a delete, run right before its batch is written: buffered points go, the
 * latest point is looked up again, and a whole series leaves the index (its records in `batch`).
 */
/** Returns how many buffered points the delete took from the write buffer (see deleteSeriesData). */
function applyDelete(core: EngineCore, entry: SeriesEntry, from: number, to: number, batch: ChainedBatch): number {
  const buffered = core.head.drop(entry.handle, from, to)
  core.latestCache.invalidate(entry.handle)
  if (from === Number.NEGATIVE_INFINITY && to === Number.POSITIVE_INFINITY) core.index.remove(entry, batch)
  return buffered
}

/**
 * Once a delete's batch is written: caches forget what it removed, and reads that began before the
 * write cannot cache what they read (each cache refuses a store older than the last change).
 */
function finishDelete(core: EngineCore, entry: SeriesEntry, from: number, to: number): void {
  core.decodedCache.invalidate(entry.idHex)
  core.resultCache.changed(entry.handle, from, to)
  if (from === Number.NEGATIVE_INFINITY && to === Number.POSITIVE_INFINITY) {
    core.resultCache.metricChanged(entry.metric)
    // The handle is never given out again, so what is kept per handle can go: the metric change
    // above keeps a query that began before the delete from caching its result, and no later read
    // asks for the handle. A drop of millions of series would otherwise leave that much behind.
    core.resultCache.forget(entry.handle)
    core.latestCache.forget(entry.handle)
    core.head.forget(entry.handle)
  } else {
    core.latestCache.invalidate(entry.handle)
  }
}

/**
 * The smallest block number in the hot family, by a scan of its keys. The hot family holds only
 * the hot window (and recent back-fill), so this is cheap; it runs once, at open.
 */
export async function findHotMinBlock(core: EngineCore): Promise<number> {
  let min = Number.POSITIVE_INFINITY
  await core.store.scan({ column: core.store.columns.hot, values: false }, (page) => {
    for (const [key] of page) {
      const block = blockOfKey(key)
      if (block < min) min = block
    }
  })
  return min
}

/** A run as the cold family stores it: encoded, behind the summary that aggregations use. */
function encodeCold(run: PointRun, runStartMs: number): Buffer {
  return encodeColdValue(encodeRun(run.ts, run.vals, run.ts.length, runStartMs), summarizePoints(run.ts, run.vals))
}

function asRun(d: { timestamps: Float64Array; values: Float64Array }): PointRun {
  return { ts: d.timestamps, vals: d.values }
}
