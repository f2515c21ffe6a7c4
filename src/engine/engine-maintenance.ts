import type { ChainedBatch } from '@nxtedition/rocksdb'
import { decodeBlock, encodeBlock } from '../codec/block-codec.js'
import { blockStartMs, encodeRowKey, MIN_BLOCK, runStartBlock, seriesKeyRange } from '../codec/row-key.js'
import { decodeRun, encodeRun } from '../codec/run-codec.js'
import { BLOCK_MS, META_COLD_MAX_BLOCK_KEY, RUN_BLOCKS } from '../codec/schema.js'
import {
  type EngineCore,
  META_COLD_BLOCKS,
  META_COLD_RUNS,
  META_HOT_BLOCKS,
  META_NEXT_SEQ,
  META_POINTS_WRITTEN,
} from './engine-core.js'
import { blockOfKey, clampedRange } from './engine-read.js'
import { mergeRuns, type OpenBlock, type PointRun, sortDedupLastWins } from './head.js'
import { f64 } from './rocks-store.js'
import type { SeriesEntry } from './series-index.js'
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
  core.store.putMeta(batch, META_NEXT_SEQ, f64(core.nextSeq))
}

function syncWrites(core: EngineCore): boolean {
  return core.config.sync !== 'off'
}

/**
 * Seals due blocks of the write buffer into the hot family: each is merged with the stored block of
 * the same series and time (buffered points win) and written once. Then the write-buffer records
 * that no buffered block needs any more are dropped with one range delete.
 */
export async function sealBlocks(core: EngineCore, force: boolean): Promise<number> {
  const now = core.clock.now()
  const overLimit = core.head.bufferedPoints > core.config.maxBufferedPoints
  const due = core.head.takeDue(now, core.config.sealIdleMs, force || overLimit)
  let sealed = 0
  for (let i = 0; i < due.length; i += SEAL_CHUNK) {
    const chunk = due.slice(i, i + SEAL_CHUNK)
    try {
      sealed += await sealChunk(core, chunk)
    } catch (err) {
      core.head.abortSeal(due.slice(i))
      throw err
    }
  }
  await trimBuffer(core)
  return sealed
}

async function sealChunk(core: EngineCore, chunk: OpenBlock[]): Promise<number> {
  const cols = core.store.columns
  const live: Array<{ open: OpenBlock; entry: SeriesEntry; key: Buffer }> = []
  for (const open of chunk) {
    const entry = core.index.byHandle(open.handle)
    if (entry && open.ts.length > 0) live.push({ open, entry, key: encodeRowKey(entry.id, open.block) })
  }
  const stored = await core.store.getMany(
    cols.hot,
    live.map((x) => x.key),
  )
  const batch = core.store.db.batch()
  let minBlock = core.tiers.hotMinBlock
  live.forEach(({ open, key }, j) => {
    const start = blockStartMs(open.block)
    let run = sortDedupLastWins(open.ts, open.vals)
    const old = stored[j]
    if (old) {
      const d = decodeBlock(old, start)
      run = mergeRuns({ ts: d.timestamps, vals: d.values }, run)
    } else {
      core.counters.hotBlocks++
    }
    batch.put(key, encodeBlock(run.ts, run.vals, run.ts.length, start), { column: cols.hot })
    if (open.block < minBlock) minBlock = open.block
  })
  putCounters(core, batch)
  await batch.write({ sync: syncWrites(core) })
  core.tiers.hotMinBlock = minBlock
  core.head.finishSeal(chunk)
  return live.length
}

/** Drops the write-buffer records older than the oldest one a buffered block still needs. */
async function trimBuffer(core: EngineCore): Promise<void> {
  const keep = core.head.minSeq() ?? core.nextSeq
  if (keep <= 0) return
  await core.store.db.clear({ gte: bufferKey(0), lt: bufferKey(keep), column: core.store.columns.buffer })
}

interface RunGroup {
  readonly id: Buffer
  readonly runStart: number
  readonly hotKeys: Buffer[]
  readonly pieces: PointRun[]
}

/**
 * Moves hot blocks whose end is older than the hot window into the cold family, re-packed into
 * runs of RUN_BLOCKS blocks (one value per series and hour) that are merged with the run already
 * stored there; hot points win, being newer.
 */
export async function moveCold(core: EngineCore): Promise<number> {
  const cutoff = Math.floor((core.clock.now() - core.config.hotWindowMs) / BLOCK_MS)
  const cols = core.store.columns
  const it = core.store.db.iterator({ column: cols.hot })
  let moved = 0
  let remainingMin = Number.POSITIVE_INFINITY
  let groups: RunGroup[] = []
  let current: RunGroup | undefined
  try {
    for (;;) {
      const page = await it.nextv(1000)
      if (page.length === 0) break
      for (const [key, value] of page) {
        const block = blockOfKey(key)
        if (block >= cutoff) {
          if (block < remainingMin) remainingMin = block
          continue
        }
        const id = key.subarray(0, 8)
        const runStart = runStartBlock(block)
        if (!current || current.runStart !== runStart || !current.id.equals(id)) {
          current = { id: Buffer.from(id), runStart, hotKeys: [], pieces: [] }
          groups.push(current)
        }
        const d = decodeBlock(value, blockStartMs(block))
        current.hotKeys.push(Buffer.from(key))
        current.pieces.push({ ts: d.timestamps, vals: d.values })
      }
      if (groups.length >= MOVE_CHUNK_RUNS) {
        // The last group may continue on the next page; merging it with the run written now is correct.
        moved += await writeRuns(core, groups)
        groups = []
        current = undefined
      }
    }
    moved += await writeRuns(core, groups)
  } finally {
    await it.close()
  }
  const bufferedMin = core.head.minBlock()
  core.tiers.hotMinBlock = Math.min(remainingMin, bufferedMin ?? Number.POSITIVE_INFINITY)
  return moved
}

function concatPieces(pieces: PointRun[]): PointRun {
  let n = 0
  for (const p of pieces) n += p.ts.length
  const ts = new Float64Array(n)
  const vals = new Float64Array(n)
  let off = 0
  for (const p of pieces) {
    ts.set(p.ts, off)
    vals.set(p.vals, off)
    off += p.ts.length
  }
  return { ts, vals }
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

async function writeRuns(core: EngineCore, groups: RunGroup[]): Promise<number> {
  if (groups.length === 0) return 0
  const cols = core.store.columns
  const runKeys = groups.map((g) => encodeRowKey(g.id, g.runStart))
  const stored = await core.store.getMany(cols.cold, runKeys)
  const batch = core.store.db.batch()
  let moved = 0
  groups.forEach((g, i) => {
    const start = blockStartMs(g.runStart)
    let run = concatPieces(g.pieces)
    const old = stored[i]
    if (old) {
      const d = decodeRun(old, start)
      core.counters.coldBlocks -= distinctBlocks(d.timestamps)
      run = mergeRuns({ ts: d.timestamps, vals: d.values }, run)
    } else {
      core.counters.coldRuns++
    }
    core.counters.coldBlocks += distinctBlocks(run.ts)
    batch.put(runKeys[i] as Buffer, encodeRun(run.ts, run.vals, run.ts.length, start), { column: cols.cold })
    for (const key of g.hotKeys) batch.del(key, { column: cols.hot })
    core.counters.hotBlocks -= g.hotKeys.length
    moved += g.hotKeys.length
    const lastBlock = g.runStart + RUN_BLOCKS - 1
    if (lastBlock > core.tiers.coldMaxBlock) core.tiers.coldMaxBlock = lastBlock
  })
  putCounters(core, batch)
  await batch.write({ sync: syncWrites(core) })
  return moved
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
    const hotRange = clampedRange(entry.id, MIN_BLOCK, cutoffBlock)
    const coldRange = clampedRange(entry.id, MIN_BLOCK, coldCutoff)
    const removed = await countRange(core, hotRange, coldRange)
    if (removed.hotBlocks === 0 && removed.coldRuns === 0) continue
    expired++
    await core.store.db.clear({ ...hotRange, column: cols.hot })
    await core.store.db.clear({ ...coldRange, column: cols.cold })
    core.counters.hotBlocks -= removed.hotBlocks
    core.counters.coldRuns -= removed.coldRuns
    core.counters.coldBlocks -= removed.coldBlocks
  }
  const batch = core.store.db.batch()
  putCounters(core, batch)
  await batch.write({ sync: syncWrites(core) })
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
        coldBlocks += distinctBlocks(decodeRun(value, blockStartMs(blockOfKey(key))).timestamps)
      }
    }),
  ])
  return { hotBlocks, coldRuns, coldBlocks }
}

/**
 * Deletes the points of a series in [startMs, endMs): the stored blocks and runs that the range
 * covers are read, filtered and rewritten (or deleted when nothing is left). Without a range the
 * whole series goes, its index records included.
 */
export async function deleteSeriesData(
  core: EngineCore,
  entry: SeriesEntry,
  startMs: number | undefined,
  endMs: number | undefined,
): Promise<void> {
  const cols = core.store.columns
  const whole = startMs === undefined || endMs === undefined
  const from = whole ? Number.NEGATIVE_INFINITY : startMs
  const to = whole ? Number.POSITIVE_INFINITY : endMs
  core.head.drop(entry.handle, from, to)
  const fromBlock = Math.floor(from / BLOCK_MS)
  const toBlock = Math.floor((to - 1) / BLOCK_MS)
  const hotRange = whole ? seriesKeyRange(entry.id) : clampedRange(entry.id, fromBlock, toBlock + 1)
  const coldRange = whole ? seriesKeyRange(entry.id) : clampedRange(entry.id, runStartBlock(fromBlock), toBlock + 1)
  const batch = core.store.db.batch()
  await Promise.all([
    core.store.scan({ ...hotRange, column: cols.hot }, (page) => {
      for (const [key, value] of page) {
        const start = blockStartMs(blockOfKey(key))
        const kept = whole ? undefined : keepOutside(decodeBlock(value, start), from, to)
        if (kept && kept.ts.length > 0) {
          batch.put(Buffer.from(key), encodeBlock(kept.ts, kept.vals, kept.ts.length, start), { column: cols.hot })
        } else {
          batch.del(Buffer.from(key), { column: cols.hot })
          core.counters.hotBlocks--
        }
      }
    }),
    core.store.scan({ ...coldRange, column: cols.cold }, (page) => {
      for (const [key, value] of page) {
        const start = blockStartMs(blockOfKey(key))
        const old = decodeRun(value, start)
        core.counters.coldBlocks -= distinctBlocks(old.timestamps)
        const kept = whole ? undefined : keepOutside(old, from, to)
        if (kept && kept.ts.length > 0) {
          core.counters.coldBlocks += distinctBlocks(kept.ts)
          batch.put(Buffer.from(key), encodeRun(kept.ts, kept.vals, kept.ts.length, start), { column: cols.cold })
        } else {
          batch.del(Buffer.from(key), { column: cols.cold })
          core.counters.coldRuns--
        }
      }
    }),
  ])
  if (whole) core.index.remove(entry, batch)
  putCounters(core, batch)
  await batch.write({ sync: syncWrites(core) })
}

function keepOutside(d: { timestamps: Float64Array; values: Float64Array }, from: number, to: number): PointRun {
  const ts: number[] = []
  const vals: number[] = []
  for (let i = 0; i < d.timestamps.length; i++) {
    const t = d.timestamps[i] as number
    if (t < from || t >= to) {
      ts.push(t)
      vals.push(d.values[i] as number)
    }
  }
  return { ts: Float64Array.from(ts), vals: Float64Array.from(vals) }
}
