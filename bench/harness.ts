// What the benchmarks share: a real `v3 serve` process on a loopback port, its peak RSS, the size
// of a data folder, and the cpu-only data set encoded as write messages and sent through Write.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Client, credentials, type ServiceError } from '@grpc/grpc-js'
import { WriteResponse } from '../gen/v3storage/v1/write_service.js'
import { serverNodeOptions } from '../scripts/node-options.mjs'
import { V3Client } from '../src/client/index.js'
import type { Tag } from '../src/model/types.js'
import { encodeWriteRequest } from '../src/wire/series-codec.js'
import { HOSTS, INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS, timestampAt } from './dataset.js'

export interface Server {
  readonly proc: ChildProcess
  readonly address: string
  /** The server's Prometheus endpoint. */
  readonly metricsUrl: string
  readonly dataDir: string
}

/** Every process a bench has started and not seen exit. */
const running = new Set<ChildProcess>()
let exitHookInstalled = false

/**
 * Kills `proc` if the bench exits first, however it exits (a failure that skips a `finally`, or a
 * signal), so that no server outlives the bench.
 */
export function trackProcess(proc: ChildProcess): void {
  if (!exitHookInstalled) installExitHook()
  running.add(proc)
  proc.once('exit', () => running.delete(proc))
}

function installExitHook(): void {
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL')
  })
  // A signal's default action skips the 'exit' event; exiting through process.exit runs it.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130))
}

/** A loopback port that was free a moment ago, for a process that must be told its port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      s.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/**
 * Starts the built `v3 serve` (bin/v3.js) on a free port with the default engine flags, as a user
 * runs it: the data set is dated 2026-01-01, so the default 2 h hot window (measured from the wall
 * clock) already lies past all of it and every point is sealed straight into the cold family.
 * It gets the Node options of bin/v3.js's first line, as `v3` and `npm start` do;
 * V3_BENCH_SERVER_NODE_ARGS passes more (e.g. "--cpu-prof"). `listen` and `extraArgs` are
 * for cluster nodes, which need known ports and the cluster flags, and for flags such as
 * `--result-cache-points 0`; `existingDataDir` reopens the folder of a stopped server (a restart).
 */
export async function startServer(
  extraArgs: readonly string[] = [],
  listen = '127.0.0.1:0',
  existingDataDir?: string,
): Promise<Server> {
  const dataDir = existingDataDir ?? (await mkdtemp(join(tmpdir(), 'v3-bench-')))
  const proc = spawn(
    process.execPath,
    [
      ...serverNodeOptions(),
      ...(process.env.V3_BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      'bin/v3.js',
      'serve',
      '--data',
      dataDir,
      '--listen',
      listen,
      '--http-listen',
      '127.0.0.1:0',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  trackProcess(proc)
  // The metrics line comes before the listening line.
  let metricsUrl = ''
  const address = await new Promise<string>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)))
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const metrics = /metrics on (\S+)/.exec(line)
      if (metrics?.[1]) metricsUrl = metrics[1]
      const m = /listening on (\S+)/.exec(line)
      if (m?.[1]) resolve(m[1])
    })
  })
  if (!metricsUrl) throw new Error('the server printed no metrics address')
  return { proc, address, metricsUrl, dataDir }
}

/**
 * The server's event-loop delay since the previous scrape, in ms: the p99 and the longest, as its
 * /metrics reports them. Each read starts a new interval, so read once before a load to start it.
 */
export async function eventLoopDelayMs(server: Server): Promise<{ p99Ms: number; maxMs: number }> {
  const text = await (await fetch(server.metricsUrl)).text()
  const read = (name: string): number => {
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
    if (!m?.[1]) throw new Error(`the server's /metrics has no ${name}`)
    return Number(m[1]) * 1000
  }
  return { p99Ms: read('v3_event_loop_delay_p99_seconds'), maxMs: read('v3_event_loop_delay_max_seconds') }
}

export interface QueryResult {
  readonly name: string
  readonly medianMs: number
  readonly p95Ms: number
}

export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}

/**
 * The name a bench's results go under in bench/results: a run on fewer hosts than the data set's (a
 * quick one) or on rounded values goes beside the full run's record, not over it; `suffix` names
 * what else sets the run apart.
 */
export function resultsName(kind: string, hosts: number, decimals: number | undefined, suffix = ''): string {
  return `${kind}${hosts === HOSTS ? '' : `-${hosts}hosts`}${decimals === undefined ? '' : `-${decimals}dp`}${suffix}`
}

/** Writes a bench's results as bench/results/<name>.json and .md, each ending in a newline. */
export async function saveResults(name: string, json: string, md: string): Promise<void> {
  await mkdir('bench/results', { recursive: true })
  await writeFile(`bench/results/${name}.json`, `${json}\n`)
  await writeFile(`bench/results/${name}.md`, md.endsWith('\n') ? md : `${md}\n`)
}

/** The median as timed() takes it: quantile 0.5 of the sorted values. */
export function median(xs: readonly number[]): number {
  return quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  )
}

/**
 * Runs 2 warm-ups, then the rest of `list` timed, each run with its own parameters; median and p95
 * in ms. A run returns the check of its answer, which runs after the clock stops.
 */
export async function timed<P>(name: string, run: (p: P) => Promise<() => void>, list: P[]): Promise<QueryResult> {
  for (let i = 0; i < 2; i++) (await run(list[i] as P))()
  const times: number[] = []
  for (let i = 2; i < list.length; i++) {
    const t = performance.now()
    const check = await run(list[i] as P)
    times.push(performance.now() - t)
    check()
  }
  times.sort((a, b) => a - b)
  return { name, medianMs: quantile(times, 0.5), p95Ms: quantile(times, 0.95) }
}

/** SIGTERM (a clean stop, as a user's restart does) and wait. */
export async function stopServer(server: Server): Promise<void> {
  if (server.proc.exitCode !== null || server.proc.signalCode !== null) return
  const exited = new Promise((resolve) => server.proc.once('exit', resolve))
  server.proc.kill('SIGTERM')
  await exited
}

export async function removeServer(server: Server): Promise<void> {
  if (server.proc.exitCode === null && server.proc.signalCode === null) {
    const exited = new Promise((resolve) => server.proc.once('exit', resolve))
    server.proc.kill('SIGKILL')
    await exited
  }
  await rm(server.dataDir, { recursive: true, force: true })
}

/** Linux reports CPU times in clock ticks; `getconf CLK_TCK` is 100 on every Linux port Node runs on. */
const CLK_TCK = 100

/**
 * The fields of a /proc stat line, a process's or a thread's, after the command name (field 2),
 * which may hold spaces and parentheses: they are counted after its last ')'. Field k of the whole
 * line is element k - 3 here.
 */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** The CPU seconds (user + system) in a /proc stat line: utime and stime are fields 14 and 15. */
export function statCpuSeconds(stat: string): number {
  const fields = statFields(stat)
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}

const PAGE = 4096
/** The fresh buffer pageFaultMicros touches. */
export const FAULT_PROBE_BYTES = 64 * 2 ** 20

/** Microseconds per first touch of a 4 KiB page in this process, over a fresh buffer. */
export function pageFaultMicros(): number {
  // allocUnsafeSlow of this size is a fresh mapping: no page of it has been touched yet.
  const buffer = Buffer.allocUnsafeSlow(FAULT_PROBE_BYTES)
  const t = performance.now()
  for (let i = 0; i < buffer.length; i += PAGE) buffer[i] = 1
  return ((performance.now() - t) * 1000) / (FAULT_PROBE_BYTES / PAGE)
}

/** Minor page faults of a process so far (all threads): field 10 of /proc/<pid>/stat. */
export async function minorFaults(pid: number): Promise<number> {
  return Number(statFields(await readFile(`/proc/${pid}/stat`, 'utf8'))[7])
}

/** CPU seconds (user + system) a process has used so far. */
export async function cpuSeconds(pid: number): Promise<number> {
  return statCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'))
}

/**
 * CPU seconds (user + system) of a Node process's main thread so far: the event loop, where every
 * JavaScript call of the server runs (its thread id is the process id).
 */
export async function mainThreadCpuSeconds(pid: number): Promise<number> {
  return statCpuSeconds(await readFile(`/proc/${pid}/task/${pid}/stat`, 'utf8'))
}

/** A process counts as quiet while it uses less than this share of a core. Idle servers use about 1 %. */
export const QUIET_CORES = 0.05
const QUIET_WINDOW_MS = 1000
/** Quiet windows in a row that make a quiet spell: longer than a tick of a server's timers leaves idle. */
export const QUIET_WINDOWS = 5

export interface QuietWait {
  readonly seconds: number
  /** False when maxMs passed first. */
  readonly quiet: boolean
}

/**
 * Waits until every process is quiet: less than QUIET_CORES of a core in each of QUIET_WINDOWS 1 s
 * windows in a row, or until maxMs. A server's work after a load goes on after its last write: it
 * seals its write buffer on a timer, and flushes its write-ahead log away once no write came for
 * 10 s (on the sealer's next 1 s tick, so 11-12 s after it). Called at the end of a 10 s settle, a
 * spell of five quiet seconds lies past that flush. Measuring the next thing while that work runs
 * on one server and not on the other puts it on one side only.
 */
export async function waitQuiet(pids: readonly number[], maxMs = 60_000): Promise<QuietWait> {
  const t0 = performance.now()
  let calm = 0
  let before = await Promise.all(pids.map(cpuSeconds))
  while (performance.now() - t0 < maxMs) {
    await sleep(QUIET_WINDOW_MS)
    const after = await Promise.all(pids.map(cpuSeconds))
    const busiest = Math.max(...after.map((c, i) => c - (before[i] as number)))
    before = after
    calm = busiest < (QUIET_CORES * QUIET_WINDOW_MS) / 1000 ? calm + 1 : 0
    if (calm >= QUIET_WINDOWS) return { seconds: (performance.now() - t0) / 1000, quiet: true }
  }
  return { seconds: (performance.now() - t0) / 1000, quiet: false }
}

/** The process's peak resident set (VmHWM), MiB. */
export async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
}

/** The bytes a folder holds on disk, as `du` counts them (allocated blocks), and its files' sizes. */
export interface FolderSize {
  /** Allocated bytes (st_blocks x 512), what `du` reports: preallocated log space counts. */
  readonly diskBytes: number
  /** The sum of the files' sizes, what `du --apparent-size` reports. */
  readonly apparentBytes: number
  /** Allocated bytes by kind of RocksDB file (see fileKind); another system's files all count as "other". */
  readonly diskByKind: Readonly<Record<FileKind, number>>
}

export type FileKind = 'table files' | 'write-ahead log' | 'MANIFEST' | 'other'

/** RocksDB's file kinds, by name: NNNNNN.sst, NNNNNN.log and MANIFEST-NNNNNN. */
function fileKind(name: string): FileKind {
  if (name.endsWith('.sst')) return 'table files'
  if (name.endsWith('.log')) return 'write-ahead log'
  if (name.startsWith('MANIFEST-')) return 'MANIFEST'
  return 'other'
}

export async function folderSize(dir: string): Promise<FolderSize> {
  let diskBytes = 0
  let apparentBytes = 0
  const diskByKind: Record<FileKind, number> = { 'table files': 0, 'write-ahead log': 0, MANIFEST: 0, other: 0 }
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) {
      const sub = await folderSize(path)
      diskBytes += sub.diskBytes
      apparentBytes += sub.apparentBytes
      for (const kind of Object.keys(diskByKind) as FileKind[]) diskByKind[kind] += sub.diskByKind[kind]
    } else {
      const st = await stat(path)
      diskBytes += st.blocks * 512
      apparentBytes += st.size
      diskByKind[fileKind(entry.name)] += st.blocks * 512
    }
  }
  return { diskBytes, apparentBytes, diskByKind }
}

export interface IdleFolderSize extends FolderSize {
  /** How long the process sat idle before the reading, in seconds. */
  readonly idleSeconds: number
  /** Whether two readings POLL_MS apart agreed before the bound. */
  readonly stable: boolean
}

const POLL_MS = 5000

/**
 * The folder of a running process after it has been left alone: `minIdleMs` first, then readings
 * every 5 s until two agree or `maxIdleMs` has passed, so background flushes and compactions that
 * a user's idle server would finish are counted as done, and ones that never come are not waited
 * for without end.
 */
export async function idleFolderSize(dir: string, minIdleMs: number, maxIdleMs: number): Promise<IdleFolderSize> {
  const t0 = performance.now()
  await sleep(minIdleMs)
  let last = await folderSize(dir)
  for (;;) {
    if (performance.now() - t0 + POLL_MS > maxIdleMs) {
      return { ...last, idleSeconds: (performance.now() - t0) / 1000, stable: false }
    }
    await sleep(POLL_MS)
    const now = await folderSize(dir)
    if (now.diskBytes === last.diskBytes && now.apparentBytes === last.apparentBytes) {
      return { ...now, idleSeconds: (performance.now() - t0) / 1000, stable: true }
    }
    last = now
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export interface RoundTrip {
  readonly medianMs: number
  readonly p95Ms: number
}

/** Round trips timed for a baseline, after as many warm-ups. */
const ROUND_TRIPS = 200

/** Requests each client keeps in flight unless `--inflight` says otherwise. */
export const DEFAULT_INFLIGHT = 2

/**
 * Calls before a warm baseline: on this machine a gRPC health check took about 1 ms for each of
 * its first thousand calls and 0.2-0.4 ms after about 3,000, as V8 optimized grpc-js in the client
 * and the server.
 */
export const WARM_CALLS = 4000

/** Median and p95 of `call`, run one at a time after `warmups` calls, in ms. */
export async function roundTrip(call: () => Promise<void>, warmups = ROUND_TRIPS): Promise<RoundTrip> {
  for (let i = 0; i < warmups; i++) await call()
  const times: number[] = []
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const t = performance.now()
    await call()
    times.push(performance.now() - t)
  }
  times.sort((a, b) => a - b)
  return { medianMs: quantile(times, 0.5), p95Ms: quantile(times, 0.95) }
}

/** A health check with a connection of its own, and how to close it. */
export interface HealthProbe {
  readonly check: () => Promise<void>
  readonly close: () => void
}

/**
 * A grpc.health.v1 Check on a connection of its own: grpc-js otherwise shares one connection among
 * the clients of a process, and the probe would queue behind their messages.
 */
export function grpcHealthProbe(address: string): HealthProbe {
  const client = new Client(address, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
  // An empty HealthCheckRequest asks for the server as a whole.
  const check = (): Promise<void> =>
    new Promise((resolve, reject) =>
      client.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        (err: ServiceError | null) => (err ? reject(err) : resolve()),
      ),
    )
  return { check, close: () => client.close() }
}

/** Median and p95 of a grpc.health.v1 Check, in ms: the round trip every call pays. */
export async function grpcHealthRoundTrip(address: string, warmups?: number): Promise<RoundTrip> {
  const probe = grpcHealthProbe(address)
  try {
    return await roundTrip(probe.check, warmups)
  } finally {
    probe.close()
  }
}

/** Health checks run before a load that probeDuring measures under, so that it times a warm path. */
const PROBE_WARMUPS = 300
/** The pause between two health checks under a load, ms. */
const PROBE_GAP_MS = 2

/**
 * Times `load` while `check` runs over and over, PROBE_GAP_MS apart: what a health check (a load
 * balancer's, Consul's) or any small call waits while the server is busy with the load. Every
 * ingest of the bench, V3's and VictoriaMetrics', runs under it, so that their rates are measured
 * alike. The load's seconds, with the median and p95 of the checks in ms.
 */
export async function probeDuring(
  check: () => Promise<void>,
  load: () => Promise<void>,
): Promise<{ readonly seconds: number; readonly latency: RoundTrip; readonly checks: number }> {
  for (let i = 0; i < PROBE_WARMUPS; i++) await check()
  let done = false
  const times: number[] = []
  const probing = (async () => {
    while (!done) {
      const t = performance.now()
      await check()
      times.push(performance.now() - t)
      await new Promise((resolve) => setTimeout(resolve, PROBE_GAP_MS))
    }
  })()
  const t0 = performance.now()
  try {
    await load()
  } catch (err) {
    done = true
    await probing.catch(() => undefined)
    throw err
  }
  const seconds = (performance.now() - t0) / 1000
  done = true
  // A check that failed under the load is a finding, not noise.
  await probing
  if (times.length === 0) throw new Error('no health check completed during the load')
  times.sort((a, b) => a - b)
  return { seconds, latency: { medianMs: quantile(times, 0.5), p95Ms: quantile(times, 0.95) }, checks: times.length }
}

/** One unary Write of a pre-encoded WriteRequest. */
export function writeRequest(client: Client, body: Buffer): Promise<WriteResponse> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      '/v3storage.v1.WriteService/Write',
      (b: Buffer) => b,
      (b: Buffer) => WriteResponse.decode(b),
      body,
      (err: ServiceError | null, res?: WriteResponse) =>
        err || res === undefined ? reject(err ?? new Error('no response')) : resolve(res),
    ),
  )
}

/**
 * The benches' Write driver: `inflight` unary Writes in flight per client, the requests taken in
 * order from one queue, so that a request goes to the next free client and several clients (entry
 * points of a cluster) share the load evenly. Returns the points the servers acknowledged.
 */
export async function sendWrites(
  clients: readonly Client[],
  requests: readonly Buffer[],
  inflight: number,
): Promise<number> {
  let next = 0
  let written = 0
  const send = async (client: Client): Promise<void> => {
    while (next < requests.length) {
      // Awaited first: `written += await …` would read `written` before the wait and lose counts.
      const res = await writeRequest(client, requests[next++] as Buffer)
      written += res.pointsWritten
    }
  }
  await Promise.all(clients.flatMap((c) => Array.from({ length: inflight }, () => send(c))))
  return written
}

/** The machine line of a result table: cores, memory, Node. */
export function describeMachine(): string {
  return `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`
}

/** The data set line of a result table. */
export function describeDataSet(hosts: number, decimals: number | undefined): string {
  const points = hosts * METRICS.length * POINTS_PER_SERIES
  return `${points.toLocaleString('en')} points (${hosts} hosts x ${METRICS.length} metrics x 24 h at 10 s), ${decimals === undefined ? 'full-precision values' : `values rounded to ${decimals} decimals`}`
}

/**
 * The data set as WriteRequest (or WriteStreamRequest) messages, in time order: each holds
 * `timestampsPerMessage` timestamps of every series, as TSBS sends rows. `offsetMs` shifts every
 * timestamp (a load that goes on past the data set's day writes the following days).
 */
export function encodeMessages(
  tags: Tag[][],
  values: Float64Array[][],
  timestampsPerMessage: number,
  offsetMs = 0,
): Buffer[] {
  const messages: Buffer[] = []
  for (let i0 = 0; i0 < POINTS_PER_SERIES; i0 += timestampsPerMessage) {
    const n = Math.min(timestampsPerMessage, POINTS_PER_SERIES - i0)
    const timestamps = Array.from({ length: n }, (_, i) => timestampAt(i0 + i) + offsetMs)
    const series = []
    for (let h = 0; h < tags.length; h++) {
      for (let m = 0; m < METRICS.length; m++) {
        series.push({
          metric: METRICS[m] as string,
          tags: tags[h] ?? [],
          timestamps,
          values: values[h]?.[m]?.subarray(i0, i0 + n) ?? new Float64Array(),
        })
      }
    }
    messages.push(encodeWriteRequest(series, 0))
  }
  return messages
}

/**
 * The points a server holds in the data set's first `days` days: a count per metric over them, its
 * series merged. A load that lost or doubled points shows here.
 */
export async function countPoints(address: string, days = 1): Promise<number> {
  const client = new V3Client(address)
  try {
    let total = 0
    for (const metric of METRICS) {
      const answer = await client.query({
        selector: { metric },
        startMs: START_MS,
        endMs: START_MS + days * POINTS_PER_SERIES * INTERVAL_MS,
        aggregation: { func: 'count', mergeSeries: true },
      })
      for (const s of answer) for (const v of s.values) total += v
    }
    return total
  } finally {
    client.close()
  }
}
