import { join } from 'node:path'
import { AntiEntropy } from '../cluster/anti-entropy.js'
import { ClusterEngine, type ClusterView, type RingSnapshot } from '../cluster/cluster-engine.js'
import { HintStore } from '../cluster/hint-store.js'
import { HintedHandoff } from '../cluster/hinted-handoff.js'
import { LeaderElection } from '../cluster/leader.js'
import { Membership, type RingState, StartRefusedError } from '../cluster/membership.js'
import type { PeerKey } from '../cluster/peer-key.js'
import { peerService } from '../cluster/peer-service.js'
import { MoveWorker } from '../cluster/rebalance.js'
import { RingLeader } from '../cluster/ring-leader.js'
import { RING_FILE, RingFile, RingRestore } from '../cluster/ring-restore.js'
import { SeriesTokens } from '../cluster/shard-filter.js'
import { ZmqPeerTransport } from '../cluster/zmq-peer-transport.js'
import type { Logger } from '../engine/config.js'
import type { ShardEngine } from '../engine/shard.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import { UnavailableError } from '../model/errors.js'
import { HybridLogicalClock } from '../model/hlc.js'
import type { WriteLimits } from '../model/limits.js'
import type { ConsistencyLevel } from '../model/types.js'
import { splitHostPort } from '../server/transport.js'
import { UsageError } from './args.js'
import { checkDataFolder } from './node-identity.js'

export interface ClusterServeOptions {
  readonly nodeId: string | undefined
  readonly peerListen: string | undefined
  /** The file of the cluster's peer key (--peer-key); absent: plain ZeroMQ. */
  readonly peerKeyFile: string | undefined
  readonly advertise: string | undefined
  readonly consulUrl: string
  readonly consulToken: string | undefined
  readonly clusterName: string
  readonly replicationFactor: number
  readonly vnodes: number
  readonly peerTimeoutMs: number
  /** The level of a write that asks for none (CONSISTENCY_UNSPECIFIED): --write-consistency, default quorum. */
  readonly writeConsistency: ConsistencyLevel
  /** How long a read waits for one replica before it asks the next, in ms: --read-timeout, default 1 s. */
  readonly readTimeoutMs: number
  /** How long writes for an owner that is down are kept as hints for it, in ms: --hint-window, default 3 h. */
  readonly hintWindowMs: number
  /** The most bytes of hints a node keeps for owners that are down: --hint-max-bytes, default 1 GiB. */
  readonly hintMaxBytes: number
  /** How often a background anti-entropy repair pass starts, in ms: --repair-interval, default 10 min. */
  readonly repairIntervalMs: number
  /** How long a member may be down before the leader removes it, in ms; 0 never: --dead-node-timeout. */
  readonly deadNodeTimeoutMs: number
  /** Members the restore of a kept ring does not wait for while they are down: --restore-ring-without. */
  readonly restoreRingWithout: readonly string[]
  /** TTL of the leader's Consul session, in ms: --leader-ttl, default 10 s. */
  readonly leaderTtlMs: number
  /** Lock-delay of the leader lock, in ms: --leader-lock-delay, default 5 s. */
  readonly leaderLockDelayMs: number
}

export interface ClusterNode {
  readonly engine: ClusterEngine
  /**
   * Binds the peer socket, registers in Consul and joins the ring, once gRPC is bound at `grpcAddress`;
   * call once. A node that joined on its kept ring while Consul could not be reached registers
   * later: `failed` hears a refusal then (this node's id in use elsewhere, say), and the node must stop.
   */
  join(grpcAddress: string, failed: (err: Error) => void): Promise<void>
  /** Deregisters from Consul and closes the peer sockets. */
  stop(): Promise<void>
}

function isShardEngine(engine: StorageEngine): engine is StorageEngine & ShardEngine {
  const e = engine as Partial<ShardEngine>
  return (
    typeof e.queryShard === 'function' &&
    typeof e.queryPartials === 'function' &&
    typeof e.digestShard === 'function' &&
    typeof e.readShard === 'function' &&
    typeof e.dropShard === 'function'
  )
}

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]'])

/**
 * The ZeroMQ address a node listens on for its peers: --peer-listen, else the host of its gRPC
 * address and the port after the advertised gRPC port.
 */
export function peerListenOf(options: ClusterServeOptions, grpcAddress: string): string {
  if (options.peerListen !== undefined) return options.peerListen
  const { port } = splitHostPort(options.advertise ?? grpcAddress)
  return `${splitHostPort(grpcAddress).host}:${port + 1}`
}

/** The node's ring view through its membership: the ring as last known, the healthy set, the leader. */
function viewOf(membership: Membership): ClusterView {
  let last: RingState | undefined
  let snapshot: RingSnapshot | undefined
  return {
    ring: () => {
      const ring = membership.ring()
      if (ring !== last) {
        last = ring
        snapshot = ring === undefined ? undefined : { ...ring, members: ring.members.map((m) => ({ ...m })) }
      }
      return snapshot
    },
    healthyIds: () => new Set(membership.healthy().keys()),
    leaderId: () => membership.meta().leader?.id,
    move: () => membership.meta().move,
    consul: () => {
      const state = membership.consulState()
      return { reachable: state.reachable, outages: state.outages }
    },
  }
}

/**
 * The integrated edition's node: the cluster engine over the local engine, the ZeroMQ transport
 * that serves peers from the local engine, and the Consul membership that gives the ring.
 */
export function createClusterNode(
  local: StorageEngine,
  options: ClusterServeOptions,
  engineLimits: { readonly limits: WriteLimits; readonly maxPointsPerQuery: number },
  logger: Logger,
  dataDir: string,
  /** Whether this start created the database in dataDir. */
  newDataFolder: boolean,
  /** The key read from options.peerKeyFile. */
  peerKey: PeerKey | undefined,
): ClusterNode {
  if (!isShardEngine(local)) {
    throw new UsageError('--cluster needs an engine that reads by shard, such as the basic engine')
  }
  // One token cache for the node: its own writes and reads, and the reads its peers send it.
  const tokens = new SeriesTokens()
  // The write-version clock: versions of the writes this node coordinates, past every version it receives.
  const clock = new HybridLogicalClock()
  const engine = new ClusterEngine(
    local,
    {
      limits: engineLimits.limits,
      maxPointsPerQuery: engineLimits.maxPointsPerQuery,
      peerTimeoutMs: options.peerTimeoutMs,
      writeConsistency: options.writeConsistency,
      readTimeoutMs: options.readTimeoutMs,
    },
    logger,
    tokens,
    clock,
  )
  let transport: ZmqPeerTransport | undefined
  let membership: Membership | undefined
  let handoff: HintedHandoff | undefined
  let repair: AntiEntropy | undefined
  let election: LeaderElection | undefined
  let leader: RingLeader | undefined
  let worker: MoveWorker | undefined
  let restore: RingRestore | undefined
  let stopping = false
  const ringFile = new RingFile(join(dataDir, RING_FILE), logger)
  return {
    engine,
    async join(grpcAddress, failed) {
      const advertise = options.advertise ?? grpcAddress
      const { host } = splitHostPort(advertise)
      if (WILDCARDS.has(host)) {
        throw new UsageError(`--advertise is needed when --listen is ${grpcAddress}: other nodes cannot dial ${host}`)
      }
      const nodeId = options.nodeId ?? advertise
      const claim = await checkDataFolder(dataDir, options.clusterName, nodeId)
      // A former member's last ring, for the day Consul loses its own (see RingRestore).
      const kept =
        claim === undefined
          ? await ringFile.load().catch((err: unknown) => {
              logger.warn({ err: (err as Error).message }, 'ignoring the ring kept in the data folder')
              return undefined
            })
          : undefined
      const peerListen = peerListenOf(options, grpcAddress)
      transport = new ZmqPeerTransport({
        nodeId,
        listen: peerListen,
        logger,
        // Answers carry the newest ring version this node knows, the kept one too (see RingRestore).
        ringVersion: () => Math.max(engine.ringVersion(), kept?.version ?? 0),
        ...(peerKey === undefined ? {} : { key: peerKey }),
      })
      const bound = await transport.listen(
        peerService(
          local,
          async (body, ctx) => {
            if (repair === undefined) throw new UnavailableError('this node has not joined the cluster yet')
            return repair.runForPeer(body, ctx)
          },
          clock,
          () => new Map((handoff?.figures() ?? []).filter((h) => h.backlog > 0).map((h) => [h.peer, h.backlog])),
          (kind, body, term, ctx) => {
            if (worker === undefined) throw new UnavailableError('this node has not joined the cluster yet')
            return worker.handle(kind, body, term, ctx)
          },
          () => engine.ownedFilter(),
        ),
      )
      const boundPeer = splitHostPort(bound)
      const peerAddress = WILDCARDS.has(boundPeer.host) ? `${host}:${boundPeer.port}` : bound
      membership = new Membership(
        {
          consulUrl: options.consulUrl,
          token: options.consulToken,
          clusterName: options.clusterName,
          self: { id: nodeId, grpcAddress: advertise, peerAddress },
          expected: { replicationFactor: options.replicationFactor, vnodes: options.vnodes },
          newDataFolder,
          // The folder records the node id once it was an active member (see checkDataFolder).
          formerMember: claim === undefined,
        },
        logger,
      )
      const members = membership
      members.onRing((ring) => ringFile.save(ring))
      const view = viewOf(membership)
      // The writes owners missed wait in their own database beside the node's data.
      const hints = await HintStore.open({
        dir: join(dataDir, 'hints'),
        maxBytes: options.hintMaxBytes,
        maxAgeMs: options.hintWindowMs,
        onDrop: (drop) => handoff?.dropped(drop),
      })
      const peerTransport = transport
      handoff = new HintedHandoff(
        hints,
        peerTransport,
        {
          endpoint: (id) => {
            const member = view.ring()?.members.find((m) => m.id === id)
            return member === undefined ? undefined : { id, address: member.peerAddress }
          },
          healthy: (id) => view.healthyIds().has(id),
          ringVersion: () => engine.ringVersion(),
        },
        { timeoutMs: options.peerTimeoutMs, limits: engineLimits.limits },
        logger,
      )
      handoff.start()
      repair = new AntiEntropy(
        local,
        { selfId: nodeId, transport, view, handoff },
        { intervalMs: options.repairIntervalMs, peerTimeoutMs: options.peerTimeoutMs, limits: engineLimits.limits },
        logger,
      )
      repair.start()
      const moves = new MoveWorker(
        engine,
        local,
        repair,
        () => view.ring(),
        () => members.highestTerm(),
        logger,
      )
      worker = moves
      election = new LeaderElection(
        members.client,
        {
          clusterName: options.clusterName,
          selfId: nodeId,
          termFloor: () => members.highestTerm(),
          mayLead: () => members.mayLead(),
        },
        { ttlMs: options.leaderTtlMs, lockDelayMs: options.leaderLockDelayMs },
        logger,
      )
      leader = new RingLeader(
        {
          selfId: nodeId,
          membership: members,
          election,
          transport,
          local: (kind, body, term, signal) => moves.handle(kind, body, term, { signal }),
          hints: () => new Map((handoff?.figures() ?? []).map((h) => [h.peer, h.backlog])),
        },
        {
          replicationFactor: options.replicationFactor,
          vnodes: options.vnodes,
          deadNodeTimeoutMs: options.deadNodeTimeoutMs,
        },
        logger,
      )
      engine.attach({
        selfId: nodeId,
        transport,
        view,
        handoff,
        repair,
        requestDecommission: (id, signal) => members.requestDecommission(id, signal),
        membershipFigures: () => {
          const meta = members.meta()
          const led = leader?.figures()
          return {
            leader: meta.leader?.id === nodeId,
            leaderTerm: meta.leader?.term ?? 0,
            fencedRingChanges: members.fencedRingChanges(),
            movingMembers: members.ring()?.members.filter((m) => m.state !== 'active').length ?? 0,
            changeInProgress: meta.move !== undefined,
            moveRangesTotal: meta.move?.rangesTotal ?? 0,
            moveRangesDone: meta.move?.rangesDone ?? 0,
            movePoints: meta.move?.pointsMoved ?? 0,
            changesCompleted: led?.changesCompleted ?? 0,
            pointsMoved: led?.pointsMoved ?? 0,
            deadNodesRemoved: led?.nodesRemovedDead ?? 0,
          }
        },
      })
      // Registration waits for Consul while it cannot be reached, and fails on anything it refuses.
      const ringLeader = leader
      const leaderElection = election
      const registered = members.start().then(
        () => {
          ringLeader.start()
          leaderElection.start()
        },
        (err: unknown) => {
          // The id and the folder are the user's settings: a usage error, exit 2.
          throw err instanceof StartRefusedError ? new UsageError(err.message, { cause: err }) : err
        },
      )
      // Meanwhile a former member may take its kept ring back (without Consul, if it cannot be reached).
      if (kept !== undefined) {
        restore = new RingRestore(
          { selfId: nodeId, membership: members, transport, kept, without: new Set(options.restoreRingWithout) },
          logger,
        )
        restore.start()
      }
      // The leader adds this node once it sees it healthy: the first node of a cluster adds itself.
      // A node that took its kept ring back while Consul cannot be reached is a member before it
      // registers; a refusal once Consul answers then ends it through failed.
      let joined = false
      const ring = await new Promise<RingState>((resolve, reject) => {
        registered.catch((err: unknown) => {
          if (!joined) reject(err)
          else if (!stopping) failed(err instanceof Error ? err : new Error(String(err)))
        })
        // Joined as the ring lists the node, not when the await below resumes: a refusal in between
        // would otherwise be lost on a promise already resolved.
        members.awaitMember().then((state) => {
          joined = true
          resolve(state)
        }, reject)
      })
      // An active member: from here the folder is this node's. A joining node that is taken out
      // again before it becomes active may come back on its folder and join anew.
      if (claim !== undefined) {
        let claimed = false
        const claimOnceActive = (): void => {
          const self = members.ring()?.members.find((m) => m.id === nodeId)
          if (claimed || self?.state !== 'active') return
          claimed = true
          claim().catch((err: unknown) => logger.error({ err }, 'cannot record the node in its data folder'))
        }
        members.onRing(claimOnceActive)
        claimOnceActive()
      }
      logger.info({ node: nodeId, ringVersion: ring.version, members: ring.members.length }, 'joined the cluster')
    },
    async stop() {
      stopping = true
      // Giving up the lock first lets another node lead at once, without waiting for the TTL.
      await restore?.stop()
      await election?.stop()
      await leader?.stopped()
      await repair?.close()
      await membership?.stop()
      // Closing the transport first fails a delivery under way at once, so the hints close promptly.
      await transport?.close()
      await handoff?.close()
      await ringFile.flushed()
    },
  }
}
