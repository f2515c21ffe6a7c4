/**
 * Anti-entropy repair: replicas converge without anyone running a command. Each node repairs the
 * token ranges for which it is the first healthy owner, and every range of an owner whose hints it
 * had to drop. For those ranges it asks each healthy owner for a digest per (range, hour), and for
 * each block whose digests differ it reads the block's points from the owners that hold any, forms
 * their union by timestamp and writes every owner the points it lacks. Where copies of a point
 * differ, the one with the highest write version wins (conflict.ts), and every point is written
 * with the version of the copy it came from, so that each owner keeps resolving later writes of it
 * as the others do. Identical blocks cost a digest each and are never streamed; memory holds one
 * small batch of blocks at a time.
 */
import { PeerKind } from '../../gen/v3storage/internal/v1/peer.js'
import {
  PeerRepairDigestRequest,
  PeerRepairDigestResponse,
  PeerRepairReadRequest,
  PeerRepairReadResponse,
  PeerRepairRunRequest,
  PeerRepairRunResponse,
} from '../../gen/v3storage/internal/v1/peer_repair.js'
import type { Logger } from '../engine/config.js'
import { DIGEST_BLOCK_MS } from '../engine/digest.js'
import { Mutex } from '../engine/mutex.js'
import type { ShardEngine } from '../engine/shard.js'
import type {
  CallContext,
  ClusterRepairReport,
  RepairFigures,
  RepairPassReport,
  RepairPeerFigures,
  StorageEngine,
} from '../engine/storage-engine.js'
import { DeadlineError, UnavailableError } from '../model/errors.js'
import type { WriteLimits } from '../model/limits.js'
import { seriesKeyOf } from '../model/series-key.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS } from '../model/timestamps.js'
import type { SeriesPoints } from '../model/types.js'
import type { ClusterView, RingSnapshot } from './cluster-engine.js'
import { decodeVersionsResponse, encodeVersionsRequest, pickWinner, sameBits, type VersionsQuery } from './conflict.js'
import type { HintedHandoff } from './hinted-handoff.js'
import { decodePeerSeries, encodePeerWrite, type PeerWriteEntry } from './peer-codec.js'
import type { PeerTransport } from './peer-transport.js'
import { encodeRangeList, rangeBuckets } from './repair-service.js'
import { Ring, type TokenRange, type TokenSpan } from './ring.js'
import { encodeSpans, spanFilter } from './shard-filter.js'

/**
 * How far behind now a background pass stops: points newer than this may still be on their way to
 * some owners (a write in flight, hints being delivered), and comparing them would stream what
 * replication is about to deliver anyway. A repair run on demand covers everything up to now.
 */
export const REPAIR_SETTLE_MS = 60_000
/** Differing blocks of one hour and one owner set read and written together. */
const RANGES_PER_BATCH = 16
/** Batches a membership change's copy (pull) reads and writes at once. */
const PULL_BATCHES_IN_FLIGHT = 4
/** Points and series per repair write at most, well inside the default write limits. */
const POINTS_PER_WRITE = 50_000
const SERIES_PER_WRITE = 1_000
/** How long a digest or a read of a repair may take a peer: digests of a large node take a while. */
const REPAIR_REQUEST_TIMEOUT_MS = 10 * 60_000
/** How long the node asked for a repair waits for the others' passes, when the call has no deadline. */
const REPAIR_RUN_TIMEOUT_MS = 60 * 60_000

export interface AntiEntropyOptions {
  /** How often a background pass starts, in milliseconds: --repair-interval. */
  readonly intervalMs: number
  /** How long a peer has to answer a write, in milliseconds. */
  readonly peerTimeoutMs: number
  /** The owners' write limits: a repair write stays within them. */
  readonly limits: WriteLimits
}

/** What a node repairs with: its id, its peers, its view of the cluster and its hints. */
export interface AntiEntropyLink {
  readonly selfId: string
  readonly transport: PeerTransport
  readonly view: ClusterView
  readonly handoff?: HintedHandoff
}

/** One range a pass repairs, and its healthy owners (this node among them or not). */
interface PassRange {
  readonly range: TokenRange
  readonly participants: readonly string[]
}

/** Blocks of one hour and one owner set that differ, and the owners that hold any points of them. */
interface Batch {
  readonly hour: number
  readonly participants: readonly string[]
  readonly ranges: TokenRange[]
  readonly holders: Set<string>
}

/** A node's copy of one block batch: its series by canonical key. */
type Copy = Map<string, SeriesPoints>

/** The copies of one point over the nodes: each distinct value, the nodes holding it, and the winner once known. */
interface UnionPoint {
  readonly candidates: { readonly value: number; readonly nodes: string[] }[]
  /** The winning value, its version and the first node (in participant order) that holds it. */
  winner?: { readonly value: number; readonly version: number; readonly from: string }
}

class PassTally {
  rangesCompared = 0
  rangesRepaired = 0
  readonly sent = new Map<string, number>()
  readonly received = new Map<string, number>()

  add(map: Map<string, number>, peer: string, n: number): void {
    if (n > 0) map.set(peer, (map.get(peer) ?? 0) + n)
  }

  peers(): RepairPeerFigures[] {
    const ids = [...new Set([...this.sent.keys(), ...this.received.keys()])].sort()
    return ids.map((peer) => ({
      peer,
      pointsSent: this.sent.get(peer) ?? 0,
      pointsReceived: this.received.get(peer) ?? 0,
    }))
  }
}

function sum(map: ReadonlyMap<string, number>): number {
  let total = 0
  for (const n of map.values()) total += n
  return total
}

function keyOf(series: SeriesPoints): string {
  return seriesKeyOf(series.metric, series.tags)
}

/**
 * Runs this node's repair passes, one at a time: in the background every intervalMs over settled
 * data, and at once when asked (repairCluster, or a peer's PEER_KIND_REPAIR_RUN) over all data.
 */
export class AntiEntropy {
  private readonly passes = new Mutex()
  private timer: ReturnType<typeof setTimeout> | undefined
  private readonly stopping = new AbortController()
  private background: Promise<void> | undefined
  private ringCache: { snapshot: RingSnapshot; ring: Ring; rf: number } | undefined
  private readonly totals = {
    passes: 0,
    failedPasses: 0,
    rangesCompared: 0,
    rangesRepaired: 0,
    lastPassMs: 0,
    lastSuccessMs: 0,
  }
  private readonly peerTotals = new Map<string, { pointsSent: number; pointsReceived: number }>()

  constructor(
    private readonly local: StorageEngine & ShardEngine,
    private readonly link: AntiEntropyLink,
    private readonly options: AntiEntropyOptions,
    private readonly logger: Logger,
  ) {}

  /** Starts the background passes: the first one intervalMs from now. */
  start(): void {
    this.schedule()
  }

  /** Stops the background passes; a pass under way is cancelled and waited for. */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.stopping.abort(new UnavailableError('the node is stopping'))
    await this.background
  }

  figures(): RepairFigures {
    return {
      ...this.totals,
      peers: [...this.peerTotals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([peer, p]) => ({ peer, ...p })),
    }
  }

  private schedule(): void {
    if (this.stopping.signal.aborted) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.background = this.pass(Date.now() - REPAIR_SETTLE_MS, this.stopping.signal).then(
        (report) => {
          if (report.rangesRepaired > 0) this.logger.info({ ...report }, 'background repair moved points')
        },
        (err: unknown) => {
          if (!this.stopping.signal.aborted) this.logger.warn({ err }, 'background repair pass failed')
        },
      )
      void this.background.finally(() => this.schedule())
    }, this.options.intervalMs)
    this.timer.unref()
  }

  /** Runs one pass over the data before endMs once the pass under way, if any, is done. */
  async pass(endMs: number, signal: AbortSignal | undefined): Promise<RepairPassReport> {
    return this.passes.run(async () => {
      checkAborted(signal)
      const started = Date.now()
      let report: RepairPassReport | undefined
      try {
        report = await this.runPass(endMs, signal, started)
        return report
      } finally {
        this.totals.passes++
        this.totals.lastPassMs = Date.now() - started
        if (report === undefined) this.totals.failedPasses++
        else {
          this.totals.lastSuccessMs = Date.now()
          this.totals.rangesCompared += report.rangesCompared
          this.totals.rangesRepaired += report.rangesRepaired
          for (const p of report.peers) {
            const total = this.peerTotals.get(p.peer) ?? { pointsSent: 0, pointsReceived: 0 }
            total.pointsSent += p.pointsSent
            total.pointsReceived += p.pointsReceived
            this.peerTotals.set(p.peer, total)
          }
        }
      }
    })
  }

  /** Answers PEER_KIND_REPAIR_RUN: a pass over the data before the request's end_ms. */
  async runForPeer(body: Uint8Array, ctx: CallContext): Promise<Uint8Array> {
    const request = PeerRepairRunRequest.decode(body)
    const report = await this.pass(request.endMs, ctx.signal)
    return PeerRepairRunResponse.encode({
      rangesCompared: report.rangesCompared,
      rangesRepaired: report.rangesRepaired,
      pointsSent: report.pointsSent,
      pointsReceived: report.pointsReceived,
      durationMs: report.durationMs,
      peers: report.peers.map((p) => ({ ...p })),
    }).finish()
  }

  /**
   * Runs a pass on every healthy member now, over every point before now, and waits for all of
   * them. Members that are down are named in the report and left out; a pass that fails fails the
   * whole with UNAVAILABLE naming its node.
   */
  async repairCluster(ctx?: CallContext): Promise<ClusterRepairReport> {
    const started = Date.now()
    const endMs = started
    const snapshot = this.snapshot()
    const healthy = this.healthy()
    const up = snapshot.members.filter((m) => healthy.has(m.id))
    const downNodes = snapshot.members
      .filter((m) => !healthy.has(m.id))
      .map((m) => m.id)
      .sort()
    const body = PeerRepairRunRequest.encode({ endMs }).finish()
    const settled = await Promise.allSettled(
      up.map(async (member): Promise<RepairPassReport> => {
        if (member.id === this.link.selfId) return this.pass(endMs, ctx?.signal)
        const reply = await this.link.transport.request(
          { id: member.id, address: member.peerAddress },
          {
            kind: PeerKind.PEER_KIND_REPAIR_RUN,
            body,
            ringVersion: snapshot.version,
            timeoutMs: REPAIR_RUN_TIMEOUT_MS,
            signal: ctx?.signal,
          },
        )
        const r = PeerRepairRunResponse.decode(reply.body)
        return {
          node: member.id,
          rangesCompared: r.rangesCompared,
          rangesRepaired: r.rangesRepaired,
          pointsSent: r.pointsSent,
          pointsReceived: r.pointsReceived,
          durationMs: r.durationMs,
          peers: r.peers.map((p) => ({ peer: p.peer, pointsSent: p.pointsSent, pointsReceived: p.pointsReceived })),
        }
      }),
    )
    const failures: string[] = []
    const nodes: RepairPassReport[] = []
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') nodes.push(s.value)
      else failures.push(`${up[i]!.id} (${s.reason instanceof Error ? s.reason.message : String(s.reason)})`)
    })
    if (failures.length > 0) {
      const first = settled.find((s) => s.status === 'rejected')
      if (first?.status === 'rejected' && first.reason instanceof DeadlineError) throw first.reason
      throw new UnavailableError(`cannot repair the cluster: the pass failed on ${failures.join('; ')}`)
    }
    nodes.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
    return { nodes, downNodes, endMs, durationMs: Date.now() - started }
  }

  private snapshot(): RingSnapshot {
    const snapshot = this.link.view.ring()
    if (snapshot === undefined) throw new UnavailableError('this node has not joined the cluster yet')
    return snapshot
  }

  private healthy(): Set<string> {
    const healthy = new Set(this.link.view.healthyIds())
    healthy.add(this.link.selfId)
    return healthy
  }

  private ringOf(snapshot: RingSnapshot): { ring: Ring; rf: number } {
    if (this.ringCache?.snapshot !== snapshot) {
      const ring = new Ring(
        snapshot.members.map((m) => ({ id: m.id, tokens: m.tokens })),
        snapshot.version,
      )
      const rf = Math.max(1, Math.min(snapshot.replicationFactor, snapshot.members.length))
      this.ringCache = { snapshot, ring, rf }
    }
    return this.ringCache
  }

  /**
   * Copies the data of token ranges this node gains in a membership change from the node named for
   * each, as a repair of just those ranges between the two does: digests per (range, hour), then
   * only the blocks that differ, read in batches and written here with their copies' write
   * versions. Blocks the dual writes of the change already brought cost a digest and move nothing.
   * Runs between repair passes, never beside one. Returns the points written here and the blocks
   * that differed.
   */
  async pull(
    gains: readonly { readonly span: TokenSpan; readonly source: string }[],
    signal: AbortSignal | undefined,
  ): Promise<{ points: number; blocks: number }> {
    return this.passes.run(async () => {
      const self = this.link.selfId
      const snapshot = this.snapshot()
      const ranges: PassRange[] = [...gains]
        .sort((a, b) => a.span.start - b.span.start)
        .map((g) => {
          const participants = [g.source, self]
          return { range: { start: g.span.start, end: g.span.end, owners: participants }, participants }
        })
      const tally = new PassTally()
      // Every point, future timestamps included: a change moves all of a range's data.
      const endMs = MAX_TIMESTAMP_MS + 1
      const queue = await this.compare(snapshot.version, ranges, endMs, signal, tally)
      // Each batch waits mostly on the source's read: several in flight keep both nodes busy.
      const worker = async (): Promise<void> => {
        for (let batch = queue.shift(); batch !== undefined; batch = queue.shift()) {
          checkAborted(signal)
          try {
            await this.repairBatch(snapshot, batch, endMs, signal, tally)
          } catch (err) {
            queue.length = 0
            throw err
          }
        }
      }
      await Promise.all(Array.from({ length: PULL_BATCHES_IN_FLIGHT }, worker))
      return { points: sum(tally.received), blocks: tally.rangesRepaired }
    })
  }

  private async runPass(endMs: number, signal: AbortSignal | undefined, started: number): Promise<RepairPassReport> {
    const self = this.link.selfId
    const snapshot = this.snapshot()
    if (snapshot.members.some((m) => m.state !== 'active')) {
      // Owners change during a membership change; the change copies the ranges that move itself.
      throw new UnavailableError('members are joining or leaving; repair runs once the change is done')
    }
    const { ring, rf } = this.ringOf(snapshot)
    const healthy = this.healthy()
    // Owners whose hints were dropped, with the drop count now: a drop during the pass keeps the mark.
    const marked = new Map(
      (this.link.handoff?.figures() ?? []).filter((h) => h.needsRepair).map((h) => [h.peer, h.dropped]),
    )
    const uncovered = new Set<string>()
    const ranges: PassRange[] = []
    for (const range of ring.ranges(rf)) {
      const participants = range.owners.filter((id) => healthy.has(id))
      const markedOwners = range.owners.filter((id) => marked.has(id))
      if (participants.length < 2) {
        for (const id of markedOwners) uncovered.add(id)
        continue
      }
      if (participants[0] === self || markedOwners.some((id) => healthy.has(id))) ranges.push({ range, participants })
    }
    const tally = new PassTally()
    if (ranges.length > 0 && endMs > MIN_TIMESTAMP_MS) {
      const differing = await this.compare(snapshot.version, ranges, endMs, signal, tally)
      for (const batch of differing) {
        checkAborted(signal)
        await this.repairBatch(snapshot, batch, endMs, signal, tally)
      }
    }
    // Every range of a marked owner that is up was compared and repaired: its mark can go.
    for (const [target, dropped] of marked) {
      if (!healthy.has(target) || uncovered.has(target)) continue
      const now = this.link.handoff?.figures().find((h) => h.peer === target)
      if (now !== undefined && now.dropped === dropped) await this.link.handoff?.clearRepair(target)
    }
    const pointsSent = sum(tally.sent)
    const pointsReceived = sum(tally.received)
    return {
      node: self,
      rangesCompared: tally.rangesCompared,
      rangesRepaired: tally.rangesRepaired,
      pointsSent,
      pointsReceived,
      durationMs: Date.now() - started,
      peers: tally.peers(),
    }
  }

  /**
   * Asks every participant for its digests of the ranges it owns, compares them per (range, hour)
   * and returns the blocks that differ, grouped by hour and owner set into small batches.
   */
  private async compare(
    ringVersion: number,
    ranges: readonly PassRange[],
    endMs: number,
    signal: AbortSignal | undefined,
    tally: PassTally,
  ): Promise<Batch[]> {
    const byNode = new Map<string, number[]>()
    ranges.forEach((r, i) => {
      for (const id of r.participants) {
        const list = byNode.get(id)
        if (list === undefined) byNode.set(id, [i])
        else list.push(i)
      }
    })
    // Per block "range:hour", the digest each participant has (absent: no points there).
    const blocks = new Map<string, Map<string, string>>()
    await Promise.all(
      [...byNode].map(async ([id, indexes]) => {
        const spans = indexes.map((i) => ranges[i]!.range)
        const digests = await this.digestsOf(ringVersion, id, spans, endMs, signal)
        for (const d of digests) {
          const index = indexes[d.range]
          if (index === undefined) throw new UnavailableError(`node ${id} answered a digest for range ${d.range}`)
          const key = `${index}:${d.blockStartMs}`
          let holders = blocks.get(key)
          if (holders === undefined) {
            holders = new Map()
            blocks.set(key, holders)
          }
          holders.set(id, d.digest)
        }
      }),
    )
    tally.rangesCompared += ranges.length
    const groups = new Map<string, Batch>()
    const batches: Batch[] = []
    for (const [key, holders] of blocks) {
      const [indexText, hourText] = key.split(':') as [string, string]
      const pass = ranges[Number(indexText)]!
      const digests = pass.participants.map((id) => holders.get(id))
      if (digests.every((d) => d !== undefined && d === digests[0])) continue
      tally.rangesRepaired++
      const hour = Number(hourText)
      const groupKey = `${hour}:${pass.participants.join(',')}`
      let group = groups.get(groupKey)
      if (group === undefined || group.ranges.length >= RANGES_PER_BATCH) {
        group = { hour, participants: pass.participants, ranges: [], holders: new Set() }
        groups.set(groupKey, group)
        batches.push(group)
      }
      group.ranges.push(pass.range)
      for (const id of holders.keys()) group.holders.add(id)
    }
    return batches
  }

  /** The digests a node holds of `spans` before endMs, each numbered by its span's index. */
  private async digestsOf(
    ringVersion: number,
    id: string,
    spans: readonly TokenRange[],
    endMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ range: number; blockStartMs: number; digest: string }[]> {
    if (id === this.link.selfId) {
      const digests = await this.local.digestShard(rangeBuckets(spans), MIN_TIMESTAMP_MS, endMs, {
        signal,
      })
      return digests.map((d) => ({ range: d.bucket, blockStartMs: d.blockStartMs, digest: d.digest.toString(16) }))
    }
    const body = PeerRepairDigestRequest.encode({
      ranges: Buffer.from(encodeRangeList(spans)),
      startMs: MIN_TIMESTAMP_MS,
      endMs,
    }).finish()
    const reply = await this.request(ringVersion, id, PeerKind.PEER_KIND_REPAIR_DIGEST, body, signal)
    return PeerRepairDigestResponse.decode(reply).digests.map((d) => ({
      range: d.range,
      blockStartMs: d.blockStartMs,
      digest: d.digest.length === 8 ? d.digest.readBigUInt64LE(0).toString(16) : `bad:${d.digest.toString('hex')}`,
    }))
  }

  private async request(
    ringVersion: number,
    id: string,
    kind: PeerKind,
    body: Uint8Array,
    signal: AbortSignal | undefined,
    timeoutMs = REPAIR_REQUEST_TIMEOUT_MS,
  ): Promise<Uint8Array> {
    const member = this.link.view.ring()?.members.find((m) => m.id === id)
    if (member === undefined) throw new UnavailableError(`node ${id} left the ring during the repair`)
    const reply = await this.link.transport.request(
      { id, address: member.peerAddress },
      { kind, body, ringVersion, timeoutMs, signal },
    )
    return reply.body
  }

  /**
   * Repairs one batch of differing blocks: reads the copies of the owners that hold any points,
   * forms their union by timestamp (conflicts settled by write version, see settle) and writes
   * each owner what it lacks or holds with another value, with the winning copy's version.
   */
  private async repairBatch(
    snapshot: RingSnapshot,
    batch: Batch,
    passEndMs: number,
    signal: AbortSignal | undefined,
    tally: PassTally,
  ): Promise<void> {
    const self = this.link.selfId
    const startMs = Math.max(batch.hour, MIN_TIMESTAMP_MS)
    const endMs = Math.min(batch.hour + DIGEST_BLOCK_MS, passEndMs)
    const copies = new Map<string, Copy>()
    await Promise.all(
      batch.participants
        .filter((id) => batch.holders.has(id))
        .map(async (id) => {
          const series = await this.readBlocks(snapshot.version, id, batch.ranges, startMs, endMs, signal)
          copies.set(id, new Map(series.map((s) => [keyOf(s), s])))
        }),
    )
    // The union of every series over the copies, in participant order so that ties name the same node.
    const union = new Map<string, { series: SeriesPoints; points: Map<number, UnionPoint> }>()
    for (const id of batch.participants) {
      for (const [key, series] of copies.get(id) ?? new Map<string, SeriesPoints>()) {
        let entry = union.get(key)
        if (entry === undefined) {
          entry = { series, points: new Map() }
          union.set(key, entry)
        }
        for (let i = 0; i < series.timestamps.length; i++) {
          const ts = series.timestamps[i]!
          const value = series.values[i]!
          const known = entry.points.get(ts)
          const same = known?.candidates.find((c) => sameBits(c.value, value))
          if (known === undefined) entry.points.set(ts, { candidates: [{ value, nodes: [id] }] })
          else if (same === undefined) known.candidates.push({ value, nodes: [id] })
          else same.nodes.push(id)
        }
      }
    }
    await this.settle(snapshot.version, batch, union, signal)
    for (const id of batch.participants) {
      checkAborted(signal)
      const copy = copies.get(id)
      const lacking: PeerWriteEntry[] = []
      const sources = new Map<string, number>()
      for (const [key, { series, points }] of union) {
        const have = copy?.get(key)
        const haveValues = new Map<number, number>()
        if (have !== undefined)
          for (let i = 0; i < have.timestamps.length; i++) haveValues.set(have.timestamps[i]!, have.values[i]!)
        // The points this owner lacks or holds with another value, by the version they are written with.
        // The winners are kept as they are, not their values in a number[]: V8 quiets a signalling
        // NaN (Prometheus' staleness marker) stored into a plain array, and the copy must keep bits.
        const byVersion = new Map<number, { ts: number[]; winners: { readonly value: number }[] }>()
        for (const [t, p] of points) {
          const w = p.winner!
          const mine = haveValues.get(t)
          if (mine !== undefined && sameBits(mine, w.value)) continue
          let group = byVersion.get(w.version)
          if (group === undefined) {
            group = { ts: [], winners: [] }
            byVersion.set(w.version, group)
          }
          group.ts.push(t)
          group.winners.push(w)
          sources.set(w.from, (sources.get(w.from) ?? 0) + 1)
        }
        for (const [version, { ts, winners }] of byVersion) {
          const order = ts.map((_, i) => i).sort((a, b) => ts[a]! - ts[b]!)
          lacking.push({
            metric: series.metric,
            tags: series.tags,
            timestamps: Float64Array.from(order, (i) => ts[i]!),
            values: Float64Array.from(order, (i) => winners[i]!.value),
            ...(version > 0 ? { version } : {}),
          })
        }
      }
      if (lacking.length === 0) continue
      await this.writeTo(snapshot.version, id, lacking, signal)
      if (id === self) for (const [from, n] of sources) tally.add(tally.received, from, n)
      else tally.add(tally.sent, id, sum(sources))
    }
  }

  /**
   * Picks the winner of every point some participant lacks or holds with another value: the copy
   * with the highest write version, fetched from the nodes that hold each value (one request per
   * node), ties and unknown versions resolved by resolveConflict (conflict.ts), as QUORUM reads do.
   * Points every participant holds alike need no version and are left alone.
   */
  private async settle(
    ringVersion: number,
    batch: Batch,
    union: Map<string, { series: SeriesPoints; points: Map<number, UnionPoint> }>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const everyone = batch.participants.length
    const asks = new Map<string, { queries: VersionsQuery[]; points: UnionPoint[][] }>()
    for (const { series, points } of union.values()) {
      const perNode = new Map<string, { ts: number[]; points: UnionPoint[] }>()
      for (const [t, p] of points) {
        const only = p.candidates[0]!
        if (p.candidates.length === 1 && only.nodes.length === everyone) {
          p.winner = { value: only.value, version: 0, from: only.nodes[0]! }
          continue
        }
        for (const c of p.candidates)
          for (const node of c.nodes) {
            let list = perNode.get(node)
            if (list === undefined) {
              list = { ts: [], points: [] }
              perNode.set(node, list)
            }
            list.ts.push(t)
            list.points.push(p)
          }
      }
      for (const [node, list] of perNode) {
        let ask = asks.get(node)
        if (ask === undefined) {
          ask = { queries: [], points: [] }
          asks.set(node, ask)
        }
        ask.queries.push({ metric: series.metric, tags: series.tags, timestamps: Float64Array.from(list.ts) })
        ask.points.push(list.points)
      }
    }
    // The version each node holds of each point it was asked about.
    const held = new Map<UnionPoint, Map<string, number>>()
    await Promise.all(
      [...asks].map(async ([node, ask]) => {
        const found = await this.versionsOf(ringVersion, node, ask.queries, signal)
        ask.points.forEach((list, q) => {
          list.forEach((p, j) => {
            let byNode = held.get(p)
            if (byNode === undefined) {
              byNode = new Map()
              held.set(p, byNode)
            }
            byNode.set(node, found[q]![j]!)
          })
        })
      }),
    )
    for (const { points } of union.values()) {
      for (const p of points.values()) {
        if (p.winner !== undefined) continue
        const versions = held.get(p)
        const candidates = p.candidates.map((c) => ({
          value: c.value,
          version: Math.max(...c.nodes.map((node) => versions?.get(node) ?? 0)),
          from: c.nodes[0]!,
        }))
        p.winner = pickWinner(candidates)
      }
    }
  }

  /** The write versions a node holds of some points: the local engine, or PEER_KIND_VERSIONS. */
  private async versionsOf(
    ringVersion: number,
    id: string,
    queries: readonly VersionsQuery[],
    signal: AbortSignal | undefined,
  ): Promise<Float64Array[]> {
    if (id === this.link.selfId) {
      return Promise.all(queries.map((q) => this.local.versionsOf(q, q.timestamps, { signal })))
    }
    const reply = await this.request(
      ringVersion,
      id,
      PeerKind.PEER_KIND_VERSIONS,
      encodeVersionsRequest(queries),
      signal,
    )
    return decodeVersionsResponse(reply, queries, id)
  }

  private async readBlocks(
    ringVersion: number,
    id: string,
    ranges: readonly TokenRange[],
    startMs: number,
    endMs: number,
    signal: AbortSignal | undefined,
  ): Promise<SeriesPoints[]> {
    if (id === this.link.selfId) return this.local.readShard(spanFilter(ranges), startMs, endMs, { signal })
    const body = PeerRepairReadRequest.encode({ ranges: Buffer.from(encodeSpans(ranges)), startMs, endMs }).finish()
    const reply = await this.request(ringVersion, id, PeerKind.PEER_KIND_REPAIR_READ, body, signal)
    return PeerRepairReadResponse.decode(reply).series.map((s, i) => decodePeerSeries(s, `series[${i}]`))
  }

  /** Writes series to a node, locally or with PEER_KIND_WRITE, in writes the default limits take. */
  private async writeTo(
    ringVersion: number,
    id: string,
    series: readonly PeerWriteEntry[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    for (const chunk of writeChunks(series, this.options.limits)) {
      checkAborted(signal)
      // Repaired points were accepted by a coordinator once: NaN is not checked again (see peerService).
      if (id === this.link.selfId)
        await this.local.write({ series: chunk, precision: 'ms', acceptNaN: true, normalized: true }, { signal })
      else {
        await this.request(
          ringVersion,
          id,
          PeerKind.PEER_KIND_WRITE,
          encodePeerWrite(chunk),
          signal,
          this.options.peerTimeoutMs,
        )
      }
    }
  }
}

/** Series cut into writes of at most POINTS_PER_WRITE points and SERIES_PER_WRITE series, and within `limits`. */
function* writeChunks(series: readonly PeerWriteEntry[], limits: WriteLimits): Generator<PeerWriteEntry[]> {
  const maxPoints = Math.min(POINTS_PER_WRITE, limits.maxPointsPerRequest)
  const maxSeries = Math.min(SERIES_PER_WRITE, limits.maxSeriesPerRequest)
  let chunk: PeerWriteEntry[] = []
  let points = 0
  for (const s of series) {
    for (let from = 0; from < s.timestamps.length; from += maxPoints) {
      const to = Math.min(from + maxPoints, s.timestamps.length)
      if (chunk.length >= maxSeries || points + (to - from) > maxPoints) {
        yield chunk
        chunk = []
        points = 0
      }
      chunk.push({
        metric: s.metric,
        tags: s.tags,
        timestamps: s.timestamps.subarray(from, to),
        values: s.values.subarray(from, to),
        ...(s.version === undefined ? {} : { version: s.version }),
      })
      points += to - from
    }
  }
  if (chunk.length > 0) yield chunk
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw signal.reason instanceof Error ? signal.reason : new DeadlineError('the repair was cancelled')
  }
}
