import { join } from 'node:path'
import { AntiEntropy } from '../cluster/anti-entropy.js'
import { ClusterEngine, type ClusterView, type RingSnapshot } from '../cluster/cluster-engine.js'
import { HintStore } from '../cluster/hint-store.js'
import { HintedHandoff } from '../cluster/hinted-handoff.js'
import { Membership, type RingState } from '../cluster/membership.js'
import { peerService } from '../cluster/peer-service.js'
import { SeriesTokens } from '../cluster/shard-filter.js'
import { chooseTokens, evenTokens } from '../cluster/tokens.js'
import { ZmqPeerTransport } from '../cluster/zmq-peer-transport.js'
import type { Logger } from '../engine/config.js'
import type { ShardEngine } from '../engine/shard.js'
import type { StorageEngine } from '../engine/storage-engine.js'
import { UnavailableError } from '../model/errors.js'
import { HybridLogicalClock } from '../model/hlc.js'
import type { WriteLimits } from '../model/limits.js'
import type { ConsistencyLevel } from '../model/types.js'
import { UsageError } from './args.js'

export interface ClusterServeOptions {
  readonly nodeId: string | undefined
  readonly peerListen: string | undefined
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
}

export interface ClusterNode {
  readonly engine: ClusterEngine
  /** Binds the peer socket, registers in Consul and joins the ring, once gRPC is bound at `grpcAddress`; call once. */
  join(grpcAddress: string): Promise<void>
  /** Deregisters from Consul and closes the peer sockets. */
  stop(): Promise<void>
}

function isShardEngine(engine: StorageEngine): engine is StorageEngine & ShardEngine {
  const e = engine as Partial<ShardEngine>
  return (
    typeof e.queryShard === 'function' &&
    typeof e.queryPartials === 'function' &&
    typeof e.digestShard === 'function' &&
    typeof e.readShard === 'function'
  )
}

function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':')
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }
}

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]'])

/** The node's ring view through its membership: the ring as last known, the healthy set, no leader yet. */
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
    leaderId: () => undefined,
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
  return {
    engine,
    async join(grpcAddress) {
      const advertise = options.advertise ?? grpcAddress
      const { host, port } = splitHostPort(advertise)
      if (WILDCARDS.has(host)) {
        throw new UsageError(`--advertise is needed when --listen is ${grpcAddress}: other nodes cannot dial ${host}`)
      }
      const nodeId = options.nodeId ?? advertise
      const peerListen = options.peerListen ?? `${splitHostPort(grpcAddress).host}:${port + 1}`
      transport = new ZmqPeerTransport({ nodeId, listen: peerListen, logger, ringVersion: () => engine.ringVersion() })
      const bound = await transport.listen(
        peerService(
          local,
          tokens,
          async (body, ctx) => {
            if (repair === undefined) throw new UnavailableError('this node has not joined the cluster yet')
            return repair.runForPeer(body, ctx)
          },
          clock,
          () => new Map((handoff?.figures() ?? []).filter((h) => h.backlog > 0).map((h) => [h.peer, h.backlog])),
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
        },
        logger,
      )
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
        tokens,
        { intervalMs: options.repairIntervalMs, peerTimeoutMs: options.peerTimeoutMs, limits: engineLimits.limits },
        logger,
      )
      repair.start()
      engine.attach({ selfId: nodeId, transport, view, handoff, repair })
      // Both wait for Consul while it cannot be reached, and fail on anything it refuses.
      await membership.start()
      const ring = await membership.join({
        vnodes: options.vnodes,
        replicationFactor: options.replicationFactor,
        chooseTokens: (existing, id, count) =>
          existing.length === 0 ? evenTokens(id, count) : chooseTokens(existing, id, count),
      })
      logger.info({ node: nodeId, ringVersion: ring.version, members: ring.members.length }, 'joined the cluster')
    },
    async stop() {
      await repair?.close()
      await membership?.stop()
      // Closing the transport first fails a delivery under way at once, so the hints close promptly.
      await transport?.close()
      await handoff?.close()
    },
  }
}
