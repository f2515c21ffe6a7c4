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

/** What a caller says about one call besides its request. */
export interface CallContext {
  /** Lets a caller give up on a long operation; engines check it between units of work. */
  readonly signal?: AbortSignal
  /**
   * The consistency level the client asked for. undefined: the server's default, which for a write
   * is the cluster's write consistency (`--write-consistency`, quorum unless set) and for a read
   * `one`. An engine that holds the one copy of every series meets every level and ignores it.
   */
  readonly consistency?: ConsistencyLevel
}

export interface LatencySummary {
  readonly count: number
  readonly p50Ms: number
  readonly p99Ms: number
}

/** Hits and misses of one of the engine's caches. */
export interface CacheStats {
  readonly hits: number
  readonly misses: number
}

export interface EngineStats {
  readonly series: number
  /** Points stored, counted when written (a rewrite of the same timestamp counts again). */
  readonly pointsWritten: number
  /** Points in the in-memory write buffer, not yet sealed into blocks. */
  readonly bufferedPoints: number
  readonly hotBlocks: number
  readonly coldRuns: number
  readonly coldBlocks: number
  readonly bytesOnDisk: number
  readonly writes: LatencySummary
  readonly queries: LatencySummary
  /** Query results, decoded blocks and resolved selectors served from memory; absent when an engine has none. */
  readonly caches?: {
    readonly results: CacheStats
    readonly decodedBlocks: CacheStats
    readonly selectors: CacheStats
  }
  /** On a cluster: each node's own figures, the totals above adding them up. */
  readonly nodes?: readonly { readonly id: string; readonly stats: EngineStats }[]
}

/** One member of a cluster as ListNodes and Locate describe it. */
export interface ClusterNodeInfo {
  readonly id: string
  /** Where the node serves gRPC, host:port. */
  readonly address: string
  /** Where the node takes peer traffic, host:port. */
  readonly peerAddress: string
  /** Whether its health check passes, as this node last saw. */
  readonly healthy: boolean
  readonly lifecycle: 'joining' | 'active' | 'leaving'
  /** Its share of the ring as primary owner, 0 to 1. */
  readonly share: number
  readonly leader: boolean
  /** Writes this node keeps as hints for that node, waiting for it to be back. */
  readonly hintsPending: number
  /** The membership change the node is part of (joining or leaving), while one is under way. */
  readonly move?: {
    readonly phase: string
    readonly rangesTotal: number
    readonly rangesDone: number
    readonly pointsMoved: number
  }
}

/** One peer channel's counters since the node started. */
export interface PeerChannelFigures {
  readonly peer: string
  readonly requestsSent: number
  readonly responses: number
  readonly timeouts: number
  readonly sendFailures: number
  readonly requestsLost: number
  readonly inFlight: number
  readonly queueDepth: number
}

/** A cluster node's own view of the cluster, for monitoring. */
export interface ClusterFigures {
  /** 0 before the node has joined. */
  readonly ringVersion: number
  readonly members: number
  readonly healthyMembers: number
  readonly consulReachable: boolean
  /** Times Consul became unreachable since the node started. */
  readonly consulOutages: number
  readonly peers: readonly PeerChannelFigures[]
  /** Peer frames that did not decode or broke the contract, and were rejected. */
  readonly malformedPeerMessages: number
  readonly peerRequestsServed: number
  /** Peer requests refused because that peer's queue here was full. */
  readonly peerRequestsRejected: number
  /** Peer connections refused because they did not hold the cluster's peer key. */
  readonly peerConnectionsRefused: number
  /** The hints this node keeps for each owner it could not write to. */
  readonly hints: readonly HintFigures[]
  /** This node's anti-entropy repair passes since it started; absent before it has joined. */
  readonly repair?: RepairFigures
  /** The leader and membership changes as this node sees them; absent before it has joined. */
  readonly membership?: MembershipFigures
}

/** The leader and the membership changes, as one node sees them. */
export interface MembershipFigures {
  /** Whether this node leads the ring now. */
  readonly leader: boolean
  /** The leader's term (the lock's LockIndex); 0 while none is known. */
  readonly leaderTerm: number
  /** Ring changes this node rejected because a leader that had lost the lock wrote them. */
  readonly fencedRingChanges: number
  /** Members joining or leaving now. */
  readonly movingMembers: number
  /** Whether a membership change is under way, until the old owners have dropped what they lost. */
  readonly changeInProgress: boolean
  /** Of the change under way: the ranges it moves, those copied so far, and the points copied. */
  readonly moveRangesTotal: number
  readonly moveRangesDone: number
  readonly movePoints: number
  /** Membership changes this node carried out as leader since it started. */
  readonly changesCompleted: number
  /** Points those changes copied. */
  readonly pointsMoved: number
  /** Members this node removed as leader because they were down past --dead-node-timeout. */
  readonly deadNodesRemoved: number
}

/** The points repair passes moved between this node and one other node. */
export interface RepairPeerFigures {
  readonly peer: string
  /** Points written to that node. */
  readonly pointsSent: number
  /** Points read from that node and written here. */
  readonly pointsReceived: number
}

/** What one repair pass on one node did. */
export interface RepairPassReport {
  readonly node: string
  /** Token ranges whose owners' digests were compared. */
  readonly rangesCompared: number
  /** (token range, hour) blocks whose copies differed and were brought in line. */
  readonly rangesRepaired: number
  readonly pointsSent: number
  readonly pointsReceived: number
  readonly durationMs: number
  readonly peers: readonly RepairPeerFigures[]
}

/** A node's repair passes since it started, for its metrics. */
export interface RepairFigures {
  readonly passes: number
  readonly failedPasses: number
  readonly rangesCompared: number
  readonly rangesRepaired: number
  readonly peers: readonly RepairPeerFigures[]
  /** How long the last pass took, successful or not, in milliseconds; 0 before the first. */
  readonly lastPassMs: number
  /** When the last successful pass ended, in milliseconds since the epoch; 0 before the first. */
  readonly lastSuccessMs: number
}

/** A repair of the whole cluster: one pass per healthy node, over the data before endMs. */
export interface ClusterRepairReport {
  readonly nodes: readonly RepairPassReport[]
  /** Members that were down and took no part. */
  readonly downNodes: readonly string[]
  readonly endMs: number
  readonly durationMs: number
}

/** A decommission once the node has left the ring. */
export interface DecommissionResult {
  readonly nodeId: string
  /** The first ring version without the node. */
  readonly ringVersion: number
  readonly durationMs: number
}

/** The hints a coordinating node keeps for one owner. */
export interface HintFigures {
  readonly peer: string
  /** Hints waiting now, and their bytes. */
  readonly backlog: number
  readonly backlogBytes: number
  /** Since the node started. */
  readonly queued: number
  readonly delivered: number
  readonly dropped: number
  /** Age of the oldest hint waiting, in milliseconds: how far the owner lags behind this node. */
  readonly lagMs: number
  /** Hints were dropped for this owner: repair must bring it back in line. */
  readonly needsRepair: boolean
}

export interface ClusterInfo {
  readonly ringVersion: number
  /** The effective replication factor: the cluster's setting, bounded by the number of members. */
  readonly replicationFactor: number
  readonly nodes: readonly ClusterNodeInfo[]
}

/** Receives the committed points of the series a subscription selects. */
export type PointsListener = (series: readonly SeriesPoints[]) => void

/** A live subscription to an engine's writes; close() detaches it at once. */
export interface Subscription {
  close(): void
}

export interface CompactResult {
  readonly blocksSealed: number
  readonly blocksMoved: number
  readonly seriesExpired: number
}

/**
 * The one interface every engine implements: the basic engine on RocksDB, the cluster engine as a
 * fan-out, custom engines. The server knows only this.
 */
export interface StorageEngine {
  open(): Promise<void>
  close(): Promise<void>
  /** Resolves once every point of the batch is in the write-ahead log; a rejected batch stores nothing. */
  write(batch: WriteBatch, ctx?: CallContext): Promise<WriteResult>
  /**
   * Raw points sorted by timestamp, or aggregated buckets; series without points are left out.
   * Query, latest and listSeries take a selector of every metric (metric '', see Selector), and
   * raw values come back with their exact bit patterns (NaN payloads, -0) as they were written.
   */
  query(request: QueryRequest, ctx?: CallContext): Promise<SeriesPoints[]>
  /** The last point of every matching series. */
  latest(selector: Selector, ctx?: CallContext): Promise<SeriesPoints[]>
  listSeries(selector: Selector, ctx?: CallContext): Promise<SeriesRef[]>
  deleteSeries(request: DeleteRequest, ctx?: CallContext): Promise<DeleteResult>
  /** Seals buffered points into blocks, moves blocks past the hot window to the cold tier, applies retention. */
  compact(ctx?: CallContext): Promise<CompactResult>
  stats(): Promise<EngineStats>
  /**
   * Numeric internals of the store for monitoring, keyed by the store's own property names (for
   * RocksDB `rocksdb.num-running-compactions`, …). Optional: engines without such internals leave it out.
   */
  properties?(): Promise<Record<string, number>>
  /**
   * Calls `listener` with the points of every later write to a series the selector matches, once
   * the write is durable, in commit order; each series' points sorted by timestamp (milliseconds).
   * The listener runs inside the write path: it must return quickly and must not throw. Throws
   * ValidationError for a bad selector. Live points only: a caller that wants stored points too
   * subscribes first and then queries, so that nothing falls between the two.
   */
  subscribe(selector: Selector, listener: PointsListener): Subscription
  /** The cluster's members; engines that are not a cluster leave it out and the server describes one node. */
  clusterInfo?(): ClusterInfo
  /** The owners of a series, primary first; absent where clusterInfo is. */
  locate?(metric: string, tags: readonly Tag[]): ClusterNodeInfo[]
  /** Where stats() answers for a whole cluster: this node's own figures, which its metrics show. */
  nodeStats?(): Promise<EngineStats>
  /** Cluster membership and peer traffic as this node sees them, for its metrics. */
  clusterFigures?(): ClusterFigures
  /** Runs anti-entropy repair on every healthy node of the cluster now; absent where clusterInfo is. */
  repair?(ctx?: CallContext): Promise<ClusterRepairReport>
  /** Moves a member's ranges to the nodes taking them over and removes it from the ring; resolves once it has left. */
  decommission?(nodeId: string, ctx?: CallContext): Promise<DecommissionResult>
}
