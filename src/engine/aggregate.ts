import type { RunSummary, RunSummaryWithSpan } from '../codec/cold-value.js'
import { type FieldViolation, ValidationError } from '../model/errors.js'
import { canonicalSeriesKey, nameViolation, sortTags } from '../model/series-key.js'
import type { AggFunc, Aggregation, SeriesPoints, Tag, ValueFilter } from '../model/types.js'
import { runToEnd } from './slicer.js'

/** The quantile each percentile function computes. */
const QUANTILES: Readonly<Record<AggFunc, number | undefined>> = {
  count: undefined,
  sum: undefined,
  min: undefined,
  max: undefined,
  avg: undefined,
  first: undefined,
  last: undefined,
  stddev: undefined,
  p50: 0.5,
  p90: 0.9,
  p95: 0.95,
  p99: 0.99,
}

/** Whether a function's buckets keep their values: only percentiles need them all. */
export function keepsValues(func: AggFunc): boolean {
  return QUANTILES[func] !== undefined
}

/**
 * The start of the bucket a timestamp falls in: the multiple of stepMs since the epoch at or below
 * it, so -1 with a step of 1000 is in the bucket -1000. The remainder is exact for doubles, where
 * Math.floor(ts / stepMs) could round up to the next bucket. A stepMs of 0 makes the whole range
 * one bucket, labelled startMs.
 */
export function bucketStart(ts: number, stepMs: number, startMs: number): number {
  if (stepMs === 0) return startMs
  const r = ts % stepMs
  return ts - r - (r < 0 ? stepMs : 0)
}

/**
 * The end (exclusive) of the bucket that starts at `start`. The folds test a point against the
 * bounds of the bucket of the point before, and call bucketStart only for a point outside it: the
 * remainder of a timestamp (a double beyond V8's small integers) is a call to fmod, about 11 ns a
 * point on this machine against 4 for the two comparisons.
 */
function bucketEnd(start: number, stepMs: number): number {
  return stepMs === 0 ? Number.POSITIVE_INFINITY : start + stepMs
}

/** How many buckets hold the range [startMs, endMs): the most a series' aggregation can have. */
function bucketCount(stepMs: number, startMs: number, endMs: number): number {
  if (endMs <= startMs) return 0
  if (stepMs === 0) return 1
  return (bucketStart(endMs - 1, stepMs, startMs) - bucketStart(startMs, stepMs, startMs)) / stepMs + 1
}

/**
 * Running state of one bucket. Every function but the percentiles is a fold, so a bucket keeps a
 * few numbers however many points fall in it; only percentiles keep the values.
 */
export class Bucket {
  count = 0
  /** Neumaier-compensated sum: the rounding error lost so far is kept apart and added at the end. */
  sum = 0
  compensation = 0
  /** NaN until a number arrives; a NaN value never replaces a number, as in PromQL's min_over_time. */
  min = Number.NaN
  max = Number.NaN
  firstTs = Number.POSITIVE_INFINITY
  first = Number.NaN
  lastTs = Number.NEGATIVE_INFINITY
  last = Number.NaN
  /**
   * The canonical keys of the series the first and last points came from, kept only where buckets
   * of one group are merged across nodes: there, equal timestamps in two series resolve to the
   * series whose key sorts first, as they do when one node reads the series in key order.
   */
  firstSource = ''
  lastSource = ''
  /** Welford's running mean and sum of squared deviations, stable where sum of squares cancels. */
  mean = 0
  m2 = 0
  readonly values: number[] | undefined

  constructor(keepValues: boolean) {
    this.values = keepValues ? [] : undefined
  }

  /** Adds v to the compensated sum, keeping the rounding error apart (Neumaier). */
  private addToSum(v: number): void {
    const t = this.sum + v
    if (!Number.isFinite(t)) this.compensation = 0
    else if (Math.abs(this.sum) >= Math.abs(v)) this.compensation += this.sum - t + v
    else this.compensation += v - t + this.sum
    this.sum = t
  }

  add(ts: number, v: number): void {
    this.count++
    this.addToSum(v)
    if (v < this.min || Number.isNaN(this.min)) this.min = v
    if (v > this.max || Number.isNaN(this.max)) this.max = v
    // Strict comparisons: on equal timestamps the series met first, in canonical key order, wins.
    if (ts < this.firstTs) {
      this.firstTs = ts
      this.first = v
    }
    if (ts > this.lastTs) {
      this.lastTs = ts
      this.last = v
    }
    const delta = v - this.mean
    this.mean += delta / this.count
    this.m2 += delta * (v - this.mean)
    this.values?.push(v)
  }

  /** Folds in a whole run's summary, as if its points were added one by one. */
  addSummary(s: RunSummaryWithSpan): void {
    const before = this.count
    this.count += s.count
    this.addToSum(s.sum)
    if (s.min < this.min || Number.isNaN(this.min)) this.min = s.min
    if (s.max > this.max || Number.isNaN(this.max)) this.max = s.max
    if (s.firstMs < this.firstTs) {
      this.firstTs = s.firstMs
      this.first = s.first
    }
    if (s.lastMs > this.lastTs) {
      this.lastTs = s.lastMs
      this.last = s.last
    }
    // Only AVG reads the mean, and only when the sum overflowed; a weighted mean is close enough.
    this.mean = (this.mean * before + s.sum) / this.count
  }

  /** add() that also records which series the first and last points came from. */
  addFrom(ts: number, v: number, source: string): void {
    if (ts < this.firstTs) this.firstSource = source
    if (ts > this.lastTs) this.lastSource = source
    this.add(ts, v)
  }

  /** addSummary() that also records which series the first and last points came from. */
  addSummaryFrom(s: RunSummaryWithSpan, source: string): void {
    if (s.firstMs < this.firstTs) this.firstSource = source
    if (s.lastMs > this.lastTs) this.lastSource = source
    this.addSummary(s)
  }

  /**
   * Folds in another bucket of the same group, from other series: the result is that of one
   * bucket fed both sets of points, up to the order of floating-point additions. The means and
   * squared deviations combine by Chan's formula for parallel variance.
   */
  merge(o: Bucket): void {
    if (o.count === 0) return
    const before = this.count
    this.count += o.count
    this.addToSum(o.sum)
    this.compensation += o.compensation
    if (o.min < this.min || Number.isNaN(this.min)) this.min = o.min
    if (o.max > this.max || Number.isNaN(this.max)) this.max = o.max
    if (o.firstTs < this.firstTs || (o.firstTs === this.firstTs && o.firstSource < this.firstSource)) {
      this.firstTs = o.firstTs
      this.first = o.first
      this.firstSource = o.firstSource
    }
    if (o.lastTs > this.lastTs || (o.lastTs === this.lastTs && o.lastSource < this.lastSource)) {
      this.lastTs = o.lastTs
      this.last = o.last
      this.lastSource = o.lastSource
    }
    if (before === 0) {
      this.mean = o.mean
      this.m2 = o.m2
    } else {
      const delta = o.mean - this.mean
      this.mean += (delta * o.count) / this.count
      this.m2 += o.m2 + (delta * delta * before * o.count) / this.count
    }
    if (this.values !== undefined && o.values !== undefined) for (const v of o.values) this.values.push(v)
  }

  result(func: AggFunc): number {
    switch (func) {
      case 'count':
        return this.count
      case 'sum':
        return this.sum + this.compensation
      case 'avg': {
        // Past the largest double the sum is infinite while the mean is not; PromQL falls back alike.
        const sum = this.sum + this.compensation
        return Number.isFinite(sum) ? sum / this.count : this.mean
      }
      case 'min':
        return this.min
      case 'max':
        return this.max
      case 'first':
        return this.first
      case 'last':
        return this.last
      case 'stddev':
        return Math.sqrt(this.m2 / this.count)
      case 'p50':
      case 'p90':
      case 'p95':
      case 'p99':
        return quantile(Float64Array.from(this.values!).sort(), QUANTILES[func]!)
    }
  }
}

/** Functions that whole-run summaries can answer; STDDEV and percentiles need the points. */
export const SUMMARIZABLE: ReadonlySet<AggFunc> = new Set<AggFunc>([
  'count',
  'sum',
  'min',
  'max',
  'avg',
  'first',
  'last',
])

/** The summary of sorted points, computed by the same fold as a bucket so both paths agree. */
export function summarizePoints(ts: Float64Array, vals: Float64Array): RunSummary {
  const b = new Bucket(false)
  for (let i = 0; i < ts.length; i++) b.add(ts[i] as number, vals[i] as number)
  return { sum: b.sum + b.compensation, min: b.min, max: b.max, first: b.first, last: b.last }
}

/** A series to aggregate: points, plus summaries of whole runs that each lie inside one bucket of the range. */
export interface AggregateInput extends SeriesPoints {
  readonly summaries?: readonly RunSummaryWithSpan[]
}

/**
 * PromQL's quantile_over_time: the value at rank q * (n - 1) of the sorted values, interpolated
 * linearly between the two closest ranks.
 */
function quantile(sorted: Float64Array, q: number): number {
  const rank = q * (sorted.length - 1)
  const lower = Math.floor(rank)
  const upper = Math.min(sorted.length - 1, lower + 1)
  const weight = rank - lower
  return sorted[lower]! * (1 - weight) + sorted[upper]! * weight
}

/** One group of an aggregation: the tags it keeps and its buckets by start. */
export interface Group {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly key: string
  readonly buckets: Map<number, Bucket>
}

export function validateAggregation(agg: Aggregation): void {
  const violations: FieldViolation[] = []
  if (!Object.hasOwn(QUANTILES, agg.func)) {
    violations.push({ field: 'aggregation.func', description: `is not a known function: ${String(agg.func)}` })
  }
  if (!Number.isSafeInteger(agg.stepMs) || agg.stepMs < 0) {
    violations.push({
      field: 'aggregation.step_ms',
      description: `must be a non-negative integer, got ${agg.stepMs}`,
    })
  }
  agg.groupBy.forEach((key, i) => {
    const problem = nameViolation(key)
    if (problem !== undefined) violations.push({ field: `aggregation.group_by[${i}]`, description: problem })
  })
  if (violations.length > 0) throw new ValidationError(violations)
}

/** The tags a series keeps in its group: those named in groupBy, all of them, or none. */
function groupTags(tags: readonly Tag[], groupBy: ReadonlySet<string>, mergeSeries: boolean): readonly Tag[] {
  if (groupBy.size > 0) return tags.filter((tag) => groupBy.has(tag.key))
  return mergeSeries ? [] : tags
}

/** Orders by canonical key, in UTF-16 code-unit order as everywhere else keys are sorted. */
export function byKey(a: { readonly key: string }, b: { readonly key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0
}

/**
 * Aggregates the points of the series in [startMs, endMs) into buckets (see bucketStart), per
 * group: with groupBy, series with the same values for those keys form a group that keeps only
 * those tags (a series lacking a key joins the group whose value for it is empty, and the tag is
 * left out); with groupBy empty, each series is its own group with all its tags, unless
 * mergeSeries puts every series of a metric into one group without tags.
 *
 * Empty buckets, and groups without any point in the range, are left out. Output series are sorted
 * by canonical series key, their points by bucket start. Series are read in canonical key order,
 * so FIRST and LAST resolve equal timestamps in different series the same way every time: the
 * series whose key sorts first wins. Throws a ValidationError for an unknown function, a negative
 * or fractional step, or a group_by entry that is not a tag name.
 */
export function aggregate(
  series: readonly AggregateInput[],
  agg: Aggregation,
  startMs: number,
  endMs: number,
): SeriesPoints[] {
  return runToEnd(aggregateSteps(series, agg, startMs, endMs))
}

/** Points folded between two yields of aggregateSteps: a few milliseconds of work. */
const POINTS_PER_STEP = 65_536

/**
 * The work of aggregate(), yielding after every series and every POINTS_PER_STEP points, so that a
 * caller on the event loop can let other calls run in between (see Slicer.drive).
 */
export function* aggregateSteps(
  series: readonly AggregateInput[],
  agg: Aggregation,
  startMs: number,
  endMs: number,
): Generator<void, SeriesPoints[], void> {
  validateAggregation(agg)
  const stepMs = agg.stepMs
  const inputs = keyedInputs(series)
  const alone = agg.groupBy.length === 0 && !agg.mergeSeries
  if (alone && SIMPLE_FOLDS.has(agg.func) && inputs.every((input, i) => input.key !== inputs[i - 1]?.key)) {
    const fast: SeriesPoints[] = []
    let folded = true
    for (const input of inputs) {
      const one = foldSorted(input.series, input.tags, agg.func, stepMs, startMs, endMs)
      if (one === undefined) {
        folded = false
        break
      }
      if (one.timestamps.length > 0) fast.push(one)
      yield
    }
    if (folded) return fast
  }

  const groups = yield* groupSteps(inputs, agg, startMs, endMs, false)
  return yield* finalizeSteps(groups, agg.func)
}

/** Each group's buckets as a series of the function's results, groups in key order. */
export function* finalizeSteps(groups: readonly Group[], func: AggFunc): Generator<void, SeriesPoints[], void> {
  const keepValues = keepsValues(func)
  const out: SeriesPoints[] = []
  for (const group of groups) {
    const starts = Float64Array.from(group.buckets.keys()).sort()
    const values = new Float64Array(starts.length)
    for (let i = 0; i < starts.length; i++) {
      values[i] = group.buckets.get(starts[i]!)!.result(func)
      // A percentile sorts its bucket's values: big buckets each take milliseconds.
      if (keepValues) yield
    }
    out.push({ metric: group.metric, tags: group.tags, timestamps: starts, values })
  }
  return out
}

interface KeyedInput {
  readonly series: AggregateInput
  readonly tags: readonly Tag[]
  readonly key: string
}

/** The inputs with sorted tags and canonical keys, in key order: the order every fold reads them in. */
export function keyedInputs(series: readonly AggregateInput[]): KeyedInput[] {
  return series
    .map((s) => {
      const tags = sortTags(s.tags)
      return { series: s, tags, key: canonicalSeriesKey(s.metric, tags) }
    })
    .sort(byKey)
}

/**
 * Folds the inputs (in key order) into their groups' buckets, yielding after every series and
 * every POINTS_PER_STEP points. Returns the groups that have a bucket, sorted by key. With
 * `sources`, buckets record the series of their first and last points, for merging across nodes.
 */
export function* groupSteps(
  inputs: readonly KeyedInput[],
  agg: Aggregation,
  startMs: number,
  endMs: number,
  sources: boolean,
): Generator<void, Group[], void> {
  const groupBy = new Set(agg.groupBy)
  const keepValues = keepsValues(agg.func)
  const stepMs = agg.stepMs
  const groups = new Map<string, Group>()
  for (const input of inputs) {
    const metric = input.series.metric
    const tags = groupTags(input.tags, groupBy, agg.mergeSeries)
    const key = canonicalSeriesKey(metric, tags)
    let group = groups.get(key)
    if (group === undefined) {
      group = { metric, tags, key, buckets: new Map() }
      groups.set(key, group)
    }
    const { timestamps, values } = input.series
    // Points of one series come in time order, so most land in the bucket of the point before.
    let currentStart = Number.NaN
    let currentEnd = Number.NaN
    let current: Bucket | undefined
    for (let i = 0; i < timestamps.length; i++) {
      if (i % POINTS_PER_STEP === POINTS_PER_STEP - 1) yield
      const ts = timestamps[i]!
      if (ts < startMs || ts >= endMs) continue
      if (!(ts >= currentStart && ts < currentEnd) || current === undefined) {
        currentStart = bucketStart(ts, stepMs, startMs)
        currentEnd = bucketEnd(currentStart, stepMs)
        current = group.buckets.get(currentStart)
        if (current === undefined) {
          current = new Bucket(keepValues)
          group.buckets.set(currentStart, current)
        }
      }
      if (sources) current.addFrom(ts, values[i]!, input.key)
      else current.add(ts, values[i]!)
    }
    for (const summary of input.series.summaries ?? []) {
      const start = bucketStart(summary.firstMs, stepMs, startMs)
      let bucket = group.buckets.get(start)
      if (bucket === undefined) {
        bucket = new Bucket(keepValues)
        group.buckets.set(start, bucket)
      }
      if (sources) bucket.addSummaryFrom(summary, input.key)
      else bucket.addSummary(summary)
    }
    yield
  }
  return [...groups.values()].filter((g) => g.buckets.size > 0).sort(byKey)
}

/** Functions that foldSorted computes: each keeps one number per bucket and needs no compensation. */
const SIMPLE_FOLDS: ReadonlySet<AggFunc> = new Set<AggFunc>(['count', 'min', 'max', 'first', 'last'])

/**
 * One series alone in its group, folded straight into arrays: its points are sorted, so each
 * bucket is a contiguous stretch and needs no Bucket object or map lookup. The same results as the
 * Bucket fold (a NaN never replaces a number in MIN and MAX). Undefined when the series has run
 * summaries or its points are not strictly increasing, for the general path to take.
 */
function foldSorted(
  s: AggregateInput,
  tags: readonly Tag[],
  func: AggFunc,
  stepMs: number,
  startMs: number,
  endMs: number,
): SeriesPoints | undefined {
  if ((s.summaries?.length ?? 0) > 0) return undefined
  const { timestamps, values } = s
  // At most one bucket a point, and no more than the range holds: written in place, not pushed.
  const cap = Math.min(timestamps.length, bucketCount(stepMs, startMs, endMs))
  const starts = new Float64Array(cap)
  const out = new Float64Array(cap)
  let n = 0
  let currentEnd = Number.NaN
  let acc = Number.NaN
  let previous = Number.NEGATIVE_INFINITY
  for (let i = 0; i < timestamps.length; i++) {
    const ts = timestamps[i]!
    if (ts <= previous) return undefined
    previous = ts
    if (ts < startMs || ts >= endMs) continue
    const v = values[i]!
    // Ascending timestamps: a point at or past the current bucket's end starts the next one.
    if (!(ts < currentEnd)) {
      if (n > 0) out[n - 1] = acc
      const start = bucketStart(ts, stepMs, startMs)
      currentEnd = bucketEnd(start, stepMs)
      starts[n++] = start
      acc = func === 'count' ? 1 : v
      continue
    }
    switch (func) {
      case 'count':
        acc++
        break
      case 'min':
        if (v < acc || Number.isNaN(acc)) acc = v
        break
      case 'max':
        if (v > acc || Number.isNaN(acc)) acc = v
        break
      case 'last':
        acc = v
        break
      default:
        break
    }
  }
  if (n > 0) out[n - 1] = acc
  return {
    metric: s.metric,
    tags,
    timestamps: n === cap ? starts : starts.slice(0, n),
    values: n === cap ? out : out.slice(0, n),
  }
}

const COMPARE: Readonly<Record<ValueFilter['op'], (v: number, x: number) => boolean>> = {
  gt: (v, x) => v > x,
  gte: (v, x) => v >= x,
  lt: (v, x) => v < x,
  lte: (v, x) => v <= x,
  eq: (v, x) => v === x,
  neq: (v, x) => v !== x,
}

/** Whether `op` names a comparison filterValues knows: for callers that get it as a plain string. */
export function isCompareOp(op: string): op is ValueFilter['op'] {
  return Object.hasOwn(COMPARE, op)
}

/** Keeps the points whose value passes the filter; series left without points are dropped. */
export function filterValues(series: readonly SeriesPoints[], filter: ValueFilter): SeriesPoints[] {
  const pass = COMPARE[filter.op]
  const out: SeriesPoints[] = []
  for (const s of series) {
    const keep: number[] = []
    for (let i = 0; i < s.values.length; i++) if (pass(s.values[i] as number, filter.value)) keep.push(i)
    if (keep.length === 0) continue
    out.push({
      metric: s.metric,
      tags: s.tags,
      timestamps: Float64Array.from(keep, (i) => s.timestamps[i] as number),
      values: Float64Array.from(keep, (i) => s.values[i] as number),
    })
  }
  return out
}
