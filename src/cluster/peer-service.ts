import { PeerKind, PeerWriteResponse } from '../../gen/v3storage/internal/v1/peer.js'
import {
  PeerCompactResponse,
  PeerDeleteRequest,
  PeerDeleteResponse,
  PeerLatestRequest,
  PeerListSeriesRequest,
  PeerListSeriesResponse,
  type PeerQueryRequest,
  PeerQueryRequest as PeerQueryRequestCodec,
  PeerQueryResponse,
  type PeerShard,
  PeerStatsResponse,
} from '../../gen/v3storage/internal/v1/peer_query.js'
import type { SeriesFilter, ShardEngine } from '../engine/shard.js'
import { largeWork } from '../engine/slicer.js'
import type { CallContext, StorageEngine } from '../engine/storage-engine.js'
import { UnavailableError, ValidationError } from '../model/errors.js'
import type { HybridLogicalClock } from '../model/hlc.js'
import type { QueryRequest } from '../model/types.js'
import { answerVersions } from './conflict.js'
import {
  AnswerIdentities,
  decodePeerSeriesList,
  encodePeerQueryAnswer,
  encodePeerWrite,
  PeerSeriesHeaders,
} from './peer-codec.js'
import { aggregationFromPeer, partialToPeer, selectorFromPeer, valueFilterFromPeer } from './peer-messages.js'
import type { PeerHandler } from './peer-transport.js'
import { answerDigest, answerRepairRead } from './repair-service.js'
import { decodeSpans, spanFilter } from './shard-filter.js'

/**
 * The series a read answers for: the ranges it names, or with `all` every range the node owns,
 * which is every series it holds unless it may still hold ranges it lost (`owned`).
 */
function filterOf(shard: PeerShard | undefined, owned: () => SeriesFilter | undefined): SeriesFilter | undefined {
  if (shard === undefined) throw ValidationError.field('shard', 'is required')
  return shard.all ? owned() : spanFilter(decodeSpans(shard.ranges))
}

function queryFromPeer(peer: PeerQueryRequest): QueryRequest {
  if (peer.selectors.length === 0) throw ValidationError.field('selectors', 'must not be empty')
  const [first, ...rest] = peer.selectors.map((s, i) => selectorFromPeer(s, `selectors[${i}]`))
  return {
    selector: first!,
    additionalSelectors: rest,
    startMs: peer.startMs,
    endMs: peer.endMs,
    aggregation: peer.aggregation === undefined ? undefined : aggregationFromPeer(peer.aggregation),
    valueFilter:
      peer.valueFilter === undefined ? undefined : valueFilterFromPeer(peer.valueFilter.op, peer.valueFilter.value),
  }
}

/** Answers the requests of a membership change (rebalance.ts), given the sender's leader term. */
export type MoveHandler = (kind: PeerKind, body: Uint8Array, term: number, ctx: CallContext) => Promise<Uint8Array>

/**
 * Peer write bodies of at least this size (about a thousand series of a few points) are decoded in
 * a turn of the event loop of their own (see TurnGate): a peer's writes come off one socket together.
 */
const LARGE_PEER_BODY_BYTES = 64 * 1024

/** Runs a repair pass on this node for a PEER_KIND_REPAIR_RUN request and answers its figures. */
export type RepairRunner = (body: Uint8Array, ctx: CallContext) => Promise<Uint8Array>

/**
 * Answers the requests other nodes send this one: each decodes its body (a malformed one is a
 * ValidationError the sender receives), runs on the local engine and encodes the answer.
 * `runRepair` runs a repair pass that a peer asks for; without it such a request is UNAVAILABLE.
 * `clock` is the node's write-version clock: it observes the versions of the writes received, so
 * that the writes this node coordinates next get larger ones. `hintsWaiting` gives the hints the
 * node keeps per owner, which statistics report so that a delete can wait for them. `moves`
 * answers the requests of a membership change; without it they are UNAVAILABLE. `owned` narrows
 * a read of all the node's ranges to those it owns while it may hold others (see
 * ClusterEngine.ownedFilter).
 */
export function peerService(
  local: StorageEngine & ShardEngine,
  runRepair?: RepairRunner,
  clock?: HybridLogicalClock,
  hintsWaiting: () => ReadonlyMap<string, number> = () => new Map(),
  moves?: MoveHandler,
  owned: () => SeriesFilter | undefined = () => undefined,
): PeerHandler {
  const headers = new PeerSeriesHeaders()
  const identities = new AnswerIdentities()
  return async (_from, kind, body, meta) => {
    const ctx: CallContext = { signal: meta.signal }
    switch (kind) {
      case PeerKind.PEER_KIND_WRITE: {
        if (body.byteLength >= LARGE_PEER_BODY_BYTES) await largeWork.enter(ctx)
        // The packed decoder rejects invalid UTF-8, which the generated one would turn into U+FFFD.
        const series = decodePeerSeriesList(body, headers)
        if (clock !== undefined) for (const s of series) if (s.version !== undefined) clock.observe(s.version)
        // A peer write holds points a coordinating node accepted (directly, or later as a hint, a
        // repair or a move): NaN and ±Infinity among them passed its check, whatever this node's
        // allowNaN limit says, so that an owner never refuses what a write was acknowledged with.
        const result = await local.write({ series, precision: 'ms', acceptNaN: true, normalized: true }, ctx)
        return PeerWriteResponse.encode({
          pointsWritten: result.pointsWritten,
          seriesWritten: result.seriesWritten,
        }).finish()
      }
      case PeerKind.PEER_KIND_QUERY: {
        const peer = PeerQueryRequestCodec.decode(body)
        const request = queryFromPeer(peer)
        const filter = filterOf(peer.shard, owned)
        if (peer.partial) {
          const groups = await local.queryPartials(request, filter, ctx)
          return PeerQueryResponse.encode({
            results: groups.map((g) => ({ series: [], partials: g.map(partialToPeer) })),
          }).finish()
        }
        return encodePeerQueryAnswer(await local.queryShard(request, filter, ctx), identities)
      }
      case PeerKind.PEER_KIND_LATEST: {
        const peer = PeerLatestRequest.decode(body)
        const series = await local.latestShard(
          selectorFromPeer(peer.selector, 'selector'),
          filterOf(peer.shard, owned),
          ctx,
        )
        return encodePeerWrite(series, 0, identities)
      }
      case PeerKind.PEER_KIND_LIST_SERIES: {
        const peer = PeerListSeriesRequest.decode(body)
        const refs = await local.listSeriesShard(
          selectorFromPeer(peer.selector, 'selector'),
          filterOf(peer.shard, owned),
          ctx,
        )
        return PeerListSeriesResponse.encode({
          series: refs.map((r) => ({ metric: r.metric, tags: r.tags.map((t) => ({ key: t.key, value: t.value })) })),
        }).finish()
      }
      case PeerKind.PEER_KIND_DELETE_SERIES: {
        const peer = PeerDeleteRequest.decode(body)
        const result = await local.deleteSeriesCounted(
          {
            selector: selectorFromPeer(peer.selector, 'selector'),
            ...(peer.ranged ? { startMs: peer.startMs, endMs: peer.endMs } : {}),
          },
          filterOf(peer.countShard, owned),
          ctx,
        )
        return PeerDeleteResponse.encode({ seriesMatched: result.seriesMatched }).finish()
      }
      case PeerKind.PEER_KIND_STATS:
        return PeerStatsResponse.encode({
          statsJson: JSON.stringify(await local.stats()),
          hints: [...hintsWaiting()].map(([owner, hints]) => ({ owner, hints })),
        }).finish()
      case PeerKind.PEER_KIND_COMPACT:
        return PeerCompactResponse.encode(await local.compact(ctx)).finish()
      case PeerKind.PEER_KIND_REPAIR_DIGEST:
        return answerDigest(local, body, ctx)
      case PeerKind.PEER_KIND_REPAIR_READ:
        return answerRepairRead(local, body, ctx)
      case PeerKind.PEER_KIND_VERSIONS:
        return answerVersions(local, body, ctx)
      case PeerKind.PEER_KIND_REPAIR_RUN:
        if (runRepair === undefined) throw new UnavailableError('this node does not run repair passes')
        return runRepair(body, ctx)
      case PeerKind.PEER_KIND_RING_SYNC:
      case PeerKind.PEER_KIND_MOVE_PULL:
      case PeerKind.PEER_KIND_CLEANUP:
        if (moves === undefined) throw new UnavailableError('this node takes no part in membership changes')
        return moves(kind, body, meta.term, ctx)
      default:
        throw ValidationError.field('kind', `unknown peer request kind ${kind}`)
    }
  }
}
