import type { DeleteRequest, QueryRequest, Selector, SeriesPoints, SeriesRef, WriteResult } from '../model/types.js'
import type { NormalizedBatch } from '../model/validate.js'
import type { PartialGroup } from './aggregate-partial.js'
import type { CallContext } from './storage-engine.js'

/**
 * The series a node answers for in a cluster read: those the filter accepts, given each series'
 * canonical key and its ring token, seriesToken(seriesKey), which the engine keeps per series (the
 * cluster accepts a series when its token lies in the token ranges it gave this node). `key`
 * identifies the filter in cache keys: two filters with the same key accept the same series.
 */
export interface SeriesFilter {
  readonly key: string
  accepts(seriesKey: string, token: number): boolean
}

/**
 * Sorts series into numbered buckets (the token ranges a repair compares), given the canonical key
 * and ring token as SeriesFilter is: a bucket from 0 up, or -1 for a series in none.
 */
export interface SeriesBuckets {
  bucketOf(seriesKey: string, token: number): number
}

/** The digest of the points of one bucket's series in one block of time (see digest.ts). */
export interface BlockDigest {
  readonly bucket: number
  /** The start of the block, a multiple of DIGEST_BLOCK_MS since the epoch. */
  readonly blockStartMs: number
  /** The sum modulo 2^64 of the per-series hashes. */
  readonly digest: bigint
  readonly points: number
}

/**
 * The local engine of a cluster node: its own part of a write it has validated, and the reads it
 * runs for a coordinating node, which are the usual reads narrowed to a filter, and aggregations as
 * mergeable states, so that the coordinator merges the parts of a group whose series live on
 * different nodes into exactly the single-node answer. An undefined filter means every series the
 * engine holds.
 */
export interface ShardEngine {
  /**
   * Stores a batch that validateWriteBatch already checked against this engine's limits, without
   * checking and copying it again: a cluster node's own part of a write it has just validated.
   * The batch's arrays must not change once passed.
   */
  writeValidated(batch: NormalizedBatch, ctx?: CallContext): Promise<WriteResult>
  /** One answer per selector (the request's selector, then its additional selectors), in order. */
  queryShard(request: QueryRequest, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesPoints[][]>
  /** As queryShard with an aggregation, but each group's buckets as mergeable states. */
  queryPartials(request: QueryRequest, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<PartialGroup[][]>
  latestShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesPoints[]>
  listSeriesShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesRef[]>
  /**
   * The digest of each (bucket, block) that holds points in [startMs, endMs), blocks being aligned
   * hours; it depends only on the points, never on how they are stored.
   */
  digestShard(buckets: SeriesBuckets, startMs: number, endMs: number, ctx?: CallContext): Promise<BlockDigest[]>
  /**
   * The write versions (model/hlc.ts) of the points of one series at `timestamps`: of the copy a
   * read returns now, 0 where it has none, where the version has expired, or where no point is held.
   * Reads never return versions; a cluster asks for them only where replicas disagree on a value.
   */
  versionsOf(series: SeriesRef, timestamps: Float64Array, ctx?: CallContext): Promise<Float64Array>
  /** Every point in [startMs, endMs) of the series the filter accepts; series without points left out. */
  readShard(filter: SeriesFilter, startMs: number, endMs: number, ctx?: CallContext): Promise<SeriesPoints[]>
  /**
   * Deletes every series the filter accepts, with all its points (head, write buffer, hot and cold
   * blocks, stored write versions) and its index entries, as deleteSeries does; a node drops the
   * series of the token ranges it no longer owns. Counts the series and points dropped.
   *
   * `points` counts the distinct points the dropped series had stored, each timestamp once (points
   * that retention hides but has not removed yet included). The drop seals the write buffer first,
   * so every point acknowledged before the call is among them; points that a write racing the drop
   * buffers for a series being dropped are discarded uncounted. Series created after the call began
   * are kept. The drop goes in batches, each durable once written: a cancelled or failed drop
   * throws, keeping dropped the series of the batches written.
   */
  dropShard(filter: SeriesFilter, ctx?: CallContext): Promise<{ readonly series: number; readonly points: number }>
  /** Deletes every matching series the engine holds; counts only those the filter accepts. */
  deleteSeriesCounted(
    request: DeleteRequest,
    countFilter: SeriesFilter | undefined,
    ctx?: CallContext,
  ): Promise<{ readonly seriesMatched: number }>
}
