import type { DecodedBlockCache, ResultCache } from './caches.js'
import type { Clock, EngineConfig, Logger } from './config.js'
import type { DecodePool } from './decode-pool.js'
import type { Head } from './head.js'
import type { LatestCache } from './latest-cache.js'
import type { RocksStore } from './rocks-store.js'
import type { SeriesIndex } from './series-index.js'

/** Which stored blocks exist where, so a query reads only the families its range touches. */
export interface TierState {
  /** Smallest block number in the hot family; -Infinity until the first move pass has looked. */
  hotMinBlock: number
  /** Largest block number in the cold family; -Infinity when the cold family is empty. */
  coldMaxBlock: number
  /**
   * A lower bound of the run starts in the cold family: deletes do not raise it. +Infinity when the
   * cold family is empty. Aggregations that fetch runs by their keys list only the runs between
   * this and coldMaxBlock, so a range far wider than the stored data costs nothing more.
   */
  coldMinBlock: number
}

/** The blocks the versions family holds, as far as this process knows. */
export interface VersionMarks {
  /** Smallest block with stored versions; +Infinity when the family is empty. */
  minBlock: number
  /** Largest block with stored versions; -Infinity when the family is empty. */
  maxBlock: number
}

/** Counters kept exact by every path that changes stored data, persisted in the meta family. */
export interface Counters {
  pointsWritten: number
  hotBlocks: number
  coldRuns: number
  coldBlocks: number
}

/** The parts of the basic engine that its reading and maintenance functions share. */
export interface EngineCore {
  readonly config: EngineConfig
  readonly clock: Clock
  readonly logger: Logger
  readonly store: RocksStore
  readonly index: SeriesIndex
  readonly head: Head
  readonly latestCache: LatestCache
  readonly resultCache: ResultCache
  readonly decodedCache: DecodedBlockCache
  readonly decodePool: DecodePool
  readonly tiers: TierState
  readonly counters: Counters
  /** Which blocks the versions family holds (engine-versions.ts). */
  readonly versionMarks: VersionMarks
  /** The next write-buffer sequence. */
  nextSeq: number
  /** Write-buffer records below this sequence are already range-deleted (in this process). */
  bufferTrimmedTo: number
  /**
   * The first write-buffer sequence of the write being committed, whose records may be in RocksDB
   * before its points are in the head; undefined between commits.
   */
  readonly committingSeq: number | undefined
}

export const META_POINTS_WRITTEN = 'points_written'
export const META_HOT_BLOCKS = 'hot_blocks'
export const META_COLD_RUNS = 'cold_runs'
export const META_COLD_BLOCKS = 'cold_blocks'
export const META_NEXT_SEQ = 'buffer_next_seq'
export const META_COLD_MIN_BLOCK = 'cold_min_block'

/** The earliest timestamp that retention keeps, or -Infinity without retention. */
export function retentionCutoffMs(core: EngineCore): number {
  return core.config.retentionMs > 0 ? core.clock.now() - core.config.retentionMs : Number.NEGATIVE_INFINITY
}

/** Runs `fn` over `items` with at most `limit` in flight, keeping result order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}
