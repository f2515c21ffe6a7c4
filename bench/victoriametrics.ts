// VictoriaMetrics side of `npm run bench -- --against victoriametrics`: Debian's package, started on
// loopback with its data in a temporary folder, loaded through its InfluxDB line-protocol endpoint
// (5,000 rows a request, 2 in flight, as the issue's reference figures were taken), and asked the
// same seven queries through its HTTP API.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS } from './dataset.js'
import type { QueryParams } from './queries.js'

const BINARY = '/usr/bin/victoria-metrics'

export interface VictoriaMetrics {
  readonly proc: ChildProcess
  readonly base: string
  readonly dataDir: string
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

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      s.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

export async function startVictoriaMetrics(): Promise<VictoriaMetrics> {
  const dataDir = await mkdtemp(join(tmpdir(), 'v3-bench-vm-'))
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
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) return { proc, base, dataDir }
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  proc.kill('SIGKILL')
  throw new Error('victoria-metrics did not start')
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
  const send = async (): Promise<void> => {
    while (next < bodies.length) {
      const body = bodies[next++] as string
      const res = await fetch(`${vm.base}/write`, { method: 'POST', body })
      if (!res.ok) throw new Error(`victoria-metrics /write: ${res.status} ${await res.text()}`)
    }
  }
  await Promise.all(Array.from({ length: inflight }, send))
  // Make everything searchable before the queries.
  await fetch(`${vm.base}/internal/force_flush`)
}

async function get(vm: VictoriaMetrics, path: string, params: Record<string, string>): Promise<string> {
  const res = await fetch(`${vm.base}${path}?${new URLSearchParams(params)}`)
  const text = await res.text()
  if (!res.ok) throw new Error(`victoria-metrics ${path}: ${res.status} ${text}`)
  return text
}

function rangeQuery(vm: VictoriaMetrics, query: string, p: QueryParams, stepS: number): Promise<string> {
  // VictoriaMetrics evaluates at t over (t - window, t]; starting a step late covers the same buckets.
  return get(vm, '/api/v1/query_range', {
    query,
    start: String(p.startMs / 1000 + stepS),
    end: String(p.endMs / 1000),
    step: `${stepS}s`,
  })
}

function expectResult(kind: string, text: string, series: number): void {
  const parsed = JSON.parse(text) as { data?: { result?: unknown[] } }
  const n = parsed.data?.result?.length ?? 0
  if (n !== series) throw new Error(`victoria-metrics ${kind}: ${n} series, expected ${series}`)
}

/**
 * Runs one query against VictoriaMetrics; the returned function checks that it answered for the
 * right number of series (its bucket alignment differs from V3's, so values are not compared).
 */
export async function runVictoriaMetrics(vm: VictoriaMetrics, kind: string, p: QueryParams): Promise<() => void> {
  const text = await queryText(vm, kind, p)
  return () => checkVictoriaMetrics(kind, text, p)
}

async function queryText(vm: VictoriaMetrics, kind: string, p: QueryParams): Promise<string> {
  const host = `host_${p.hosts[0]}`
  const names = p.metrics.map((m) => METRICS[m]).join('|')
  switch (kind) {
    case 'single-groupby-1-1-1':
    case 'single-groupby-5-1-12':
      return rangeQuery(vm, `max_over_time({__name__=~"${names}",hostname="${host}"}[1m])`, p, 60)
    case 'cpu-max-all-8': {
      const hosts = p.hosts.map((h) => `host_${h}`).join('|')
      const q = `max(max_over_time({__name__=~"${names}",hostname=~"${hosts}"}[1h])) by (__name__)`
      return rangeQuery(vm, q, p, 3600)
    }
    case 'double-groupby-1':
      return rangeQuery(vm, `avg_over_time(${names}[1h])`, p, 3600)
    case 'lastpoint':
      return get(vm, '/api/v1/query', { query: `last_over_time(${names}[1h])`, time: String(p.endMs / 1000) })
    case 'high-cpu-1':
      return rangeQuery(vm, `${names}{hostname="${host}"} > 90`, p, 10)
    case 'raw-range':
      return get(vm, '/api/v1/export', {
        'match[]': `${names}{hostname="${host}"}`,
        start: String(p.startMs / 1000),
        end: String((p.endMs - 1) / 1000),
      })
    default:
      throw new Error(`unknown query ${kind}`)
  }
}

function checkVictoriaMetrics(kind: string, text: string, p: QueryParams): void {
  switch (kind) {
    case 'single-groupby-1-1-1':
    case 'single-groupby-5-1-12':
    case 'cpu-max-all-8':
      expectResult(kind, text, p.metrics.length)
      return
    case 'double-groupby-1':
    case 'lastpoint':
      expectResult(kind, text, p.hosts.length)
      return
    case 'high-cpu-1':
      JSON.parse(text)
      return
    default: {
      const line = JSON.parse(text.trim().split('\n')[0] ?? '{}') as { values?: number[] }
      if (line.values?.length !== POINTS_PER_SERIES) {
        throw new Error(`victoria-metrics raw-range: ${line.values?.length} points, expected ${POINTS_PER_SERIES}`)
      }
    }
  }
}

export async function stopVictoriaMetrics(vm: VictoriaMetrics): Promise<void> {
  if (vm.proc.exitCode !== null) return
  const exited = new Promise((resolve) => vm.proc.once('exit', resolve))
  vm.proc.kill('SIGINT')
  await exited
}
