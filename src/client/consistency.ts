/** The consistency level and precision of client options as the contract's enums, for the calls. */
import { Consistency as ProtoConsistency, Precision as ProtoPrecision } from '../../gen/v3storage/v1/common.js'
import { ValidationError } from '../model/errors.js'
import type { ConsistencyLevel, Precision } from '../model/types.js'
import { toClientError } from './errors.js'

const CONSISTENCY_LEVELS: ReadonlyMap<string, ProtoConsistency> = new Map([
  ['one', ProtoConsistency.CONSISTENCY_ONE],
  ['quorum', ProtoConsistency.CONSISTENCY_QUORUM],
  ['all', ProtoConsistency.CONSISTENCY_ALL],
])

/**
 * The enum number of a level; CONSISTENCY_UNSPECIFIED, the server's default, when absent. Anything
 * else (a JavaScript caller can pass any string) fails here with INVALID_ARGUMENT naming
 * `consistency`, as the server would answer, without a call.
 */
export function consistencyToProto(level: ConsistencyLevel | undefined): ProtoConsistency {
  if (level === undefined) return ProtoConsistency.CONSISTENCY_UNSPECIFIED
  const value = CONSISTENCY_LEVELS.get(level)
  if (value === undefined) {
    throw toClientError(
      ValidationError.field('consistency', `must be one, quorum or all, got ${JSON.stringify(level)}`),
    )
  }
  return value
}

const PRECISIONS: ReadonlyMap<string, ProtoPrecision> = new Map([
  ['s', ProtoPrecision.PRECISION_SECONDS],
  ['ms', ProtoPrecision.PRECISION_MILLISECONDS],
  ['us', ProtoPrecision.PRECISION_MICROSECONDS],
  ['ns', ProtoPrecision.PRECISION_NANOSECONDS],
])

/** The enum number of a timestamp precision, ms when absent; anything else fails naming `precision`. */
export function precisionToProto(precision: Precision | undefined): ProtoPrecision {
  const value = PRECISIONS.get(precision ?? 'ms')
  if (value === undefined) {
    throw toClientError(ValidationError.field('precision', `must be s, ms, us or ns, got ${JSON.stringify(precision)}`))
  }
  return value
}
