/**
 * Write versions of sealed points (cluster nodes only). Among copies of one point the highest
 * version wins, whichever arrived last; equal versions (and 0 against 0) fall back to arrival
 * order. The head resolves the copies it holds (head.ts); this file resolves buffered points
 * against sealed ones through the versions family, which keeps, per (block, series), the versions
 * of the sealed points that have one. Versions matter only while writes of one point can still
 * arrive out of order (hints, repair), so they are kept for blocks newer than versionWindowMs and
 * dropped with one range delete after that: a block older than the window compares as version 0,
 * and a write that carries a version then wins. Writes without versions (a single node) store
 * nothing here, and their path never looks at the family while it is empty.
 */
import type { ChainedBatch } from '@nxtedition/rocksdb'
import { blockStartMs, MIN_BLOCK } from '../codec/row-key.js'
import { BLOCK_MS } from '../codec/schema.js'
import {
  type BlockVersions,
  decodeBlockVersions,
  encodeBlockVersions,
  encodeVersionKey,
  versionBlockBound,
  versionKeyBlock,
} from '../codec/version-codec.js'
import { syncsWrites } from './config.js'
import type { EngineCore } from './engine-core.js'
import type { PointRun } from './head.js'
import type { SeriesEntry } from './series-index.js'
import type { Slicer } from './slicer.js'

/** The first block whose versions are still kept: older ones compare as version 0. */
export function versionCutoffBlock(core: EngineCore): number {
  return Math.max(MIN_BLOCK, Math.floor((core.clock.now() - core.config.versionWindowMs) / BLOCK_MS))
}

/** Reads the marks at open: the first and the last key of the family, two seeks. */
export async function findVersionMarks(core: EngineCore): Promise<void> {
  const column = core.store.columns.versions
  const edge = async (reverse: boolean): Promise<number | undefined> => {
    const it = core.store.db.iterator({ column, limit: 1, reverse, values: false })
    try {
      const [entry] = await it.nextv(1)
      return entry === undefined ? undefined : versionKeyBlock(entry[0])
    } finally {
      await it.close()
    }
  }
  const marks = core.versionMarks
  marks.minBlock = (await edge(false)) ?? Number.POSITIVE_INFINITY
  marks.maxBlock = (await edge(true)) ?? Number.NEGATIVE_INFINITY
}

/** The range of blocks whose stored versions count now: [from, to], empty when from > to. */
function liveBlocks(core: EngineCore): { from: number; to: number } {
  return { from: Math.max(core.versionMarks.minBlock, versionCutoffBlock(core)), to: core.versionMarks.maxBlock }
}

/**
 * The stored versions of blocks of several series, by block for each; blocks without any left out.
 * One read for all of them: a write or a seal touches many series, each in a few blocks.
 */
async function readBlocks(
  core: EngineCore,
  wanted: ReadonlyArray<{ readonly id: Buffer; readonly blocks: readonly number[] }>,
): Promise<Map<number, BlockVersions>[]> {
  const keys: Buffer[] = []
  for (const w of wanted) for (const b of w.blocks) keys.push(encodeVersionKey(b, w.id))
  const values = keys.length === 0 ? [] : await core.store.getMany(core.store.columns.versions, keys)
  let k = 0
  return wanted.map((w) => {
    const out = new Map<number, BlockVersions>()
    for (const b of w.blocks) {
      const value = values[k++]
      if (value !== undefined) out.set(b, decodeBlockVersions(value, blockStartMs(b)))
    }
    return out
  })
}

/** The distinct blocks of sorted timestamps that lie in [from, to]. */
function blocksIn(ts: ArrayLike<number>, from: number, to: number): number[] {
  const out: number[] = []
  for (let i = 0; i < ts.length; i++) {
    const b = Math.floor((ts[i] as number) / BLOCK_MS)
    if (b >= from && b <= to && out[out.length - 1] !== b) out.push(b)
  }
  return out
}

/** The version stored for `t` in a block's versions, 0 when none. */
function storedVersion(stored: BlockVersions | undefined, t: number): number {
  if (stored === undefined) return 0
  let lo = 0
  let hi = stored.ts.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const m = stored.ts[mid] as number
    if (m === t) return stored.vers[mid] as number
    if (m < t) lo = mid + 1
    else hi = mid - 1
  }
  return 0
}

/**
 * The stored versions of some timestamps of a series (any order), 0 where none is kept. Reads only
 * blocks the family may hold.
 */
export async function storedVersions(
  core: EngineCore,
  entry: SeriesEntry,
  timestamps: Float64Array,
): Promise<Float64Array> {
  const out = new Float64Array(timestamps.length)
  const { from, to } = liveBlocks(core)
  if (from > to) return out
  // blocksIn drops repeats of sorted input.
  const blocks = blocksIn(
    [...timestamps].sort((a, b) => a - b),
    from,
    to,
  )
  const [stored] = await readBlocks(core, [{ id: entry.id, blocks }])
  timestamps.forEach((t, i) => {
    out[i] = storedVersion(stored!.get(Math.floor(t / BLOCK_MS)), t)
  })
  return out
}

/**
 * For each series of a write (sorted `ts`, versions `vers`, none meaning 0; no entry: a new series),
 * the indexes of the points to keep, or undefined to keep every point: a point whose sealed copy
 * has a higher version is dropped, so that the head never holds a point that the stored one beats
 * (reads merge the head over the stored blocks). Only blocks the family may hold are read, all in
 * one read, so new points of an ongoing write read nothing.
 */
export async function keepAgainstStored(
  core: EngineCore,
  items: ReadonlyArray<{
    readonly entry: SeriesEntry | undefined
    readonly ts: Float64Array
    /** Each point's version, or one version for all of them. */
    readonly vers: Float64Array | number | undefined
  }>,
): Promise<(number[] | undefined)[]> {
  const { from, to } = liveBlocks(core)
  if (from > to) return items.map(() => undefined)
  // Sorted timestamps: a series wholly after the last stored block (an ongoing write) is skipped
  // without looking at each point.
  const meets = (ts: Float64Array): boolean =>
    ts.length > 0 &&
    Math.floor((ts[0] as number) / BLOCK_MS) <= to &&
    Math.floor((ts[ts.length - 1] as number) / BLOCK_MS) >= from
  const wanted = items.map(({ entry, ts }) => ({
    id: entry?.id ?? EMPTY_ID,
    blocks: entry === undefined || !meets(ts) ? [] : blocksIn(ts, from, to),
  }))
  const stored = await readBlocks(core, wanted)
  return items.map(({ ts, vers }, s) => {
    const blocks = stored[s]
    if (blocks === undefined || blocks.size === 0) return undefined
    const keep: number[] = []
    // One version for every point (or none: 0), else each point's own.
    const all = vers === undefined ? 0 : typeof vers === 'number' ? vers : undefined
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i] as number
      const version = all ?? ((vers as Float64Array)[i] as number)
      if (storedVersion(blocks.get(Math.floor(t / BLOCK_MS)), t) <= version) keep.push(i)
    }
    return keep.length === ts.length ? undefined : keep
  })
}

const EMPTY_ID = Buffer.alloc(0)

/** A run being sealed after resolveSealing: the points that won, and whether any lost. */
export interface ResolvedRun {
  readonly run: PointRun
  readonly dropped: boolean
}

/** The runs resolveSealing resolves together: one read of their stored versions, one batch of new ones. */
const RESOLVE_CHUNK = 2_000

type SealingRun = { readonly entry: SeriesEntry; readonly run: PointRun }

/**
 * Resolves runs about to be sealed (sorted, deduplicated) against the versions stored for their
 * blocks: a point whose stored copy has a higher version is dropped, and the versions of the points
 * that win are stored, in batches written before the blocks (a seal that fails is redone, to the
 * same result: a point whose version was stored compares equal to it). Runs without versions in
 * blocks the family does not hold are returned as they are. RESOLVE_CHUNK runs at a time, in the
 * seal's slices of the event loop: a seal may hold hundreds of thousands of series, and one batch
 * of all their versions held the loop for seconds.
 */
export async function resolveSealing(
  core: EngineCore,
  items: readonly SealingRun[],
  slicer: Slicer,
): Promise<ResolvedRun[]> {
  const out: ResolvedRun[] = []
  for (let from = 0; from < items.length; from += RESOLVE_CHUNK) {
    for (const resolved of await resolveChunk(core, items.slice(from, from + RESOLVE_CHUNK), slicer)) out.push(resolved)
  }
  return out
}

async function resolveChunk(core: EngineCore, items: readonly SealingRun[], slicer: Slicer): Promise<ResolvedRun[]> {
  const cutoff = versionCutoffBlock(core)
  const { from, to } = liveBlocks(core)
  let batch: ChainedBatch | undefined
  const marks = { min: core.versionMarks.minBlock, max: core.versionMarks.maxBlock }
  const out: ResolvedRun[] = []
  // Which runs need resolving, and the stored blocks they meet: read together, in one read.
  const plan = items.map(({ entry, run }) => {
    const n = run.ts.length
    const firstBlock = n === 0 ? 0 : Math.floor((run.ts[0] as number) / BLOCK_MS)
    const lastBlock = n === 0 ? 0 : Math.floor((run.ts[n - 1] as number) / BLOCK_MS)
    const touchesStored = n > 0 && lastBlock >= from && firstBlock <= to
    const skip = n === 0 || lastBlock < cutoff || (run.vers === undefined && !touchesStored)
    return { id: entry.id, blocks: skip ? [] : blocksIn(run.ts, Math.max(from, cutoff), to), skip }
  })
  const storedByItem = await readBlocks(core, plan)
  for (const [index, { entry, run }] of items.entries()) {
    await slicer.pause()
    const n = run.ts.length
    const stored = storedByItem[index]
    if (plan[index]?.skip !== false || stored === undefined) {
      out.push({ run, dropped: false })
      continue
    }
    const keep: number[] = []
    let i = 0
    while (i < n) {
      const block = Math.floor((run.ts[i] as number) / BLOCK_MS)
      let j = i
      while (j < n && Math.floor((run.ts[j] as number) / BLOCK_MS) === block) j++
      const old = stored.get(block)
      // Versions of the block after the seal: the stored ones, raised where an incoming point wins.
      const versions = new Map<number, number>()
      if (old !== undefined)
        for (let k = 0; k < old.ts.length; k++) versions.set(old.ts[k] as number, old.vers[k] as number)
      let raised = false
      for (let k = i; k < j; k++) {
        const t = run.ts[k] as number
        const incoming = run.vers === undefined ? 0 : (run.vers[k] as number)
        if ((versions.get(t) ?? 0) > incoming) continue
        keep.push(k)
        if (incoming > 0) {
          versions.set(t, incoming)
          raised = true
        }
      }
      if (raised && block >= cutoff) {
        const ts = [...versions.keys()].sort((a, b) => a - b)
        const value = encodeBlockVersions(
          blockStartMs(block),
          ts,
          ts.map((t) => versions.get(t) as number),
        )
        if (value !== undefined) {
          batch ??= core.store.db.batch()
          batch._put(encodeVersionKey(block, entry.id), value, { column: core.store.columns.versions })
          if (block < marks.min) marks.min = block
          if (block > marks.max) marks.max = block
        }
      }
      i = j
    }
    if (keep.length === n) out.push({ run, dropped: false })
    else {
      const pick = (a: Float64Array): Float64Array => Float64Array.from(keep, (k) => a[k] as number)
      out.push({ run: { ts: pick(run.ts), vals: pick(run.vals) }, dropped: true })
    }
  }
  if (batch !== undefined) {
    await core.store.writeBatch(batch, syncsWrites(core.config))
    core.versionMarks.minBlock = marks.min
    core.versionMarks.maxBlock = marks.max
  }
  return out
}

/**
 * Drops the versions of blocks older than the window with one range delete; a no-op (no tombstone)
 * when nothing that old is stored, which is always the case on a single node. Returns whether it deleted.
 */
export async function expireVersions(core: EngineCore): Promise<boolean> {
  const cutoff = versionCutoffBlock(core)
  const marks = core.versionMarks
  if (!(marks.minBlock < cutoff)) return false
  await core.store.db.clear({
    gte: versionBlockBound(MIN_BLOCK),
    lt: versionBlockBound(cutoff),
    column: core.store.columns.versions,
  })
  if (marks.maxBlock < cutoff) {
    marks.minBlock = Number.POSITIVE_INFINITY
    marks.maxBlock = Number.NEGATIVE_INFINITY
  } else marks.minBlock = cutoff
  return true
}

/**
 * Removes the stored versions of a series in blocks [fromBlock, toBlock] (deleted points must not
 * keep beating new writes of their timestamps); only blocks the family may hold are touched.
 * Returns the number of deletes put in `batch`.
 */
export function deleteVersions(
  core: EngineCore,
  entry: SeriesEntry,
  fromBlock: number,
  toBlock: number,
  batch: ChainedBatch,
): number {
  const { from, to } = liveBlocks(core)
  const lo = Math.max(from, fromBlock)
  const hi = Math.min(to, toBlock)
  for (let b = lo; b <= hi; b++) batch._del(encodeVersionKey(b, entry.id), { column: core.store.columns.versions })
  return Math.max(0, hi - lo + 1)
}
