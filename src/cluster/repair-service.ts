/**
 * The peer side of anti-entropy repair: answers the digest and read requests a repairing node
 * sends (peer_repair.proto) from the local engine, and the token-range lists those requests carry.
 */
import {
  PeerRepairDigestRequest,
  PeerRepairDigestResponse,
  PeerRepairReadRequest,
} from '../../gen/v3storage/internal/v1/peer_repair.js'
import type { SeriesBuckets, ShardEngine } from '../engine/shard.js'
import type { CallContext } from '../engine/storage-engine.js'
import { ValidationError } from '../model/errors.js'
import { encodePeerWrite } from './peer-codec.js'
import { TOKEN_SPACE, type TokenSpan } from './ring.js'
import { decodeSpans, spanFilter, spanIndex } from './shard-filter.js'

/**
 * Packs ranges as PeerShard.ranges does (little-endian uint32 pairs, an end of 2^32 written as 0),
 * but one pair per range, never joined: the position of a range in the list is its number in the
 * digests that come back. The ranges must be sorted and must not overlap.
 */
export function encodeRangeList(ranges: readonly TokenSpan[]): Uint8Array {
  const out = new Uint8Array(ranges.length * 8)
  const view = new DataView(out.buffer)
  ranges.forEach((range, i) => {
    view.setUint32(i * 8, range.start, true)
    view.setUint32(i * 8 + 4, range.end % TOKEN_SPACE, true)
  })
  return out
}

/** The buckets of a range list: the index of the range a series' token lies in, or -1. */
export function rangeBuckets(ranges: readonly TokenSpan[]): SeriesBuckets {
  const indexOf = spanIndex(ranges)
  return { bucketOf: (_seriesKey, token) => indexOf(token) }
}

function checkWindow(startMs: number, endMs: number): void {
  if (!(endMs > startMs)) throw ValidationError.field('end_ms', `must be greater than start_ms (${startMs})`)
}

/** Answers PEER_KIND_REPAIR_DIGEST: the digests of the local data per (range, hour). */
export async function answerDigest(local: ShardEngine, body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
  const request = PeerRepairDigestRequest.decode(body)
  checkWindow(request.startMs, request.endMs)
  const ranges = decodeSpans(request.ranges)
  const digests = await local.digestShard(rangeBuckets(ranges), request.startMs, request.endMs, ctx)
  return PeerRepairDigestResponse.encode({
    digests: digests.map((d) => {
      const digest = Buffer.alloc(8)
      digest.writeBigUInt64LE(d.digest)
      return { range: d.bucket, blockStartMs: d.blockStartMs, digest, points: d.points }
    }),
  }).finish()
}

/** Answers PEER_KIND_REPAIR_READ: every local point of the ranges' series in the window. */
export async function answerRepairRead(local: ShardEngine, body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
  const request = PeerRepairReadRequest.decode(body)
  checkWindow(request.startMs, request.endMs)
  const filter = spanFilter(decodeSpans(request.ranges))
  const series = await local.readShard(filter, request.startMs, request.endMs, ctx)
  return encodePeerWrite(series)
}
