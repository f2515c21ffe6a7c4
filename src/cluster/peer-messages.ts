import type {
  PeerAggregation,
  PeerPartialGroup,
  PeerSelector,
  PeerShard,
} from '../../gen/v3storage/internal/v1/peer_query.js'
import { isCompareOp, validateAggregation } from '../engine/aggregate.js'
import type { PartialGroup } from '../engine/aggregate-partial.js'
import { ValidationError } from '../model/errors.js'
import type { AggFunc, Aggregation, MatchOp, Selector, Tag, ValueFilter } from '../model/types.js'
import { float64Array, float64Bytes } from './peer-codec.js'

/**
 * Conversions between the engine's request and result types and the internal peer messages of
 * peer_query.proto. Decoding checks what the protobuf decoder cannot (enumerated strings, array
 * lengths), so a malformed peer message is a ValidationError naming the field, never a crash.
 */

export function selectorToPeer(selector: Selector): PeerSelector {
  return { metric: selector.metric, matchers: selector.matchers.map((m) => ({ key: m.key, value: m.value, op: m.op })) }
}

export function selectorFromPeer(peer: PeerSelector | undefined, field: string): Selector {
  if (peer === undefined) throw ValidationError.field(field, 'is required')
  // The engine compiles every selector it is given before it reads anything, and that rejects an
  // unknown op with a ValidationError naming the matcher, as it does for any other caller.
  return {
    metric: peer.metric,
    matchers: peer.matchers.map((m) => ({ key: m.key, value: m.value, op: m.op as MatchOp })),
  }
}

export function aggregationToPeer(agg: Aggregation): PeerAggregation {
  return { func: agg.func, stepMs: agg.stepMs, groupBy: [...agg.groupBy], mergeSeries: agg.mergeSeries }
}

export function aggregationFromPeer(peer: PeerAggregation): Aggregation {
  const agg: Aggregation = {
    func: peer.func as AggFunc,
    stepMs: peer.stepMs,
    groupBy: peer.groupBy,
    mergeSeries: peer.mergeSeries,
  }
  validateAggregation(agg)
  return agg
}

export function valueFilterFromPeer(op: string, value: number): ValueFilter {
  if (!isCompareOp(op)) throw ValidationError.field('value_filter.op', `unknown op ${JSON.stringify(op)}`)
  return { op, value }
}

/** Whole-node shards need no filter: `all` tells the node to answer for every series it holds. */
export function shardToPeer(spans: Uint8Array | undefined): PeerShard {
  return spans === undefined ? { all: true, ranges: Buffer.alloc(0) } : { all: false, ranges: Buffer.from(spans) }
}

/** The doubles of a column, checked against the bucket count; copied, as they sit anywhere in the frame. */
function f64From(bytes: Uint8Array, field: string, expected: number | undefined): Float64Array {
  if (bytes.length % 8 !== 0) throw ValidationError.field(field, `has ${bytes.length} bytes, not float64s`)
  const out = float64Array(bytes)
  if (expected !== undefined && out.length !== expected) {
    throw ValidationError.field(field, `has ${out.length} values where ${expected} are expected`)
  }
  return out
}

export function partialToPeer(group: PartialGroup): PeerPartialGroup {
  return {
    metric: group.metric,
    tags: group.tags.map((t) => ({ key: t.key, value: t.value })),
    starts: float64Bytes(group.starts),
    counts: float64Bytes(group.counts),
    sums: float64Bytes(group.sums),
    compensations: float64Bytes(group.compensations),
    mins: float64Bytes(group.mins),
    maxs: float64Bytes(group.maxs),
    firstTimestamps: float64Bytes(group.firstTimestamps),
    firsts: float64Bytes(group.firsts),
    lastTimestamps: float64Bytes(group.lastTimestamps),
    lasts: float64Bytes(group.lasts),
    means: float64Bytes(group.means),
    m2s: float64Bytes(group.m2s),
    firstKeys: [...(group.firstKeys ?? [])],
    lastKeys: [...(group.lastKeys ?? [])],
    values: group.values === undefined ? Buffer.alloc(0) : float64Bytes(group.values),
  }
}

export function partialFromPeer(peer: PeerPartialGroup, field: string): PartialGroup {
  const starts = f64From(peer.starts, `${field}.starts`, undefined)
  const n = starts.length
  const column = (bytes: Uint8Array, name: string) => f64From(bytes, `${field}.${name}`, n)
  const counts = column(peer.counts, 'counts')
  let total = 0
  for (const c of counts) total += c
  const keys = (list: readonly string[], name: string): readonly string[] | undefined => {
    if (list.length === 0) return undefined
    if (list.length !== n) throw ValidationError.field(`${field}.${name}`, `has ${list.length} keys for ${n} buckets`)
    return list
  }
  const tags: Tag[] = peer.tags.map((t) => ({ key: t.key, value: t.value }))
  return {
    metric: peer.metric,
    tags,
    starts,
    counts,
    sums: column(peer.sums, 'sums'),
    compensations: column(peer.compensations, 'compensations'),
    mins: column(peer.mins, 'mins'),
    maxs: column(peer.maxs, 'maxs'),
    firstTimestamps: column(peer.firstTimestamps, 'first_timestamps'),
    firsts: column(peer.firsts, 'firsts'),
    lastTimestamps: column(peer.lastTimestamps, 'last_timestamps'),
    lasts: column(peer.lasts, 'lasts'),
    means: column(peer.means, 'means'),
    m2s: column(peer.m2s, 'm2s'),
    firstKeys: keys(peer.firstKeys, 'first_keys'),
    lastKeys: keys(peer.lastKeys, 'last_keys'),
    values: peer.values.length === 0 ? undefined : f64From(peer.values, `${field}.values`, total),
  }
}
