/**
 * The leader's work: only the node that holds `<cluster>/leader` (leader.ts) changes the ring, one
 * change at a time, each write under its term (Membership.commit). In order of precedence it
 *
 * 1. begins its term by writing the ring under it, which fences every older leader's later writes;
 * 2. removes a member that has been down longer than the dead-node timeout, unless most of the
 *    cluster looks down at once (the partition guard); in the middle of a change too, which then
 *    goes on with that member leaving as well, instead of waiting for it for ever;
 * 3. carries a change under way through to its end (a new leader resumes one its predecessor began);
 * 4. starts decommissions that were asked for (`<cluster>/decommission/<id>`);
 * 5. adds healthy nodes that are not members yet, with tokens that keep ownership even;
 * 6. records a member's new addresses.
 *
 * A change moves ranges in explicit steps. The ring lists the new members as `joining` and the
 * departing ones as `leaving`; every node settles on that ring (writes then reach old and new
 * owners); each gaining node copies its ranges from a current owner; hints kept for the gaining
 * nodes are delivered; the ring switches (joining → active, leaving → gone) and every node settles
 * on it (no read is still asking an old owner); then the nodes that lost ranges drop them. Every
 * step can be repeated, so a step that fails is retried from the start of the change.
 */
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import {
  PeerCleanupRequest,
  PeerMovePullResponse,
  PeerRingSyncRequest,
} from '../../gen/v3storage/internal/v1/peer_move.js'
import { PeerStatsRequest, PeerStatsResponse } from '../../gen/v3storage/internal/v1/peer_query.js'
import type { Logger } from '../engine/config.js'
import { UnavailableError } from '../model/errors.js'
import type { LeaderElection, Term } from './leader.js'
import type { MemberRecord, Membership, MoveProgress, PeerAddresses, RingState } from './membership.js'
import { errorMessage as message, sleep } from './pause.js'
import type { PeerTransport } from './peer-transport.js'
import { encodePull, type Gain, type MovePlan, movePlan } from './rebalance.js'
import { chooseTokens, evenTokens } from './tokens.js'

export interface RingLeaderOptions {
  /** The replication factor and tokens per node the first leader records; later ones keep the cluster's. */
  readonly replicationFactor: number
  readonly vnodes: number
  /** How long a member may be down before the leader removes it; 0 never removes one (the default). */
  readonly deadNodeTimeoutMs: number
}

/** What the leader works through: this node's membership, election, transport and local answers. */
export interface RingLeaderLink {
  readonly selfId: string
  readonly membership: Membership
  readonly election: LeaderElection
  readonly transport: PeerTransport
  /** Answers a move request on this node itself, as its peer service would for another node. */
  readonly local: (kind: PeerKind, body: Uint8Array, term: number, signal: AbortSignal) => Promise<Uint8Array>
  /** The hints this node keeps, per owner. */
  readonly hints: () => ReadonlyMap<string, number>
}

/** Ranges per MOVE_PULL request: progress is recorded after each. */
const RANGES_PER_PULL = 32
/** How long one copy request may take: a range of a large node holds a lot of data. */
const PULL_TIMEOUT_MS = 30 * 60_000
/** How long a node may take to settle on a ring: its calls under way must finish. */
const SYNC_TIMEOUT_MS = 60_000
/** How long the leader waits for the hints of the gaining nodes to be delivered, per attempt. */
const HANDOFF_TIMEOUT_MS = 60_000
/** A joining node down this long is taken out of the ring again; it joins anew when it returns. */
const JOINER_GRACE_MS = 30_000
/** How often the leader looks at the cluster when nothing wakes it. */
const IDLE_MS = 1000
const RETRY_MIN_MS = 200
const RETRY_MAX_MS = 5000

function member(m: RingState['members'][number]): MemberRecord {
  return { id: m.id, grpcAddress: m.grpcAddress, peerAddress: m.peerAddress, tokens: m.tokens, state: m.state }
}

/** Figures of the changes this node carried out as leader, for its metrics. */
export interface RingLeaderFigures {
  readonly changesCompleted: number
  readonly pointsMoved: number
  readonly nodesRemovedDead: number
}

export class RingLeader {
  private wake: (() => void) | undefined
  /** When each member was first seen down during this node's current term, by id. */
  private downSince = new Map<string, number>()
  private readonly totals = { changesCompleted: 0, pointsMoved: 0, nodesRemovedDead: 0 }
  private guardWarned = false
  private running: Promise<void> | undefined
  /** The ring version this node last finished a cleanup at. */
  private cleanedAt = -1
  /** Requests under way, each failing itself once its node leaves the healthy set. */
  private readonly healthChecks = new Set<() => void>()

  constructor(
    private readonly link: RingLeaderLink,
    private readonly options: RingLeaderOptions,
    private readonly logger: Logger,
  ) {}

  /** Follows the election: each term this node wins, it leads until the term ends. */
  start(): void {
    const poke = () => this.wake?.()
    this.link.membership.onRing(poke)
    this.link.membership.onHealthy(() => {
      poke()
      for (const check of this.healthChecks) check()
    })
    this.link.membership.onMeta(poke)
    this.link.election.onElected((term) => {
      this.running = this.lead(term)
    })
  }

  /** Waits for the term under way, if any, to end; the election's stop ends it. */
  async stopped(): Promise<void> {
    await this.running
  }

  figures(): RingLeaderFigures {
    return { ...this.totals }
  }

  private async lead(term: Term): Promise<void> {
    this.downSince = new Map()
    this.guardWarned = false
    this.logger.info({ term: term.term }, 'leading the ring')
    let failures = 0
    while (!term.signal.aborted) {
      let more = false
      try {
        more = await this.step(term)
        failures = 0
      } catch (err) {
        if (term.signal.aborted) break
        failures++
        this.logger.warn({ err: message(err), term: term.term }, 'a ring change did not complete; retrying')
        await sleep(Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(failures - 1, 10)), term.signal)
        continue
      }
      if (more) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, IDLE_MS)
        const signal = term.signal
        function done(): void {
          clearTimeout(timer)
          signal.removeEventListener('abort', done)
          resolve()
        }
        this.wake = done
        signal.addEventListener('abort', done, { once: true })
      })
      this.wake = undefined
    }
    this.logger.info({ term: term.term }, 'no longer leading the ring')
  }

  /** Does the first thing there is to do; true when it changed something and should look again at once. */
  private async step(term: Term): Promise<boolean> {
    const { membership } = this.link
    const ring = membership.ring()
    const healthy = membership.healthy()
    const meta = membership.meta()
    const settings = {
      replicationFactor: ring?.replicationFactor ?? this.options.replicationFactor,
      vnodes: ring?.vnodes ?? this.options.vnodes,
    }
    const commit = (members: readonly MemberRecord[]) => membership.commit(term.term, members, settings, term.signal)
    if (ring === undefined) {
      // The first leader of a new cluster starts the ring with itself; not where nodes of a ring
      // Consul lost have registered since this node took the lock (see Membership.mayLead): it is
      // theirs to write back, and this node gives the lock up to them.
      const self = healthy.get(this.link.selfId)
      if (self === undefined) return false
      if (!membership.mayLead()) {
        this.link.election.resign(term, 'nodes of a ring Consul lost are registered; it is theirs to write back')
        return false
      }
      await commit([
        { id: this.link.selfId, ...self, tokens: evenTokens(this.link.selfId, settings.vnodes), state: 'active' },
      ])
      return true
    }
    const members = ring.members.map(member)
    if (ring.term < term.term) {
      await commit(members)
      return true
    }
    // What Consul said before an outage or a restart of its own is not acted on (see healthKnown).
    if (!membership.healthKnown()) return false
    this.trackDown(ring, healthy)
    // A member dead past the timeout leaves, also in the middle of a change: the change may need it
    // (a node that gains ranges), and would wait for it for ever. The change goes on with it leaving too.
    const dead = this.deadMember(ring, healthy)
    if (dead !== undefined) {
      this.totals.nodesRemovedDead++
      await commit(members.map((m) => (m.id === dead ? { ...m, state: 'leaving' } : m)))
      return true
    }
    if (members.some((m) => m.state !== 'active')) {
      await this.carryOut(term, ring, members, commit)
      return true
    }
    if (meta.move !== undefined && this.cleanedAt !== ring.version) {
      // The ring switched, but the drop of the lost ranges did not finish (a node went down, or the
      // leader changed): it is done now.
      await this.cleanUp(term, ring, { ...meta.move, phase: 'cleaning-up' })
      return true
    }
    if (meta.decommissions.includes(this.link.selfId) && !members.some((m) => m.id === this.link.selfId)) {
      // Decommissioned and out of the ring: another node leads from here, and this one, which is to be
      // stopped, does not campaign again. Stopping the election ends this term.
      this.logger.info({ term: term.term }, 'this node has left the ring: handing the leadership on')
      void this.link.election.stop()
      return false
    }
    for (const id of meta.decommissions) {
      if (!members.some((m) => m.id === id)) {
        // Done, or never a member: the request goes once the node has stopped, so it does not rejoin.
        if (!healthy.has(id)) await membership.clearDecommission(id, term.signal)
        continue
      }
      if (members.length === 1) {
        this.logger.warn({ node: id }, 'refusing to decommission the last member')
        await membership.clearDecommission(id, term.signal)
        continue
      }
      this.logger.info({ node: id }, 'decommissioning a member')
      await commit(members.map((m) => (m.id === id ? { ...m, state: 'leaving' } : m)))
      return true
    }
    for (const [id, addresses] of healthy) {
      if (members.some((m) => m.id === id) || meta.decommissions.includes(id)) continue
      const tokens = chooseTokens(members, id, settings.vnodes)
      this.logger.info({ node: id }, 'a node joins the ring')
      await commit([...members, { id, ...addresses, tokens, state: 'joining' }])
      return true
    }
    for (const m of members) {
      const a = healthy.get(m.id)
      if (a === undefined || (a.grpcAddress === m.grpcAddress && a.peerAddress === m.peerAddress)) continue
      await commit(members.map((x) => (x.id === m.id ? { ...x, ...a } : x)))
      return true
    }
    return false
  }

  private trackDown(ring: RingState, healthy: ReadonlyMap<string, PeerAddresses>): void {
    const now = Date.now()
    for (const m of ring.members) {
      if (healthy.has(m.id)) this.downSince.delete(m.id)
      else if (!this.downSince.has(m.id)) this.downSince.set(m.id, now)
    }
  }

  /**
   * An active member down longer than the timeout, when the partition guard allows removing one:
   * more than half of the members must look healthy, or this node may be the one cut off. (A
   * joining member that goes away is taken out by carryOut; a leaving one is on its way out.)
   */
  private deadMember(ring: RingState, healthy: ReadonlyMap<string, PeerAddresses>): string | undefined {
    const timeout = this.options.deadNodeTimeoutMs
    if (timeout <= 0 || ring.members.length < 2) return undefined
    const now = Date.now()
    const dead = ring.members
      .filter((m) => m.state === 'active' && now - (this.downSince.get(m.id) ?? now) >= timeout)
      .map((m) => m.id)
    if (dead.length === 0) return undefined
    const up = ring.members.filter((m) => healthy.has(m.id)).length
    if (up * 2 <= ring.members.length) {
      if (!this.guardWarned) {
        this.guardWarned = true
        this.logger.warn(
          { down: dead, healthy: up, members: ring.members.length },
          'most members look down at once: not removing any (partition guard)',
        )
      }
      return undefined
    }
    this.logger.warn({ node: dead[0], downMs: now - this.downSince.get(dead[0]!)! }, 'removing a member that is down')
    return dead[0]
  }

  /**
   * Ranges whose every owner is down would start empty on their new owners: that is done only to
   * owners removed as dead (down past --dead-node-timeout). Any other holder (down a moment, or
   * killed mid-change) still has the points in its folder: the change waits for it to come back.
   */
  private checkOrphans(plan: MovePlan): void {
    if (plan.orphaned.length === 0) return
    const holders = [...plan.orphanHolders]
    const timeout = this.options.deadNodeTimeoutMs
    const now = Date.now()
    const dead = (id: string) => timeout > 0 && now - (this.downSince.get(id) ?? now) >= timeout
    if (!holders.every(dead)) {
      throw new UnavailableError(
        `waiting for ${holders.join(', ')}: ${plan.orphaned.length} moving ranges have their only copies there, and ${holders.length === 1 ? 'it is' : 'they are'} down`,
      )
    }
    this.logger.warn(
      { ranges: plan.orphaned.length, nodes: holders },
      'no owner of some moving ranges is up, and they are down past --dead-node-timeout: their new owners start them empty',
    )
  }

  /** Carries the change in `ring` through every step; throws to be retried when a step fails. */
  private async carryOut(
    term: Term,
    ring: RingState,
    members: readonly MemberRecord[],
    commit: (members: readonly MemberRecord[]) => Promise<RingState>,
  ): Promise<void> {
    const { membership } = this.link
    const started = Date.now()
    const healthy = membership.healthy()
    // A joining node that went away is taken out again: it serves nothing yet, so nothing moves.
    const gone = members.filter(
      (m) => m.state === 'joining' && Date.now() - (this.downSince.get(m.id) ?? Date.now()) >= JOINER_GRACE_MS,
    )
    if (gone.length > 0) {
      this.logger.warn({ nodes: gone.map((m) => m.id) }, 'a joining node is down; taking it out of the ring')
      await commit(members.filter((m) => !gone.includes(m)))
      return
    }
    const nodes = members.filter((m) => m.state !== 'active').map((m) => m.id)
    const progress: { -readonly [K in keyof MoveProgress]: MoveProgress[K] } = {
      version: ring.version,
      nodes,
      phase: 'syncing',
      rangesTotal: 0,
      rangesDone: 0,
      pointsMoved: 0,
    }
    const record = () => membership.recordMove({ ...progress }, term.signal)
    await record()
    await this.syncAll(ring.version, term)

    const plan = movePlan(ring, (id) => healthy.has(id))
    this.checkOrphans(plan)
    progress.phase = 'streaming'
    progress.rangesTotal = [...plan.gains.values()].reduce((n, g) => n + g.length, 0)
    await record()
    // The gaining nodes copy at once, each its ranges in chunks, one chunk at a time.
    await Promise.all(
      [...plan.gains].map(async ([gainer, gains]) => {
        for (let i = 0; i < gains.length; i += RANGES_PER_PULL) {
          const chunk: readonly Gain[] = gains.slice(i, i + RANGES_PER_PULL)
          const body = encodePull(chunk)
          const reply = await this.ask(gainer, PeerKind.PEER_KIND_MOVE_PULL, body, term, PULL_TIMEOUT_MS)
          progress.pointsMoved += PeerMovePullResponse.decode(reply).pointsReceived
          progress.rangesDone += chunk.length
          await record()
        }
      }),
    )

    progress.phase = 'handing-off'
    await record()
    await this.handedOff([...plan.gains.keys()], term)

    progress.phase = 'switching'
    await record()
    if (!(await this.link.election.stillLeads(term))) throw new UnavailableError('this node no longer leads')
    const switched = await commit(
      members.filter((m) => m.state !== 'leaving').map((m) => ({ ...m, state: 'active' as const })),
    )
    progress.phase = 'cleaning-up'
    await this.cleanUp(term, switched, progress)
    this.totals.changesCompleted++
    this.totals.pointsMoved += progress.pointsMoved
    this.logger.info(
      { nodes, ranges: progress.rangesTotal, points: progress.pointsMoved, ms: Date.now() - started },
      'membership change done',
    )
  }

  /**
   * The last step of a change: the healthy members drop the ranges they no longer own, and the
   * record of the change goes. A member that is down is left as it is: until a later cleanup it
   * narrows its reads to the ranges it owns (ClusterEngine.ownedFilter).
   */
  private async cleanUp(term: Term, ring: RingState, progress: MoveProgress): Promise<void> {
    const { membership } = this.link
    await membership.recordMove(progress, term.signal)
    await this.syncAll(ring.version, term)
    // A hint written before the switch and delivered after the cleanup would leave a lost range's
    // points on a node that believes it holds only its own: the cleanup waits for them.
    const healthy = membership.healthy()
    const cleaned = ring.members.filter((m) => healthy.has(m.id)).map((m) => m.id)
    await this.handedOff(cleaned, term)
    const body = PeerCleanupRequest.encode({ ringVersion: ring.version }).finish()
    for (const id of cleaned) await this.ask(id, PeerKind.PEER_KIND_CLEANUP, body, term, PULL_TIMEOUT_MS)
    await membership.recordMove(undefined, term.signal)
    // The watch may still show the record a moment: the cleanup is not run again for it.
    this.cleanedAt = ring.version
  }

  /** Waits until every healthy node routes with `version` and has no call under way on an older ring. */
  private async syncAll(version: number, term: Term): Promise<void> {
    const body = PeerRingSyncRequest.encode({ ringVersion: version }).finish()
    await Promise.all(
      [...this.link.membership.healthy().keys()].map((id) =>
        this.ask(id, PeerKind.PEER_KIND_RING_SYNC, body, term, SYNC_TIMEOUT_MS),
      ),
    )
  }

  /** Waits until no healthy node keeps hints for the given owners; fails after HANDOFF_TIMEOUT_MS. */
  private async handedOff(owners: readonly string[], term: Term): Promise<void> {
    const deadline = Date.now() + HANDOFF_TIMEOUT_MS
    const body = PeerStatsRequest.encode({}).finish()
    for (;;) {
      const waiting: string[] = []
      for (const id of this.link.membership.healthy().keys()) {
        const hints =
          id === this.link.selfId
            ? [...this.link.hints()]
            : PeerStatsResponse.decode(
                await this.ask(id, PeerKind.PEER_KIND_STATS, body, term, SYNC_TIMEOUT_MS),
              ).hints.map((h) => [h.owner, h.hints] as const)
        for (const [owner, n] of hints)
          if (n > 0 && owners.includes(owner)) waiting.push(`${id} keeps ${n} for ${owner}`)
      }
      if (waiting.length === 0) return
      if (Date.now() > deadline) throw new UnavailableError(`hints wait to be delivered: ${waiting.join('; ')}`)
      await sleep(200, term.signal)
      if (term.signal.aborted) throw new UnavailableError('this node no longer leads')
    }
  }

  /** Sends one request of the change to a node, this node included, under the leader's term. */
  private async ask(id: string, kind: PeerKind, body: Uint8Array, term: Term, timeoutMs: number): Promise<Uint8Array> {
    if (id === this.link.selfId) return this.link.local(kind, body, term.term, term.signal)
    const addresses = this.link.membership.healthy().get(id)
    if (addresses === undefined) throw new UnavailableError(`node ${id} is down`)
    // A node that goes down does not answer: the request fails then, not at its long timeout.
    const controller = new AbortController()
    const ended = () => controller.abort(term.signal.reason)
    const check = () => {
      if (!this.link.membership.healthy().has(id)) controller.abort(new UnavailableError(`node ${id} went down`))
    }
    term.signal.addEventListener('abort', ended, { once: true })
    this.healthChecks.add(check)
    try {
      const reply = await this.link.transport.request(
        { id, address: addresses.peerAddress },
        {
          kind,
          body,
          ringVersion: this.link.membership.ring()?.version ?? 0,
          term: term.term,
          timeoutMs,
          signal: controller.signal,
        },
      )
      return reply.body
    } finally {
      term.signal.removeEventListener('abort', ended)
      this.healthChecks.delete(check)
    }
  }
}
