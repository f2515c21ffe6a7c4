import type { DeleteRequest, QueryRequest, Selector, SeriesPoints, SeriesRef } from '../model/types.js'
import type { PartialGroup } from './aggregate-partial.js'
import type { CallContext } from './storage-engine.js'

/**
 * The series a node answers for in a cluster read: those whose canonical key the filter accepts
 * (the cluster accepts a series when its ring token lies in the token ranges it gave this node).
 * `key` identifies the filter in cache keys: two filters with the same key accept the same series.
 */
export interface SeriesFilter {
  readonly key: string
  accepts(seriesKey: string): boolean
}

/**
 * The reads a cluster node runs on its local engine for a coordinating node: the usual reads
 * narrowed to a filter, and aggregations as mergeable states, so that the coordinator merges the
 * parts of a group whose series live on different nodes into exactly the single-node answer.
 * An undefined filter means every series the engine holds.
 */
export interface ShardReader {
  /** One answer per selector (the request's selector, then its additional selectors), in order. */
  queryShard(request: QueryRequest, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesPoints[][]>
  /** As queryShard with an aggregation, but each group's buckets as mergeable states. */
  queryPartials(request: QueryRequest, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<PartialGroup[][]>
  latestShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesPoints[]>
  listSeriesShard(selector: Selector, filter: SeriesFilter | undefined, ctx?: CallContext): Promise<SeriesRef[]>
  /** Deletes every matching series the engine holds; counts only those the filter accepts. */
  deleteSeriesCounted(
    request: DeleteRequest,
    countFilter: SeriesFilter | undefined,
    ctx?: CallContext,
  ): Promise<{ readonly seriesMatched: number }>
}
