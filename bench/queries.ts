// The seven TSBS devops queries of the performance issue, with parameters drawn from a fixed seed
// (the same for every system measured), the V3 form of each, and the reference answer computed
// from the generated data that every V3 answer is checked against.

import type { QueryInput, V3Client } from '../src/client/index.js'
import type { SeriesPoints } from '../src/model/types.js'
import { INTERVAL_MS, METRICS, POINTS_PER_SERIES, prng, START_MS } from './dataset.js'

export const HOUR = 3_600_000
export const MINUTE = 60_000

export interface QueryParams {
  readonly hosts: number[]
  readonly metrics: number[]
  readonly startMs: number
  readonly endMs: number
}

export interface QueryKind {
  readonly name: string
  readonly vmFigure: number
  params(r: () => number, hosts: number): QueryParams
}

function pickDistinct(r: () => number, n: number, k: number): number[] {
  const out = new Set<number>()
  while (out.size < Math.min(n, k)) out.add(Math.floor(r() * n))
  return [...out]
}

function rangeOf(r: () => number, hours: number): { startMs: number; endMs: number } {
  const minutes = (24 - hours) * 60
  const startMs = START_MS + Math.floor(r() * (minutes + 1)) * MINUTE
  return { startMs, endMs: startMs + hours * HOUR }
}

export const QUERY_KINDS: readonly QueryKind[] = [
  {
    name: 'single-groupby-1-1-1',
    vmFigure: 0.6,
    params: (r, hosts) => ({
      hosts: pickDistinct(r, hosts, 1),
      metrics: pickDistinct(r, METRICS.length, 1),
      ...rangeOf(r, 1),
    }),
  },
  {
    name: 'single-groupby-5-1-12',
    vmFigure: 2.0,
    params: (r, hosts) => ({
      hosts: pickDistinct(r, hosts, 1),
      metrics: pickDistinct(r, METRICS.length, 5),
      ...rangeOf(r, 12),
    }),
  },
  {
    name: 'cpu-max-all-8',
    vmFigure: 5.7,
    params: (r, hosts) => {
      const range = rangeOf(r, 8)
      // Hour-aligned, as TSBS rounds this query's range to its 1-hour buckets.
      const startMs = START_MS + Math.floor((range.startMs - START_MS) / HOUR) * HOUR
      return { hosts: pickDistinct(r, hosts, 8), metrics: METRICS.map((_, i) => i), startMs, endMs: startMs + 8 * HOUR }
    },
  },
  {
    name: 'double-groupby-1',
    vmFigure: 7.5,
    params: (r, hosts) => {
      const range = rangeOf(r, 12)
      const startMs = START_MS + Math.floor((range.startMs - START_MS) / HOUR) * HOUR
      return {
        hosts: [...Array(hosts).keys()],
        metrics: pickDistinct(r, METRICS.length, 1),
        startMs,
        endMs: startMs + 12 * HOUR,
      }
    },
  },
  {
    name: 'lastpoint',
    vmFigure: 1.5,
    params: (r, hosts) => ({
      hosts: [...Array(hosts).keys()],
      metrics: pickDistinct(r, METRICS.length, 1),
      startMs: START_MS,
      endMs: START_MS + POINTS_PER_SERIES * INTERVAL_MS,
    }),
  },
  {
    name: 'high-cpu-1',
    vmFigure: 0.6,
    params: (r, hosts) => ({ hosts: pickDistinct(r, hosts, 1), metrics: [0], ...rangeOf(r, 12) }),
  },
  {
    name: 'raw-range',
    vmFigure: 2.8,
    params: (r, hosts) => ({
      hosts: pickDistinct(r, hosts, 1),
      metrics: pickDistinct(r, METRICS.length, 1),
      startMs: START_MS,
      endMs: START_MS + POINTS_PER_SERIES * INTERVAL_MS,
    }),
  },
]

/** Parameters of every run of every query: 2 warm-ups then `runs` timed, from one seed. */
export function drawParams(hosts: number, runs: number): Map<string, QueryParams[]> {
  const r = prng(20261125)
  const out = new Map<string, QueryParams[]>()
  for (const kind of QUERY_KINDS)
    out.set(
      kind.name,
      Array.from({ length: runs + 2 }, () => kind.params(r, hosts)),
    )
  return out
}

const hostSelector = (hosts: number[]) =>
  hosts.length === 1
    ? { key: 'hostname', value: `host_${hosts[0]}`, op: 'eq' as const }
    : { key: 'hostname', value: hosts.map((h) => `host_${h}`).join('|'), op: 'regex' as const }

function metricName(m: number): string {
  return METRICS[m] as string
}

/** Reference data: values[host][metric] as generated. */
export type Values = Float64Array[][]

export function indexOf(ts: number): number {
  return Math.round((ts - START_MS) / INTERVAL_MS)
}

export function bucketFold(
  v: Float64Array,
  startMs: number,
  endMs: number,
  stepMs: number,
  fold: (xs: Float64Array) => number,
) {
  const ts: number[] = []
  const out: number[] = []
  for (let b = startMs; b < endMs; b += stepMs) {
    ts.push(b)
    out.push(fold(v.subarray(indexOf(b), indexOf(Math.min(endMs, b + stepMs)))))
  }
  return { ts, out }
}

export const max = (xs: Float64Array) => xs.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY)
export const avg = (xs: Float64Array) => xs.reduce((a, b) => a + b, 0) / xs.length

export function expectSeries(
  name: string,
  got: SeriesPoints | undefined,
  ts: number[],
  vals: number[],
  tolerance = 0,
): void {
  if (!got) throw new Error(`${name}: a series is missing`)
  if (got.timestamps.length !== ts.length)
    throw new Error(`${name}: ${got.timestamps.length} points, expected ${ts.length}`)
  for (let i = 0; i < ts.length; i++) {
    const v = got.values[i] as number
    const want = vals[i] as number
    if (got.timestamps[i] !== ts[i] || Math.abs(v - want) > tolerance * Math.max(1, Math.abs(want))) {
      throw new Error(`${name}: point ${i} is ${got.timestamps[i]}=${v}, expected ${ts[i]}=${want}`)
    }
  }
}

/** A one-series-per-metric answer, checked to hold one series for each metric, in their order. */
function perMetric(kind: string, answers: SeriesPoints[], metrics: number[]): SeriesPoints[] {
  if (answers.length !== metrics.length)
    throw new Error(`${kind}: ${answers.length} series for ${metrics.length} metrics`)
  metrics.forEach((m, i) => {
    if (answers[i]?.metric !== metricName(m)) throw new Error(`${kind}: series ${i} is not ${metricName(m)}`)
  })
  return answers
}

/**
 * Runs one query against V3; the returned function checks the answer against the reference, apart,
 * so that the check is not timed.
 */
export async function runV3(client: V3Client, kind: string, p: QueryParams, values: Values): Promise<() => void> {
  const sel = (m: number, hosts = p.hosts) => ({ metric: metricName(m), matchers: [hostSelector(hosts)] })
  // One call for several metrics, each series after the previous metric's, as VictoriaMetrics
  // answers `{__name__=~"a|b"}` in one call.
  const selectors = (metrics: number[]) => {
    const [first, ...rest] = metrics.map((m) => sel(m))
    return { selector: first!, additionalSelectors: rest }
  }
  const v = (h: number, m: number) => values[h]?.[m] as Float64Array
  switch (kind) {
    case 'single-groupby-1-1-1':
    case 'single-groupby-5-1-12': {
      const h = p.hosts[0] as number
      const answers = await client.query({
        ...selectors(p.metrics),
        startMs: p.startMs,
        endMs: p.endMs,
        aggregation: { func: 'max', stepMs: MINUTE },
      })
      return () => {
        const series = perMetric(kind, answers, p.metrics)
        p.metrics.forEach((m, i) => {
          const want = bucketFold(v(h, m), p.startMs, p.endMs, MINUTE, max)
          expectSeries(kind, series[i], want.ts, want.out)
        })
      }
    }
    case 'cpu-max-all-8': {
      const answers = await client.query({
        ...selectors(p.metrics),
        startMs: p.startMs,
        endMs: p.endMs,
        aggregation: { func: 'max', stepMs: HOUR, mergeSeries: true },
      })
      return () => {
        const series = perMetric(kind, answers, p.metrics)
        p.metrics.forEach((m, i) => {
          const per = p.hosts.map((h) => bucketFold(v(h, m), p.startMs, p.endMs, HOUR, max))
          const want = (per[0]?.out ?? []).map((_, b) => Math.max(...per.map((x) => x.out[b] as number)))
          expectSeries(kind, series[i], per[0]?.ts ?? [], want)
        })
      }
    }
    case 'double-groupby-1': {
      const m = p.metrics[0] as number
      const q: QueryInput = {
        selector: { metric: metricName(m) },
        startMs: p.startMs,
        endMs: p.endMs,
        aggregation: { func: 'avg', stepMs: HOUR, groupBy: ['hostname'] },
      }
      const answer = await client.query(q)
      return () => {
        if (answer.length !== p.hosts.length) throw new Error(`${kind}: ${answer.length} series`)
        for (const s of answer) {
          const h = Number(s.tags.find((t) => t.key === 'hostname')?.value.slice(5))
          const want = bucketFold(v(h, m), p.startMs, p.endMs, HOUR, avg)
          expectSeries(kind, s, want.ts, want.out, 1e-9)
        }
      }
    }
    case 'lastpoint': {
      const m = p.metrics[0] as number
      const answer = await client.latest({ metric: metricName(m) })
      return () => {
        if (answer.length !== p.hosts.length) throw new Error(`${kind}: ${answer.length} series`)
        for (const s of answer) {
          const h = Number(s.tags.find((t) => t.key === 'hostname')?.value.slice(5))
          const last = POINTS_PER_SERIES - 1
          expectSeries(kind, s, [START_MS + last * INTERVAL_MS], [v(h, m)[last] as number])
        }
      }
    }
    case 'high-cpu-1': {
      const h = p.hosts[0] as number
      const answer = await client.query({
        selector: sel(0),
        startMs: p.startMs,
        endMs: p.endMs,
        valueFilter: { op: 'gt', value: 90 },
      })
      return () => checkHighCpu(kind, answer, v(h, 0), p)
    }
    case 'raw-range': {
      const h = p.hosts[0] as number
      const m = p.metrics[0] as number
      const answer = await client.query({ selector: sel(m), startMs: p.startMs, endMs: p.endMs })
      return () =>
        expectSeries(
          kind,
          answer[0],
          Array.from({ length: POINTS_PER_SERIES }, (_, i) => START_MS + i * INTERVAL_MS),
          Array.from(v(h, m)),
        )
    }
    default:
      throw new Error(`unknown query ${kind}`)
  }
}

/** The points above 90 of a series in [startMs, endMs): what high-cpu-1 asks for. */
export function highCpuReference(series: Float64Array, p: QueryParams): { ts: number[]; vals: number[] } {
  const ts: number[] = []
  const vals: number[] = []
  for (let i = indexOf(p.startMs); i < indexOf(p.endMs); i++) {
    const x = series[i] as number
    if (x > 90) {
      ts.push(START_MS + i * INTERVAL_MS)
      vals.push(x)
    }
  }
  return { ts, vals }
}

function checkHighCpu(kind: string, answer: SeriesPoints[], series: Float64Array, p: QueryParams): void {
  const { ts, vals } = highCpuReference(series, p)
  if (ts.length === 0) {
    if (answer.length !== 0) throw new Error(`${kind}: expected no series`)
    return
  }
  expectSeries(kind, answer[0], ts, vals)
}
