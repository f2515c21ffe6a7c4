/**
 * Debian's real Prometheus for the end-to-end tests: started on a free loopback port with a
 * generated configuration and a temporary TSDB folder, asked through its HTTP API, and stopped
 * (folder removed) by the test that started it.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../fixtures/net.js'
import { waitFor as poll } from '../fixtures/wait.js'

export const PROMETHEUS = '/usr/bin/prometheus'

/** Why the Prometheus tests cannot run here, or false when they can. */
export function prometheusMissing(): string | false {
  return existsSync(PROMETHEUS) ? false : `needs ${PROMETHEUS}: apt-get update && apt-get install -y prometheus`
}

export interface PrometheusProcess {
  /** http://127.0.0.1:<port>, without a trailing slash. */
  readonly url: string
  readonly child: ChildProcess
  /** Everything Prometheus logged so far. */
  output(): string
  /** SIGTERM (SIGKILL after 10 s), waits for the exit and removes the TSDB folder. */
  stop(): Promise<void>
}

/**
 * Starts Prometheus on `config` (an object: JSON is YAML, so it is written as JSON) and waits until
 * /-/ready answers 200. A port taken between freePort and Prometheus' bind makes it exit; it is
 * started again on a new port, up to three times.
 */
export async function startPrometheus(config: object): Promise<PrometheusProcess> {
  for (let attempt = 1; ; attempt++) {
    const dir = await mkdtemp(join(tmpdir(), 'v3-prometheus-'))
    const configFile = join(dir, 'prometheus.yml')
    await writeFile(configFile, JSON.stringify(config, null, 2))
    const port = await freePort()
    const child = spawn(
      PROMETHEUS,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        // On SIGTERM Prometheus flushes what it has not remote-written yet for up to a minute by
        // default: a second is plenty on loopback, and it bounds the stop of a failed test.
        '--storage.remote.flush-deadline=1s',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let output = ''
    const collect = (chunk: string): void => {
      output += chunk
    }
    child.stdout?.setEncoding('utf8').on('data', collect)
    child.stderr?.setEncoding('utf8').on('data', collect)
    const exited = once(child, 'exit')
    const running = (): boolean => child.exitCode === null && child.signalCode === null
    const prometheus: PrometheusProcess = {
      url: `http://127.0.0.1:${port}`,
      child,
      output: () => output,
      async stop() {
        if (running()) {
          child.kill('SIGTERM')
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
          await exited
          clearTimeout(timer)
        }
        await rm(dir, { recursive: true, force: true })
      },
    }
    let started: string
    try {
      started = await poll(
        `Prometheus to be ready on port ${port}`,
        async () => {
          if (!running()) return 'exited'
          try {
            return (await fetch(`${prometheus.url}/-/ready`)).ok ? 'ready' : undefined
          } catch {
            return undefined
          }
        },
        30_000,
        50,
      )
    } catch (err) {
      await prometheus.stop()
      throw new Error(`${(err as Error).message}; its log:\n${output}`)
    }
    if (started === 'ready') return prometheus
    await prometheus.stop()
    if (attempt >= 3 || !/address already in use/i.test(output)) {
      throw new Error(`Prometheus exited before it was ready; its log:\n${output}`)
    }
  }
}

/** One series of a Prometheus matrix answer, values as the API writes them (strings). */
export interface MatrixSeries {
  readonly metric: Readonly<Record<string, string>>
  readonly values: readonly (readonly [number, string])[]
}

interface ApiAnswer {
  readonly status: string
  readonly data?: { readonly resultType: string; readonly result: unknown }
  readonly errorType?: string
  readonly error?: string
}

/**
 * A GET of a Prometheus-style query API (`/api/v1/query` or `/api/v1/query_range`) at `base`; the
 * answer must be a success holding a matrix, which is returned. Anything else throws, with the body.
 */
export async function queryMatrix(
  base: string,
  path: '/api/v1/query' | '/api/v1/query_range',
  params: Readonly<Record<string, string>>,
): Promise<MatrixSeries[]> {
  const url = `${base}${path}?${new URLSearchParams(params).toString()}`
  const res = await fetch(url)
  const text = await res.text()
  let body: ApiAnswer
  try {
    body = JSON.parse(text) as ApiAnswer
  } catch {
    throw new Error(`${url} answered ${res.status} with a body that is not JSON: ${text.slice(0, 500)}`)
  }
  if (res.status !== 200 || body.status !== 'success' || body.data?.resultType !== 'matrix') {
    throw new Error(`${url} answered ${res.status}: ${text.slice(0, 2000)}`)
  }
  return body.data.result as MatrixSeries[]
}

/** A series' labels as one sortable key, `{a="1",b="2"}` with the names in order. */
export function labelKey(metric: Readonly<Record<string, string>>): string {
  const names = Object.keys(metric).sort()
  return `{${names.map((n) => `${n}=${JSON.stringify(metric[n])}`).join(',')}}`
}

const DECIMAL = /^-?\d+(\.\d+)?(e[+-]?\d+)?$/

/**
 * A sample value as Prometheus writes it: a decimal number, "NaN", "+Inf" or "-Inf". Anything else
 * (JavaScript's "Infinity", say) is not Prometheus' format and throws.
 */
export function parseValue(text: string): number {
  if (text === 'NaN') return Number.NaN
  if (text === '+Inf') return Number.POSITIVE_INFINITY
  if (text === '-Inf') return Number.NEGATIVE_INFINITY
  if (DECIMAL.test(text)) return Number(text)
  throw new Error(`${JSON.stringify(text)} is not a sample value as Prometheus writes them`)
}

/** A number written as Prometheus writes sample values, as far as parseValue reads them back. */
export function formatValue(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return '+Inf'
  if (value === Number.NEGATIVE_INFINITY) return '-Inf'
  return String(value)
}

/** The series of a matrix by label key, each series' values as numbers (NaN stays NaN). */
export function byLabels(matrix: readonly MatrixSeries[]): Map<string, (readonly [number, number])[]> {
  const out = new Map<string, (readonly [number, number])[]>()
  for (const series of matrix) {
    out.set(
      labelKey(series.metric),
      series.values.map(([t, v]) => [t, parseValue(v)] as const),
    )
  }
  return out
}

/**
 * Why two matrices differ, or undefined when they hold the same series (labels exactly) with the
 * same instants and values equal within `relTolerance` of the larger magnitude (NaN equals NaN).
 */
export function matrixDifference(
  left: readonly MatrixSeries[],
  right: readonly MatrixSeries[],
  relTolerance: number,
): string | undefined {
  const a = byLabels(left)
  const b = byLabels(right)
  const keysA = [...a.keys()].sort()
  const keysB = [...b.keys()].sort()
  if (keysA.join('\n') !== keysB.join('\n')) {
    return `the series differ:\n  ${keysA.join('\n  ')}\nagainst\n  ${keysB.join('\n  ')}`
  }
  for (const key of keysA) {
    const va = a.get(key) ?? []
    const vb = b.get(key) ?? []
    if (va.length !== vb.length) {
      return `${key} has ${va.length} points against ${vb.length}:\n${JSON.stringify(va)}\n${JSON.stringify(vb)}`
    }
    for (let i = 0; i < va.length; i++) {
      const [ta, xa] = va[i] ?? [Number.NaN, Number.NaN]
      const [tb, xb] = vb[i] ?? [Number.NaN, Number.NaN]
      if (ta !== tb) return `${key} point ${i} is at ${ta} against ${tb}`
      if (Number.isNaN(xa) && Number.isNaN(xb)) continue
      const scale = Math.max(Math.abs(xa), Math.abs(xb))
      if (!(xa === xb || Math.abs(xa - xb) <= relTolerance * scale)) {
        return `${key} at ${ta} is ${xa} against ${xb}`
      }
    }
  }
  return undefined
}
