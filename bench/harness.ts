// What the benchmarks share: a real `v3 serve` process on a loopback port, its peak RSS, the size
// of a data folder, and the cpu-only data set encoded as write messages.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Tag } from '../src/model/types.js'
import { encodeWriteRequest } from '../src/wire/series-codec.js'
import { METRICS, POINTS_PER_SERIES, timestampAt } from './dataset.js'

export interface Server {
  readonly proc: ChildProcess
  readonly address: string
  /** The server's Prometheus endpoint. */
  readonly metricsUrl: string
  readonly dataDir: string
}

/**
 * Starts the built `v3 serve` (bin/v3.js) on a free port with the cold tier one hour back, so the
 * back-filled data set settles cold. V3_BENCH_SERVER_NODE_ARGS passes Node options (e.g. "--cpu-prof").
 * `listen` and `extraArgs` are for cluster nodes, which need known ports and the cluster flags.
 */
export async function startServer(extraArgs: readonly string[] = [], listen = '127.0.0.1:0'): Promise<Server> {
  const dataDir = await mkdtemp(join(tmpdir(), 'v3-bench-'))
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.V3_BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      'bin/v3.js',
      'serve',
      '--data',
      dataDir,
      '--listen',
      listen,
      '--hot-window',
      '1h',
      '--http-listen',
      '127.0.0.1:0',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
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

/** SIGTERM (a clean stop, which the settled disk size needs) and wait. */
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

/** The process's peak resident set (VmHWM), MiB. */
export async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
}

export async function folderBytes(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? await folderBytes(path) : (await stat(path)).size
  }
  return total
}

/**
 * The data set as WriteRequest (or WriteStreamRequest) messages, in time order: each holds
 * `timestampsPerMessage` timestamps of every series, as TSBS sends rows.
 */
export function encodeMessages(tags: Tag[][], values: Float64Array[][], timestampsPerMessage: number): Buffer[] {
  const messages: Buffer[] = []
  for (let i0 = 0; i0 < POINTS_PER_SERIES; i0 += timestampsPerMessage) {
    const n = Math.min(timestampsPerMessage, POINTS_PER_SERIES - i0)
    const timestamps = Array.from({ length: n }, (_, i) => timestampAt(i0 + i))
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
