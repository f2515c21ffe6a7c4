/**
 * Which copy of a point wins where replicas disagree on its value: the one with the highest write
 * version (model/hlc.ts, the coordinating node's hybrid logical clock), so that "newer" means the
 * same on every node. Where versions tie or are unknown (0: older than the version window, or
 * written before versions existed), the larger float64 bit pattern wins: not the newer write, but
 * the same choice on every node, so replicas converge. Used by QUORUM and ALL reads
 * (cluster-engine.ts) and by anti-entropy repair (anti-entropy.ts), so both pick the same winner.
 * Also the PEER_KIND_VERSIONS messages that fetch the versions of disputed points.
 */
import { PeerVersionsRequest, PeerVersionsResponse } from '../../gen/v3storage/internal/v1/peer_versions.js'
import type { ShardEngine } from '../engine/shard.js'
import type { CallContext } from '../engine/storage-engine.js'
import { UnavailableError, ValidationError } from '../model/errors.js'
import type { Tag } from '../model/types.js'
import { float64Array, float64Bytes } from './peer-codec.js'

const scratch = new Float64Array(2)
const scratchBits = new BigUint64Array(scratch.buffer)

/**
 * The value every node keeps where two copies of equal (or unknown) version disagree: the one whose
 * float64 bit pattern, read as an unsigned 64-bit integer, is larger. Only deterministic.
 */
export function resolveConflict(a: number, b: number): number {
  scratch[0] = a
  scratch[1] = b
  return scratchBits[0]! >= scratchBits[1]! ? a : b
}

/** Whether two doubles have the same bits (NaN payloads and the sign of zero count). */
export function sameBits(a: number, b: number): boolean {
  scratch[0] = a
  scratch[1] = b
  return scratchBits[0] === scratchBits[1]
}

/** One copy of a disputed point. */
export interface Candidate {
  readonly value: number
  /** Its write version; 0 when unknown. */
  readonly version: number
}

/** The winning copy: the highest version; among equal versions, resolveConflict. */
export function pickWinner<T extends Candidate>(candidates: readonly T[]): T {
  let best = candidates[0]
  if (best === undefined) throw new Error('BUG: no candidate to pick a winner from')
  for (let i = 1; i < candidates.length; i++) {
    const c = candidates[i]!
    if (c.version > best.version) best = c
    else if (
      c.version === best.version &&
      !sameBits(c.value, best.value) &&
      sameBits(resolveConflict(c.value, best.value), c.value)
    ) {
      best = c
    }
  }
  return best
}

/** The points of one series whose versions a node is asked for. */
export interface VersionsQuery {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly timestamps: Float64Array
}

export function encodeVersionsRequest(queries: readonly VersionsQuery[]): Uint8Array {
  return PeerVersionsRequest.encode({
    series: queries.map((q) => ({
      metric: q.metric,
      tags: q.tags.map((t) => ({ key: t.key, value: t.value })),
      timestamps: float64Bytes(q.timestamps),
    })),
  }).finish()
}

/** The versions of a PEER_KIND_VERSIONS answer, one array per query; checks that they match it. */
export function decodeVersionsResponse(
  body: Uint8Array,
  queries: readonly VersionsQuery[],
  node: string,
): Float64Array[] {
  const reply = PeerVersionsResponse.decode(body)
  if (reply.versions.length !== queries.length) {
    throw new UnavailableError(`node ${node} answered versions of ${reply.versions.length} series of ${queries.length}`)
  }
  return reply.versions.map((bytes, i) => {
    if (bytes.byteLength !== queries[i]!.timestamps.length * 8) {
      throw new UnavailableError(
        `node ${node} answered ${bytes.byteLength / 8} versions for ${queries[i]!.timestamps.length} points`,
      )
    }
    return float64Array(bytes)
  })
}

/** Answers PEER_KIND_VERSIONS from the local engine. */
export async function answerVersions(local: ShardEngine, body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
  const request = PeerVersionsRequest.decode(body)
  const versions: Buffer[] = []
  for (const [i, q] of request.series.entries()) {
    if (q.timestamps.byteLength % 8 !== 0) {
      throw ValidationError.field(
        `series[${i}].timestamps`,
        `${q.timestamps.byteLength} bytes is not a whole number of float64`,
      )
    }
    const found = await local.versionsOf(
      { metric: q.metric, tags: q.tags.map((t) => ({ key: t.key, value: t.value })) },
      float64Array(q.timestamps),
      ctx,
    )
    versions.push(Buffer.from(float64Bytes(found)))
  }
  return PeerVersionsResponse.encode({ versions }).finish()
}
