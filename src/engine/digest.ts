/**
 * Digests of stored data for anti-entropy repair: a 64-bit hash per (series, hour) of the series'
 * canonical key and its points, summed modulo 2^64 over the series of a bucket. The hash reads
 * the points as a query returns them (sorted, one value per timestamp, newer tiers winning), so it
 * depends only on the set of (timestamp, value bits), never on how blocks are encoded or which
 * tier holds them; the sum does not depend on the order series are visited in, so the digests of
 * two nodes compare even when they hold different series.
 */
import { createHash } from 'node:crypto'
import type { SeriesPoints } from '../model/types.js'
import type { EngineCore } from './engine-core.js'
import { PointBudget, readMany } from './engine-read.js'
import type { SeriesEntry } from './series-index.js'
import type { BlockDigest, SeriesBuckets } from './shard.js'
import { checkSignal, Slicer } from './slicer.js'
import type { CallContext } from './storage-engine.js'

/** The time block of a digest: one hour, aligned to multiples of the hour since the epoch. */
export const DIGEST_BLOCK_MS = 3_600_000

/** Series read at once: their whole window is in memory together, so this bounds a digest's memory. */
const SERIES_PER_READ = 32

const MASK_64 = (1n << 64n) - 1n

/** The block a timestamp lies in. */
export function digestBlockOf(timestampMs: number): number {
  return Math.floor(timestampMs / DIGEST_BLOCK_MS) * DIGEST_BLOCK_MS
}

/**
 * The 64-bit hash of one series' points in one block: SHA-256 over the key, a zero byte, the
 * timestamps' and then the values' float64 bytes (the values' bits, so NaN payloads and -0 count),
 * its first 8 bytes little-endian. `from` and `to` index the block's points in the series' arrays.
 */
export function seriesBlockHash(key: string, points: SeriesPoints, from: number, to: number): bigint {
  const hash = createHash('sha256').update(key, 'utf8').update(ZERO)
  const ts = points.timestamps.subarray(from, to)
  const vals = points.values.subarray(from, to)
  hash.update(new Uint8Array(ts.buffer, ts.byteOffset, ts.byteLength))
  hash.update(new Uint8Array(vals.buffer, vals.byteOffset, vals.byteLength))
  return hash.digest().readBigUInt64LE(0)
}

const ZERO = new Uint8Array(1)

/**
 * The digests of the (bucket, block) pairs holding points in [startMs, endMs) over `entries`:
 * the series are read a few at a time, so memory holds a few series' windows and the digests, and
 * the work yields to the event loop between slices.
 */
export async function digestEntries(
  core: EngineCore,
  entries: readonly SeriesEntry[],
  buckets: SeriesBuckets,
  startMs: number,
  endMs: number,
  ctx: CallContext | undefined,
): Promise<BlockDigest[]> {
  const slicer = new Slicer(ctx)
  const chosen: { entry: SeriesEntry; bucket: number }[] = []
  for (const entry of entries) {
    const bucket = buckets.bucketOf(entry.key, core.index.tokenOf(entry))
    if (bucket >= 0) chosen.push({ entry, bucket })
    await slicer.pause()
  }
  const blocks = new Map<string, { bucket: number; blockStartMs: number; digest: bigint; points: number }>()
  const budget = new PointBudget(Number.POSITIVE_INFINITY)
  for (let at = 0; at < chosen.length; at += SERIES_PER_READ) {
    checkSignal(ctx)
    const group = chosen.slice(at, at + SERIES_PER_READ)
    const read = await readMany(
      core,
      group.map((g) => g.entry),
      startMs,
      endMs,
      budget,
      ctx,
    )
    // readMany leaves out series without points; the rest come in the order asked.
    let k = 0
    for (const series of read) {
      while (group[k]!.entry.metric !== series.metric || group[k]!.entry.tags !== series.tags) k++
      const { entry, bucket } = group[k]!
      k++
      const ts = series.timestamps
      let from = 0
      while (from < ts.length) {
        const blockStartMs = digestBlockOf(ts[from]!)
        let to = from + 1
        while (to < ts.length && ts[to]! < blockStartMs + DIGEST_BLOCK_MS) to++
        const id = `${bucket}:${blockStartMs}`
        const h = seriesBlockHash(entry.key, series, from, to)
        const block = blocks.get(id)
        if (block === undefined) blocks.set(id, { bucket, blockStartMs, digest: h, points: to - from })
        else {
          block.digest = (block.digest + h) & MASK_64
          block.points += to - from
        }
        from = to
        if (slicer.due()) await slicer.pause()
      }
    }
  }
  return [...blocks.values()]
}
