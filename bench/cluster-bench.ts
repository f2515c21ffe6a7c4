/**
 * Cluster bench (`npm run bench -- --cluster 3`): the single-node bench's data set and queries
 * against `v3 serve --cluster` nodes on loopback (a Consul API emulator for membership), beside a
 * single `v3 serve` in the same run.
 * - Ingest: the pre-encoded Write requests of the single-node bench (50,000 points each, 2 in
 *   flight per client), into the single node, into a cluster through one node, and into a fresh
 *   cluster through every node (one client per node, requests handed out round-robin). Each server
 *   process's CPU time (utime + stime from /proc/<pid>/stat) is read before and after, over the
 *   write calls alone and up to the end of a 10 s settle that follows, in which the servers seal
 *   and flush on their own timers as a user's do (no Compact); a cluster's figure is the sum over
 *   its nodes.
 * - A second load: after the queries, the next day's points (the same requests, timestamps 24 h
 *   later) through the same entry into the single node and the cluster of the first load, both
 *   loaded and warm by then, with the same CPU readings. The first loads include what each
 *   process pays once (V8 compiling its hot code, the first memtables); this one does not.
 *   RocksDB's background threads (flushes, compactions) are also read on their own, since a
 *   server compacts when its files reach RocksDB's triggers, which a node holding a part of the
 *   data reaches later than the single node.
 * - Queries: after those settles, a health-check round trip as the baseline of each, then
 *   the seven queries through one cluster node and through the single node, the same warm-ups and
 *   timed runs, alternating per query. Every answer is checked against the reference from the
 *   generated data, and the cluster's answers against the single node's run by run: equal up to
 *   float summation order.
 * Targets of issue 9 with R = 1: CPU per point at most 1.25x the single node's, query medians at
 * most 1.5x. Results go to bench/results/cluster-<N>*.json and .md.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client, credentials } from '@grpc/grpc-js'
import { type CallOptions, type QueryInput, type SelectorInput, V3Client } from '../src/client/index.js'
import { newPeerKey } from '../src/cluster/peer-key.js'
import type { SeriesPoints } from '../src/model/types.js'
import { hostTags, INTERVAL_MS, METRICS, POINTS_PER_SERIES, seriesValues } from './dataset.js'
import {
  cpuSeconds,
  describeDataSet,
  describeMachine,
  encodeMessages,
  FAULT_PROBE_BYTES,
  freePort,
  grpcHealthRoundTrip,
  median,
  minorFaults,
  pageFaultMicros,
  peakRssMiB,
  QUIET_CORES,
  QUIET_WINDOWS,
  type QueryResult,
  removeServer,
  resultsName,
  type Server,
  saveResults,
  sendWrites,
  startServer,
  statCpuSeconds,
  timed,
  trackProcess,
  waitQuiet,
} from './harness.js'
import { drawParams, QUERY_KINDS, type QueryParams, runV3 } from './queries.js'

export interface ClusterBenchOptions {
  readonly nodes: number
  readonly replicationFactor: number
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
  readonly runs: number
  /** Nodes started with a peer key (--peer-key): their ZeroMQ traffic encrypted and authenticated. */
  readonly peerKey: boolean
}

/** The pause after each load, the same for the single node and the cluster: the servers seal and flush on their own. */
const SETTLE_MS = 10_000
/** How far a cluster value may differ from the single node's: float sums in another order. */
const RELATIVE_TOLERANCE = 1e-9

/** CPU seconds (user + system) of a process's RocksDB background threads (flushes, compactions) so far. */
async function rocksdbThreadSeconds(pid: number): Promise<number> {
  let total = 0
  for (const task of await readdir(`/proc/${pid}/task`)) {
    // A thread that ended since the listing has no stat any more, nor CPU time to add.
    const stat = await readFile(`/proc/${pid}/task/${task}/stat`, 'utf8').catch(() => undefined)
    // RocksDB names its pool threads rocksdb:low and rocksdb:high (the name is field 2).
    if (stat?.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).startsWith('rocksdb:')) total += statCpuSeconds(stat)
  }
  return total
}

async function totalCpuSeconds(servers: readonly Server[]): Promise<number> {
  let total = 0
  for (const s of servers) total += await cpuSeconds(s.proc.pid as number)
  return total
}

export interface Consul {
  readonly url: string
  readonly proc: ChildProcess
}

/** The Consul API emulator of the test tree, in a process of its own. */
export async function startConsul(): Promise<Consul> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/consul-emulator.ts'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  trackProcess(proc)
  let out = ''
  proc.stdout?.setEncoding('utf8')
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout?.on('data', (chunk: string) => {
      out += chunk
      const m = /^consul emulator on (\S+)$/m.exec(out)
      if (m?.[1] !== undefined) resolve(m[1])
    })
    proc.once('exit', (code) => reject(new Error(`the Consul emulator exited with ${code} before listening`)))
  })
  return { url, proc }
}

export async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode === null && proc.signalCode === null) {
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
  }
}

export interface Cluster {
  readonly nodes: Server[]
  /** Each node's `v3 serve` flags beside the data folder and listen address, to restart it as it was. */
  readonly args: string[][]
}

/**
 * Starts `count` nodes of one cluster with the single-node bench's server flags plus the cluster's;
 * returns once every node lists every member healthy and active (the leader's joins done). Nodes start one after another, as the first
 * one records the cluster's settings in Consul.
 */
export async function startCluster(
  consul: Consul,
  name: string,
  count: number,
  rf: number,
  out: Cluster,
  extra: readonly string[] = [],
): Promise<void> {
  for (let i = 1; i <= count; i++) {
    // Another process can take a port between freePort and the node's bind, so a node that exits
    // while starting is started again on new ports, up to three times.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort()
      const peerPort = await freePort()
      const args = [
        '--cluster',
        '--node-id',
        `n${i}`,
        '--consul',
        consul.url,
        '--cluster-name',
        name,
        '--peer-listen',
        `127.0.0.1:${peerPort}`,
        '--replication-factor',
        String(rf),
        ...extra,
      ]
      try {
        const server = await startServer(args, `127.0.0.1:${port}`)
        out.nodes.push(server)
        out.args.push(args)
        break
      } catch (err) {
        if (attempt >= 3) throw err
        console.log(`node n${i} did not start (${(err as Error).message}); trying new ports`)
      }
    }
  }
  const want = out.nodes.map((_, i) => `n${i + 1}`).join(',')
  const deadline = Date.now() + 60_000
  for (const node of out.nodes) {
    const client = new V3Client(node.address)
    try {
      for (;;) {
        const members = await client.listNodes().catch(() => [])
        const ids = members
          .map((m) => m.id)
          .sort()
          .join(',')
        if (ids === want && members.every((m) => m.state === 'healthy' && m.lifecycle === 'active')) break
        if (Date.now() > deadline) throw new Error(`cluster ${name}: ${node.address} lists ${ids}, not ${want}`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    } finally {
      client.close()
    }
  }
}

export async function removeAll(servers: readonly Server[]): Promise<void> {
  for (const server of servers) await removeServer(server)
}

interface IngestFigures {
  readonly pointsPerSecond: number
  /** Server CPU seconds over the write calls, per million points; summed over a cluster's nodes. */
  readonly cpuSecondsPerMillionPoints: number
  /** The same from the first write to the end of the settle after the load. */
  readonly cpuSecondsPerMillionPointsWithSettle: number
  /** Each server's CPU seconds over the write calls, in node order. */
  readonly cpuSecondsPerServer: number[]
  /** Of cpuSecondsPerMillionPoints, what RocksDB's background threads (flushes, compactions) spent. */
  readonly rocksdbCpuSecondsPerMillionPoints: number
  /**
   * Minor page faults over the write calls, per million points, summed over a cluster's nodes: each
   * first touch of a page the process had not used, as its heaps grow.
   */
  readonly faultsPerMillionPoints: number
}

/** The single-node bench's Write driver through `entryPoints`, with each server's CPU time around it. */
async function ingest(
  servers: readonly Server[],
  entryPoints: readonly Server[],
  requests: readonly Buffer[],
  totalPoints: number,
  inflight: number,
): Promise<IngestFigures> {
  const clients = entryPoints.map((s) => new Client(s.address, credentials.createInsecure()))
  try {
    const rocksdbBefore = await Promise.all(servers.map((s) => rocksdbThreadSeconds(s.proc.pid as number)))
    const faultsBefore = await Promise.all(servers.map((s) => minorFaults(s.proc.pid as number)))
    const before = await Promise.all(servers.map((s) => cpuSeconds(s.proc.pid as number)))
    const t0 = performance.now()
    const written = await sendWrites(clients, requests, inflight)
    const seconds = (performance.now() - t0) / 1000
    const after = await Promise.all(servers.map((s) => cpuSeconds(s.proc.pid as number)))
    const faultsAfter = await Promise.all(servers.map((s) => minorFaults(s.proc.pid as number)))
    const rocksdbAfter = await Promise.all(servers.map((s) => rocksdbThreadSeconds(s.proc.pid as number)))
    if (written !== totalPoints) throw new Error(`wrote ${written} points of ${totalPoints}`)
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
    const afterSettle = await totalCpuSeconds(servers)
    const perServer = after.map((a, i) => a - (before[i] as number))
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
    const millions = totalPoints / 1e6
    return {
      pointsPerSecond: Math.round(totalPoints / seconds),
      cpuSecondsPerMillionPoints: sum(perServer) / millions,
      cpuSecondsPerMillionPointsWithSettle: (afterSettle - sum(before)) / millions,
      cpuSecondsPerServer: perServer,
      rocksdbCpuSecondsPerMillionPoints: (sum(rocksdbAfter) - sum(rocksdbBefore)) / millions,
      faultsPerMillionPoints: (sum(faultsAfter) - sum(faultsBefore)) / millions,
    }
  } finally {
    for (const c of clients) c.close()
  }
}

/** A client that keeps every answer, for the comparison of two systems after the timed runs. */
class RecordingClient extends V3Client {
  readonly answers: SeriesPoints[][] = []

  override async query(request: QueryInput, options?: CallOptions): Promise<SeriesPoints[]> {
    const answer = await super.query(request, options)
    this.answers.push(answer)
    return answer
  }

  override async latest(selector: SelectorInput, options?: CallOptions): Promise<SeriesPoints[]> {
    const answer = await super.latest(selector, options)
    this.answers.push(answer)
    return answer
  }
}

function tagText(s: SeriesPoints): string {
  return s.tags.map((t) => `${t.key}=${t.value}`).join(',')
}

/** Throws unless two answers hold the same series, in the same order, with equal points. */
function expectSameAnswer(what: string, cluster: SeriesPoints[], single: SeriesPoints[]): void {
  if (cluster.length !== single.length) throw new Error(`${what}: ${cluster.length} series, single ${single.length}`)
  cluster.forEach((c, i) => {
    const s = single[i] as SeriesPoints
    const name = `${what}: series ${i} (${c.metric}{${tagText(c)}})`
    if (c.metric !== s.metric || tagText(c) !== tagText(s)) {
      throw new Error(`${name} differs from single's ${s.metric}{${tagText(s)}}`)
    }
    if (c.timestamps.length !== s.timestamps.length) {
      throw new Error(`${name}: ${c.timestamps.length} points, single ${s.timestamps.length}`)
    }
    for (let j = 0; j < c.timestamps.length; j++) {
      const a = c.values[j] as number
      const b = s.values[j] as number
      const equal = a === b || (Number.isNaN(a) && Number.isNaN(b))
      if (c.timestamps[j] !== s.timestamps[j] || (!equal && Math.abs(a - b) > RELATIVE_TOLERANCE * Math.abs(b))) {
        throw new Error(`${name}: point ${j} is ${c.timestamps[j]}=${a}, single ${s.timestamps[j]}=${b}`)
      }
    }
  })
}

interface QueryPair {
  readonly name: string
  readonly single: QueryResult
  readonly cluster: QueryResult
  /** Runs (warm-ups included) whose cluster answer was compared with the single node's. */
  readonly compared: number
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')
const x = (a: number, b: number): string => `${(a / b).toFixed(2)}x`

export async function runClusterBench(o: ClusterBenchOptions): Promise<void> {
  if (!(o.nodes >= 2)) throw new Error(`--cluster takes a node count of 2 or more, got ${o.nodes}`)
  if (!(o.replicationFactor >= 1)) throw new Error(`--replication-factor must be 1 or more`)
  const seriesCount = o.hosts * METRICS.length
  const totalPoints = seriesCount * POINTS_PER_SERIES
  const machine = describeMachine()
  const dataSet = describeDataSet(o.hosts, o.decimals)
  const setup = `${o.nodes} nodes, replication factor ${o.replicationFactor}${o.peerKey ? ', with a peer key' : ''}`
  console.log(`data set: ${dataSet}; cluster: ${setup}`)

  // Generated and encoded before any clock starts, as in the single-node bench.
  const tags = Array.from({ length: o.hosts }, (_, h) =>
    Object.entries(hostTags(h)).map(([key, value]) => ({ key, value })),
  )
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const requests = encodeMessages(tags, values, o.timestampsPerRequest)
  const nextDay = encodeMessages(tags, values, o.timestampsPerRequest, POINTS_PER_SERIES * INTERVAL_MS)
  const params = drawParams(o.hosts, o.runs)
  const faultMicros = median([pageFaultMicros(), pageFaultMicros(), pageFaultMicros()])
  console.log(`a page fault costs ${faultMicros.toFixed(2)} µs here`)

  const single: Server[] = []
  const first: Cluster = { nodes: [], args: [] }
  const second: Cluster = { nodes: [], args: [] }
  let consul: Consul | undefined
  // With --peer-key every node gets the same key file (0600), as a user gives them.
  const keyDir = o.peerKey ? await mkdtemp(join(tmpdir(), 'v3-bench-key-')) : undefined
  const nodeExtra: string[] = []
  if (keyDir !== undefined) {
    const file = join(keyDir, 'peer.key')
    await writeFile(file, `${newPeerKey().secretKey}\n`, { mode: 0o600 })
    nodeExtra.push('--peer-key', file)
  }
  const singleClient: { c?: RecordingClient } = {}
  const clusterClient: { c?: RecordingClient } = {}
  try {
    single.push(await startServer())
    const singleIngest = await ingest(single, single, requests, totalPoints, o.inflight)
    console.log(
      `single node ingest: ${fmt(singleIngest.pointsPerSecond)} points/s, ${singleIngest.cpuSecondsPerMillionPoints.toFixed(2)} CPU s per M points`,
    )
    const pidsOf = (servers: readonly Server[]): number[] => servers.map((s) => s.proc.pid as number)
    // Each load and the queries start with the servers quiet (see waitQuiet): the single node's
    // write-ahead log flush ran while the cluster loaded, and the cluster's where its queries began.
    const quietWaits = [await waitQuiet(pidsOf(single))]

    consul = await startConsul()
    await startCluster(consul, 'bench-one', o.nodes, o.replicationFactor, first, nodeExtra)
    const entry = first.nodes[0] as Server
    const oneIngest = await ingest(first.nodes, [entry], requests, totalPoints, o.inflight)
    console.log(
      `cluster ingest through one node: ${fmt(oneIngest.pointsPerSecond)} points/s, ${oneIngest.cpuSecondsPerMillionPoints.toFixed(2)} CPU s per M points (${oneIngest.cpuSecondsPerServer.map((c) => c.toFixed(1)).join(' + ')} s)`,
    )
    quietWaits.push(await waitQuiet(pidsOf([...single, ...first.nodes])))
    const singleHealth = await grpcHealthRoundTrip((single[0] as Server).address)
    const clusterHealth = await grpcHealthRoundTrip(entry.address)
    console.log(
      `health check round trip, median: single ${singleHealth.medianMs.toFixed(3)} ms, cluster node ${clusterHealth.medianMs.toFixed(3)} ms`,
    )

    singleClient.c = new RecordingClient((single[0] as Server).address)
    clusterClient.c = new RecordingClient(entry.address)
    const queries: QueryPair[] = []
    for (const kind of QUERY_KINDS) {
      const list: QueryParams[] = params.get(kind.name) ?? []
      const sc = singleClient.c
      const cc = clusterClient.c
      sc.answers.length = 0
      cc.answers.length = 0
      const s = await timed(kind.name, (p) => runV3(sc, kind.name, p, values), list)
      const c = await timed(kind.name, (p) => runV3(cc, kind.name, p, values), list)
      if (sc.answers.length !== list.length || cc.answers.length !== list.length) {
        throw new Error(`BUG: ${kind.name} recorded ${sc.answers.length} and ${cc.answers.length} answers`)
      }
      cc.answers.forEach((a, i) => {
        expectSameAnswer(`${kind.name} run ${i}`, a, sc.answers[i] as SeriesPoints[])
      })
      queries.push({ name: kind.name, single: s, cluster: c, compared: list.length })
      console.log(
        `${kind.name}: single ${s.medianMs.toFixed(2)} ms, cluster ${c.medianMs.toFixed(2)} ms (${x(c.medianMs, s.medianMs)}), answers equal`,
      )
    }
    const peakRss = {
      single: await peakRssMiB((single[0] as Server).proc.pid as number),
      clusterNodes: await Promise.all(first.nodes.map((n) => peakRssMiB(n.proc.pid as number))),
    }
    singleClient.c.close()
    clusterClient.c.close()
    const singleAgain = await ingest(single, single, nextDay, totalPoints, o.inflight)
    quietWaits.push(await waitQuiet(pidsOf([...single, ...first.nodes])))
    const oneAgain = await ingest(first.nodes, [entry], nextDay, totalPoints, o.inflight)
    console.log(
      `the next day into the loaded servers, CPU s per M points: single ${singleAgain.cpuSecondsPerMillionPoints.toFixed(2)}, cluster through one node ${oneAgain.cpuSecondsPerMillionPoints.toFixed(2)} (${oneAgain.cpuSecondsPerServer.map((c) => c.toFixed(1)).join(' + ')} s)`,
    )
    await removeAll(single)
    await removeAll(first.nodes)

    await startCluster(consul, 'bench-all', o.nodes, o.replicationFactor, second, nodeExtra)
    const allIngest = await ingest(second.nodes, second.nodes, requests, totalPoints, o.inflight)
    console.log(
      `cluster ingest through all ${o.nodes} nodes: ${fmt(allIngest.pointsPerSecond)} points/s, ${allIngest.cpuSecondsPerMillionPoints.toFixed(2)} CPU s per M points (${allIngest.cpuSecondsPerServer.map((c) => c.toFixed(1)).join(' + ')} s)`,
    )
    await removeAll(second.nodes)

    const cpuTarget = (r: number): string => `${r.toFixed(2)}x ${r <= 1.25 ? '(target met)' : '(target missed)'}`
    const cpuRow = (what: string, f: IngestFigures): string =>
      `| ${what} | ${singleIngest.cpuSecondsPerMillionPoints.toFixed(2)} | ${f.cpuSecondsPerMillionPoints.toFixed(2)} | ${o.replicationFactor === 1 ? cpuTarget(f.cpuSecondsPerMillionPoints / singleIngest.cpuSecondsPerMillionPoints) : x(f.cpuSecondsPerMillionPoints, singleIngest.cpuSecondsPerMillionPoints)} |`
    const withSettleRow = (what: string, f: IngestFigures): string =>
      `| ${what} | ${singleIngest.cpuSecondsPerMillionPointsWithSettle.toFixed(2)} | ${f.cpuSecondsPerMillionPointsWithSettle.toFixed(2)} | ${x(f.cpuSecondsPerMillionPointsWithSettle, singleIngest.cpuSecondsPerMillionPointsWithSettle)} |`
    const faults = (f: IngestFigures): string =>
      `${fmt(f.faultsPerMillionPoints)} (${((f.faultsPerMillionPoints * faultMicros) / 1e6).toFixed(2)} s)`
    const faultRow = (what: string, single: IngestFigures, cluster: IngestFigures): string =>
      `| minor page faults per M points (at ${faultMicros.toFixed(1)} µs each, CPU s per M points), ${what} | ${faults(single)} | ${faults(cluster)} | ${x(cluster.faultsPerMillionPoints, single.faultsPerMillionPoints)} |`
    const rows: string[] = [
      `| figure | single node | cluster (${setup}) | cluster / single |`,
      '|---|---|---|---|',
      `| ingest through one node, Write (${o.inflight} in flight), points/s | ${fmt(singleIngest.pointsPerSecond)} | ${fmt(oneIngest.pointsPerSecond)} | ${x(oneIngest.pointsPerSecond, singleIngest.pointsPerSecond)} |`,
      `| ingest through all ${o.nodes} nodes, Write (${o.inflight} in flight each), points/s | | ${fmt(allIngest.pointsPerSecond)} | ${x(allIngest.pointsPerSecond, singleIngest.pointsPerSecond)} |`,
      cpuRow('server CPU s per M points, ingest through one node (cluster: all nodes)', oneIngest),
      cpuRow(`server CPU s per M points, ingest through all ${o.nodes} nodes`, allIngest),
      withSettleRow('server CPU s per M points, ingest through one node and the 10 s after it', oneIngest),
      withSettleRow(`server CPU s per M points, ingest through all ${o.nodes} nodes and the 10 s after it`, allIngest),
      `| ingest of the next day into the loaded servers (the second load), through one node, points/s | ${fmt(singleAgain.pointsPerSecond)} | ${fmt(oneAgain.pointsPerSecond)} | ${x(oneAgain.pointsPerSecond, singleAgain.pointsPerSecond)} |`,
      `| server CPU s per M points, the second load through one node | ${singleAgain.cpuSecondsPerMillionPoints.toFixed(2)} | ${oneAgain.cpuSecondsPerMillionPoints.toFixed(2)} | ${x(oneAgain.cpuSecondsPerMillionPoints, singleAgain.cpuSecondsPerMillionPoints)} |`,
      `| of which RocksDB's background threads (flushes, compactions) | ${singleAgain.rocksdbCpuSecondsPerMillionPoints.toFixed(2)} | ${oneAgain.rocksdbCpuSecondsPerMillionPoints.toFixed(2)} | |`,
      `| server CPU s per M points, the second load through one node and the 10 s after it | ${singleAgain.cpuSecondsPerMillionPointsWithSettle.toFixed(2)} | ${oneAgain.cpuSecondsPerMillionPointsWithSettle.toFixed(2)} | ${x(oneAgain.cpuSecondsPerMillionPointsWithSettle, singleAgain.cpuSecondsPerMillionPointsWithSettle)} |`,
      faultRow('ingest through one node (cluster: all nodes)', singleIngest, oneIngest),
      faultRow(`ingest through all ${o.nodes} nodes`, singleIngest, allIngest),
      faultRow('the second load through one node', singleAgain, oneAgain),
      `| health check round trip, median (p95) ms | ${singleHealth.medianMs.toFixed(3)} (${singleHealth.p95Ms.toFixed(3)}) | ${clusterHealth.medianMs.toFixed(3)} (${clusterHealth.p95Ms.toFixed(3)}) | ${x(clusterHealth.medianMs, singleHealth.medianMs)} |`,
      ...queries.map((q) => {
        const r = q.cluster.medianMs / q.single.medianMs
        const verdict = o.replicationFactor === 1 ? (r <= 1.5 ? ' (target met)' : ' (target missed)') : ''
        return `| ${q.name}, median (p95) ms | ${q.single.medianMs.toFixed(2)} (${q.single.p95Ms.toFixed(2)}) | ${q.cluster.medianMs.toFixed(2)} (${q.cluster.p95Ms.toFixed(2)}) | ${r.toFixed(2)}x${verdict} |`
      }),
      `| peak RSS, ingest then queries, MiB | ${peakRss.single.toFixed(0)} | ${peakRss.clusterNodes.map((m) => m.toFixed(0)).join(' + ')} | |`,
    ]
    const md = [
      `${machine}; ${dataSet}; cluster of ${setup}, queries through one node; both in the same run.`,
      '',
      ...rows,
      '',
      `Every answer was checked against the reference from the generated data, and each cluster answer against the single node's for the same parameters (${queries.reduce((a, q) => a + q.compared, 0)} answers, equal up to float summation order).`,
      `Before each load after the first, and before the queries, the bench waited after the 10 s settle until every server was quiet (under ${QUIET_CORES * 100} % of a core in ${QUIET_WINDOWS} 1 s windows in a row): ${quietWaits.map((w) => `${w.seconds.toFixed(0)} s${w.quiet ? '' : ' (not quiet by then)'}`).join(', ')} (before the cluster's first load, before the queries, before the cluster's second load).`,
      `Page faults are the server processes' minor faults over the write calls (all threads, from /proc/<pid>/stat), summed over a cluster's nodes; a page fault here cost ${faultMicros.toFixed(2)} µs, the bench process writing one byte to each 4 KiB page of a fresh ${FAULT_PROBE_BYTES / 2 ** 20} MiB buffer (median of 3).`,
    ].join('\n')
    console.log(`\n${md}\n`)
    const kind = `cluster-${o.nodes}${o.replicationFactor === 1 ? '' : `-rf${o.replicationFactor}`}${o.peerKey ? '-peer-key' : ''}`
    const report = {
      date: new Date().toISOString(),
      machine,
      dataSet: { hosts: o.hosts, metrics: METRICS.length, points: totalPoints, decimals: o.decimals ?? null },
      cluster: { nodes: o.nodes, replicationFactor: o.replicationFactor },
      write: {
        requests: requests.length,
        pointsPerRequest: o.timestampsPerRequest * seriesCount,
        inflight: o.inflight,
      },
      ingest: {
        single: singleIngest,
        throughOneNode: oneIngest,
        throughAllNodes: allIngest,
        secondLoad: { single: singleAgain, throughOneNode: oneAgain },
      },
      healthCheck: { single: singleHealth, cluster: clusterHealth },
      queries,
      peakRssMiB: peakRss,
      faultMicros,
      quietWaits,
    }
    await saveResults(resultsName(kind, o.hosts, o.decimals), JSON.stringify(report, null, 2), md)
  } finally {
    if (keyDir !== undefined) await rm(keyDir, { recursive: true, force: true })
    singleClient.c?.close()
    clusterClient.c?.close()
    await removeAll([...single, ...first.nodes, ...second.nodes])
    if (consul !== undefined) await stopProcess(consul.proc)
  }
}
