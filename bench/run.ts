// npm run bench: the cpu-only data set (bench/dataset.ts) against real `v3 serve` processes at
// their default flags, as a user runs them.
// - Ingest through Write (50,000-point requests, 2 in flight), through WriteStream, and through the
//   batching writer on one Ingest stream (point by point through write(metric, tags, …), and again
//   through series bound with writer.series), each into a fresh server, with its peak RSS. During every
//   ingest (VictoriaMetrics' too) a health check runs every 2 ms on a connection of its own
//   (probeDuring): the Write load's checks are reported, what a load balancer's or Consul's check,
//   or any small call, waits while the server ingests.
// - After the Write load, with no Compact (the server seals on its own timer, as a user's does):
//   bytes on disk (du) of the running server after at least a minute idle; the seven TSBS devops
//   queries at default flags (caches on); then a clean stop and a start on the same folder with
//   --result-cache-points 0, the disk once more (labelled "after a restart"), and the same queries
//   on the storage path. Each query set comes with the health-check round trip of the same server
//   (a grpc.health.v1 Check), median and p95 of 20 runs after 2 warm-ups, parameters from a fixed
//   seed, every answer checked against a reference computed from the generated data (the check is
//   not timed). After the queries the round trip is measured again after WARM_CALLS more calls,
//   once V8 has optimized the call path in the bench's client and in the server.
// With --against victoriametrics the same sequence runs against VictoriaMetrics from Debian's
// package in the same run, through a keep-alive HTTP agent: GET /health as its round trip, its
// rollup result cache on for the default table and off (nocache=1) for the storage path, so that
// each table compares like with like. Results go to bench/results/ as JSON and Markdown.
//   npm run bench [-- --decimals 2] [-- --hosts 10] [-- --against victoriametrics]
//   npm run bench -- --ring   (the hash ring alone, see bench/ring-bench.ts)
//   npm run bench -- --regex  (regex matchers alone, see bench/regex-bench.ts)
//   npm run bench -- --peer   (the peer transport alone, see bench/peer-bench.ts)
//   npm run bench -- --hints  (the hint store's appends alone, see bench/hint-store-bench.ts)
//   npm run bench -- --cluster 3 [--replication-factor 1] [--peer-key]  (a cluster beside a single node, see
//   bench/cluster-bench.ts)
//   npm run bench -- --cluster 3 --replication-factor 3 --catch-up [--catch-up-down 60s]
//   [--catch-up-rate <points/s>]  (a node killed under load and its catch-up after the restart, see
//   bench/catch-up-bench.ts)
//   npm run bench -- --cluster-join [--cluster 3] [--replication-factor 2] [--hosts 23]  (a node
//   joining a loaded cluster under writes and queries, see bench/cluster-join-bench.ts)
//   npm run bench -- --protocols [--hosts 10] [--inflight 8]  (ingest through remote write and line protocol beside
//   VictoriaMetrics, see bench/protocols-bench.ts)
//   npm run bench -- --restart  (a server killed with the largest write-ahead log its defaults allow,
//   and its restart, see bench/restart-bench.ts)
//   npm run bench -- --cold-start [--runs 40] [--against victoriametrics]  (the first queries after a
//   start and their page faults, see bench/cold-start-bench.ts)
//   npm run bench -- --engine-write [--runs 3]  (the engine's write path alone, with and without write
//   versions, see bench/engine-write-bench.ts)
import { rm } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { Client, credentials } from '@grpc/grpc-js'
import { V3Client } from '../src/client/index.js'
import { HOSTS, hostTags, METRICS, POINTS_PER_SERIES, seriesValues } from './dataset.js'
import {
  DEFAULT_INFLIGHT,
  describeDataSet,
  describeMachine,
  encodeMessages,
  eventLoopDelayMs,
  type FolderSize,
  grpcHealthProbe,
  grpcHealthRoundTrip,
  type IdleFolderSize,
  idleFolderSize,
  peakRssMiB,
  probeDuring,
  type QueryResult,
  type RoundTrip,
  removeServer,
  resultsName,
  type Server,
  saveResults,
  sendWrites,
  startServer,
  stopServer,
  timed,
  WARM_CALLS,
} from './harness.js'
import { drawParams, QUERY_KINDS, type QueryParams, runV3 } from './queries.js'
import { benchIngest, benchWriteStream, type IngestResult } from './streams.js'
import {
  ensureInstalled,
  ingest as ingestVictoriaMetrics,
  lineProtocol,
  type QueryOptions,
  runVictoriaMetrics,
  startVictoriaMetrics,
  stopVictoriaMetrics,
  type VictoriaMetrics,
  healthProbe as vmHealthProbe,
  healthRoundTrip as vmHealthRoundTrip,
} from './victoriametrics.js'

const { values: args } = parseArgs({
  options: {
    decimals: { type: 'string' },
    // Hosts of the data set, 10 series each, a point every 10 s for 24 h: 100 unless set, 23 for
    // --cluster-join.
    hosts: { type: 'string' },
    batch: { type: 'string', default: '50' },
    inflight: { type: 'string', default: String(DEFAULT_INFLIGHT) },
    // Timed runs of each query (20 unless set; 40 for --cold-start); runs of each mode for --engine-write (3).
    runs: { type: 'string' },
    'writer-batch-points': { type: 'string', default: '50000' },
    against: { type: 'string' },
    // The idle spell before the disk of the running server is read, in seconds (a quick check may
    // shorten it; the figures in the README use the default).
    'idle-seconds': { type: 'string', default: '60' },
    // --ring runs only the hash-ring bench (bench/ring-bench.ts): no servers, a table of figures.
    ring: { type: 'boolean', default: false },
    // --peer runs only the peer transport bench (bench/peer-bench.ts): two processes on loopback.
    peer: { type: 'boolean', default: false },
    // --regex runs only the regex matcher bench (bench/regex-bench.ts): no servers, a table of figures.
    regex: { type: 'boolean', default: false },
    // --hints runs only the hint store bench (bench/hint-store-bench.ts): appends in a temp folder.
    hints: { type: 'boolean', default: false },
    // --cluster N runs the cluster bench (bench/cluster-bench.ts): N nodes beside a single node.
    cluster: { type: 'string' },
    // 1 unless set, 2 for --cluster-join.
    'replication-factor': { type: 'string' },
    // With --cluster: every node started with a peer key (--peer-key), its ZeroMQ traffic encrypted.
    'peer-key': { type: 'boolean', default: false },
    // With --cluster: only the catch-up phase (bench/catch-up-bench.ts), a node killed under load for
    // --catch-up-down (seconds, or with an s or m suffix) and restarted.
    'catch-up': { type: 'boolean', default: false },
    'catch-up-down': { type: 'string', default: '60s' },
    // Points per second the catch-up load offers; 0 (the default) sends without pause, as the
    // cluster bench's ingest does.
    'catch-up-rate': { type: 'string', default: '0' },
    // --cluster-join runs the join bench (bench/cluster-join-bench.ts): --cluster nodes (3 unless
    // set) loaded, then one more joins under load.
    'cluster-join': { type: 'boolean', default: false },
    // --protocols runs only the remote write and line protocol ingest bench beside VictoriaMetrics
    // (bench/protocols-bench.ts), at most 3 runs each (fewer with a smaller --runs).
    protocols: { type: 'boolean', default: false },
    // --restart runs only the restart bench (bench/restart-bench.ts): a server killed with the
    // largest write-ahead log its defaults allow, and its restart.
    restart: { type: 'boolean', default: false },
    // --cold-start runs only the cold-start bench (bench/cold-start-bench.ts): the first --runs
    // queries after a start (40 unless set), with the server's page faults.
    'cold-start': { type: 'boolean', default: false },
    // --engine-write runs only the engine write bench (bench/engine-write-bench.ts): the engine's
    // write path in a process of its own, with and without write versions, --runs times each (3 unless set).
    'engine-write': { type: 'boolean', default: false },
  },
})
const clusterJoin = args['cluster-join']
/** The join bench's data set unless --hosts says otherwise: 23 x 10 series x 8,640 points = 1,987,200, about 2 M. */
const JOIN_DEFAULT_HOSTS = 23
const decimals = args.decimals === undefined ? undefined : Number(args.decimals)
const hosts = Number(args.hosts ?? (clusterJoin ? JOIN_DEFAULT_HOSTS : HOSTS))
const replicationFactor = Number(args['replication-factor'] ?? (clusterJoin ? 2 : 1))
const timestampsPerRequest = Number(args.batch)
const inflight = Number(args.inflight)
const runs = Number(args.runs ?? 20)
const writerBatchPoints = Number(args['writer-batch-points'])
if (args['catch-up'] && args.cluster === undefined) throw new Error('--catch-up goes with --cluster <n>')
if (clusterJoin && args['catch-up']) throw new Error('--cluster-join and --catch-up are separate benches')

/** A duration flag in seconds: `60`, `60s`, `1.5m`. */
function durationMs(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m)?$/.exec(text)
  if (m === null) throw new Error(`--${flag} takes a duration such as 60s or 2m, got ${text}`)
  return Number(m[1]) * (m[2] === 'm' ? 60_000 : 1_000)
}
if (args.against !== undefined && args.against !== 'victoriametrics') {
  throw new Error(`--against takes victoriametrics, got ${args.against}`)
}

/**
 * How long a server is left alone after its load before its data folder is measured (and the
 * queries start): at least a minute, as a user's server would sit, then until two readings 5 s
 * apart agree, at most two minutes in all.
 */
const IDLE_MIN_MS = Number(args['idle-seconds']) * 1000
const IDLE_MAX_MS = 2 * IDLE_MIN_MS
/** After a restart: long enough for the log replay and the flushes it starts. */
const RESTART_IDLE_MIN_MS = Math.min(10_000, IDLE_MIN_MS)
const RESTART_IDLE_MAX_MS = IDLE_MAX_MS

/** The queries of one server configuration, with the health-check round trip measured beside them. */
interface QuerySet {
  /** The round trip every call pays: V3 a grpc.health.v1 Check, VictoriaMetrics GET /health. */
  readonly health: RoundTrip
  readonly queries: QueryResult[]
  /** The same round trip after the queries and WARM_CALLS more calls, once V8 has optimized the call path. */
  readonly warmHealth: RoundTrip
}

interface SystemResult {
  readonly ingestPointsPerSecond: number
  /** Health checks, one every 2 ms on a connection of their own, while the ingest ran. */
  readonly healthUnderIngest: RoundTrip
  readonly healthChecksUnderIngest: number
  /** Peak RSS of the process that served the ingest and the queries at default flags. */
  readonly peakRssMiB: number
  /** The data folder of the running server after the ingest and an idle spell, as `du` counts it. */
  readonly diskRunning: IdleFolderSize
  /** The data folder after a clean stop and a start on the same folder, once the restart settled. */
  readonly diskAfterRestart: IdleFolderSize
  /**
   * The storage path, caches off: V3 restarted with --result-cache-points 0, VictoriaMetrics queried
   * with nocache=1 (its rollup result cache off), both after the restart.
   */
  readonly storagePath: QuerySet
  /** Both at their default flags, caches on, before the restart. */
  readonly defaults: QuerySet
  /** The server's event-loop delay while it answered the storage-path query mix; V3 only. */
  readonly eventLoopDelay?: { readonly p99Ms: number; readonly maxMs: number }
  /** Requests sent and TCP connections opened by the keep-alive agents, over both processes; VictoriaMetrics only. */
  readonly http?: { readonly requests: number; readonly connections: number }
}

function logDisk(system: string, when: string, d: IdleFolderSize, totalPoints: number): void {
  console.log(
    `${system} disk ${when}: ${(d.diskBytes / totalPoints).toFixed(2)} bytes/point (du), ${(d.apparentBytes / totalPoints).toFixed(2)} apparent, after ${d.idleSeconds.toFixed(0)} s idle${d.stable ? '' : ' (still changing)'}`,
  )
}

async function v3Queries(
  server: Server,
  values: Float64Array[][],
  params: Map<string, QueryParams[]>,
): Promise<QuerySet> {
  const health = await grpcHealthRoundTrip(server.address)
  const client = new V3Client(server.address)
  try {
    const queries: QueryResult[] = []
    for (const kind of QUERY_KINDS) {
      queries.push(await timed(kind.name, (p) => runV3(client, kind.name, p, values), params.get(kind.name) ?? []))
    }
    return { health, queries, warmHealth: await grpcHealthRoundTrip(server.address, WARM_CALLS) }
  } finally {
    client.close()
  }
}

async function benchV3(
  requests: Buffer[],
  totalPoints: number,
  values: Float64Array[][],
  params: Map<string, QueryParams[]>,
): Promise<SystemResult> {
  const servers: Server[] = [await startServer()]
  const server = servers[0] as Server
  const raw = new Client(server.address, credentials.createInsecure())
  const probe = grpcHealthProbe(server.address)
  try {
    const under = await probeDuring(probe.check, async () => {
      const written = await sendWrites([raw], requests, inflight)
      if (written !== totalPoints) throw new Error(`Write acknowledged ${written} points of ${totalPoints}`)
    })
    const ingestPointsPerSecond = Math.round(totalPoints / under.seconds)
    console.log(
      `V3 ingest (Write): ${ingestPointsPerSecond.toLocaleString('en')} points/s (${under.seconds.toFixed(1)} s)`,
    )
    // No Compact: a user's server seals and moves its write buffer on its own timer. The idle spell
    // lets that and RocksDB's background flushes and compactions finish before the running
    // server's folder, what a user's disk holds, is read and the queries are timed.
    const diskRunning = await idleFolderSize(server.dataDir, IDLE_MIN_MS, IDLE_MAX_MS)
    logDisk('V3', 'on the running server', diskRunning, totalPoints)
    const defaults = await v3Queries(server, values, params)
    const peak = await peakRssMiB(server.proc.pid as number)
    await stopServer(server)

    // A restart on the same folder, with the result cache off for the storage-path queries.
    servers.push(await startServer(['--result-cache-points', '0'], '127.0.0.1:0', server.dataDir))
    const restarted = servers[1] as Server
    const diskAfterRestart = await idleFolderSize(restarted.dataDir, RESTART_IDLE_MIN_MS, RESTART_IDLE_MAX_MS)
    logDisk('V3', 'after a restart', diskAfterRestart, totalPoints)
    // This scrape starts the interval the one after the queries reports on.
    await eventLoopDelayMs(restarted)
    const storagePath = await v3Queries(restarted, values, params)
    const eventLoopDelay = await eventLoopDelayMs(restarted)
    console.log(
      `V3 event-loop delay under the query mix: p99 ${eventLoopDelay.p99Ms.toFixed(1)} ms, max ${eventLoopDelay.maxMs.toFixed(1)} ms`,
    )
    return {
      ingestPointsPerSecond,
      healthUnderIngest: under.latency,
      healthChecksUnderIngest: under.checks,
      peakRssMiB: peak,
      diskRunning,
      diskAfterRestart,
      storagePath,
      defaults,
      eventLoopDelay,
    }
  } finally {
    probe.close()
    raw.close()
    // Both servers share the folder: stop the first (already stopped unless something failed), then
    // stop the second and remove the folder.
    await stopServer(server)
    await removeServer(servers[servers.length - 1] as Server)
  }
}

async function vmQueries(
  vm: VictoriaMetrics,
  values: Float64Array[][],
  params: Map<string, QueryParams[]>,
  o: QueryOptions,
): Promise<QuerySet> {
  const health = await vmHealthRoundTrip(vm)
  const queries: QueryResult[] = []
  for (const kind of QUERY_KINDS) {
    queries.push(
      await timed(kind.name, (p) => runVictoriaMetrics(vm, kind.name, p, values, o), params.get(kind.name) ?? []),
    )
  }
  return { health, queries, warmHealth: await vmHealthRoundTrip(vm, WARM_CALLS) }
}

async function benchVictoriaMetrics(
  bodies: string[],
  totalPoints: number,
  values: Float64Array[][],
  params: Map<string, QueryParams[]>,
): Promise<SystemResult> {
  ensureInstalled()
  const instances: VictoriaMetrics[] = [await startVictoriaMetrics()]
  const vm = instances[0] as VictoriaMetrics
  const probe = vmHealthProbe(vm)
  try {
    const under = await probeDuring(probe.check, () => ingestVictoriaMetrics(vm, bodies, inflight))
    const ingestPointsPerSecond = Math.round(totalPoints / under.seconds)
    console.log(
      `VictoriaMetrics ingest: ${ingestPointsPerSecond.toLocaleString('en')} points/s (${under.seconds.toFixed(1)} s)`,
    )
    // The same idle spell as V3 gets, for VictoriaMetrics' background merges.
    const diskRunning = await idleFolderSize(vm.dataDir, IDLE_MIN_MS, IDLE_MAX_MS)
    logDisk('VictoriaMetrics', 'on the running server', diskRunning, totalPoints)
    const defaults = await vmQueries(vm, values, params, { nocache: false })
    const peak = await peakRssMiB(vm.proc.pid as number)
    await stopVictoriaMetrics(vm)

    instances.push(await startVictoriaMetrics(vm.dataDir))
    const restarted = instances[1] as VictoriaMetrics
    const diskAfterRestart = await idleFolderSize(restarted.dataDir, RESTART_IDLE_MIN_MS, RESTART_IDLE_MAX_MS)
    logDisk('VictoriaMetrics', 'after a restart', diskAfterRestart, totalPoints)
    const storagePath = await vmQueries(restarted, values, params, { nocache: true })
    const http = {
      requests: vm.requests + restarted.requests,
      connections: vm.connections + restarted.connections,
    }
    console.log(`VictoriaMetrics: ${http.requests} requests over ${http.connections} TCP connections`)
    return {
      ingestPointsPerSecond,
      healthUnderIngest: under.latency,
      healthChecksUnderIngest: under.checks,
      peakRssMiB: peak,
      diskRunning,
      diskAfterRestart,
      storagePath,
      defaults,
      http,
    }
  } finally {
    probe.close()
    for (const instance of instances) await stopVictoriaMetrics(instance)
    await rm(vm.dataDir, { recursive: true, force: true })
  }
}

function ratio(v3: number, other: number | undefined, higherIsBetter: boolean): string {
  if (other === undefined || other === 0) return ''
  const r = v3 / other
  const better = higherIsBetter ? r >= 1 : r <= 1
  return `${r.toFixed(2)}x ${better ? '(V3 ahead)' : '(V3 behind)'}`
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')

async function main(): Promise<void> {
  const seriesCount = hosts * METRICS.length
  const totalPoints = seriesCount * POINTS_PER_SERIES
  const machine = describeMachine()
  const dataSet = describeDataSet(hosts, decimals)
  console.log(`data set: ${dataSet}`)

  // Generate and encode every request before the clock starts, as TSBS loads from a file.
  const tagRecords = Array.from({ length: hosts }, (_, h) => hostTags(h))
  const tags = tagRecords.map((t) => Object.entries(t).map(([key, value]) => ({ key, value })))
  const values = Array.from({ length: hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, decimals)))
  const requests = encodeMessages(tags, values, timestampsPerRequest)
  const params = drawParams(hosts, runs)

  const v3 = await benchV3(requests, totalPoints, values, params)
  const writeStream: IngestResult = await benchWriteStream(requests, totalPoints)
  console.log(`V3 ingest (WriteStream): ${fmt(writeStream.pointsPerSecond)} points/s`)
  const ingest: IngestResult = await benchIngest(tagRecords, values, writerBatchPoints, totalPoints)
  console.log(`V3 ingest (batching writer on Ingest, write()): ${fmt(ingest.pointsPerSecond)} points/s`)
  const boundIngest: IngestResult = await benchIngest(tagRecords, values, writerBatchPoints, totalPoints, true)
  console.log(`V3 ingest (batching writer on Ingest, bound series): ${fmt(boundIngest.pointsPerSecond)} points/s`)
  // The peak RSS row is the higher of the two writer loads.
  const writerRssMiB = Math.max(ingest.peakRssMiB, boundIngest.peakRssMiB)
  let vm: SystemResult | undefined
  if (args.against === 'victoriametrics') {
    vm = await benchVictoriaMetrics(lineProtocol(hosts, tagRecords, values), totalPoints, values, params)
  }

  const vmIngest = vm ? fmt(vm.ingestPointsPerSecond) : ''
  const vmRss = vm ? vm.peakRssMiB.toFixed(0) : ''
  const perPoint = (d: FolderSize | undefined): string => (d ? (d.diskBytes / totalPoints).toFixed(2) : '')
  const bytesRatio = (a: FolderSize, b: FolderSize | undefined): string => ratio(a.diskBytes, b?.diskBytes, false)
  const ms = (r: { medianMs: number; p95Ms: number } | undefined, digits = 2): string =>
    r ? `${r.medianMs.toFixed(digits)} (${r.p95Ms.toFixed(digits)})` : ''
  const queryRows = (v3Set: QuerySet, vmSet: QuerySet | undefined, health: string): string[] => [
    `| ${health}, median (p95) ms | ${ms(v3Set.health, 3)} | ${ms(vmSet?.health, 3)} | ${ratio(v3Set.health.medianMs, vmSet?.health.medianMs, false)} |`,
    ...v3Set.queries.map((q, i) => {
      const other = vmSet?.queries[i]
      return `| ${q.name}, median (p95) ms | ${ms(q)} | ${ms(other)} | ${ratio(q.medianMs, other?.medianMs, false)} |`
    }),
    `| ${health} after the queries and ${fmt(WARM_CALLS)} more calls, median (p95) ms | ${ms(v3Set.warmHealth, 3)} | ${ms(vmSet?.warmHealth, 3)} | ${ratio(v3Set.warmHealth.medianMs, vmSet?.warmHealth.medianMs, false)} |`,
  ]
  const diskKinds = (d: FolderSize): string =>
    Object.entries(d.diskByKind)
      .map(([kind, bytes]) => `${kind} ${(bytes / 1024 / 1024).toFixed(1)} MiB`)
      .join(', ')
  const idle = (d: IdleFolderSize | undefined): string =>
    d ? `${d.idleSeconds.toFixed(0)} s${d.stable ? '' : ', still changing'}` : ''
  const rows: string[] = [
    `| figure | V3 | VictoriaMetrics | V3 / VM |`,
    '|---|---|---|---|',
    `| ingest, batching writer on one Ingest stream, write(metric, tags, …), points/s | ${fmt(ingest.pointsPerSecond)} | ${vmIngest} | ${ratio(ingest.pointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| ingest, batching writer on one Ingest stream, bound series (writer.series), points/s | ${fmt(boundIngest.pointsPerSecond)} | | ${ratio(boundIngest.pointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| ingest, WriteStream, points/s | ${fmt(writeStream.pointsPerSecond)} | | ${ratio(writeStream.pointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| ingest, Write (2 in flight), points/s | ${fmt(v3.ingestPointsPerSecond)} | | ${ratio(v3.ingestPointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| health check during the ingest (V3 Write, VM line protocol; one every 2 ms on a connection of its own), median (p95) ms | ${ms(v3.healthUnderIngest)} | ${ms(vm?.healthUnderIngest)} | ${ratio(v3.healthUnderIngest.medianMs, vm?.healthUnderIngest.medianMs, false)} |`,
    `| bytes per point on disk (du), running server after the ingest and an idle spell | ${perPoint(v3.diskRunning)} | ${perPoint(vm?.diskRunning)} | ${bytesRatio(v3.diskRunning, vm?.diskRunning)} |`,
    `| bytes per point on disk (du), after a restart | ${perPoint(v3.diskAfterRestart)} | ${perPoint(vm?.diskAfterRestart)} | ${bytesRatio(v3.diskAfterRestart, vm?.diskAfterRestart)} |`,
    `| peak RSS while ingesting (batching writer, the higher of its two loads), MiB | ${writerRssMiB.toFixed(0)} | ${vmRss} | ${ratio(writerRssMiB, vm?.peakRssMiB, false)} |`,
    `| peak RSS, ingest then queries at default flags, MiB | ${v3.peakRssMiB.toFixed(0)} | ${vmRss} | ${ratio(v3.peakRssMiB, vm?.peakRssMiB, false)} |`,
    ...queryRows(v3.storagePath, vm?.storagePath, 'baseline round trip (V3 gRPC health check, VM GET /health)'),
    `| server event-loop delay under the query mix, p99 (max) ms | ${v3.eventLoopDelay?.p99Ms.toFixed(1)} (${v3.eventLoopDelay?.maxMs.toFixed(1)}) | | |`,
  ]
  const defaultRows: string[] = [
    `| figure | V3 | VictoriaMetrics | V3 / VM |`,
    '|---|---|---|---|',
    ...queryRows(v3.defaults, vm?.defaults, 'baseline round trip (V3 gRPC health check, VM GET /health)'),
  ]
  const notes = [
    `Queries: the storage path, caches off (V3 restarted with \`--result-cache-points 0\`, VictoriaMetrics queried with \`nocache=1\`), each after a restart on the same folder; ${runs} timed runs after 2 warm-ups, every answer of both checked against the generated data.`,
    `V3's folder on the running server, allocated bytes by kind of RocksDB file: ${diskKinds(v3.diskRunning)}; after the restart: ${diskKinds(v3.diskAfterRestart)}.`,
    `Idle before the disk reading: V3 ${idle(v3.diskRunning)}, VictoriaMetrics ${idle(vm?.diskRunning)}; after the restart: V3 ${idle(v3.diskAfterRestart)}, VictoriaMetrics ${idle(vm?.diskAfterRestart)}.${vm?.http ? ` VictoriaMetrics was loaded and queried through a keep-alive agent per process: ${fmt(vm.http.requests)} requests over ${vm.http.connections} TCP connections.` : ''}`,
  ]
  const md = [
    `${machine}; ${dataSet}; default server flags.`,
    '',
    ...rows,
    '',
    ...notes,
    '',
    'Both at their default flags, caches on (V3 result cache, VictoriaMetrics rollup result cache), before the restart:',
    '',
    ...defaultRows,
  ].join('\n')
  console.log(`\n${md}\n`)
  const report = {
    date: new Date().toISOString(),
    machine,
    dataSet: { hosts, metrics: METRICS.length, points: totalPoints, decimals: decimals ?? null },
    write: { requests: requests.length, pointsPerRequest: timestampsPerRequest * seriesCount, inflight },
    v3: {
      ...v3,
      writeStream,
      ingest: { ...ingest, batchPoints: writerBatchPoints },
      boundIngest: { ...boundIngest, batchPoints: writerBatchPoints },
    },
    victoriaMetrics: vm ?? null,
  }
  await saveResults(resultsName('latest', hosts, decimals), JSON.stringify(report, null, 2), md)
}

if (args['engine-write']) {
  const { runEngineWriteBench } = await import('./engine-write-bench.js')
  await runEngineWriteBench({ hosts, decimals, timestampsPerRequest, inflight, runs: Number(args.runs ?? 3) })
} else if (args['cold-start']) {
  const { runColdStartBench } = await import('./cold-start-bench.js')
  await runColdStartBench({
    hosts,
    decimals,
    timestampsPerRequest,
    inflight,
    runs: Number(args.runs ?? 40),
    againstVictoriaMetrics: args.against === 'victoriametrics',
  })
} else if (args.restart) {
  const { runRestartBench } = await import('./restart-bench.js')
  await runRestartBench({ hosts, decimals, timestampsPerRequest, inflight })
} else if (args.protocols) {
  const { runProtocolsBench } = await import('./protocols-bench.js')
  await runProtocolsBench({ hosts, decimals, runs: Math.min(runs, 3), inflight })
} else if (args.ring) {
  const { ringBench } = await import('./ring-bench.js')
  ringBench()
} else if (args.regex) {
  const { regexBench } = await import('./regex-bench.js')
  regexBench()
} else if (clusterJoin) {
  const { runClusterJoinBench } = await import('./cluster-join-bench.js')
  await runClusterJoinBench({
    nodes: Number(args.cluster ?? 3),
    replicationFactor,
    hosts,
    decimals,
    timestampsPerRequest,
    inflight,
    command: `node --import tsx bench/run.ts ${process.argv.slice(2).join(' ')}`,
  })
} else if (args.cluster !== undefined && args['catch-up']) {
  const { runCatchUpBench } = await import('./catch-up-bench.js')
  await runCatchUpBench({
    nodes: Number(args.cluster),
    replicationFactor,
    hosts,
    decimals,
    timestampsPerRequest,
    inflight,
    downMs: durationMs('catch-up-down', args['catch-up-down']),
    ratePointsPerSecond: Number(args['catch-up-rate']),
  })
} else if (args.cluster !== undefined) {
  const { runClusterBench } = await import('./cluster-bench.js')
  await runClusterBench({
    nodes: Number(args.cluster),
    replicationFactor,
    hosts,
    decimals,
    timestampsPerRequest,
    inflight,
    runs,
    peerKey: args['peer-key'],
  })
} else if (args.hints) {
  const { hintStoreBench } = await import('./hint-store-bench.js')
  await hintStoreBench()
} else if (args.peer) {
  const { runPeerBench } = await import('./peer-bench.js')
  await runPeerBench()
} else {
  await main()
}
