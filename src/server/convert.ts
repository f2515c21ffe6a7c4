/**
 * Conversions between the generated protobuf types and the model. Requests are checked here for
 * what only the wire can get wrong (unset enums, absent messages, ranges); the engine validates
 * the rest. Every ValidationError names the field as the request spells it (`selector.matchers[1].op`).
 */

import type {
  CompactResponse,
  DeleteSeriesRequest,
  GetStatsResponse,
  LatencySummary as ProtoLatencySummary,
} from '../../gen/v3storage/v1/admin_service.js'
import {
  AggFunc as ProtoAggFunc,
  type Aggregation as ProtoAggregation,
  CompareOp as ProtoCompareOp,
  Consistency as ProtoConsistency,
  MatchOp as ProtoMatchOp,
  Precision as ProtoPrecision,
  type Selector as ProtoSelector,
  type SeriesRef as ProtoSeriesRef,
  type Tag as ProtoTag,
  type ValueFilter as ProtoValueFilter,
} from '../../gen/v3storage/v1/common.js'
import type { CompactResult, EngineStats, LatencySummary } from '../engine/storage-engine.js'
import { type FieldViolation, LimitError, ValidationError } from '../model/errors.js'
import { MAX_ADDITIONAL_SELECTORS } from '../model/limits.js'
import type {
  AggFunc,
  Aggregation,
  CompareOp,
  ConsistencyLevel,
  DeleteRequest,
  MatchOp,
  Precision,
  QueryRequest,
  Selector,
  SeriesRef,
  Tag,
  ValueFilter,
  WriteBatch,
} from '../model/types.js'
import type { WireWriteRequest } from '../wire/series-codec.js'

const PRECISIONS: ReadonlyMap<number, Precision> = new Map([
  // Unspecified is milliseconds, so that a client that never sets the field writes milliseconds.
  [ProtoPrecision.PRECISION_UNSPECIFIED, 'ms'],
  [ProtoPrecision.PRECISION_SECONDS, 's'],
  [ProtoPrecision.PRECISION_MILLISECONDS, 'ms'],
  [ProtoPrecision.PRECISION_MICROSECONDS, 'us'],
  [ProtoPrecision.PRECISION_NANOSECONDS, 'ns'],
])

const MATCH_OPS: ReadonlyMap<number, MatchOp> = new Map([
  [ProtoMatchOp.MATCH_OP_EQ, 'eq'],
  [ProtoMatchOp.MATCH_OP_NEQ, 'neq'],
  [ProtoMatchOp.MATCH_OP_REGEX, 'regex'],
  [ProtoMatchOp.MATCH_OP_NOT_REGEX, 'not_regex'],
])

const AGG_FUNCS: ReadonlyMap<number, AggFunc> = new Map([
  [ProtoAggFunc.AGG_FUNC_COUNT, 'count'],
  [ProtoAggFunc.AGG_FUNC_SUM, 'sum'],
  [ProtoAggFunc.AGG_FUNC_MIN, 'min'],
  [ProtoAggFunc.AGG_FUNC_MAX, 'max'],
  [ProtoAggFunc.AGG_FUNC_AVG, 'avg'],
  [ProtoAggFunc.AGG_FUNC_FIRST, 'first'],
  [ProtoAggFunc.AGG_FUNC_LAST, 'last'],
  [ProtoAggFunc.AGG_FUNC_STDDEV, 'stddev'],
  [ProtoAggFunc.AGG_FUNC_P50, 'p50'],
  [ProtoAggFunc.AGG_FUNC_P90, 'p90'],
  [ProtoAggFunc.AGG_FUNC_P95, 'p95'],
  [ProtoAggFunc.AGG_FUNC_P99, 'p99'],
])

// CONSISTENCY_UNSPECIFIED is absent from the map: it leaves the level to the server (CallContext).
const CONSISTENCY_LEVELS: ReadonlyMap<number, ConsistencyLevel> = new Map([
  [ProtoConsistency.CONSISTENCY_ONE, 'one'],
  [ProtoConsistency.CONSISTENCY_QUORUM, 'quorum'],
  [ProtoConsistency.CONSISTENCY_ALL, 'all'],
])

/**
 * The consistency level a request asks for; undefined for CONSISTENCY_UNSPECIFIED, the server's
 * default. A number outside the enum is refused naming the field, before anything is written or read.
 */
export function consistencyFromProto(value: number): ConsistencyLevel | undefined {
  if (value === ProtoConsistency.CONSISTENCY_UNSPECIFIED) return undefined
  const level = CONSISTENCY_LEVELS.get(value)
  if (level === undefined) {
    throw ValidationError.field(
      'consistency',
      `unknown consistency ${value}; 0 (the server's default), 1 (ONE), 2 (QUORUM) or 3 (ALL)`,
    )
  }
  return level
}

export function precisionFromProto(value: number): Precision {
  const precision = PRECISIONS.get(value)
  if (precision === undefined) throw ValidationError.field('precision', `unknown precision ${value}`)
  return precision
}

/** A decoded WriteRequest as the engine takes it. */
export function writeBatchFromWire(request: WireWriteRequest): WriteBatch {
  return { series: request.series, precision: precisionFromProto(request.precision) }
}

export function tagsFromProto(tags: readonly ProtoTag[]): Tag[] {
  return tags.map((t) => ({ key: t.key, value: t.value }))
}

/** Checks what the wire can leave unset; the engine compiles and checks the rest (names, regexes). */
export function selectorFromProto(selector: ProtoSelector | undefined, field = 'selector'): Selector {
  if (selector === undefined) throw ValidationError.field(field, 'is required')
  const violations: FieldViolation[] = []
  if (selector.metric === '') violations.push({ field: `${field}.metric`, description: 'is required' })
  const matchers = selector.matchers.map((m, i) => {
    const op = MATCH_OPS.get(m.op)
    if (op === undefined) {
      violations.push({
        field: `${field}.matchers[${i}].op`,
        description:
          m.op === ProtoMatchOp.MATCH_OP_UNSPECIFIED
            ? 'must be set; MATCH_OP_UNSPECIFIED is not an op'
            : `unknown op ${m.op}`,
      })
    }
    return { key: m.key, value: m.value, op: op ?? 'eq' }
  })
  if (violations.length > 0) throw new ValidationError(violations)
  return { metric: selector.metric, matchers }
}

function aggregationFromProto(aggregation: ProtoAggregation, field: string): Aggregation {
  const func = AGG_FUNCS.get(aggregation.func)
  if (func === undefined) {
    throw ValidationError.field(
      `${field}.func`,
      aggregation.func === ProtoAggFunc.AGG_FUNC_UNSPECIFIED
        ? 'must be set; AGG_FUNC_UNSPECIFIED is not a function'
        : `unknown function ${aggregation.func}`,
    )
  }
  if (aggregation.stepMs < 0) {
    throw ValidationError.field(`${field}.step_ms`, `must be 0 or positive, got ${aggregation.stepMs}`)
  }
  return {
    func,
    stepMs: aggregation.stepMs,
    groupBy: [...aggregation.groupBy],
    mergeSeries: aggregation.mergeSeries,
  }
}

/** The fields QueryRequest and QueryStreamRequest share. */
export interface ProtoQuery {
  readonly selector?: ProtoSelector | undefined
  readonly startMs: number
  readonly endMs: number
  readonly aggregation?: ProtoAggregation | undefined
  readonly valueFilter?: ProtoValueFilter | undefined
  readonly additionalSelectors: readonly ProtoSelector[]
}

const COMPARE_OPS: ReadonlyMap<ProtoCompareOp, CompareOp> = new Map([
  [ProtoCompareOp.COMPARE_OP_GT, 'gt'],
  [ProtoCompareOp.COMPARE_OP_GTE, 'gte'],
  [ProtoCompareOp.COMPARE_OP_LT, 'lt'],
  [ProtoCompareOp.COMPARE_OP_LTE, 'lte'],
  [ProtoCompareOp.COMPARE_OP_EQ, 'eq'],
  [ProtoCompareOp.COMPARE_OP_NEQ, 'neq'],
])

function valueFilterFromProto(filter: ProtoValueFilter): ValueFilter {
  const op = COMPARE_OPS.get(filter.op)
  if (op === undefined) {
    throw ValidationError.field(
      'value_filter.op',
      filter.op === ProtoCompareOp.COMPARE_OP_UNSPECIFIED ? 'must be set' : `unknown comparison ${filter.op}`,
    )
  }
  return { op, value: filter.value }
}

export function queryFromProto(request: ProtoQuery): QueryRequest {
  const selector = selectorFromProto(request.selector)
  if (request.additionalSelectors.length > MAX_ADDITIONAL_SELECTORS) {
    throw new LimitError(
      'max_additional_selectors',
      MAX_ADDITIONAL_SELECTORS,
      `cannot answer ${request.additionalSelectors.length} additional selectors in one query`,
    )
  }
  const additionalSelectors = request.additionalSelectors.map((s, i) =>
    selectorFromProto(s, `additional_selectors[${i}]`),
  )
  if (request.endMs <= request.startMs) {
    throw ValidationError.field(
      'end_ms',
      `must be greater than start_ms (${request.startMs}), got ${request.endMs}; end_ms is exclusive`,
    )
  }
  return {
    selector,
    ...(additionalSelectors.length === 0 ? {} : { additionalSelectors }),
    startMs: request.startMs,
    endMs: request.endMs,
    ...(request.aggregation === undefined
      ? {}
      : { aggregation: aggregationFromProto(request.aggregation, 'aggregation') }),
    ...(request.valueFilter === undefined ? {} : { valueFilter: valueFilterFromProto(request.valueFilter) }),
  }
}

/** Both bounds 0 delete every point and the series themselves; otherwise the range must not be empty. */
export function deleteFromProto(request: DeleteSeriesRequest): DeleteRequest {
  const selector = selectorFromProto(request.selector)
  if (request.startMs === 0 && request.endMs === 0) return { selector }
  if (request.endMs <= request.startMs) {
    throw ValidationError.field(
      'end_ms',
      `must be greater than start_ms (${request.startMs}), got ${request.endMs}; both 0 delete all time`,
    )
  }
  return { selector, startMs: request.startMs, endMs: request.endMs }
}

export function seriesRefToProto(ref: SeriesRef): ProtoSeriesRef {
  return { metric: ref.metric, tags: tagsFromProto(ref.tags) }
}

function latencyToProto(summary: LatencySummary): ProtoLatencySummary {
  return { count: summary.count, p50Ms: summary.p50Ms, p99Ms: summary.p99Ms }
}

export function statsToProto(stats: EngineStats): GetStatsResponse {
  return {
    series: stats.series,
    pointsWritten: stats.pointsWritten,
    bufferedPoints: stats.bufferedPoints,
    hotBlocks: stats.hotBlocks,
    coldRuns: stats.coldRuns,
    coldBlocks: stats.coldBlocks,
    bytesOnDisk: stats.bytesOnDisk,
    writeLatency: latencyToProto(stats.writes),
    queryLatency: latencyToProto(stats.queries),
    resultCache: stats.caches?.results,
    decodedBlockCache: stats.caches?.decodedBlocks,
    selectorCache: stats.caches?.selectors,
    nodes: (stats.nodes ?? []).map((n) => ({ nodeId: n.id, stats: statsToProto(n.stats) })),
  }
}

export function compactToProto(result: CompactResult): CompactResponse {
  return {
    blocksSealed: result.blocksSealed,
    blocksMoved: result.blocksMoved,
    seriesExpired: result.seriesExpired,
  }
}
