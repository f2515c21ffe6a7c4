import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { PromQueryApi } from '../../src/server/promql/api.js'

/**
 * Our answers against Prometheus' own: promtool (Debian's prometheus package, which CI installs)
 * evaluates the same expressions on the same samples with Prometheus' engine, through its rule
 * unit tests, and prints what it got. Every expression at every evaluation time must give the same
 * series with the same values, bit for bit, or fail in both.
 */

const INTERVAL_S = 15

/** Samples every 15 s from time 0, in promtool's notation: a number, `_` for none, `stale` for the staleness marker. */
const SERIES: Record<string, string[]> = {
  'http_requests_total{job="api",instance="a"}': [
    ...range(12, (i) => 10 + i * 7),
    ...range(8, (i) => 3 + i * 11),
    '_',
    '_',
    '_',
    ...range(18, (i) => 200 + i * i),
  ].map(String),
  'http_requests_total{job="api",instance="b"}': range(41, (i) => i * 3).map(String),
  'http_requests_total{job="web",instance="a"}': [
    ...range(10, () => '_'),
    ...range(20, (i) => String(100 + i * 7)),
    'stale',
  ],
  'temp{room="x"}': [
    '21.5',
    '22',
    '_',
    '23.25',
    '19',
    'NaN',
    '20',
    'stale',
    '_',
    '24',
    '24.5',
    '_',
    '_',
    '_',
    '26',
    '-3',
    '0.1',
  ],
  'temp{room="y"}': ['5', '6', '7', '8', '9'],
  'latency_bucket{le="0.1"}': range(41, (i) => String(i * 2)),
  'latency_bucket{le="0.5"}': range(41, (i) => String(i * 5 + (i > 20 ? i : 0))),
  'latency_bucket{le="1"}': range(41, (i) => String(i * 6 + (i > 20 ? 2 * i : 0))),
  'latency_bucket{le="+Inf"}': range(41, (i) => String(i * 7 + (i > 20 ? 3 * i : 0))),
  'up{job="api",instance="a"}': range(41, () => '1'),
  'up{job="web",instance="a"}': [...range(20, () => '1'), ...range(21, () => '0')],
}

const EXPRESSIONS = [
  'http_requests_total',
  'http_requests_total offset 1m',
  'http_requests_total offset -30s',
  'temp',
  'temp{room!="x"}',
  'up == 1',
  'up != bool 1',
  'rate(http_requests_total[1m])',
  'rate(http_requests_total[2m] offset 30s)',
  'rate(http_requests_total[5m])',
  'irate(http_requests_total[1m])',
  'increase(http_requests_total[3m])',
  'delta(temp[2m])',
  'avg_over_time(temp[2m])',
  'min_over_time(temp[2m])',
  'max_over_time(temp[2m])',
  'sum_over_time(temp[3m])',
  'count_over_time(temp[3m])',
  'last_over_time(temp[1m])',
  'stddev_over_time(http_requests_total[3m])',
  'stdvar_over_time(temp[3m])',
  'present_over_time(temp[45s])',
  'quantile_over_time(0.3, http_requests_total[3m])',
  'sum by (job) (rate(http_requests_total[2m]))',
  'sum without (instance) (http_requests_total)',
  'avg by (instance) (http_requests_total)',
  'min(http_requests_total)',
  'max(http_requests_total)',
  'count by (job) (http_requests_total)',
  'stddev(http_requests_total)',
  'stdvar by (job) (http_requests_total)',
  'quantile(0.9, http_requests_total)',
  'quantile by (job) (0.5, rate(http_requests_total[2m]))',
  'topk(1, http_requests_total)',
  'bottomk(2, http_requests_total)',
  'topk by (job) (1, rate(http_requests_total[2m]))',
  'http_requests_total / on(job, instance) up',
  'sum by (job) (http_requests_total) / on(job) sum by (job) (up)',
  'http_requests_total > 50',
  'http_requests_total > bool 50',
  '50 < http_requests_total',
  '-http_requests_total',
  '2 ^ 3 * 4 - 1',
  '1 > bool 2',
  'http_requests_total % 7',
  'rate(http_requests_total[1m]) > 0.5',
  'up and on(job) http_requests_total > 100',
  'up or temp',
  'http_requests_total unless on(instance) temp',
  '{__name__=~"temp|up"}',
  'sum({__name__=~"temp|up"})',
  'rate({__name__=~"http_requests_total|up"}[1m])',
  'http_requests_total - ignoring(instance) http_requests_total',
  'irate(temp[1m])',
  'rate(temp[2m])',
  'increase(http_requests_total[45s])',
  'delta(http_requests_total[1m] offset 1m)',
  'topk(2, temp)',
  'bottomk(1, temp)',
  'avg(temp)',
  'max(temp)',
  'min(temp)',
  'quantile(0.5, temp)',
  'stddev(temp)',
  'quantile_over_time(0.5, temp[5m])',
  'avg_over_time(temp[10m])',
  'max_over_time(temp[10m])',
  'temp / 0',
  'temp == temp',
  '-temp',
  'temp ^ 0.5',
  'temp % -3',
  'sum by (room) (temp) > bool 20',
  'count(up == 1) by (job)',
  'http_requests_total > on(job, instance) up',
  'http_requests_total == bool on(job, instance) (up * 10)',
  '(http_requests_total)',
  'sum(rate(http_requests_total[5m])) by (job, instance)',
  'max without (job) (up)',
  '010 + 09 + 0x1f + 1.5e1',
  'histogram_quantile(0.9, rate(latency_bucket[2m]))',
  'histogram_quantile(0.5, latency_bucket)',
  'histogram_quantile(0.99, sum by (le) (rate(latency_bucket[1m])))',
  'histogram_quantile(0.01, latency_bucket)',
  'abs(-temp)',
  'ceil(temp)',
  'floor(temp)',
  'sqrt(temp)',
  'ln(temp)',
  'log2(temp)',
  'log10(temp)',
  'log2(http_requests_total)',
  'log10(http_requests_total)',
  'ln(http_requests_total)',
  'sgn(temp - 22)',
  'round(temp)',
  'round(temp, 0.3)',
  'clamp(temp, 20, 23)',
  'clamp_min(temp, 22)',
  'clamp_max(temp, 22)',
  'clamp(temp, 23, 20)',
  'time()',
  'vector(time())',
  'scalar(temp)',
  'scalar(up)',
  'http_requests_total * scalar(up{job="web"})',
  'changes(temp[5m])',
  'resets(http_requests_total[5m])',
  'idelta(temp[1m])',
  'deriv(http_requests_total[3m])',
  'deriv(temp[5m])',
  'temp ^ 2',
  'http_requests_total ^ 3',
  'temp ^ -3',
  'http_requests_total ^ 7',
  '(temp * 1.1) ^ 5',
  '(http_requests_total + 0.3) ^ 120',
  '-2 ^ 3',
  '(0 * -1) ^ -3',
  'temp ^ 0.5',
]

/** Evaluation times in seconds from 0. */
const TIMES = [0, 10, 30, 60, 75, 150, 240, 290, 307, 420, 540, 601, 720]

function range<T>(n: number, f: (i: number) => T): T[] {
  return Array.from({ length: n }, (_, i) => f(i))
}

/** What promtool printed for one expression at one time: the samples, or that it failed. */
type Outcome = { readonly error: true } | { readonly error: false; readonly samples: Map<string, number> }

/** A labels text as promtool prints it, `{a="b", c="d"}`, to a canonical key. */
function labelsKey(text: string): string {
  const pairs = [...text.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!] as const)
  return JSON.stringify(pairs.sort((a, b) => (a[0] < b[0] ? -1 : 1)))
}

function parseGoFloat(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY
  if (text === '-Inf') return Number.NEGATIVE_INFINITY
  return Number(text)
}

/** Parses promtool's report: one block per failed test, `expr: "…", time: 1m30s,` then `got: …` or `err: …`. */
function parseReport(report: string): Map<string, Outcome> {
  const out = new Map<string, Outcome>()
  const blocks = report.split(/\n(?=\s+expr: )/)
  for (const block of blocks) {
    const head = /expr: ("(?:[^"\\]|\\.)*"), time: ([^,]+),(.*)/.exec(block)
    if (head === null) continue
    const expr = JSON.parse(head[1]!) as string
    const seconds = goDurationSeconds(head[2]!)
    const key = `${expr}@${seconds}`
    if (/err:/.test(head[3]!)) {
      out.set(key, { error: true })
      continue
    }
    const got = /got: (.*)/.exec(block)
    const samples = new Map<string, number>()
    for (const m of (got?.[1] ?? '').matchAll(/(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}) (\S+?)(?:,|$)/g)) {
      samples.set(labelsKey(m[1]!), parseGoFloat(m[2]!))
    }
    out.set(key, { error: false, samples })
  }
  return out
}

/** Seconds of a Go duration as promtool prints it: `0s`, `1m30s`, `5m7s`, `12m0s`. */
function goDurationSeconds(text: string): number {
  let s = 0
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(h|m|s)/g))
    s += Number(m[1]) * { h: 3600, m: 60, s: 1 }[m[2] as 'h' | 'm' | 's']
  return s
}

function sameValue(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)) || a === b
}

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' })
const available = promtool.status === 0

test('promql answers as Prometheus 2.42 (promtool) does', {
  skip: available ? false : 'promtool is not installed',
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'v3-promtool-'))
  const engine = new BasicEngine({ dataDir: join(dir, 'data'), sync: 'off' })
  try {
    await engine.open()
    for (const [name, values] of Object.entries(SERIES)) {
      const m = /^([a-z_]+)\{(.*)\}$/.exec(name)!
      const tags = [...m[2]!.matchAll(/([a-z_]+)="([^"]*)"/g)].map((t) => ({ key: t[1]!, value: t[2]! }))
      const timestamps: number[] = []
      const bits: bigint[] = []
      values.forEach((v, i) => {
        if (v === '_') return
        timestamps.push(i * INTERVAL_S * 1000)
        if (v === 'stale') bits.push(0x7ff0000000000002n)
        else bits.push(new BigUint64Array(new Float64Array([parseGoFloat(v)]).buffer)[0]!)
      })
      const doubles = new Float64Array(BigUint64Array.from(bits).buffer)
      await engine.write({ series: [{ metric: m[1]!, tags, timestamps, values: doubles }], acceptNaN: true })
    }
    const yamlFile = join(dir, 'promql.yml')
    const tests = EXPRESSIONS.flatMap((expr) =>
      TIMES.map((t) => `      - expr: ${JSON.stringify(expr)}\n        eval_time: ${t}s\n        exp_samples: []\n`),
    ).join('')
    const series = Object.entries(SERIES)
      .map(
        ([name, values]) =>
          `      - series: ${JSON.stringify(name)}\n        values: ${JSON.stringify(values.join(' '))}\n`,
      )
      .join('')
    await writeFile(
      yamlFile,
      `evaluation_interval: 1m\ntests:\n  - interval: ${INTERVAL_S}s\n    input_series:\n${series}    promql_expr_test:\n${tests}`,
    )
    const run = spawnSync('promtool', ['test', 'rules', yamlFile], { encoding: 'utf8', maxBuffer: 64 << 20 })
    const report = parseReport(`${run.stdout}\n${run.stderr}`)
    assert.ok(report.size > 0, `promtool reported nothing:\n${run.stdout}\n${run.stderr}`)

    const api = new PromQueryApi(engine, { version: 'test' })
    const live = new AbortController().signal
    const mismatches: string[] = []
    for (const expr of EXPRESSIONS) {
      for (const t of TIMES) {
        const want: Outcome = report.get(`${expr}@${t}`) ?? { error: false, samples: new Map() }
        const answer = await api.handle('/api/v1/query', new URLSearchParams({ query: expr, time: String(t) }), live)
        const body = JSON.parse(answer!.body)
        if (want.error) {
          if (answer!.status === 200) mismatches.push(`${expr} at ${t}s: Prometheus fails, we answer ${answer!.body}`)
          continue
        }
        if (answer!.status !== 200) {
          mismatches.push(`${expr} at ${t}s: we fail with ${answer!.body}`)
          continue
        }
        const got = new Map<string, number>()
        const data = body.data as { resultType: string; result: unknown }
        if (data.resultType === 'scalar') {
          const [, v] = data.result as [number, string]
          got.set('[]', parseGoFloat(v))
        } else {
          for (const s of data.result as { metric: Record<string, string>; value: [number, string] }[]) {
            const pairs = Object.entries(s.metric).sort((a, b) => (a[0] < b[0] ? -1 : 1))
            got.set(JSON.stringify(pairs), parseGoFloat(s.value[1]))
          }
        }
        const keys = new Set([...want.samples.keys(), ...got.keys()])
        for (const k of keys) {
          const w = want.samples.get(k)
          const g = got.get(k)
          if (w === undefined || g === undefined || !sameValue(w, g)) {
            mismatches.push(`${expr} at ${t}s, ${k}: Prometheus ${w}, we ${g}`)
          }
        }
      }
    }
    assert.deepEqual(mismatches, [])
  } finally {
    await engine.close()
    await rm(dir, { recursive: true, force: true })
  }
})
