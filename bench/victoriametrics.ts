// VictoriaMetrics side of `npm run bench -- --against victoriametrics`: Debian's package, started on
// loopback with its data in a temporary folder, loaded through its InfluxDB line-protocol endpoint
// (5,000 rows a request, 2 in flight, as the issue's reference figures were taken), and asked the
// same seven queries through its HTTP API, every answer checked against the generated data.
// Every request goes through one explicit node:http Agent with keepAlive, so a query pays for a
// request on an open connection and not for a TCP handshake; the bench counts the connections the
// agent opens to show it (global fetch keeps connections alive too, but says nothing about it).
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SeriesPoints } from '../src/model/types.js'
import { INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS } from './dataset.js'
import { freePort, type HealthProbe, type RoundTrip, roundTrip, trackProcess } from './harness.js'
import {
  avg,
  bucketFold,
  expectSeries,
  HOUR,
  highCpuReference,
  MINUTE,
  max,
  type QueryParams,
  type Values,
} from './queries.js'

const BINARY = '/usr/bin/victoria-metrics'

/** A loopback HTTP server reached through one keep-alive agent, whose connections and requests are counted. */
export interface HttpTarget {
  readonly port: number
  /** The keep-alive agent every request goes through. */
  readonly agent: Agent
  /** Every socket the agent has handed to a request, so that new connections can be counted. */
  readonly sockets: WeakSet<Socket>
  /** The TCP connections the agent has opened so far. */
  connections: number
  /** The requests sent through the agent so far. */
  requests: number
}

export interface VictoriaMetrics extends HttpTarget {
  readonly proc: ChildProcess
  readonly dataDir: string
}

/** How a query is sent: `nocache` adds nocache=1, which turns off VictoriaMetrics' rollup result cache. */
export interface QueryOptions {
  readonly nocache: boolean
}

/** Installs Debian's victoria-metrics package when the binary is missing. */
export function ensureInstalled(): void {
  if (spawnSync(BINARY, ['-version']).status === 0) return
  console.log('installing victoria-metrics from Debian')
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' })
  execFileSync('apt-get', ['install', '-y', '-qq', 'victoria-metrics'], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  })
}

/** Starts VictoriaMetrics on a free loopback port, in a new folder or, for a restart, in `dataDir`. */
export async function startVictoriaMetrics(existingDataDir?: string): Promise<VictoriaMetrics> {
  const dataDir = existingDataDir ?? (await mkdtemp(join(tmpdir(), 'v3-bench-vm-')))
  const port = await freePort()
  const proc = spawn(
    BINARY,
    [
      `-storageDataPath=${dataDir}`,
      `-httpListenAddr=127.0.0.1:${port}`,
      // The data set is dated 2026-01-01: keep it, whatever today is.
      '-retentionPeriod=100y',
      '-loggerLevel=ERROR',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  trackProcess(proc)
  const vm: VictoriaMetrics = {
    proc,
    port,
    dataDir,
    agent: new Agent({ keepAlive: true }),
    sockets: new WeakSet(),
    connections: 0,
    requests: 0,
  }
  for (let i = 0; i < 200; i++) {
    try {
      if ((await send(vm, 'GET', '/health')).status === 200) return vm
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  await stopVictoriaMetrics(vm)
  throw new Error('victoria-metrics did not start')
}

/** One HTTP request through the target's agent; the whole answer as text. */
export function send(
  vm: HttpTarget,
  method: string,
  path: string,
  body?: string | Buffer,
  headers?: Readonly<Record<string, string>>,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: vm.port, method, path, agent: vm.agent, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    vm.requests++
    req.on('socket', (socket) => {
      if (!vm.sockets.has(socket)) {
        vm.sockets.add(socket)
        vm.connections++
      }
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** GET /health through `target`'s agent; throws unless VictoriaMetrics answers 200. */
async function checkHealth(target: HttpTarget): Promise<void> {
  const res = await send(target, 'GET', '/health')
  if (res.status !== 200) throw new Error(`victoria-metrics /health: ${res.status}`)
}

/** Median and p95 of GET /health through the same keep-alive agent as the queries, in ms. */
export function healthRoundTrip(vm: VictoriaMetrics, warmups?: number): Promise<RoundTrip> {
  return roundTrip(() => checkHealth(vm), warmups)
}

/**
 * GET /health through a keep-alive agent of its own, so that it does not wait for a socket of the
 * agent that carries the load (as grpcHealthProbe has a connection of its own).
 */
export function healthProbe(vm: VictoriaMetrics): HealthProbe {
  const target: HttpTarget = {
    port: vm.port,
    agent: new Agent({ keepAlive: true }),
    sockets: new WeakSet(),
    connections: 0,
    requests: 0,
  }
  return { check: () => checkHealth(target), close: () => target.agent.destroy() }
}

/** Line-protocol bodies of 5,000 rows (one host and timestamp, ten fields) each, in time order. */
export function lineProtocol(hosts: number, tags: Array<Record<string, string>>, values: Float64Array[][]): string[] {
  const bodies: string[] = []
  let rows: string[] = []
  const prefix = tags.map(
    (t) =>
      `cpu,${Object.entries(t)
        .map(([k, v]) => `${k}=${v}`)
        .join(',')}`,
  )
  for (let i = 0; i < POINTS_PER_SERIES; i++) {
    const ns = `${START_MS + i * INTERVAL_MS}000000`
    for (let h = 0; h < hosts; h++) {
      const fields = METRICS.map((m, j) => `${m.slice(4)}=${values[h]?.[j]?.[i]}`).join(',')
      rows.push(`${prefix[h]} ${fields} ${ns}`)
      if (rows.length === 5000) {
        bodies.push(rows.join('\n'))
        rows = []
      }
    }
  }
  if (rows.length > 0) bodies.push(rows.join('\n'))
  return bodies
}

export async function ingest(vm: VictoriaMetrics, bodies: string[], inflight: number): Promise<void> {
  let next = 0
  const load = async (): Promise<void> => {
    while (next < bodies.length) {
      const body = bodies[next++] as string
      const res = await send(vm, 'POST', '/write', body)
      if (res.status !== 204 && res.status !== 200)
        throw new Error(`victoria-metrics /write: ${res.status} ${res.text}`)
    }
  }
  // No /internal/force_flush (VictoriaMetrics' debugging handle, as V3 gets no Compact): the idle
  // spell before the disk reading and the queries lets its buffers flush on their own.
  await Promise.all(Array.from({ length: inflight }, load))
}

async function get(
  vm: VictoriaMetrics,
  path: string,
  params: Record<string, string>,
  o: QueryOptions,
): Promise<string> {
  const query = new URLSearchParams(params)
  if (o.nocache) query.set('nocache', '1')
  const res = await send(vm, 'GET', `${path}?${query}`)
  if (res.status !== 200) throw new Error(`victoria-metrics ${path}: ${res.status} ${res.text}`)
  return res.text
}

/**
 * A range query whose answer at t is V3's bucket [t - step, t). VictoriaMetrics evaluates at t over
 * (t - window, t]; the queries shift their window by `offset 1ms`, so it covers [t - step, t) of the
 * 10 s grid, and the range starts a step late, so the first answer is the bucket at the start.
 */
function rangeQuery(
  vm: VictoriaMetrics,
  query: string,
  p: QueryParams,
  stepS: number,
  o: QueryOptions,
): Promise<string> {
  return get(
    vm,
    '/api/v1/query_range',
    { query, start: String(p.startMs / 1000 + stepS), end: String(p.endMs / 1000), step: `${stepS}s` },
    o,
  )
}

/**
 * Runs one query against VictoriaMetrics; the returned function checks the answer against the
 * reference from the generated data, apart, so that the check is not timed.
 */
export async function runVictoriaMetrics(
  vm: VictoriaMetrics,
  kind: string,
  p: QueryParams,
  values: Values,
  o: QueryOptions,
): Promise<() => void> {
  const text = await queryText(vm, kind, p, o)
  return () => checkVictoriaMetrics(kind, text, p, values)
}

async function queryText(vm: VictoriaMetrics, kind: string, p: QueryParams, o: QueryOptions): Promise<string> {
  const host = `host_${p.hosts[0]}`
  const names = p.metrics.map((m) => METRICS[m]).join('|')
  switch (kind) {
    case 'single-groupby-1-1-1':
    case 'single-groupby-5-1-12':
      return rangeQuery(vm, `max_over_time({__name__=~"${names}",hostname="${host}"}[1m] offset 1ms)`, p, 60, o)
    case 'cpu-max-all-8': {
      const hosts = p.hosts.map((h) => `host_${h}`).join('|')
      const q = `max(max_over_time({__name__=~"${names}",hostname=~"${hosts}"}[1h] offset 1ms)) by (__name__)`
      return rangeQuery(vm, q, p, 3600, o)
    }
    case 'double-groupby-1':
      return rangeQuery(vm, `avg_over_time(${names}[1h] offset 1ms)`, p, 3600, o)
    case 'lastpoint':
      return get(vm, '/api/v1/query', { query: `last_over_time(${names}[1h])`, time: String(p.endMs / 1000) }, o)
    case 'high-cpu-1':
      return rangeQuery(vm, `${names}{hostname="${host}"} offset 1ms > 90`, p, 10, o)
    case 'raw-range':
      return get(
        vm,
        '/api/v1/export',
        {
          'match[]': `${names}{hostname="${host}"}`,
          start: String(p.startMs / 1000),
          end: String((p.endMs - 1) / 1000),
        },
        o,
      )
    default:
      throw new Error(`unknown query ${kind}`)
  }
}

interface PromSeries {
  readonly metric: Record<string, string>
  readonly values?: Array<[number, string]>
  readonly value?: [number, string]
}

/**
 * The series of a query_range answer, keyed by `label`, each point moved back a step to the start
 * of the V3 bucket it covers.
 */
function matrix(kind: string, text: string, label: string, stepMs: number): Map<string, SeriesPoints> {
  const parsed = JSON.parse(text) as { data?: { result?: PromSeries[] } }
  const out = new Map<string, SeriesPoints>()
  for (const s of parsed.data?.result ?? []) {
    const key = s.metric[label] ?? ''
    if (out.has(key)) throw new Error(`victoria-metrics ${kind}: two series with ${label}=${key}`)
    const points = s.values ?? []
    out.set(key, {
      metric: s.metric.__name__ ?? '',
      tags: [],
      timestamps: Float64Array.from(points, ([t]) => t * 1000 - stepMs),
      values: Float64Array.from(points, ([, v]) => Number(v)),
    })
  }
  return out
}

/**
 * VictoriaMetrics keeps 12 significant decimal digits of a value, so full-precision values come
 * back rounded there; averages are sums in another order.
 */
const TOLERANCE = 1e-9

function checkVictoriaMetrics(kind: string, text: string, p: QueryParams, values: Values): void {
  const name = `victoria-metrics ${kind}`
  const v = (h: number, m: number) => values[h]?.[m] as Float64Array
  const count = (got: Map<string, SeriesPoints>, n: number): void => {
    if (got.size !== n) throw new Error(`${name}: ${got.size} series, expected ${n}`)
  }
  switch (kind) {
    case 'single-groupby-1-1-1':
    case 'single-groupby-5-1-12': {
      const got = matrix(kind, text, '__name__', MINUTE)
      count(got, p.metrics.length)
      for (const m of p.metrics) {
        const want = bucketFold(v(p.hosts[0] as number, m), p.startMs, p.endMs, MINUTE, max)
        expectSeries(name, got.get(METRICS[m] as string), want.ts, want.out, TOLERANCE)
      }
      return
    }
    case 'cpu-max-all-8': {
      const got = matrix(kind, text, '__name__', HOUR)
      count(got, p.metrics.length)
      for (const m of p.metrics) {
        const per = p.hosts.map((h) => bucketFold(v(h, m), p.startMs, p.endMs, HOUR, max))
        const want = (per[0]?.out ?? []).map((_, b) => Math.max(...per.map((x) => x.out[b] as number)))
        expectSeries(name, got.get(METRICS[m] as string), per[0]?.ts ?? [], want, TOLERANCE)
      }
      return
    }
    case 'double-groupby-1': {
      const got = matrix(kind, text, 'hostname', HOUR)
      count(got, p.hosts.length)
      const m = p.metrics[0] as number
      for (const h of p.hosts) {
        const want = bucketFold(v(h, m), p.startMs, p.endMs, HOUR, avg)
        expectSeries(name, got.get(`host_${h}`), want.ts, want.out, TOLERANCE)
      }
      return
    }
    case 'lastpoint': {
      const parsed = JSON.parse(text) as { data?: { result?: PromSeries[] } }
      const result = parsed.data?.result ?? []
      if (result.length !== p.hosts.length)
        throw new Error(`${name}: ${result.length} series, expected ${p.hosts.length}`)
      const m = p.metrics[0] as number
      for (const s of result) {
        const h = Number(s.metric.hostname?.slice(5))
        const want = v(h, m)[POINTS_PER_SERIES - 1] as number
        const got = Number(s.value?.[1])
        if (!(Math.abs(got - want) <= TOLERANCE * Math.max(1, Math.abs(want)))) {
          throw new Error(`${name}: host_${h} is ${got}, expected ${want}`)
        }
      }
      return
    }
    case 'high-cpu-1': {
      const got = matrix(kind, text, 'hostname', 10_000)
      const want = highCpuReference(v(p.hosts[0] as number, 0), p)
      if (want.ts.length === 0) {
        count(got, 0)
        return
      }
      count(got, 1)
      expectSeries(name, got.get(`host_${p.hosts[0]}`), want.ts, want.vals, TOLERANCE)
      return
    }
    default: {
      const lines = text.trim().split('\n')
      if (lines.length !== 1) throw new Error(`${name}: ${lines.length} series, expected 1`)
      const line = JSON.parse(lines[0] ?? '{}') as { values?: number[]; timestamps?: number[] }
      const m = p.metrics[0] as number
      expectSeries(
        name,
        {
          metric: METRICS[m] as string,
          tags: [],
          timestamps: Float64Array.from(line.timestamps ?? []),
          values: Float64Array.from(line.values ?? []),
        },
        Array.from({ length: POINTS_PER_SERIES }, (_, i) => START_MS + i * INTERVAL_MS),
        Array.from(v(p.hosts[0] as number, m)),
        TOLERANCE,
      )
    }
  }
}

/** SIGINT (VictoriaMetrics' clean stop, which flushes its buffers) and wait; closes the agent. */
export async function stopVictoriaMetrics(vm: VictoriaMetrics): Promise<void> {
  vm.agent.destroy()
  if (vm.proc.exitCode !== null || vm.proc.signalCode !== null) return
  const exited = new Promise((resolve) => vm.proc.once('exit', resolve))
  vm.proc.kill('SIGINT')
  await exited
}
