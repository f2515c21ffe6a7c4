/** A tag of a series: key and value, both non-empty strings. */
export interface Tag {
  readonly key: string
  readonly value: string
}

/** The precision of the timestamps in a write request. */
export type Precision = 's' | 'ms' | 'us' | 'ns'

/**
 * How many of a series' owners (its replicas on a cluster) a call waits for: one, a majority, or
 * all. A write is acknowledged once that many owners have it durable; a read asks that many owners
 * of each series and merges their answers. A single node is the one owner of every series, so it
 * meets every level.
 */
export type ConsistencyLevel = 'one' | 'quorum' | 'all'

/**
 * A raw timestamp as a client sent it, in the request's precision. A bigint appears only where the
 * value does not fit a double exactly (nanoseconds since the epoch do not).
 */
export type RawTimestamp = number | bigint

/** One series of a write request: columnar, timestamps[i] pairs with values[i]. */
export interface SeriesWrite {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly timestamps: ArrayLike<RawTimestamp>
  readonly values: ArrayLike<number>
  /**
   * The write version of these points (model/hlc.ts), set only by a cluster's coordinating node;
   * absent or 0 means none. Among copies of one point the highest version wins.
   */
  readonly version?: number
}

/** A write request as the engine receives it. */
export interface WriteBatch {
  readonly series: readonly SeriesWrite[]
  /** Precision of every timestamp in the batch; milliseconds when absent. */
  readonly precision?: Precision
  /**
   * Store NaN values, bit pattern included, and ±Infinity, whatever the engine's allowNaN limit
   * says: Prometheus remote write sends NaN both as a value and as its staleness marker (the NaN
   * with bits 0x7ff0000000000002), and ±Inf as ordinary values. Everything else is validated as
   * ever. Absent or false: the limit decides (NaN only with allowNaN, ±Infinity never). The bit
   * pattern survives only where the values come as a Float64Array: a plain array of numbers may
   * already have quieted a signalling NaN such as the staleness marker (to 0x7ff8000000000002).
   * On a cluster, the owners store what the coordinating node accepted without checking NaN again.
   */
  readonly acceptNaN?: boolean
  /**
   * The sender built the batch from validated series (a cluster node forwarding its parts, a
   * hint, a repair): validation first checks whether it is already in normal form and, if so,
   * takes its arrays as they are. Anything that is not is validated in full, as ever.
   */
  readonly normalized?: boolean
}

export interface WriteResult {
  readonly pointsWritten: number
  readonly seriesWritten: number
}

/** A series with its points, as queries return them: timestamps in milliseconds since the epoch. */
export interface SeriesPoints {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly timestamps: Float64Array
  readonly values: Float64Array
}

/** The identity of a series without its points. */
export interface SeriesRef {
  readonly metric: string
  readonly tags: readonly Tag[]
}

export type MatchOp = 'eq' | 'neq' | 'regex' | 'not_regex'

export interface Matcher {
  readonly key: string
  readonly value: string
  readonly op: MatchOp
}

/**
 * Selects series: a metric name and matchers, all of which must hold.
 *
 * - `metric` '' selects series of every metric in query, latest and listSeries (engines only: the
 *   public gRPC contract still requires a metric, and the server refuses an empty one); deleteSeries
 *   and subscribe refuse it. Each series comes back with its own metric, and aggregations keep
 *   series of different metrics in different groups. Such a selection tests every metric's name
 *   and then resolves each metric that passes the __name__ matchers, so narrow it with a __name__
 *   matcher where possible; its cached resolution is dropped whenever any series appears or goes.
 * - A matcher with key `__name__` compares the metric name (eq, neq, and fully anchored RE2 regex
 *   and not_regex, as tag matchers), with or without a metric; an equality on it costs no more
 *   than naming the metric.
 * - A matcher on a tag the series lacks compares the empty string, as in Prometheus: `x=""`
 *   matches series without x, `x!=""` and `x=~".+"` require it.
 */
export interface Selector {
  readonly metric: string
  readonly matchers: readonly Matcher[]
}

export type AggFunc =
  | 'count'
  | 'sum'
  | 'min'
  | 'max'
  | 'avg'
  | 'first'
  | 'last'
  | 'stddev'
  | 'p50'
  | 'p90'
  | 'p95'
  | 'p99'

export interface Aggregation {
  readonly func: AggFunc
  /** Bucket width in milliseconds; 0 makes the whole range one bucket labelled by its start. */
  readonly stepMs: number
  /** Tag keys that stay; the other tags are merged away. Empty keeps every series apart, unless mergeSeries. */
  readonly groupBy: readonly string[]
  /** With groupBy empty: merge all series into one. */
  readonly mergeSeries: boolean
}

export type CompareOp = 'gt' | 'gte' | 'lt' | 'lte' | 'eq' | 'neq'

/** Keeps the points whose value compares true with `value`; NaN compares false except with neq. */
export interface ValueFilter {
  readonly op: CompareOp
  readonly value: number
}

export interface QueryRequest {
  readonly selector: Selector
  /**
   * Further selectors answered in the same query, each as if queried alone with this range,
   * aggregation and filter; their series follow the selector's, in order. The points-per-query
   * limit bounds them all together. Absent or empty: the selector alone.
   */
  readonly additionalSelectors?: readonly Selector[]
  /** Inclusive start, milliseconds since the epoch. */
  readonly startMs: number
  /** Exclusive end, milliseconds since the epoch. */
  readonly endMs: number
  /** Absent: raw points. */
  readonly aggregation?: Aggregation
  /** Applied to the points before any aggregation; absent keeps every point. */
  readonly valueFilter?: ValueFilter
}

export interface DeleteRequest {
  readonly selector: Selector
  /** Inclusive start in milliseconds; with endMs, the range to delete. Both absent: every point and the series itself. */
  readonly startMs?: number
  readonly endMs?: number
}

export interface DeleteResult {
  readonly seriesMatched: number
}
