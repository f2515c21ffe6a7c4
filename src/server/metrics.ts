/**
 * Prometheus metrics of a node: a gRPC server interceptor counts and times every call, and engine
 * statistics and store properties are read at scrape time, so that a scrape always shows the
 * engine's own figures and nothing is sampled on a timer. Each node owns its registry (no global
 * registry), so that tests and several servers in one process do not share counters.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { ServerInterceptingCall, type ServerInterceptor, status } from '@grpc/grpc-js'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { ClusterFigures, RepairFigures, StorageEngine } from '../engine/storage-engine.js'
import { callStatusRecord } from './call-status.js'

/** The RPCs that store points: a non-OK status on them is a rejected write. */
const WRITE_METHODS = new Set(['WriteService/Write', 'WriteService/WriteStream', 'StreamService/Ingest'])

/** The store properties exported, with the name and help of their gauge. */
const PROPERTY_GAUGES: ReadonlyArray<readonly [property: string, name: string, help: string]> = [
  ['rocksdb.num-running-compactions', 'v3_rocksdb_running_compactions', 'RocksDB compactions running now.'],
  ['rocksdb.num-running-flushes', 'v3_rocksdb_running_flushes', 'RocksDB memtable flushes running now.'],
  ['rocksdb.background-errors', 'v3_rocksdb_background_errors', 'RocksDB background errors since the store opened.'],
  ['rocksdb.is-write-stopped', 'v3_rocksdb_write_stopped', '1 while RocksDB stops writes (a write stall).'],
  [
    'rocksdb.actual-delayed-write-rate',
    'v3_rocksdb_delayed_write_rate_bytes',
    'Rate RocksDB slows writes to, 0 when not.',
  ],
  [
    'rocksdb.cur-size-all-mem-tables',
    'v3_rocksdb_default_cf_memtable_bytes',
    'Memtable bytes of the default column family (the binding cannot read the data families).',
  ],
  [
    'rocksdb.estimate-pending-compaction-bytes',
    'v3_rocksdb_default_cf_pending_compaction_bytes',
    'Estimated bytes compaction still has to rewrite, default column family.',
  ],
  ['rocksdb.block-cache-usage', 'v3_rocksdb_block_cache_usage_bytes', 'Bytes held in the RocksDB block cache.'],
  [
    'v3.disk-free-bytes',
    'v3_disk_free_bytes',
    'Bytes free for the server on the filesystem of its data folder (statfs: available blocks).',
  ],
  ['v3.seal-failures', 'v3_seal_failures', 'Seals of buffered points that failed since the engine opened.'],
]

export interface ServerMetrics {
  readonly registry: Registry
  /** Counts, times and classifies every call; pass it to startServer's interceptors. */
  readonly interceptor: ServerInterceptor
  /** Reads the engine's statistics and renders every metric in the Prometheus text format. */
  render(): Promise<string>
  readonly contentType: string
  /** Counts an HTTP request by route (a fixed path, never the raw URL) and status code. */
  httpRequest(path: string, code: number): void
  /** Counts samples an HTTP write stored, by protocol (prometheus_remote_write, influx_line_protocol). */
  httpSamples(protocol: string, samples: number): void
  /** The HTTP write requests holding a slot of the write gate, and those waiting for one, now. */
  httpWrites(inProgress: number, waiting: number): void
}

export interface MetricsOptions {
  /** Process metrics (CPU, memory, event loop lag, open handles). Default true. */
  readonly processMetrics?: boolean
}

/** `/v3storage.v1.WriteService/Write` → `WriteService/Write`: short, and the same on every node. */
function methodName(path: string): string {
  const slash = path.lastIndexOf('/')
  const service = path.slice(1, slash)
  return `${service.slice(service.lastIndexOf('.') + 1)}/${path.slice(slash + 1)}`
}

export function createServerMetrics(engine: StorageEngine, options: MetricsOptions = {}): ServerMetrics {
  const registry = new Registry()
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry })
  const registers = [registry]

  const requests = new Counter({
    name: 'v3_grpc_requests_total',
    help: 'gRPC calls finished, by method and status code.',
    labelNames: ['method', 'code'] as const,
    registers,
  })
  const errors = new Counter({
    name: 'v3_grpc_errors_total',
    help: 'gRPC calls that ended with a status other than OK, by method and code.',
    labelNames: ['method', 'code'] as const,
    registers,
  })
  const latency = new Histogram({
    name: 'v3_grpc_request_duration_seconds',
    help: 'Time from the start of a call to its status, by method.',
    labelNames: ['method'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  })
  const rejected = new Counter({
    name: 'v3_rejected_writes_total',
    help: 'Write, WriteStream and Ingest calls that ended with an error, and Ingest messages rejected on a stream that went on, by status code.',
    labelNames: ['code'] as const,
    registers,
  })
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers })
  const series = gauge('v3_series', 'Series stored.')
  const buffered = gauge('v3_buffered_points', 'Acknowledged points in the write buffer, not yet sealed into blocks.')
  const hotBlocks = gauge('v3_hot_blocks', 'Blocks in the hot tier.')
  const coldRuns = gauge('v3_cold_runs', 'Runs in the cold tier.')
  const coldBlocks = gauge('v3_cold_blocks', 'Blocks stored in cold runs.')
  const bytesOnDisk = gauge('v3_bytes_on_disk', 'Bytes of the database folder.')
  const pointsWritten = new Counter({
    name: 'v3_points_written_total',
    help: 'Points written since the database was created (a rewrite of a timestamp counts again).',
    registers,
  })
  const seriesWritten = new Counter({
    name: 'v3_series_written_total',
    help: 'Series entries in successful write calls since this process started.',
    registers,
  })
  const cacheLookups = new Gauge({
    name: 'v3_cache_lookups',
    help: 'Lookups of the engine caches since it opened, by cache (results, decoded_blocks, selectors) and outcome (hit, miss).',
    labelNames: ['cache', 'outcome'] as const,
    registers,
  })
  const properties = new Map(PROPERTY_GAUGES.map(([property, name, help]) => [property, gauge(name, help)]))
  // How long the event loop was held at a time, which is how long every other call (health checks
  // included) waited behind the one that held it. Sampled every 5 ms; each scrape reads the
  // interval since the previous scrape and starts a new one, so a scrape shows the recent past.
  const loopDelay = monitorEventLoopDelay({ resolution: 5 })
  loopDelay.enable()
  const loopDelayP99 = gauge(
    'v3_event_loop_delay_p99_seconds',
    '99th percentile of the event loop delay since the previous scrape (sampled every 5 ms).',
  )
  const loopDelayMax = gauge('v3_event_loop_delay_max_seconds', 'Longest event loop delay since the previous scrape.')
  // A cluster node's view of its cluster and its peer traffic; a single node has none.
  const httpRequests = new Counter({
    name: 'v3_http_requests_total',
    help: 'HTTP requests answered, by path (the route, /other for unknown paths) and status code.',
    labelNames: ['path', 'code'] as const,
    registers,
  })
  const httpWritesInProgress = gauge(
    'v3_http_writes_in_progress',
    'HTTP write requests being read, decoded or written now (at most --http-max-concurrent-writes).',
  )
  const httpWritesWaiting = gauge('v3_http_writes_waiting', 'HTTP write requests waiting for their turn now.')
  const httpSamples = new Counter({
    name: 'v3_http_samples_ingested_total',
    help: 'Samples stored through the HTTP write endpoints, by protocol.',
    labelNames: ['protocol'] as const,
    registers,
  })
  const updateCluster = engine.clusterFigures === undefined ? undefined : clusterGauges(registers)
  // The engine's points counter is persistent; the Prometheus counter follows it by increments.
  let lastPointsWritten = 0

  const interceptor: ServerInterceptor = (descriptor, call) => {
    const method = methodName(descriptor.path)
    const started = process.hrtime.bigint()
    let done = false
    const finish = (code: status): void => {
      if (done) return
      done = true
      const name = status[code] ?? String(code)
      requests.inc({ method, code: name })
      latency.observe({ method }, Number(process.hrtime.bigint() - started) / 1e9)
      if (code !== status.OK) {
        errors.inc({ method, code: name })
        if (WRITE_METHODS.has(method)) rejected.inc({ code: name })
      }
    }
    // The status the client got, from callStatusInterceptor, read when grpc-js ends the call
    // (onCancel comes last on every call): a call grpc-js answered itself never passes sendStatus
    // here, and a status passing here may never go out. Without the record (that interceptor not
    // installed), sendStatus is all there is.
    const record = callStatusRecord(call)
    return new ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => finish(record?.sent?.code ?? status.CANCELLED) }),
      sendMessage: (message: unknown, next) => {
        // The write responses carry series_written; reading it here costs nothing on other calls.
        if (method === 'WriteService/Write' || method === 'WriteService/WriteStream') {
          const n = (message as { seriesWritten?: unknown } | null)?.seriesWritten
          if (typeof n === 'number') seriesWritten.inc(n)
        } else if (method === 'StreamService/Ingest') {
          // A rejected message is reported in an acknowledgement and the stream goes on.
          const code = (message as { error?: { code?: unknown } | undefined } | null)?.error?.code
          if (typeof code === 'number' && code !== status.OK) rejected.inc({ code: status[code] ?? String(code) })
        }
        next(message)
      },
      sendStatus: (s, next) => {
        if (record === undefined) finish(s.code ?? status.UNKNOWN)
        next(s)
      },
    })
  }

  const refresh = async (): Promise<void> => {
    // The histogram is in nanoseconds; with no sample yet its percentiles are 0.
    loopDelayP99.set(loopDelay.percentile(99) / 1e9)
    loopDelayMax.set(loopDelay.count > 0 ? loopDelay.max / 1e9 : 0)
    loopDelay.reset()
    // A cluster engine's stats() fans out to every node; a node's metrics are its own figures.
    const stats = await (engine.nodeStats?.() ?? engine.stats())
    series.set(stats.series)
    buffered.set(stats.bufferedPoints)
    hotBlocks.set(stats.hotBlocks)
    coldRuns.set(stats.coldRuns)
    coldBlocks.set(stats.coldBlocks)
    bytesOnDisk.set(stats.bytesOnDisk)
    if (stats.pointsWritten > lastPointsWritten) pointsWritten.inc(stats.pointsWritten - lastPointsWritten)
    lastPointsWritten = stats.pointsWritten
    if (stats.caches) {
      for (const [cache, counts] of [
        ['results', stats.caches.results],
        ['decoded_blocks', stats.caches.decodedBlocks],
        ['selectors', stats.caches.selectors],
      ] as const) {
        cacheLookups.set({ cache, outcome: 'hit' }, counts.hits)
        cacheLookups.set({ cache, outcome: 'miss' }, counts.misses)
      }
    }
    const cluster = engine.clusterFigures?.()
    if (cluster !== undefined) updateCluster?.(cluster)
    const props = (await engine.properties?.()) ?? {}
    for (const [property, g] of properties) {
      const value = props[property]
      if (value === undefined) g.reset()
      else g.set(value)
    }
  }

  return {
    registry,
    interceptor,
    contentType: registry.contentType,
    httpRequest: (path, code) => httpRequests.inc({ path, code: String(code) }),
    httpSamples: (protocol, samples) => httpSamples.inc({ protocol }, samples),
    httpWrites: (inProgress, waiting) => {
      httpWritesInProgress.set(inProgress)
      httpWritesWaiting.set(waiting)
    },
    async render() {
      await refresh()
      return registry.metrics()
    },
  }
}

/** The gauges of a cluster node, and the function that sets them from the engine's figures. */
function clusterGauges(registers: Registry[]): (figures: ClusterFigures) => void {
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers })
  const ringVersion = gauge('v3_cluster_ring_version', 'Version of the ring this node routes with.')
  const members = gauge('v3_cluster_members', 'Members of the ring.')
  const healthyMembers = gauge('v3_cluster_healthy_members', 'Members of the ring whose Consul health check passes.')
  const consulUp = gauge(
    'v3_consul_reachable',
    '1 while Consul answers, 0 during an outage (the node serves on its last ring).',
  )
  const consulOutages = gauge('v3_consul_outages', 'Times Consul became unreachable since the node started.')
  const peerGauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['peer'] as const, registers })
  const peerSent = peerGauge('v3_peer_requests_sent', 'Requests sent to a peer since the node started.')
  const peerResponses = peerGauge('v3_peer_responses', 'Responses received from a peer since the node started.')
  const peerTimeouts = peerGauge('v3_peer_timeouts', 'Requests to a peer that got no answer in time.')
  const peerSendFailures = peerGauge('v3_peer_send_failures', 'Requests the ZeroMQ socket refused to send.')
  const peerLost = peerGauge(
    'v3_peer_requests_lost',
    'Requests to a peer whose connection dropped before it answered; they failed at once.',
  )
  const peerInFlight = peerGauge('v3_peer_in_flight', 'Requests to a peer awaiting their answer now.')
  const peerQueue = peerGauge('v3_peer_queue_depth', 'Requests to a peer waiting for an in-flight slot now.')
  const malformedPeer = gauge(
    'v3_peer_malformed_messages',
    'Peer frames rejected because they did not decode or broke the contract.',
  )
  const peerServed = gauge('v3_peer_requests_served', 'Requests from peers answered.')
  const peerRejected = gauge(
    'v3_peer_requests_rejected',
    "Requests from peers refused because that peer's queue was full.",
  )
  const peerRefused = gauge(
    'v3_peer_connections_refused',
    "Peer connections refused because they did not hold the cluster's peer key (--peer-key).",
  )

  const hintBacklog = peerGauge('v3_hints_backlog', 'Hints waiting for a peer on this node now.')
  const hintBacklogBytes = peerGauge('v3_hints_backlog_bytes', 'Bytes of the hints waiting for a peer on this node.')
  const hintsQueued = peerGauge('v3_hints_queued', 'Hints stored for a peer since the node started.')
  const hintsDelivered = peerGauge('v3_hints_delivered', 'Hints delivered to a peer since the node started.')
  const hintsDropped = peerGauge(
    'v3_hints_dropped',
    'Hints for a peer dropped (past the window, or the store full) since the node started.',
  )
  const replicationLag = peerGauge(
    'v3_replication_lag_seconds',
    "Age of the oldest hint waiting for a peer: how far the peer's copy lags behind this node.",
  )
  const needsRepair = peerGauge('v3_hints_needs_repair', '1 when hints for a peer were dropped: repair must heal it.')
  const updateRepair = repairMetrics(registers)
  const leader = gauge('v3_cluster_leader', '1 while this node leads the ring (holds the Consul lock), else 0.')
  const leaderTerm = gauge('v3_cluster_leader_term', "The leader's term: the LockIndex of the Consul lock.")
  const fenced = gauge(
    'v3_cluster_ring_changes_fenced',
    'Ring changes this node rejected because a leader that had lost the lock wrote them.',
  )
  const moving = gauge('v3_cluster_moving_members', 'Members joining or leaving now.')
  const changing = gauge(
    'v3_cluster_change_in_progress',
    '1 while a membership change is under way, until the old owners have dropped the ranges they lost.',
  )
  const moveRanges = gauge('v3_cluster_move_ranges', 'Token ranges the membership change under way moves.')
  const moveRangesDone = gauge('v3_cluster_move_ranges_done', 'Of those, the ranges copied to their new owners.')
  const movePoints = gauge('v3_cluster_move_points', 'Points the change under way has copied so far.')
  const changes = gauge('v3_cluster_changes_completed', 'Membership changes this node carried out as leader.')
  const changedPoints = gauge('v3_cluster_changes_points_moved', 'Points the changes this node led copied.')
  const deadRemoved = gauge('v3_cluster_dead_nodes_removed', 'Members this node removed as leader, down too long.')
  return (cluster) => {
    if (cluster.repair !== undefined) updateRepair(cluster.repair)
    const m = cluster.membership
    if (m !== undefined) {
      leader.set(m.leader ? 1 : 0)
      leaderTerm.set(m.leaderTerm)
      fenced.set(m.fencedRingChanges)
      moving.set(m.movingMembers)
      changing.set(m.changeInProgress ? 1 : 0)
      moveRanges.set(m.moveRangesTotal)
      moveRangesDone.set(m.moveRangesDone)
      movePoints.set(m.movePoints)
      changes.set(m.changesCompleted)
      changedPoints.set(m.pointsMoved)
      deadRemoved.set(m.deadNodesRemoved)
    }
    for (const h of cluster.hints) {
      hintBacklog.set({ peer: h.peer }, h.backlog)
      hintBacklogBytes.set({ peer: h.peer }, h.backlogBytes)
      hintsQueued.set({ peer: h.peer }, h.queued)
      hintsDelivered.set({ peer: h.peer }, h.delivered)
      hintsDropped.set({ peer: h.peer }, h.dropped)
      replicationLag.set({ peer: h.peer }, h.lagMs / 1000)
      needsRepair.set({ peer: h.peer }, h.needsRepair ? 1 : 0)
    }
    ringVersion.set(cluster.ringVersion)
    members.set(cluster.members)
    healthyMembers.set(cluster.healthyMembers)
    consulUp.set(cluster.consulReachable ? 1 : 0)
    consulOutages.set(cluster.consulOutages)
    for (const p of cluster.peers) {
      peerSent.set({ peer: p.peer }, p.requestsSent)
      peerResponses.set({ peer: p.peer }, p.responses)
      peerTimeouts.set({ peer: p.peer }, p.timeouts)
      peerSendFailures.set({ peer: p.peer }, p.sendFailures)
      peerLost.set({ peer: p.peer }, p.requestsLost)
      peerInFlight.set({ peer: p.peer }, p.inFlight)
      peerQueue.set({ peer: p.peer }, p.queueDepth)
    }
    malformedPeer.set(cluster.malformedPeerMessages)
    peerServed.set(cluster.peerRequestsServed)
    peerRejected.set(cluster.peerRequestsRejected)
    peerRefused.set(cluster.peerConnectionsRefused)
  }
}

/**
 * The counters of the node's anti-entropy repair passes. The node keeps its totals since it
 * started; the Prometheus counters follow them by increments.
 */
function repairMetrics(registers: Registry[]): (figures: RepairFigures) => void {
  const counter = (name: string, help: string) => new Counter({ name, help, registers })
  const passes = new Counter({
    name: 'v3_repair_passes_total',
    help: 'Anti-entropy repair passes this node ran, by outcome (ok, failed).',
    labelNames: ['outcome'] as const,
    registers,
  })
  const compared = counter('v3_repair_ranges_compared_total', 'Token ranges whose owners this node compared by digest.')
  const repaired = counter(
    'v3_repair_ranges_repaired_total',
    '(token range, hour) blocks whose copies differed and this node brought in line.',
  )
  const moved = new Counter({
    name: 'v3_repair_points_moved_total',
    help: 'Points repair moved between this node and a peer: direction sent (written to the peer) or received (read from it, written here).',
    labelNames: ['peer', 'direction'] as const,
    registers,
  })
  const lastPass = new Gauge({
    name: 'v3_repair_last_pass_seconds',
    help: "How long this node's last repair pass took.",
    registers,
  })
  const lastSuccess = new Gauge({
    name: 'v3_repair_last_success_timestamp_seconds',
    help: "When this node's last successful repair pass ended, in seconds since the epoch; 0 before the first.",
    registers,
  })
  let seen: RepairFigures | undefined
  const seenPeers = new Map<string, { pointsSent: number; pointsReceived: number }>()
  return (figures) => {
    const delta = (now: number, before: number | undefined) => Math.max(0, now - (before ?? 0))
    passes.inc({ outcome: 'ok' }, delta(figures.passes - figures.failedPasses, seen && seen.passes - seen.failedPasses))
    passes.inc({ outcome: 'failed' }, delta(figures.failedPasses, seen?.failedPasses))
    compared.inc(delta(figures.rangesCompared, seen?.rangesCompared))
    repaired.inc(delta(figures.rangesRepaired, seen?.rangesRepaired))
    for (const p of figures.peers) {
      const before = seenPeers.get(p.peer)
      moved.inc({ peer: p.peer, direction: 'sent' }, delta(p.pointsSent, before?.pointsSent))
      moved.inc({ peer: p.peer, direction: 'received' }, delta(p.pointsReceived, before?.pointsReceived))
      seenPeers.set(p.peer, { pointsSent: p.pointsSent, pointsReceived: p.pointsReceived })
    }
    lastPass.set(figures.lastPassMs / 1000)
    lastSuccess.set(figures.lastSuccessMs / 1000)
    seen = figures
  }
}
