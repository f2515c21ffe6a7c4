import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import {
  PeerCompactRequest,
  PeerCompactResponse,
  PeerDeleteRequest,
  PeerDeleteResponse,
  PeerLatestRequest,
  PeerListSeriesRequest,
  PeerListSeriesResponse,
  PeerQueryRequest,
  PeerQueryResponse,
  PeerStatsRequest,
  PeerStatsResponse,
} from '../../gen/v3storage/internal/v1/peer_query.js'
import { aggregate, validateAggregation } from '../engine/aggregate.js'
import { mergePartials, type PartialGroup } from '../engine/aggregate-partial.js'
import type { Logger } from '../engine/config.js'
import type { SeriesFilter, ShardEngine } from '../engine/shard.js'
import { LARGE_WORK_SERIES, largeWork } from '../engine/slicer.js'
import type {
  CacheStats,
  CallContext,
  ClusterFigures,
  ClusterInfo,
  ClusterNodeInfo,
  ClusterRepairReport,
  CompactResult,
  DecommissionResult,
  EngineStats,
  LatencySummary,
  MembershipFigures,
  PointsListener,
  RepairFigures,
  StorageEngine,
  Subscription,
} from '../engine/storage-engine.js'
import { DeadlineError, LimitError, UnavailableError, ValidationError } from '../model/errors.js'
import { HybridLogicalClock } from '../model/hlc.js'
import type { WriteLimits } from '../model/limits.js'
import { compileSelector } from '../model/matcher.js'
import { RegexCache } from '../model/regex.js'
import { SeriesMemo, seriesKeyOf } from '../model/series-key.js'
import type {
  ConsistencyLevel,
  DeleteRequest,
  DeleteResult,
  QueryRequest,
  Selector,
  SeriesPoints,
  SeriesRef,
  Tag,
  WriteBatch,
  WriteResult,
} from '../model/types.js'
import { type NormalizedSeries, ValidatedSeriesCache, validateWriteBatch } from '../model/validate.js'
import { decodeVersionsResponse, encodeVersionsRequest, pickWinner, sameBits, type VersionsQuery } from './conflict.js'
import type { HintedHandoff } from './hinted-handoff.js'
import type { MoveProgress } from './membership.js'
import {
  decodePeerQuerySeries,
  decodePeerSeriesList,
  encodePeerWrite,
  PeerIdentityBytes,
  PeerSeriesHeaders,
} from './peer-codec.js'
import { aggregationToPeer, partialFromPeer, selectorToPeer, shardToPeer } from './peer-messages.js'
import type { PeerEndpoint, PeerTransport } from './peer-transport.js'
import { assignReadReplicas } from './placement.js'
import { Ring, type TokenRange, type TokenSpan } from './ring.js'
import { encodeSpans, type SeriesTokens, spanFilter } from './shard-filter.js'
import { LevelNotMet, requiredReplicas, WriteTally } from './write-tally.js'

/** One member of the ring as the cluster's shared state records it. */
export interface MemberInfo {
  readonly id: string
  readonly grpcAddress: string
  readonly peerAddress: string
  readonly tokens: readonly number[]
  readonly state: 'joining' | 'active' | 'leaving'
}

/** The ring every node agrees on: members with their tokens, a version and the replication factor. */
export interface RingSnapshot {
  readonly version: number
  readonly replicationFactor: number
  readonly members: readonly MemberInfo[]
}

/** What the cluster engine knows of the cluster: the ring, the healthy nodes, the leader. */
export interface ClusterView {
  /** The last ring this node knows; undefined until it has joined. */
  ring(): RingSnapshot | undefined
  /** The nodes whose health checks pass, as last seen. */
  healthyIds(): ReadonlySet<string>
  /** The leader's node id, when there is one. */
  leaderId(): string | undefined
  /** The membership change under way, as the leader last recorded it. */
  move(): MoveProgress | undefined
  /** Whether Consul answers, and how many outages there were since the node started. */
  consul(): { readonly reachable: boolean; readonly outages: number }
}

export interface ClusterEngineOptions {
  readonly limits: WriteLimits
  /** The level of a write that names none. */
  readonly writeConsistency: ConsistencyLevel
  /** How long a read waits for one replica before it also asks another, in milliseconds. */
  readonly readTimeoutMs: number
  /** How long a peer has to answer a request, in milliseconds. */
  readonly peerTimeoutMs: number
  /** The most points one query may return, over all nodes. */
  readonly maxPointsPerQuery: number
}

/** What a node has once it knows who it is: its id, the transport to its peers, its view of the cluster. */
export interface ClusterLink {
  readonly selfId: string
  readonly transport: PeerTransport
  readonly view: ClusterView
  /** Where the parts of down owners wait; without it such a write part simply fails. */
  readonly handoff?: HintedHandoff
  /** The node's anti-entropy repair (anti-entropy.ts); without it Repair answers UNAVAILABLE. */
  readonly repair?: ClusterRepair
  /** The leader and membership changes as this node sees them, for its metrics. */
  readonly membershipFigures?: () => MembershipFigures
  /** Asks the leader to decommission a member; without it Decommission answers UNAVAILABLE. */
  readonly requestDecommission?: (nodeId: string, signal: AbortSignal | undefined) => Promise<void>
}

/** Anti-entropy repair as the engine offers it: a repair of the cluster now, and the node's figures. */
export interface ClusterRepair {
  repairCluster(ctx?: CallContext): Promise<ClusterRepairReport>
  figures(): RepairFigures
}

/** How often a decommission looks whether the node has left the ring. */
const DECOMMISSION_POLL_MS = 100

/** How often settledAt looks again at the ring and the calls under way. */
const SETTLE_POLL_MS = 10

/** One owner's part of a write: its series, their points, and their indexes in the batch. */
interface OwnerPart {
  readonly series: NormalizedSeries[]
  points: number
  readonly indexes: number[]
  /** The write version every point of the write carries. */
  readonly version: number
}

/**
 * The peer bodies of one write's parts, encoded once for parts that hold the same series: with as
 * many owners as nodes, every peer gets the whole write, and encoding it again for each cost the
 * coordinator as much as the first time (the encoder was 382 ms of 2.6 M points' ingest with three
 * copies on three nodes). A body is only read once encoded, so peers and hints can share it.
 */
class PartBodies {
  private readonly encoded: Array<{ readonly indexes: readonly number[]; readonly body: Uint8Array }> = []

  constructor(private readonly identities: PeerIdentityBytes) {}

  of(part: OwnerPart): Uint8Array {
    for (const done of this.encoded) {
      if (sameIndexes(done.indexes, part.indexes)) return done.body
    }
    const body = encodePeerWrite(part.series, part.version, this.identities)
    this.encoded.push({ indexes: part.indexes, body })
    return body
  }
}

/** Parts of one write hold the same series, in the same order, when their indexes are equal. */
function sameIndexes(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** `promise`, or the signal's reason (a DeadlineError) as soon as `signal` aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () =>
      reject(
        signal.reason instanceof Error
          ? signal.reason
          : new DeadlineError('the call was cancelled or its deadline passed'),
      )
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
  return Promise.race([promise, aborted]).finally(() => signal.removeEventListener('abort', onAbort))
}

/**
 * A ring version as this node routes with it. While members join or leave, two rings apply: reads
 * use the ring of the members that serve now (active and leaving), and writes also reach the owners
 * of the ring being moved to (active and joining), so that a range's new owners receive its new
 * writes before its data has reached them.
 */
interface RingState {
  readonly snapshot: RingSnapshot
  /** The ring reads use, and whose owners a write's level counts. */
  readonly ring: Ring
  /** The effective replication factor: the cluster's, bounded by the number of serving members. */
  readonly rf: number
  /** The ring being moved to while members join or leave; undefined otherwise. */
  readonly target: { readonly ring: Ring; readonly rf: number } | undefined
  readonly byId: ReadonlyMap<string, MemberInfo>
  /** Client calls under way that routed with this ring. */
  inFlight: number
  /** The series this node owns in this ring, once asked (ownedSeries). */
  owned?: SeriesFilter
  /** Whether this node holds only its own series in this ring (ownedFilter), once asked. */
  clean?: boolean
}

function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i])
}

/** The node a part of a read goes to, and the series it answers for (undefined: all it holds). */
interface ReadPart {
  readonly node: MemberInfo
  readonly ranges: readonly TokenRange[]
  /** The other nodes reading any of these ranges in the same read (several copies per range). */
  readonly others: ReadonlySet<string>
  readonly spans: Uint8Array | undefined
  readonly filter: SeriesFilter | undefined
}

/** Orders owners for a read: this node, then healthy ones, then the rest; stable otherwise. */
function rank(id: string, healthy: ReadonlySet<string>, self: string): number {
  if (id === self && healthy.has(id)) return 0
  return healthy.has(id) ? 1 : 2
}

/** The copies of each series over the parts, grouped, in the single node's canonical key order. */
function copiesByKey<T extends { readonly metric: string; readonly tags: readonly Tag[] }>(
  parts: readonly T[][],
  keys: SeriesMemo<string>,
): T[][] {
  const groups = new Map<string, T[]>()
  for (const part of parts) {
    for (const item of part) {
      const key = keys.get(item.metric, item.tags)
      const copies = groups.get(key)
      if (copies) copies.push(item)
      else groups.set(key, [item])
    }
  }
  return [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, copies]) => copies)
}

/** Series from several nodes in the single node's canonical key order, each once: the first copy where several hold it. */
function mergeByKey<T extends { readonly metric: string; readonly tags: readonly Tag[] }>(
  parts: readonly T[][],
  keys: SeriesMemo<string>,
): T[] {
  const nonEmpty = parts.filter((p) => p.length > 0)
  if (nonEmpty.length <= 1) return nonEmpty[0] ?? []
  return copiesByKey(nonEmpty, keys).map((copies) => copies[0]!)
}

/** One replica's answer: the node it came from and its series. */
interface ReplicaAnswer {
  readonly node: string
  readonly series: readonly SeriesPoints[]
}

/** A series' copy as one node returned it. */
interface NodeCopy {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly node: string
  readonly series: SeriesPoints
}

/** The copies of a disputed point: each distinct value and the nodes that returned it. */
interface Dispute {
  readonly ts: number
  readonly values: { readonly value: number; readonly nodes: string[] }[]
}

/** Asks a node for the versions of some points; see ClusterEngine.versionsFrom. */
type VersionsFetch = (node: string, queries: readonly VersionsQuery[]) => Promise<Float64Array[]>

/**
 * The copies of each series from several replicas merged into one: the union of their points by
 * timestamp, in canonical key order. Where copies disagree on a timestamp's value (rare: a write
 * that has not reached every replica yet), the nodes that returned each value are asked for its
 * write version, and the copy with the highest version wins (conflict.ts), as repair decides it.
 */
async function unionByKey(
  answers: readonly ReplicaAnswer[],
  fetch: VersionsFetch,
  keys: SeriesMemo<string>,
): Promise<SeriesPoints[]> {
  const groups = copiesByKey(
    answers.map((a) => a.series.map((s): NodeCopy => ({ metric: s.metric, tags: s.tags, node: a.node, series: s }))),
    keys,
  )
  const merged: { metric: string; tags: readonly Tag[]; points: Map<number, number>; disputes: Dispute[] }[] = []
  const out: (SeriesPoints | number)[] = []
  for (const copies of groups) {
    if (copies.length === 1) {
      out.push(copies[0]!.series)
      continue
    }
    const points = new Map<number, number>()
    const holders = new Map<number, string>()
    const disputes = new Map<number, Dispute>()
    for (const { node, series } of copies) {
      for (let i = 0; i < series.timestamps.length; i++) {
        const t = series.timestamps[i]!
        const v = series.values[i]!
        const known = points.get(t)
        if (known === undefined) {
          points.set(t, v)
          holders.set(t, node)
          continue
        }
        let dispute = disputes.get(t)
        if (dispute === undefined) {
          if (sameBits(known, v)) continue
          dispute = { ts: t, values: [{ value: known, nodes: [holders.get(t)!] }] }
          disputes.set(t, dispute)
        }
        const same = dispute.values.find((c) => sameBits(c.value, v))
        if (same === undefined) dispute.values.push({ value: v, nodes: [node] })
        else same.nodes.push(node)
      }
    }
    out.push(merged.length)
    merged.push({ metric: copies[0]!.metric, tags: copies[0]!.tags, points, disputes: [...disputes.values()] })
  }
  await settleDisputes(merged, fetch)
  return out.map((item) => {
    if (typeof item !== 'number') return item
    const { metric, tags, points } = merged[item]!
    const timestamps = Float64Array.from(points.keys()).sort()
    const values = Float64Array.from(timestamps, (t) => points.get(t)!)
    return { metric, tags, timestamps, values }
  })
}

/**
 * Fetches the versions of every disputed point from the nodes that returned it, one request per
 * node, and sets each point to its winning value. A node that cannot answer counts as version 0.
 */
async function settleDisputes(
  merged: readonly { metric: string; tags: readonly Tag[]; points: Map<number, number>; disputes: Dispute[] }[],
  fetch: VersionsFetch,
): Promise<void> {
  const asks = new Map<string, { queries: VersionsQuery[]; slots: { m: number; ts: number[] }[] }>()
  merged.forEach((series, m) => {
    if (series.disputes.length === 0) return
    const byNode = new Map<string, number[]>()
    for (const d of series.disputes)
      for (const c of d.values)
        for (const node of c.nodes) {
          const list = byNode.get(node)
          if (list === undefined) byNode.set(node, [d.ts])
          else list.push(d.ts)
        }
    for (const [node, ts] of byNode) {
      let ask = asks.get(node)
      if (ask === undefined) {
        ask = { queries: [], slots: [] }
        asks.set(node, ask)
      }
      ask.queries.push({ metric: series.metric, tags: series.tags, timestamps: Float64Array.from(ts) })
      ask.slots.push({ m, ts })
    }
  })
  if (asks.size === 0) return
  // Per series, per timestamp, per node: the version that node holds.
  const versions = new Map<string, number>()
  await Promise.all(
    [...asks].map(async ([node, ask]) => {
      const found = await fetch(node, ask.queries).catch(() =>
        ask.queries.map((q) => new Float64Array(q.timestamps.length)),
      )
      ask.slots.forEach((slot, k) => {
        slot.ts.forEach((t, j) => {
          versions.set(`${slot.m}\u0000${t}\u0000${node}`, found[k]![j]!)
        })
      })
    }),
  )
  merged.forEach((series, m) => {
    for (const d of series.disputes) {
      const candidates = d.values.map((c) => ({
        value: c.value,
        version: Math.max(...c.nodes.map((node) => versions.get(`${m}\u0000${d.ts}\u0000${node}`) ?? 0)),
      }))
      series.points.set(d.ts, pickWinner(candidates).value)
    }
  })
}

/** The last point of each series over its copies: the latest timestamp any replica holds, disputes settled as by unionByKey. */
async function latestByKey(
  answers: readonly ReplicaAnswer[],
  fetch: VersionsFetch,
  keys: SeriesMemo<string>,
): Promise<SeriesPoints[]> {
  return (await unionByKey(answers, fetch, keys)).map((s) => {
    const n = s.timestamps.length
    return { ...s, timestamps: s.timestamps.subarray(n - 1), values: s.values.subarray(n - 1) }
  })
}

/** The members' cache figures added up; a member without caches adds nothing. */
function sumCaches(all: readonly EngineStats[]): NonNullable<EngineStats['caches']> {
  const total = (pick: (c: NonNullable<EngineStats['caches']>) => CacheStats): CacheStats => ({
    hits: all.reduce((a, s) => a + (s.caches === undefined ? 0 : pick(s.caches).hits), 0),
    misses: all.reduce((a, s) => a + (s.caches === undefined ? 0 : pick(s.caches).misses), 0),
  })
  return {
    results: total((c) => c.results),
    decodedBlocks: total((c) => c.decodedBlocks),
    selectors: total((c) => c.selectors),
  }
}

/**
 * The integrated edition's StorageEngine: any node accepts any call. A write is validated whole,
 * split by the owners of each series on the ring, written locally for what this node owns and
 * sent to the other owners over the peer transport; it is acknowledged once every owner has it
 * durable. A read goes to one owner per token range (so each series counts once), each node
 * answers for its ranges in parallel, and the parts merge into the single-node answer:
 * aggregations whose groups can span nodes travel as mergeable states.
 */
export class ClusterEngine implements StorageEngine {
  private ringState: RingState | undefined
  private link: ClusterLink | undefined
  private planCache: { state: RingState; signature: string; parts: ReadPart[] } | undefined
  /** The ring at this node's last cleanup: it holds only its own series while ownership is the same. */
  private cleanRing: RingSnapshot | undefined
  /** Ring states with client calls under way. */
  private readonly busy = new Set<RingState>()
  /**
   * Series identities already validated, as the basic engine keeps them: a series the wire decoder
   * has seen before skips the name checks, the tag sort and the key, which otherwise cost the
   * coordinator more than its share of the writes.
   */
  private readonly validated = new ValidatedSeriesCache()
  /** The encoded identities of the series this node forwards, reused write after write. */
  private readonly identities = new PeerIdentityBytes()
  /**
   * The identities of the series in peers' answers to reads: a series comes back with the same
   * tags array in answer after answer, so merges find its key (`keys`) and the gRPC encoder its
   * encoded header (EncodedHeaderCache) instead of working them out for every series of every read.
   */
  private readonly answerHeaders = new PeerSeriesHeaders()
  /** The canonical keys of the series merges meet, local or from peers. */
  private readonly keys = new SeriesMemo(seriesKeyOf)
  /** Regex matchers compiled to validate selectors here, before each owner compiles them again. */
  private readonly regexes = new RegexCache()

  constructor(
    private readonly local: StorageEngine & ShardEngine,
    private readonly options: ClusterEngineOptions,
    private readonly logger: Logger,
    private readonly tokens: SeriesTokens,
    /** The write-version clock: one version per client write this node coordinates. */
    private readonly clock: HybridLogicalClock = new HybridLogicalClock(),
  ) {}

  /**
   * Connects the engine to the cluster. Until then every call answers UNAVAILABLE: a node learns
   * its address, and so its id, only once its gRPC server is bound.
   */
  attach(link: ClusterLink): void {
    this.link = link
  }

  /** The ring version this node routes with; 0 before it has one. */
  ringVersion(): number {
    return this.link?.view.ring()?.version ?? 0
  }

  async open(): Promise<void> {}

  async close(): Promise<void> {}

  private get selfId(): string {
    return this.linked().selfId
  }

  private linked(): ClusterLink {
    if (this.link === undefined) throw new UnavailableError('this node is starting and has not joined the cluster yet')
    return this.link
  }

  private state(): RingState {
    const snapshot = this.linked().view.ring()
    if (snapshot === undefined) throw new UnavailableError('this node has not joined the cluster yet')
    if (this.ringState?.snapshot !== snapshot) {
      const ringOf = (members: readonly MemberInfo[]) => ({
        ring: new Ring(
          members.map((m) => ({ id: m.id, tokens: m.tokens })),
          snapshot.version,
        ),
        rf: Math.max(1, Math.min(snapshot.replicationFactor, members.length)),
      })
      const serving = ringOf(snapshot.members.filter((m) => m.state !== 'joining'))
      const moving = snapshot.members.some((m) => m.state !== 'active')
      this.ringState = {
        snapshot,
        ring: serving.ring,
        rf: serving.rf,
        target: moving ? ringOf(snapshot.members.filter((m) => m.state !== 'leaving')) : undefined,
        byId: new Map(snapshot.members.map((m) => [m.id, m])),
        inFlight: 0,
      }
    }
    return this.ringState
  }

  /** The ring for a client call, counted as under way until `leave`: settledAt waits for such calls. */
  private enter(): RingState {
    const state = this.state()
    state.inFlight++
    if (state.inFlight === 1) this.busy.add(state)
    return state
  }

  private leave(state: RingState): void {
    state.inFlight--
    if (state.inFlight === 0) this.busy.delete(state)
  }

  /** Runs a client call with the current ring, counted as under way while it runs. */
  private async routed<T>(run: (state: RingState) => Promise<T>): Promise<T> {
    const state = this.enter()
    try {
      return await run(state)
    } finally {
      this.leave(state)
    }
  }

  /**
   * Resolves once this node routes with ring `version` or newer and no client call that routed
   * with an older ring is still under way: from then on every write it coordinates reaches the
   * owners of that version, and no read it coordinates asks an owner the version dropped. A
   * membership change waits for this on every node before it streams data or drops a range.
   */
  async settledAt(version: number, signal: AbortSignal): Promise<number> {
    for (;;) {
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new DeadlineError('cancelled')
      const current = this.link?.view.ring()?.version ?? 0
      if (current >= version && [...this.busy].every((s) => s.snapshot.version >= version)) return current
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS))
    }
  }

  /**
   * Records that this node dropped every series it does not own in `snapshot` (a cleanup after a
   * membership change): until the ring's ownership changes again, all it holds is its own.
   */
  markClean(snapshot: RingSnapshot): void {
    this.cleanRing = snapshot
    // The answer ownedFilter cached for the ring of the cleanup itself is out of date now.
    if (this.ringState !== undefined) this.ringState.clean = undefined
  }

  /** The series this node owns in the serving ring it routes with: what a cleanup keeps. */
  ownedSeries(): SeriesFilter {
    const state = this.state()
    if (state.owned === undefined) {
      const spans = state.ring
        .ranges(state.rf)
        .filter((r) => r.owners.includes(this.selfId))
        .map((r) => ({ start: r.start, end: r.end }))
      state.owned = spanFilter(spans)
    }
    return state.owned
  }

  /**
   * The series this node answers for when a read asks for all its ranges: undefined (everything it
   * holds) while it is clean, else a filter to the ranges it owns in the serving ring. A node may
   * hold ranges it does not serve: ranges it gains during a change, ranges it lost until the
   * cleanup drops them, whatever a restart left behind before its first cleanup.
   */
  ownedFilter(): SeriesFilter | undefined {
    const state = this.link === undefined ? undefined : this.state()
    if (state === undefined) return undefined
    if (state.clean === undefined) {
      const clean = this.cleanRing
      state.clean =
        state.target === undefined &&
        clean !== undefined &&
        clean.members.length === state.snapshot.members.length &&
        clean.members.every((m, i) => {
          const now = state.snapshot.members[i]!
          return now.id === m.id && now.state === m.state && sameTokens(now.tokens, m.tokens)
        })
    }
    return state.clean ? undefined : this.ownedSeries()
  }

  /** The filter of this node's own part of a read: the part's, or with none, ownedFilter's. */
  private localFilter(part: ReadPart): SeriesFilter | undefined {
    return part.filter ?? this.ownedFilter()
  }

  private endpoint(node: MemberInfo): PeerEndpoint {
    return { id: node.id, address: node.peerAddress }
  }

  private async call(
    state: RingState,
    node: MemberInfo,
    kind: PeerKind,
    body: Uint8Array,
    ctx: CallContext | undefined,
  ): Promise<Uint8Array> {
    // A node whose Consul check fails is not asked: the call would wait the whole peer timeout.
    if (!this.linked().view.healthyIds().has(node.id)) {
      throw new UnavailableError(`node ${node.id} (${node.peerAddress}) is down: its Consul check fails`)
    }
    const reply = await this.linked().transport.request(this.endpoint(node), {
      kind,
      body,
      ringVersion: state.snapshot.version,
      timeoutMs: this.options.peerTimeoutMs,
      signal: ctx?.signal,
    })
    return reply.body
  }

  /**
   * Runs one task per node, given the node and its index in `nodes`; any failure fails the whole,
   * naming every node that failed.
   */
  private async onEach<T>(
    what: string,
    nodes: readonly MemberInfo[],
    task: (node: MemberInfo, index: number) => Promise<T>,
  ): Promise<T[]> {
    const settled = await Promise.allSettled(nodes.map((node, i) => task(node, i)))
    const failures: { node: MemberInfo; reason: unknown }[] = []
    const out: T[] = []
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') out.push(s.value)
      else failures.push({ node: nodes[i]!, reason: s.reason })
    })
    if (failures.length === 0) return out
    throw this.fanOutError(
      what,
      failures.map((f) => ({ node: f.node.id, reason: f.reason })),
    )
  }

  /**
   * The error of a call some nodes failed. A peer's validation or limit error is the caller's
   * problem, not the nodes': it passes on as it is. Otherwise UNAVAILABLE names every failure, each
   * after its node when `node` is given (a read's failures already name theirs), once.
   */
  private fanOutError(what: string, failures: readonly { readonly node?: string; readonly reason: unknown }[]): Error {
    const first = failures[0]?.reason
    if (failures.every((f) => !(f.reason instanceof UnavailableError)) && first instanceof Error) return first
    const described = failures.map((f) => {
      const message = f.reason instanceof Error ? f.reason.message : String(f.reason)
      return f.node === undefined ? message : `${f.node} (${message})`
    })
    this.logger.warn({ what, failures: described }, 'cluster call failed')
    return new UnavailableError(`cannot ${what}: ${[...new Set(described)].join('; ')}`, { cause: first })
  }

  /**
   * Validates the batch whole, splits it by the owners of each series and sends every owner its
   * part at once: this node's part goes to its own engine. The write is acknowledged once, for
   * every series, as many owners as the level needs have their part durable; the other parts go on
   * in the background. An owner that is down, that does not answer, or that still has hints
   * waiting gets its part as a hint, delivered once it is back; a hint does not count towards the
   * level. A level that cannot be met answers UNAVAILABLE naming the owners that failed it.
   */
  async write(batch: WriteBatch, ctx?: CallContext): Promise<WriteResult> {
    if (batch.series.length >= LARGE_WORK_SERIES) await largeWork.enter(ctx)
    const normalized = validateWriteBatch(batch, this.options.limits, this.validated)
    return this.routed(async (state) => {
      // One version for the whole request, the same in every owner's part and hint.
      const version = this.clock.now()
      const level = ctx?.consistency ?? this.options.writeConsistency
      const need = requiredReplicas(level, state.rf)
      // Each owner's part is a validated batch of its own, its point count kept as it is built.
      const parts = new Map<string, OwnerPart>()
      // While ranges move, their new owners' parts: written (or hinted) too, not counted for the level.
      const pending = new Map<string, OwnerPart>()
      const add = (to: Map<string, OwnerPart>, owner: string, series: NormalizedSeries, index: number): void => {
        let part = to.get(owner)
        if (part === undefined) {
          part = { series: [], points: 0, indexes: [], version }
          to.set(owner, part)
        }
        part.series.push(series)
        part.points += series.timestamps.length
        part.indexes.push(index)
      }
      const target = state.target
      normalized.series.forEach((series, index) => {
        const token = this.tokens.of(series.key)
        const owners = state.ring.owners(token, state.rf)
        for (const owner of owners) add(parts, owner, series, index)
        if (target === undefined) return
        for (const owner of target.ring.owners(token, target.rf)) {
          if (!owners.includes(owner)) add(pending, owner, series, index)
        }
      })
      const tally = new WriteTally(normalized.series.length, need, state.rf)
      const healthy = this.linked().view.healthyIds()
      const bodies = new PartBodies(this.identities)
      for (const [id, part] of parts) {
        this.writePart(state, state.byId.get(id)!, part, bodies, healthy, ctx).then(
          () => tally.ack(part.indexes),
          (err: unknown) => tally.fail(id, part.indexes, err),
        )
      }
      // A new owner's part is waited for but never fails the write: once the write is answered, the
      // part is stored there or waits as a hint, which the change delivers before the range changes
      // hands. So reads after the switch find every acknowledged write on the new owner.
      const moving = [...pending].map(([id, part]) =>
        this.writePart(state, state.byId.get(id)!, part, bodies, healthy, ctx).catch((err: unknown) => {
          if (!(err instanceof UnavailableError)) {
            this.logger.warn({ node: id, err: err instanceof Error ? err.message : String(err) }, 'moving range write')
          }
        }),
      )
      try {
        await abortable(
          moving.length === 0 ? tally.done : Promise.all([tally.done, ...moving]).then(() => undefined),
          ctx?.signal,
        )
      } catch (err) {
        if (!(err instanceof LevelNotMet)) throw err
        throw this.fanOutError(
          `write at consistency ${level.toUpperCase()} (${need} of ${state.rf} owners of each series are needed)`,
          err.failures,
        )
      }
      return { pointsWritten: normalized.points, seriesWritten: normalized.series.length }
    })
  }

  /**
   * Writes one owner's part: locally, to the peer, or as a hint when the peer is down. An owner
   * still receiving hints gets the part at once: its version keeps a hint replayed later from
   * overwriting it. Resolves once the owner has it durable; rejects otherwise, after storing the
   * hint where one applies.
   */
  private async writePart(
    state: RingState,
    node: MemberInfo,
    part: OwnerPart,
    bodies: PartBodies,
    healthy: ReadonlySet<string>,
    ctx: CallContext | undefined,
  ): Promise<void> {
    const version = part.version
    if (node.id === this.selfId) {
      // Every point of the part has the write's version: one number per series, no array of them.
      const series = part.series.map((s): NormalizedSeries => {
        const { metric, tags, key, timestamps, values } = s
        return { metric, tags, key, timestamps, values, version }
      })
      await this.local.writeValidated({ series, points: part.points }, ctx)
      return
    }
    const body = bodies.of(part)
    const handoff = this.linked().handoff
    if (handoff !== undefined && !healthy.has(node.id)) {
      await this.keepHint(handoff, node, body)
      throw new UnavailableError(`node ${node.id} is down; its part waits as a hint`)
    }
    try {
      // Not tied to the call's signal: a part still under way when the write is answered goes on.
      await this.call(state, node, PeerKind.PEER_KIND_WRITE, body, undefined)
    } catch (err) {
      // Only a refusal of the data itself is final: it would be refused again on delivery. Any other
      // failure (no answer in time, the peer's queue past its deadline or full, an error on the way)
      // leaves the owner perhaps without its part, so it waits as a hint; a replay is harmless.
      if (handoff === undefined || err instanceof ValidationError) throw err
      await this.keepHint(handoff, node, body)
      if (err instanceof UnavailableError || err instanceof LimitError) throw err
      // The peer's DEADLINE_EXCEEDED is its own deadline, --peer-timeout, not the caller's: the owner
      // did not take its part in time.
      throw new UnavailableError(
        `node ${node.id} did not take its part (${err instanceof Error ? err.message : String(err)}); it waits as a hint`,
        { cause: err },
      )
    }
  }

  private async keepHint(handoff: HintedHandoff, node: MemberInfo, body: Uint8Array): Promise<void> {
    if (!(await handoff.hint(node.id, body))) {
      throw new UnavailableError(`node ${node.id} is down and the hint store is full`)
    }
  }

  /**
   * Which replicas a read asks: one owner per token range at level ONE (spread over the owners,
   * preferring this node and healthy nodes), `copies` distinct owners per range above it. A node
   * that answers for every range it holds gets no filter, so that a cluster with one copy of each
   * series reads exactly as a single node does. At ONE the plan depends only on the ring and the
   * healthy set, which change rarely, so it is reused.
   */
  private readPlan(state: RingState, copies: number): ReadPart[] {
    const healthy = this.linked().view.healthyIds()
    if (copies > 1) return this.planCopies(state, healthy, copies)
    const signature = [...healthy].sort().join('\u0000')
    const cached = this.planCache
    if (cached !== undefined && cached.state === state && cached.signature === signature) return cached.parts
    const parts = this.planReads(state, healthy)
    this.planCache = { state, signature, parts }
    return parts
  }

  private planReads(state: RingState, healthy: ReadonlySet<string>): ReadPart[] {
    const assignment = assignReadReplicas(state.ring, state.rf, healthy, this.selfId)
    const byNode = new Map<string, TokenRange[]>()
    for (const [id, ranges] of assignment) byNode.set(id, [...ranges])
    // A range none of whose owners looks healthy still goes to its first owner: health can lag, and
    // if that node is really down, the call fails naming it rather than answering without its part.
    for (const range of assignment.unavailable) {
      const first = range.owners[0]
      if (first === undefined) continue
      const list = byNode.get(first) ?? []
      list.push(range)
      byNode.set(first, list)
    }
    return this.partsOf(state, byNode, new Map())
  }

  /** `copies` distinct owners per range: healthy ones first, this node first among them. */
  private planCopies(state: RingState, healthy: ReadonlySet<string>, copies: number): ReadPart[] {
    const byNode = new Map<string, TokenRange[]>()
    const readers = new Map<TokenRange, readonly string[]>()
    for (const range of state.ring.ranges(state.rf)) {
      const ranked = [...range.owners].sort((a, b) => rank(a, healthy, this.selfId) - rank(b, healthy, this.selfId))
      const chosen = ranked.slice(0, copies)
      readers.set(range, chosen)
      for (const id of chosen) {
        const list = byNode.get(id)
        if (list) list.push(range)
        else byNode.set(id, [range])
      }
    }
    return this.partsOf(state, byNode, readers)
  }

  /** Parts from the ranges each node reads; `readers` names every node reading a range, when several do. */
  private partsOf(
    state: RingState,
    byNode: ReadonlyMap<string, readonly TokenRange[]>,
    readers: ReadonlyMap<TokenRange, readonly string[]>,
  ): ReadPart[] {
    const all = state.ring.ranges(state.rf)
    const parts: ReadPart[] = []
    for (const [id, ranges] of byNode) {
      const node = state.byId.get(id)
      if (node === undefined || ranges.length === 0) continue
      const held = all.filter((r) => r.owners.includes(id)).length
      const spans: TokenSpan[] = ranges.map((r) => ({ start: r.start, end: r.end }))
      const others = new Set<string>()
      for (const r of ranges) for (const reader of readers.get(r) ?? []) if (reader !== id) others.add(reader)
      if (ranges.length === held) parts.push({ node, ranges, others, spans: undefined, filter: undefined })
      else parts.push({ node, ranges, others, spans: encodeSpans(spans), filter: spanFilter(spans) })
    }
    return parts
  }

  /**
   * The same ranges as `part`, read from other owners: for each range the healthiest owner that is
   * not excluded (and not already reading it). Undefined when some range has no such owner.
   */
  private alternativeParts(state: RingState, part: ReadPart, excluded: ReadonlySet<string>): ReadPart[] | undefined {
    const healthy = this.linked().view.healthyIds()
    const byNode = new Map<string, TokenRange[]>()
    for (const range of part.ranges) {
      const candidates = range.owners.filter((id) => !excluded.has(id) && !part.others.has(id))
      if (candidates.length === 0) return undefined
      const id = candidates.sort((a, b) => rank(a, healthy, this.selfId) - rank(b, healthy, this.selfId))[0]!
      const list = byNode.get(id)
      if (list) list.push(range)
      else byNode.set(id, [range])
    }
    return this.partsOf(state, byNode, new Map()).map((p) => ({ ...p, others: part.others }))
  }

  /**
   * Reads every part of a plan in parallel, each hedged (see readHedged), and returns the answers
   * of the parts or of their stand-ins. A part none of whose owners answers fails the whole read
   * with UNAVAILABLE naming the nodes: no silent partial answers.
   */
  private async readAll<T>(
    what: string,
    state: RingState,
    plan: readonly ReadPart[],
    run: (part: ReadPart) => Promise<T>,
  ): Promise<T[]> {
    // The other nodes' parts are asked first, so that this node's own part, which runs on this
    // thread, overlaps their round trips instead of delaying them. Answers keep the plan's order.
    const reads: Promise<T[]>[] = new Array(plan.length)
    for (const local of [false, true]) {
      plan.forEach((part, i) => {
        if ((part.node.id === this.selfId) === local) reads[i] = this.readHedged(state, part, run, new Set())
      })
    }
    const settled = await Promise.allSettled(reads)
    const failures: unknown[] = []
    const out: T[] = []
    for (const s of settled) {
      if (s.status === 'fulfilled') out.push(...s.value)
      else failures.push(s.reason)
    }
    if (failures.length === 0) return out
    throw this.fanOutError(
      what,
      failures.map((reason) => ({ reason })),
    )
  }

  /**
   * Reads one part from its node. When the node fails with UNAVAILABLE, or has not answered within
   * the read timeout, the same ranges are also asked of other owners; the first complete answer
   * wins, so a dead or stopped node costs a read at most the read timeout. With no other owner the
   * read waits for the node up to the peer timeout.
   */
  private readHedged<T>(
    state: RingState,
    part: ReadPart,
    run: (part: ReadPart) => Promise<T>,
    excluded: ReadonlySet<string>,
  ): Promise<T[]> {
    return new Promise<T[]>((resolve, reject) => {
      let settled = false
      let primaryError: unknown
      let hedge: 'none' | 'running' | 'failed' = 'none'
      let hedgeError: unknown
      const succeed = (value: T[]): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve(value)
      }
      const failIfDone = (): void => {
        if (settled || primaryError === undefined || hedge === 'running') return
        settled = true
        clearTimeout(timer)
        const errors = [primaryError, hedgeError].filter((e) => e !== undefined)
        const unavailable = errors.filter((e) => e instanceof UnavailableError)
        if (unavailable.length < errors.length || unavailable.length === 1) reject(errors[0])
        else reject(new UnavailableError(unavailable.map((e) => (e as Error).message).join('; ')))
      }
      const startHedge = (): void => {
        if (hedge !== 'none' || settled) return
        const without = new Set([...excluded, part.node.id])
        const alternatives = this.alternativeParts(state, part, without)
        if (alternatives === undefined) {
          hedge = 'failed'
          failIfDone()
          return
        }
        hedge = 'running'
        Promise.all(alternatives.map((alt) => this.readHedged(state, alt, run, without))).then(
          (values) => succeed(values.flat()),
          (err: unknown) => {
            hedge = 'failed'
            hedgeError = err
            failIfDone()
          },
        )
      }
      const timer = setTimeout(startHedge, this.options.readTimeoutMs)
      run(part).then(
        (value) => succeed([value]),
        (err: unknown) => {
          primaryError = err
          if (err instanceof UnavailableError && hedge === 'none') startHedge()
          else failIfDone()
        },
      )
    })
  }

  /** How many owners of each series a read asks: one, or as many as its level needs. */
  private readCopies(state: RingState, ctx: CallContext | undefined): number {
    return requiredReplicas(ctx?.consistency ?? 'one', state.rf)
  }

  /**
   * At level ONE each series is read from one owner, and aggregations whose groups can span nodes
   * travel as mergeable partial states. Above ONE every owner asked sends its raw points (after
   * the value filter), the copies of a series merge into the union of their points, and this node
   * aggregates the merged series: each point counts once however many replicas hold it.
   */
  query(request: QueryRequest, ctx?: CallContext): Promise<SeriesPoints[]> {
    return this.routed((state) => this.queryRouted(state, request, ctx))
  }

  private async queryRouted(state: RingState, request: QueryRequest, ctx?: CallContext): Promise<SeriesPoints[]> {
    // Checked here so that a bad request fails before any node is asked.
    if (!(request.endMs > request.startMs)) {
      throw ValidationError.field('end_ms', `must be greater than start_ms (${request.startMs}), got ${request.endMs}`)
    }
    const selectors = [request.selector, ...(request.additionalSelectors ?? [])]
    selectors.forEach((selector, i) => {
      try {
        compileSelector(selector, { regexes: this.regexes })
      } catch (err) {
        throw err instanceof ValidationError && i > 0 ? err.renamed('selector', `additional_selectors[${i - 1}]`) : err
      }
    })
    const agg = request.aggregation
    if (agg !== undefined) validateAggregation(agg)
    const copies = this.readCopies(state, ctx)
    // A group may span nodes only when series merge; otherwise each series is its own group.
    const partial = copies === 1 && agg !== undefined && (agg.groupBy.length > 0 || agg.mergeSeries)
    const pushed = copies === 1 ? agg : undefined
    const plan = this.readPlan(state, copies)
    const answers = await this.readAll('query', state, plan, async (part) => {
      const node = part.node
      const asked: QueryRequest = pushed === agg ? request : { ...request, aggregation: undefined }
      if (node.id === this.selfId) {
        return partial
          ? {
              node: node.id,
              partials: await this.local.queryPartials(asked, this.localFilter(part), ctx),
              series: undefined,
            }
          : {
              node: node.id,
              series: await this.local.queryShard(asked, this.localFilter(part), ctx),
              partials: undefined,
            }
      }
      const body = PeerQueryRequest.encode({
        selectors: selectors.map(selectorToPeer),
        startMs: request.startMs,
        endMs: request.endMs,
        aggregation: pushed === undefined ? undefined : aggregationToPeer(pushed),
        valueFilter: request.valueFilter === undefined ? undefined : { ...request.valueFilter },
        shard: shardToPeer(part.spans),
        partial,
      }).finish()
      const answer = await this.call(state, node, PeerKind.PEER_KIND_QUERY, body, ctx)
      if (partial) {
        const { results } = PeerQueryResponse.decode(answer)
        if (results.length !== selectors.length) {
          throw new UnavailableError(`node ${node.id} answered ${results.length} selectors of ${selectors.length}`)
        }
        return {
          node: node.id,
          partials: results.map((r, i) => r.partials.map((g, j) => partialFromPeer(g, `results[${i}].partials[${j}]`))),
          series: undefined,
        }
      }
      const series = decodePeerQuerySeries(answer, this.answerHeaders)
      if (series.length !== selectors.length) {
        throw new UnavailableError(`node ${node.id} answered ${series.length} selectors of ${selectors.length}`)
      }
      return { node: node.id, series, partials: undefined }
    })
    const fetch = this.versionsFetch(state, ctx)
    const out: SeriesPoints[] = []
    let points = 0
    for (let i = 0; i < selectors.length; i++) {
      let merged: SeriesPoints[]
      if (partial && agg !== undefined) {
        merged = mergePartials(
          answers.map((a) => a.partials?.[i] ?? ([] as PartialGroup[])),
          agg,
        )
      } else if (copies === 1)
        merged = mergeByKey(
          answers.map((a) => a.series?.[i] ?? []),
          this.keys,
        )
      else {
        // Aggregates are computed here from the merged raw points, so they use the same winners.
        const union = await unionByKey(
          answers.map((a) => ({ node: a.node, series: a.series?.[i] ?? [] })),
          fetch,
          this.keys,
        )
        merged = agg === undefined ? union : aggregate(union, agg, request.startMs, request.endMs)
      }
      // One push per series: a spread of a query's series (hundreds of thousands for a wide
      // selector) into push's arguments would overflow the call stack.
      for (const s of merged) {
        points += s.timestamps.length
        out.push(s)
      }
    }
    if (points > this.options.maxPointsPerQuery) {
      throw new LimitError('max_points_per_query', this.options.maxPointsPerQuery, `cannot return ${points} points`)
    }
    return out
  }

  latest(selector: Selector, ctx?: CallContext): Promise<SeriesPoints[]> {
    compileSelector(selector, { regexes: this.regexes })
    return this.routed((state) => this.latestRouted(state, selector, ctx))
  }

  private async latestRouted(state: RingState, selector: Selector, ctx?: CallContext): Promise<SeriesPoints[]> {
    const copies = this.readCopies(state, ctx)
    const parts = await this.readAll('read the latest points', state, this.readPlan(state, copies), async (part) => {
      const node = part.node.id
      if (node === this.selfId)
        return { node, series: await this.local.latestShard(selector, this.localFilter(part), ctx) }
      const body = PeerLatestRequest.encode({
        selector: selectorToPeer(selector),
        shard: shardToPeer(part.spans),
      }).finish()
      const answer = await this.call(state, part.node, PeerKind.PEER_KIND_LATEST, body, ctx)
      return { node, series: decodePeerSeriesList(answer, this.answerHeaders) }
    })
    return copies === 1
      ? mergeByKey(
          parts.map((p) => [...p.series]),
          this.keys,
        )
      : latestByKey(parts, this.versionsFetch(state, ctx), this.keys)
  }

  /**
   * Asks a node for the write versions of some points: the local engine, or PEER_KIND_VERSIONS. A
   * read uses it only where replicas returned different values for one timestamp.
   */
  private versionsFetch(state: RingState, ctx: CallContext | undefined): VersionsFetch {
    return async (id, queries) => {
      if (id === this.selfId) return Promise.all(queries.map((q) => this.local.versionsOf(q, q.timestamps, ctx)))
      const node = state.byId.get(id)
      if (node === undefined) throw new UnavailableError(`node ${id} left the ring`)
      const body = await this.call(state, node, PeerKind.PEER_KIND_VERSIONS, encodeVersionsRequest(queries), ctx)
      return decodeVersionsResponse(body, queries, id)
    }
  }

  listSeries(selector: Selector, ctx?: CallContext): Promise<SeriesRef[]> {
    compileSelector(selector, { regexes: this.regexes })
    return this.routed((state) => this.listSeriesRouted(state, selector, ctx))
  }

  private async listSeriesRouted(state: RingState, selector: Selector, ctx?: CallContext): Promise<SeriesRef[]> {
    const copies = this.readCopies(state, ctx)
    const parts = await this.readAll('list series', state, this.readPlan(state, copies), async (part) => {
      if (part.node.id === this.selfId) return this.local.listSeriesShard(selector, this.localFilter(part), ctx)
      const body = PeerListSeriesRequest.encode({
        selector: selectorToPeer(selector),
        shard: shardToPeer(part.spans),
      }).finish()
      const reply = PeerListSeriesResponse.decode(
        await this.call(state, part.node, PeerKind.PEER_KIND_LIST_SERIES, body, ctx),
      )
      return reply.series.map(
        (s): SeriesRef => ({ metric: s.metric, tags: s.tags.map((t) => ({ key: t.key, value: t.value })) }),
      )
    })
    return mergeByKey(parts, this.keys)
  }

  /**
   * Deletes on every member, since every replica holds the series; counts each series once. The
   * delete counts as a call under way on its ring, so a membership change that begins meanwhile
   * settles (settledAt) only once it is done, before any range is copied.
   */
  async deleteSeries(request: DeleteRequest, ctx?: CallContext): Promise<DeleteResult> {
    // A selector of every metric would delete every series: a delete must name its metric.
    compileSelector(request.selector, { requireMetric: true, regexes: this.regexes })
    return this.routed((state) => this.deleteOnRing(state, request, ctx))
  }

  private async deleteOnRing(state: RingState, request: DeleteRequest, ctx?: CallContext): Promise<DeleteResult> {
    if (state.target !== undefined) {
      throw new UnavailableError(
        'cannot delete while members join or leave: the data being moved would bring deleted points back; retry once the change is done',
      )
    }
    // Nothing keeps a deleted point from coming back: a hint delivered after the delete would put
    // its points back on their owner, and repair would copy them to the others. So none may wait.
    const waiting = await this.hintsWaiting(state, ctx)
    if (waiting.length > 0) {
      throw new UnavailableError(
        `cannot delete while hints wait to be delivered (${waiting.join('; ')}): delivered after the delete, they would bring deleted points back; retry once they are delivered`,
      )
    }
    const plan = this.readPlan(state, 1)
    const counted = await this.onEach('delete series', state.snapshot.members, async (node) => {
      const part = plan.find((p) => p.node.id === node.id)
      // A member that no range is read from counts nothing: the empty span list accepts no series.
      const countSpans = part === undefined ? new Uint8Array(0) : part.spans
      const countFilter = part === undefined ? spanFilter([]) : this.localFilter(part)
      if (node.id === this.selfId) {
        return (await this.local.deleteSeriesCounted(request, countFilter, ctx)).seriesMatched
      }
      const ranged = request.startMs !== undefined || request.endMs !== undefined
      const body = PeerDeleteRequest.encode({
        selector: selectorToPeer(request.selector),
        ranged,
        startMs: request.startMs ?? 0,
        endMs: request.endMs ?? 0,
        countShard: shardToPeer(countSpans),
      }).finish()
      return PeerDeleteResponse.decode(await this.call(state, node, PeerKind.PEER_KIND_DELETE_SERIES, body, ctx))
        .seriesMatched
    })
    return { seriesMatched: counted.reduce((a, b) => a + b, 0) }
  }

  /** The hints each member keeps, as "node keeps n for owner", over all members. */
  private async hintsWaiting(state: RingState, ctx: CallContext | undefined): Promise<string[]> {
    // Hints for a node that is no longer a member (a joiner taken out, a node decommissioned while
    // down) are never delivered: its ranges went to their new owners from the other copies, so they
    // cannot bring deleted points back, and they expire with the hint window.
    const waits = (owner: string, hints: number): boolean => hints > 0 && state.byId.has(owner)
    const perNode = await this.onEach('look for hints', state.snapshot.members, async (node) => {
      const describe = (owner: string, hints: number): string => `${node.id} keeps ${hints} for ${owner}`
      if (node.id === this.selfId) {
        return [...this.hintBacklog()].filter(([owner, hints]) => waits(owner, hints)).map(([o, h]) => describe(o, h))
      }
      const body = PeerStatsRequest.encode({}).finish()
      const reply = PeerStatsResponse.decode(await this.call(state, node, PeerKind.PEER_KIND_STATS, body, ctx))
      return reply.hints.filter((h) => waits(h.owner, h.hints)).map((h) => describe(h.owner, h.hints))
    })
    return perNode.flat()
  }

  async compact(ctx?: CallContext): Promise<CompactResult> {
    const state = this.state()
    const results = await this.onEach('compact', state.snapshot.members, async (node) => {
      if (node.id === this.selfId) return this.local.compact(ctx)
      const body = PeerCompactRequest.encode({}).finish()
      return PeerCompactResponse.decode(await this.call(state, node, PeerKind.PEER_KIND_COMPACT, body, ctx))
    })
    return {
      blocksSealed: results.reduce((a, r) => a + r.blocksSealed, 0),
      blocksMoved: results.reduce((a, r) => a + r.blocksMoved, 0),
      seriesExpired: results.reduce((a, r) => a + r.seriesExpired, 0),
    }
  }

  /**
   * The cluster's totals and each node's own figures. Totals add the nodes' figures, so with a
   * replication factor above 1 they count every stored copy; latencies are the slowest node's.
   */
  async stats(): Promise<EngineStats> {
    const state = this.state()
    const perNode = await this.onEach('collect statistics', state.snapshot.members, async (node) => {
      if (node.id === this.selfId) return { id: node.id, stats: await this.local.stats() }
      const body = PeerStatsRequest.encode({}).finish()
      const reply = PeerStatsResponse.decode(await this.call(state, node, PeerKind.PEER_KIND_STATS, body, undefined))
      return { id: node.id, stats: JSON.parse(reply.statsJson) as EngineStats }
    })
    const all = perNode.map((n) => n.stats)
    const sum = (pick: (s: EngineStats) => number) => all.reduce((a, s) => a + pick(s), 0)
    const latency = (pick: (s: EngineStats) => LatencySummary): LatencySummary => ({
      count: sum((s) => pick(s).count),
      p50Ms: Math.max(...all.map((s) => pick(s).p50Ms)),
      p99Ms: Math.max(...all.map((s) => pick(s).p99Ms)),
    })
    return {
      series: sum((s) => s.series),
      pointsWritten: sum((s) => s.pointsWritten),
      bufferedPoints: sum((s) => s.bufferedPoints),
      hotBlocks: sum((s) => s.hotBlocks),
      coldRuns: sum((s) => s.coldRuns),
      coldBlocks: sum((s) => s.coldBlocks),
      bytesOnDisk: sum((s) => s.bytesOnDisk),
      writes: latency((s) => s.writes),
      queries: latency((s) => s.queries),
      ...(all.some((s) => s.caches !== undefined) ? { caches: sumCaches(all) } : {}),
      nodes: perNode.map((n) => ({ id: n.id, stats: n.stats })),
    }
  }

  nodeStats(): Promise<EngineStats> {
    return this.local.stats()
  }

  clusterFigures(): ClusterFigures {
    const link = this.link
    const snapshot = link?.view.ring()
    const healthy = link?.view.healthyIds() ?? new Set<string>()
    const consul = link?.view.consul() ?? { reachable: false, outages: 0 }
    const transport = link?.transport.stats()
    return {
      ringVersion: snapshot?.version ?? 0,
      members: snapshot?.members.length ?? 0,
      healthyMembers: snapshot?.members.filter((m) => healthy.has(m.id)).length ?? 0,
      consulReachable: consul.reachable,
      consulOutages: consul.outages,
      peers: (transport?.peers ?? []).map((p) => ({
        peer: p.peer,
        requestsSent: p.requestsSent,
        responses: p.responses,
        timeouts: p.timeouts,
        sendFailures: p.sendFailures,
        requestsLost: p.requestsLost,
        inFlight: p.inFlight,
        queueDepth: p.queueDepth,
      })),
      malformedPeerMessages: transport?.malformedMessages ?? 0,
      peerRequestsServed: transport?.requestsServed ?? 0,
      peerRequestsRejected: transport?.requestsRejected ?? 0,
      peerConnectionsRefused: transport?.connectionsRefused ?? 0,
      hints: link?.handoff?.figures() ?? [],
      repair: link?.repair?.figures(),
      membership: link?.membershipFigures?.(),
    }
  }

  /** Runs a repair pass on every healthy node now; see AntiEntropy.repairCluster. */
  repair(ctx?: CallContext): Promise<ClusterRepairReport> {
    const repair = this.linked().repair
    if (repair === undefined) throw new UnavailableError('this node does not run repair passes')
    return repair.repairCluster(ctx)
  }

  /**
   * Asks the leader to decommission a member and waits until the ring this node routes with no
   * longer lists it and the change is over: its ranges are on their new owners, every node has
   * settled, and the other old owners have dropped what they lost.
   */
  async decommission(nodeId: string, ctx?: CallContext): Promise<DecommissionResult> {
    const started = Date.now()
    const link = this.linked()
    const state = this.state()
    if (nodeId === '') throw ValidationError.field('node_id', 'is required')
    if (!state.byId.has(nodeId)) {
      throw ValidationError.field('node_id', `${JSON.stringify(nodeId)} is not a member of the ring`)
    }
    if (state.snapshot.members.length === 1) {
      throw ValidationError.field('node_id', `${nodeId} is the last member; a cluster cannot lose it`)
    }
    if (link.requestDecommission === undefined || link.view.leaderId() === undefined) {
      throw new UnavailableError('no leader is elected now to carry out the decommission; retry shortly')
    }
    // A down node's ranges are copied from their other owners; a range with none up would start
    // empty on its new owner, and its points would be gone.
    const healthy = link.view.healthyIds()
    if (!healthy.has(nodeId)) {
      const orphaned = state.ring
        .ranges(state.rf)
        .filter((r) => r.owners.includes(nodeId) && !r.owners.some((o) => o !== nodeId && healthy.has(o)))
      if (orphaned.length > 0) {
        throw new UnavailableError(
          `cannot decommission ${nodeId}: it is down, and ${orphaned.length} of its ranges have no other copy on a healthy node, so their points would be lost; start it again and retry`,
        )
      }
    }
    // The other members take the node's ranges over: one that is down cannot copy its share, and the
    // change would wait for it, its ranges leaving for ever.
    const down = state.snapshot.members.filter((m) => m.id !== nodeId && !healthy.has(m.id)).map((m) => m.id)
    if (down.length > 0) {
      throw new UnavailableError(
        `cannot decommission ${nodeId} now: ${down.join(', ')} ${down.length === 1 ? 'is' : 'are'} down and would take over some of its ranges; start ${down.length === 1 ? 'it' : 'them'} again (or decommission ${down.length === 1 ? 'it' : 'them'} first) and retry`,
      )
    }
    await link.requestDecommission(nodeId, ctx?.signal)
    for (;;) {
      const ring = link.view.ring()
      if (ring !== undefined && !ring.members.some((m) => m.id === nodeId) && link.view.move() === undefined) {
        return { nodeId, ringVersion: ring.version, durationMs: Date.now() - started }
      }
      // Another decommission asked for meanwhile took every other member: the leader refuses this
      // one (and clears it) rather than leave the cluster without a member.
      if (ring?.members.every((m) => m.id === nodeId || m.state === 'leaving')) {
        throw ValidationError.field('node_id', `${nodeId} is the last member left; a cluster cannot lose it`)
      }
      if (ctx?.signal?.aborted) {
        throw ctx.signal.reason instanceof Error
          ? ctx.signal.reason
          : new DeadlineError('the decommission was cancelled')
      }
      await new Promise((resolve) => setTimeout(resolve, DECOMMISSION_POLL_MS))
    }
  }

  properties(): Promise<Record<string, number>> {
    return this.local.properties?.() ?? Promise.resolve({})
  }

  /**
   * Live points of the writes this node's engine stores. On a cluster a write reaches the nodes
   * that own its series, so a subscription on one node sees only those series' points: refuse it
   * rather than answer with silent gaps, until subscriptions fan out.
   */
  subscribe(selector: Selector, listener: PointsListener): Subscription {
    void selector
    void listener
    throw new UnavailableError('Subscribe is not available on a cluster yet; subscribe on a single node')
  }

  clusterInfo(): ClusterInfo {
    const state = this.state()
    const healthy = this.linked().view.healthyIds()
    const leader = this.linked().view.leaderId()
    const shares = state.ring.ownership(1)
    const hints = this.hintBacklog()
    const move = this.linked().view.move()
    return {
      ringVersion: state.snapshot.version,
      replicationFactor: state.rf,
      nodes: state.snapshot.members.map((m) => {
        const info = this.nodeInfo(m, healthy, leader, shares, hints)
        // A joined node stays marked until the old owners have dropped its ranges.
        if (move === undefined || !move.nodes.includes(m.id)) return info
        const { phase, rangesTotal, rangesDone, pointsMoved } = move
        return { ...info, move: { phase, rangesTotal, rangesDone, pointsMoved } }
      }),
    }
  }

  locate(metric: string, tags: readonly Tag[]): ClusterNodeInfo[] {
    const state = this.state()
    const key = seriesKeyOf(metric, tags)
    const healthy = this.linked().view.healthyIds()
    const leader = this.linked().view.leaderId()
    const shares = state.ring.ownership(1)
    const hints = this.hintBacklog()
    return state.ring
      .owners(this.tokens.of(key), state.rf)
      .map((id) => this.nodeInfo(state.byId.get(id)!, healthy, leader, shares, hints))
  }

  private nodeInfo(
    m: MemberInfo,
    healthy: ReadonlySet<string>,
    leader: string | undefined,
    shares: ReadonlyMap<string, number>,
    hints: ReadonlyMap<string, number>,
  ): ClusterNodeInfo {
    return {
      id: m.id,
      address: m.grpcAddress,
      peerAddress: m.peerAddress,
      healthy: healthy.has(m.id) || m.id === this.selfId,
      lifecycle: m.state,
      share: shares.get(m.id) ?? 0,
      leader: m.id === leader,
      hintsPending: hints.get(m.id) ?? 0,
    }
  }

  /** Hints this node keeps per owner. */
  private hintBacklog(): ReadonlyMap<string, number> {
    return new Map((this.link?.handoff?.figures() ?? []).map((h) => [h.peer, h.backlog]))
  }
}
