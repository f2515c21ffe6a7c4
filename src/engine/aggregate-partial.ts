import { canonicalSeriesKey } from '../model/series-key.js'
import type { AggFunc, Aggregation, SeriesPoints, Tag } from '../model/types.js'
import {
  type AggregateInput,
  Bucket,
  byKey,
  finalizeSteps,
  type Group,
  groupSteps,
  keepsValues,
  keyedInputs,
  validateAggregation,
} from './aggregate.js'
import { runToEnd } from './slicer.js'

/**
 * One aggregation group's buckets as mergeable states, columnar: element i of every array belongs
 * to the bucket that starts at starts[i]. A node of a cluster computes these over the series it
 * answers for; the coordinating node merges the groups of all nodes with mergePartials, which
 * gives the answer one node holding every series would give (up to the order of floating-point
 * additions), because every function is a fold whose states combine exactly (counts, compensated
 * sums, minima and maxima, first and last points with their series, Chan's parallel variance),
 * and percentiles carry their values.
 */
export interface PartialGroup {
  readonly metric: string
  /** The tags the group keeps, sorted by key. */
  readonly tags: readonly Tag[]
  readonly starts: Float64Array
  readonly counts: Float64Array
  readonly sums: Float64Array
  readonly compensations: Float64Array
  readonly mins: Float64Array
  readonly maxs: Float64Array
  readonly firstTimestamps: Float64Array
  readonly firsts: Float64Array
  readonly lastTimestamps: Float64Array
  readonly lasts: Float64Array
  readonly means: Float64Array
  readonly m2s: Float64Array
  /** FIRST only: the canonical key of the series each first point came from. */
  readonly firstKeys?: readonly string[]
  /** LAST only: the same for the last points. */
  readonly lastKeys?: readonly string[]
  /** Percentiles only: every value, bucket after bucket, counts[i] of them for bucket i. */
  readonly values?: Float64Array
}

function toPartial(group: Group, func: AggFunc): PartialGroup {
  const starts = Float64Array.from(group.buckets.keys()).sort()
  const n = starts.length
  const col = () => new Float64Array(n)
  const p = {
    counts: col(),
    sums: col(),
    compensations: col(),
    mins: col(),
    maxs: col(),
    firstTimestamps: col(),
    firsts: col(),
    lastTimestamps: col(),
    lasts: col(),
    means: col(),
    m2s: col(),
  }
  const firstKeys: string[] = []
  const lastKeys: string[] = []
  const values: number[] = []
  for (let i = 0; i < n; i++) {
    const b = group.buckets.get(starts[i]!)!
    p.counts[i] = b.count
    p.sums[i] = b.sum
    p.compensations[i] = b.compensation
    p.mins[i] = b.min
    p.maxs[i] = b.max
    p.firstTimestamps[i] = b.firstTs
    p.firsts[i] = b.first
    p.lastTimestamps[i] = b.lastTs
    p.lasts[i] = b.last
    p.means[i] = b.mean
    p.m2s[i] = b.m2
    if (func === 'first') firstKeys.push(b.firstSource)
    if (func === 'last') lastKeys.push(b.lastSource)
    if (b.values !== undefined) for (const v of b.values) values.push(v)
  }
  return {
    metric: group.metric,
    tags: group.tags,
    starts,
    ...p,
    firstKeys: func === 'first' ? firstKeys : undefined,
    lastKeys: func === 'last' ? lastKeys : undefined,
    values: keepsValues(func) ? Float64Array.from(values) : undefined,
  }
}

/**
 * The groups of an aggregation over these series as mergeable states, in group key order,
 * yielding as aggregateSteps does. Throws the ValidationError aggregate() throws for a bad
 * aggregation.
 */
export function* partialSteps(
  series: readonly AggregateInput[],
  agg: Aggregation,
  startMs: number,
  endMs: number,
): Generator<void, PartialGroup[], void> {
  validateAggregation(agg)
  const groups = yield* groupSteps(keyedInputs(series), agg, startMs, endMs, true)
  return groups.map((g) => toPartial(g, agg.func))
}

function bucketOf(p: PartialGroup, i: number, offset: number, func: AggFunc): Bucket {
  const b = new Bucket(keepsValues(func))
  b.count = p.counts[i]!
  b.sum = p.sums[i]!
  b.compensation = p.compensations[i]!
  b.min = p.mins[i]!
  b.max = p.maxs[i]!
  b.firstTs = p.firstTimestamps[i]!
  b.first = p.firsts[i]!
  b.lastTs = p.lastTimestamps[i]!
  b.last = p.lasts[i]!
  b.mean = p.means[i]!
  b.m2 = p.m2s[i]!
  b.firstSource = p.firstKeys?.[i] ?? ''
  b.lastSource = p.lastKeys?.[i] ?? ''
  if (b.values !== undefined && p.values !== undefined) {
    for (let j = 0; j < b.count; j++) b.values.push(p.values[offset + j]!)
  }
  return b
}

/**
 * Merges the partial groups that several nodes computed for disjoint sets of series into the
 * final answer: groups with the same metric and tags combine bucket by bucket, and the result is
 * sorted by group key as aggregate() sorts it.
 */
export function mergePartials(parts: readonly (readonly PartialGroup[])[], agg: Aggregation): SeriesPoints[] {
  const groups = new Map<string, Group>()
  for (const list of parts) {
    for (const p of list) {
      const key = canonicalSeriesKey(p.metric, p.tags)
      let group = groups.get(key)
      if (group === undefined) {
        group = { metric: p.metric, tags: p.tags, key, buckets: new Map() }
        groups.set(key, group)
      }
      let offset = 0
      for (let i = 0; i < p.starts.length; i++) {
        const b = bucketOf(p, i, offset, agg.func)
        offset += b.count
        const existing = group.buckets.get(p.starts[i]!)
        if (existing === undefined) group.buckets.set(p.starts[i]!, b)
        else existing.merge(b)
      }
    }
  }
  const sorted = [...groups.values()].sort(byKey)
  return runToEnd(finalizeSteps(sorted, agg.func))
}
