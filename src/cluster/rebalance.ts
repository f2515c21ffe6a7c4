/**
 * Membership changes, the part every node plays: which token ranges a change moves and where each
 * is copied from (movePlan), and the answers to the three requests a leader sends while it carries
 * a change out (peer_move.proto): settle at a ring version, copy the ranges gained, drop the ranges
 * lost.
 *
 * While members join or leave, the ring in Consul holds them as `joining` or `leaving`. Reads use
 * the serving ring (active and leaving members); writes also reach the owners of the target ring
 * (active and joining members). A range a node gains is copied from the node that loses it when
 * that node is up (so each copy moves once and the number of copies stays as it was), else from
 * another current owner.
 */
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import {
  PeerCleanupRequest,
  PeerCleanupResponse,
  PeerMovePullRequest,
  PeerMovePullResponse,
  PeerRingSyncRequest,
  PeerRingSyncResponse,
} from '../../gen/v3storage/internal/v1/peer_move.js'
import type { Logger } from '../engine/config.js'
import type { ShardEngine } from '../engine/shard.js'
import type { CallContext } from '../engine/storage-engine.js'
import { UnavailableError, ValidationError } from '../model/errors.js'
import type { AntiEntropy } from './anti-entropy.js'
import type { ClusterEngine, MemberInfo, RingSnapshot } from './cluster-engine.js'
import { Ring, TOKEN_SPACE, type TokenSpan } from './ring.js'
import { decodeSpans } from './shard-filter.js'

/** One range a node gains, and the node its data is copied from. */
export interface Gain {
  readonly span: TokenSpan
  readonly source: string
}

export interface MovePlan {
  /** The ranges each gaining node copies, by node id, in token order. */
  readonly gains: ReadonlyMap<string, readonly Gain[]>
  /** Ranges gained that no current owner can give (every one is down or removed): they start empty. */
  readonly orphaned: readonly TokenSpan[]
  /** The current owners of the orphaned ranges: the nodes that hold their only copies. */
  readonly orphanHolders: ReadonlySet<string>
}

function ringOf(members: readonly MemberInfo[], version: number): Ring {
  return new Ring(
    members.map((m) => ({ id: m.id, tokens: m.tokens })),
    version,
  )
}

/**
 * What a change moves: the token space cut at every boundary of both rings, and for each piece the
 * owners the target ring adds. `up` says which nodes can give data (healthy, and not being removed
 * because they are dead).
 */
export function movePlan(snapshot: RingSnapshot, up: (id: string) => boolean): MovePlan {
  const serving = snapshot.members.filter((m) => m.state !== 'joining')
  const target = snapshot.members.filter((m) => m.state !== 'leaving')
  const rfOf = (n: number) => Math.max(1, Math.min(snapshot.replicationFactor, n))
  const from = ringOf(serving, snapshot.version).ranges(rfOf(serving.length))
  const to = ringOf(target, snapshot.version).ranges(rfOf(target.length))
  const gains = new Map<string, Gain[]>()
  const orphaned: TokenSpan[] = []
  const orphanHolders = new Set<string>()
  let i = 0
  let j = 0
  let start = 0
  while (start < TOKEN_SPACE) {
    const a = from[i]!
    const b = to[j]!
    const end = Math.min(a.end, b.end)
    const losers = a.owners.filter((id) => !b.owners.includes(id))
    for (const gainer of b.owners) {
      if (a.owners.includes(gainer)) continue
      const source = losers.find(up) ?? a.owners.find(up)
      if (source === undefined) {
        orphaned.push({ start, end })
        for (const id of a.owners) orphanHolders.add(id)
        continue
      }
      const list = gains.get(gainer) ?? []
      const last = list[list.length - 1]
      // Adjacent pieces from the same source travel as one range.
      if (last !== undefined && last.source === source && last.span.end === start) {
        list[list.length - 1] = { span: { start: last.span.start, end }, source }
      } else list.push({ span: { start, end }, source })
      gains.set(gainer, list)
    }
    if (a.end === end) i++
    if (b.end === end) j++
    start = end
  }
  return { gains, orphaned, orphanHolders }
}

/** Packs gains for PEER_KIND_MOVE_PULL: one [start, end) pair per range, its source beside it. */
export function encodePull(gains: readonly Gain[]): Uint8Array {
  const ranges = Buffer.alloc(gains.length * 8)
  gains.forEach((g, i) => {
    ranges.writeUInt32LE(g.span.start, i * 8)
    ranges.writeUInt32LE(g.span.end % TOKEN_SPACE, i * 8 + 4)
  })
  return PeerMovePullRequest.encode({ ranges, sources: gains.map((g) => g.source) }).finish()
}

/**
 * Answers the requests of a membership change on this node: RING_SYNC settles the cluster engine
 * at a version, MOVE_PULL copies gained ranges through anti-entropy's block transfer, CLEANUP drops
 * the series of the ranges the node no longer owns.
 */
export class MoveWorker {
  constructor(
    private readonly engine: ClusterEngine,
    private readonly local: ShardEngine,
    private readonly repair: AntiEntropy,
    private readonly ring: () => RingSnapshot | undefined,
    /** The highest leader term this node has seen. */
    private readonly currentTerm: () => number,
    private readonly logger: Logger,
  ) {}

  /**
   * Answers one request of a change. Copies and drops are fenced: a request under a term older
   * than the newest this node has seen comes from a leader that has lost the lock, and is refused.
   */
  async handle(kind: PeerKind, body: Uint8Array, term: number, ctx: CallContext): Promise<Uint8Array> {
    if (kind !== PeerKind.PEER_KIND_RING_SYNC && term < this.currentTerm()) {
      throw new UnavailableError(`refused: leader term ${term} is over, term ${this.currentTerm()} has begun`)
    }
    switch (kind) {
      case PeerKind.PEER_KIND_RING_SYNC:
        return this.sync(body, ctx)
      case PeerKind.PEER_KIND_MOVE_PULL:
        return this.pull(body, ctx)
      case PeerKind.PEER_KIND_CLEANUP:
        return this.cleanup(body, ctx)
      default:
        throw ValidationError.field('kind', `unknown peer request kind ${kind}`)
    }
  }

  private async sync(body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
    const { ringVersion } = PeerRingSyncRequest.decode(body)
    const signal = ctx.signal ?? new AbortController().signal
    return PeerRingSyncResponse.encode({ ringVersion: await this.engine.settledAt(ringVersion, signal) }).finish()
  }

  private async pull(body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
    const request = PeerMovePullRequest.decode(body)
    const spans = decodeSpans(request.ranges)
    if (spans.length !== request.sources.length) {
      throw ValidationError.field('sources', `has ${request.sources.length} entries for ${spans.length} ranges`)
    }
    const started = Date.now()
    const result = await this.repair.pull(
      spans.map((span, i) => ({ span, source: request.sources[i]! })),
      ctx.signal,
    )
    this.logger.info(
      { ranges: spans.length, points: result.points, blocks: result.blocks, ms: Date.now() - started },
      'copied the data of gained ranges',
    )
    return PeerMovePullResponse.encode({ pointsReceived: result.points, blocksCopied: result.blocks }).finish()
  }

  /**
   * Drops every local series this node does not own in its ring: refused while a change is under
   * way, or while the node's ring is older than the leader's (it would keep or drop by an old ring).
   */
  private async cleanup(body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
    const { ringVersion } = PeerCleanupRequest.decode(body)
    const snapshot = this.ring()
    if (snapshot === undefined || snapshot.version < ringVersion) {
      throw new UnavailableError(`this node routes with ring ${snapshot?.version ?? 0}, not ${ringVersion} yet`)
    }
    if (snapshot.members.some((m) => m.state !== 'active')) {
      throw new UnavailableError('a membership change is under way; nothing is dropped during one')
    }
    // The engine routes with this same snapshot: ownedSeries is the serving ring's, as no one moves.
    const owned = this.engine.ownedSeries()
    const dropped = await this.local.dropShard(
      { key: `not-owned@${snapshot.version}`, accepts: (seriesKey, token) => !owned.accepts(seriesKey, token) },
      ctx,
    )
    this.engine.markClean(snapshot)
    if (dropped.series > 0) {
      this.logger.info({ series: dropped.series, ringVersion: snapshot.version }, 'dropped the ranges this node lost')
    }
    return PeerCleanupResponse.encode({ seriesDropped: dropped.series }).finish()
  }
}
