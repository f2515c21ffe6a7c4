/** The consistency level of a client option as the contract's enum, for the write and read calls. */
import { Consistency as ProtoConsistency } from '../../gen/v3storage/v1/common.js'
import { ValidationError } from '../model/errors.js'
import type { ConsistencyLevel } from '../model/types.js'
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
