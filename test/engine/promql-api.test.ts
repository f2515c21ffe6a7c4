import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import type { CallContext, StorageEngine } from '../../src/engine/storage-engine.js'
import type { QueryRequest, SeriesPoints, Tag } from '../../src/model/types.js'
import { PromQueryApi } from '../../src/server/promql/api.js'
import { parsePromQL } from '../../src/server/promql/ast.js'
import { PromQLError } from '../../src/server/promql/errors.js'
import { Evaluator } from '../../src/server/promql/eval.js'

/**
 * The query API over a real engine, with data whose Prometheus answers are worked out here by
 * hand from Prometheus' documented rules: lookback of 5 minutes with a closed window, staleness
 * markers, range windows [t - r, t], counter resets and extrapolation in rate, offset.
 */

const T0 = Date.UTC(2026, 0, 1)
const S = 1000

/** Prometheus' staleness marker, built from its bits so no JavaScript number canonicalizes it. */
const STALE = new Float64Array(BigUint64Array.from([0x7ff0000000000002n]).buffer)

interface Answer {
  readonly status: number
  readonly json: {
    status: string
    errorType?: string
    error?: string
    data?: { resultType: string; result: unknown } | unknown[] | Record<string, unknown>
  }
}

let dir: string
let engine: BasicEngine
let api: PromQueryApi
const live = new AbortController().signal

async function call(path: string, params: Record<string, string | string[]>, signal = live): Promise<Answer> {
  const search = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) for (const one of Array.isArray(v) ? v : [v]) search.append(k, one)
  const answer = await api.handle(path, search, signal)
  assert.ok(answer, `no answer for ${path}`)
  return { status: answer.status, json: JSON.parse(answer.body) }
}

/** An instant query at `ms`: each series' labels and value, keyed by its labels. */
async function instant(query: string, ms: number): Promise<Record<string, string>> {
  const a = await call('/api/v1/query', { query, time: String(ms / 1000) })
  assert.equal(a.status, 200, JSON.stringify(a.json))
  const data = a.json.data as {
    resultType: string
    result: { metric: Record<string, string>; value: [number, string] }[]
  }
  assert.equal(data.resultType, 'vector')
  const out: Record<string, string> = {}
  for (const s of data.result) {
    assert.equal(s.value[0], ms / 1000)
    out[JSON.stringify(s.metric)] = s.value[1]
  }
  return out
}

function key(labels: Record<string, string>): string {
  return JSON.stringify(labels)
}

function tags(record: Record<string, string>): Tag[] {
  return Object.entries(record).map(([k, value]) => ({ key: k, value }))
}

async function write(metric: string, labels: Record<string, string>, points: [number, number][]): Promise<void> {
  const values = new Float64Array(points.length)
  points.forEach(([, v], i) => {
    values[i] = v
  })
  await writeValues(
    metric,
    labels,
    points.map(([t]) => T0 + t * S),
    values,
  )
}

async function writeValues(
  metric: string,
  labels: Record<string, string>,
  ts: number[],
  values: Float64Array,
): Promise<void> {
  await engine.write({ series: [{ metric, tags: tags(labels), timestamps: ts, values }], acceptNaN: true })
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'v3-promql-'))
  engine = new BasicEngine({ dataDir: dir, sync: 'off', sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000 })
  await engine.open()
  api = new PromQueryApi(engine, { version: '9.9.9' })

  // A gauge sampled at 0 s and 60 s, then silent: visible for 5 minutes after its last sample.
  await write('gauge', { host: 'a' }, [
    [0, 1],
    [60, 2],
  ])
  // A gauge that ends with a staleness marker at 30 s.
  const staleValues = new Float64Array(2)
  staleValues[0] = 5
  staleValues.set(STALE, 1)
  await writeValues('gauge', { host: 'b' }, [T0, T0 + 30 * S], staleValues)

  // A counter every 15 s, reset between 30 s and 45 s.
  await write('requests_total', { job: 'api', instance: 'one' }, [
    [0, 10],
    [15, 20],
    [30, 30],
    [45, 5],
    [60, 15],
  ])
  // A counter that starts late and small: extrapolation stops where it would pass zero.
  await write('requests_total', { job: 'api', instance: 'two' }, [
    [30, 1],
    [45, 4],
    [60, 7],
  ])
  // A second metric with the labels of gauge{host="a"}.
  await write('gauge2', { host: 'a' }, [
    [0, 3],
    [60, 4],
  ])
  // A classic histogram: observations up to 0.1, 0.5, 1 and in all.
  for (const [le, count] of [
    ['0.1', 2],
    ['0.5', 6],
    ['1', 8],
    ['+Inf', 10],
  ] as const) {
    await write('wait_seconds_bucket', { le, svc: 'q' }, [[0, count]])
  }
  // Unevenly spaced samples for the *_over_time family.
  await write('temperature', { room: 'x' }, [
    [0, 1],
    [10, 4],
    [35, 2],
    [50, 8],
  ])
})

after(async () => {
  await engine.close()
  await rm(dir, { recursive: true, force: true })
})

describe('promql over the engine: instant selectors', () => {
  test('the newest sample within 5 minutes, the window closed at both ends', async () => {
    const a = key({ __name__: 'gauge', host: 'a' })
    assert.deepEqual(await instant('gauge{host="a"}', T0 + 30 * S), { [a]: '1' })
    assert.deepEqual(await instant('gauge{host="a"}', T0 + 360 * S), { [a]: '2' })
    assert.deepEqual(await instant('gauge{host="a"}', T0 + 360 * S + 1), {})
    assert.deepEqual(await instant('gauge{host="a"}', T0 - 1), {})
  })

  test('a staleness marker ends the series at once', async () => {
    const b = key({ __name__: 'gauge', host: 'b' })
    assert.deepEqual(await instant('gauge{host="b"}', T0 + 29 * S), { [b]: '5' })
    assert.deepEqual(await instant('gauge{host="b"}', T0 + 30 * S), {})
    assert.deepEqual(await instant('gauge{host="b"}', T0 + 120 * S), {})
    // A range vector leaves the marker out.
    const a = await call('/api/v1/query', { query: 'gauge{host="b"}[1m]', time: String((T0 + 40 * S) / 1000) })
    assert.deepEqual(a.json, {
      status: 'success',
      data: {
        resultType: 'matrix',
        result: [{ metric: { __name__: 'gauge', host: 'b' }, values: [[T0 / 1000, '5']] }],
      },
    })
    assert.deepEqual(await instant('count_over_time(gauge{host="b"}[1m])', T0 + 40 * S), { '{"host":"b"}': '1' })
  })

  test('matchers on __name__ select across metrics', async () => {
    const at = T0 + 10 * S
    assert.deepEqual(Object.keys(await instant('{__name__=~"gauge|temperature"}', at)).sort(), [
      key({ __name__: 'gauge', host: 'a' }),
      key({ __name__: 'gauge', host: 'b' }),
      key({ __name__: 'temperature', room: 'x' }),
    ])
    assert.deepEqual(Object.keys(await instant('{__name__="temperature"}', at)), [
      key({ __name__: 'temperature', room: 'x' }),
    ])
    assert.deepEqual(Object.keys(await instant('{__name__!~"gauge|requests_total", room!=""}', at)), [
      key({ __name__: 'temperature', room: 'x' }),
    ])
    // Two metrics whose other labels are the same become one label set once a function drops the
    // name: Prometheus fails such a query.
    await failsWith(
      '/api/v1/query',
      { query: 'rate({__name__=~"gauge|gauge2"}[10m])', time: String((T0 + 60 * S) / 1000) },
      422,
      'execution',
      /same labelset/,
    )
  })

  test('offset moves the evaluation time back', async () => {
    const a = key({ __name__: 'gauge', host: 'a' })
    assert.deepEqual(await instant('gauge{host="a"} offset 1m', T0 + 90 * S), { [a]: '1' })
    assert.deepEqual(await instant('gauge{host="a"} offset 1m', T0 + 120 * S), { [a]: '2' })
    assert.deepEqual(await instant('gauge{host="a"} offset -1m', T0), { [a]: '2' })
    assert.deepEqual(await instant('max_over_time(temperature[20s] offset 30s)', T0 + 40 * S), { '{"room":"x"}': '4' })
  })

  test('matchers: regex, negative, and a missing label as the empty value', async () => {
    const a = key({ __name__: 'gauge', host: 'a' })
    const b = key({ __name__: 'gauge', host: 'b' })
    assert.deepEqual(Object.keys(await instant('gauge{host=~"a|b"}', T0 + 10 * S)).sort(), [a, b])
    assert.deepEqual(Object.keys(await instant('gauge{host!="a"}', T0 + 10 * S)), [b])
    assert.deepEqual(Object.keys(await instant('gauge{host!~"b"}', T0 + 10 * S)), [a])
    assert.deepEqual(Object.keys(await instant('gauge{zone=""}', T0 + 10 * S)).sort(), [a, b])
    assert.deepEqual(Object.keys(await instant('gauge{zone!=""}', T0 + 10 * S)), [])
  })
})

describe('promql over the engine: range functions', () => {
  const one = key({ instance: 'one', job: 'api' })
  const two = key({ instance: 'two', job: 'api' })

  test('rate and increase: counter resets and extrapolation to the window', async () => {
    // At 70 s the window [10 s, 70 s] holds 20, 30, 5, 15 at 15..60 s. The reset adds 30: an
    // increase of 25 over 45 s, extrapolated by 5 s at the start (closer than 1.1 average
    // intervals) and 10 s at the end.
    const increase = 25 * (60 / 45)
    const at70 = await instant('increase(requests_total{instance="one"}[1m])', T0 + 70 * S)
    assert.deepEqual(at70, { [one]: String(increase) })
    const rate = await instant('rate(requests_total{instance="one"}[1m])', T0 + 70 * S)
    assert.deepEqual(rate, { [one]: String(25 * (60 / 45 / 60)) })
  })

  test('the zero point limits extrapolation of a counter, not of a gauge', async () => {
    // At 60 s the window [0 s, 60 s] holds 1, 4, 7 from 30 s on: 6 over 30 s. Backwards the
    // counter reaches zero after 5 s, sooner than the 30 s to the window's start: 35 s in all.
    const atSixty = await instant('increase(requests_total{instance="two"}[1m])', T0 + 60 * S)
    assert.deepEqual(atSixty, { [two]: String(6 * (35 / 30)) })
    // delta does not know zero; the start is too far (30 s > 1.1 × 15 s): half an interval, 7.5 s.
    const delta = await instant('delta(requests_total{instance="two"}[1m])', T0 + 60 * S)
    assert.deepEqual(delta, { [two]: String(6 * (37.5 / 30)) })
    // Fewer than two samples: no rate at all.
    assert.deepEqual(await instant('rate(requests_total{instance="two"}[10s])', T0 + 35 * S), {})
  })

  test('irate: the last two samples, a drop taken as a reset', async () => {
    assert.deepEqual(await instant('irate(requests_total{instance="one"}[1m])', T0 + 70 * S), {
      [one]: String(10 / 15),
    })
    assert.deepEqual(await instant('irate(requests_total{instance="one"}[1m])', T0 + 50 * S), {
      [one]: String(5 / 15),
    })
  })

  test('the *_over_time family over uneven samples', async () => {
    const at = T0 + 50 * S
    const room = key({ room: 'x' })
    const expect: Record<string, string> = {
      avg_over_time: '3.75',
      min_over_time: '1',
      max_over_time: '8',
      sum_over_time: '15',
      count_over_time: '4',
      stdvar_over_time: '7.1875',
      stddev_over_time: String(Math.sqrt(7.1875)),
      present_over_time: '1',
    }
    for (const [func, value] of Object.entries(expect)) {
      assert.deepEqual(await instant(`${func}(temperature[1m])`, at), { [room]: value }, func)
    }
    assert.deepEqual(await instant('quantile_over_time(0.5, temperature[1m])', at), { [room]: '3' })
    assert.deepEqual(await instant('quantile_over_time(0.25, temperature[1m])', at), { [room]: '1.75' })
    // last_over_time keeps the metric name.
    assert.deepEqual(await instant('last_over_time(temperature[1m])', at), {
      [key({ __name__: 'temperature', room: 'x' })]: '8',
    })
    // The window's start is included: [10 s, 60 s] holds 4, 2, 8.
    assert.deepEqual(await instant('count_over_time(temperature[50s])', T0 + 60 * S), { [room]: '3' })
    assert.deepEqual(await instant('count_over_time(temperature[49s])', T0 + 60 * S), { [room]: '2' })
  })
})

describe('promql over the engine: aggregation and operators', () => {
  test('logarithms equal Prometheus 2.42 to the last bit, where Math.log does not', async () => {
    const at = T0 + 60 * S
    // The answers of /usr/bin/prometheus (2.42.0, amd64) to the same queries.
    const prometheus: Record<string, string> = {
      'ln(vector(1.2297624741328772))': '0.2068210402750248',
      'log10(vector(1.2297624741328772))': '0.08982123653293347',
      'log2(vector(21.681152361056835))': '4.438369533378033',
      'ln(vector(0.0001234))': '-9.000079446492986',
      'ln(vector(98765.4321))': '11.500502944984172',
    }
    for (const [query, value] of Object.entries(prometheus)) {
      assert.deepEqual(await instant(query, at), { '{}': value }, query)
    }
    assert.notEqual(String(Math.log(1.2297624741328772)), prometheus['ln(vector(1.2297624741328772))'])
  })

  test('aggregations by and without drop the name; topk and bottomk keep the series', async () => {
    const at = T0 + 60 * S
    assert.deepEqual(await instant('sum by (job) (requests_total)', at), { '{"job":"api"}': '22' })
    assert.deepEqual(await instant('sum without (instance) (requests_total)', at), { '{"job":"api"}': '22' })
    assert.deepEqual(await instant('sum(requests_total)', at), { '{}': '22' })
    assert.deepEqual(await instant('avg(requests_total)', at), { '{}': '11' })
    assert.deepEqual(await instant('min(requests_total)', at), { '{}': '7' })
    assert.deepEqual(await instant('max by (instance) (requests_total)', at), {
      '{"instance":"one"}': '15',
      '{"instance":"two"}': '7',
    })
    assert.deepEqual(await instant('count(requests_total)', at), { '{}': '2' })
    assert.deepEqual(await instant('stddev(requests_total)', at), { '{}': '4' })
    assert.deepEqual(await instant('stdvar(requests_total)', at), { '{}': '16' })
    assert.deepEqual(await instant('quantile(0.5, requests_total)', at), { '{}': '11' })
    assert.deepEqual(await instant('topk(1, requests_total)', at), {
      [key({ __name__: 'requests_total', instance: 'one', job: 'api' })]: '15',
    })
    assert.deepEqual(await instant('bottomk(1, requests_total)', at), {
      [key({ __name__: 'requests_total', instance: 'two', job: 'api' })]: '7',
    })
    assert.deepEqual(await instant('topk(0, requests_total)', at), {})
  })

  test('arithmetic drops the name, a comparison filter keeps it, bool gives 0 and 1', async () => {
    const at = T0 + 60 * S
    const one = { instance: 'one', job: 'api' }
    const two = { instance: 'two', job: 'api' }
    assert.deepEqual(await instant('requests_total * 2', at), { [key(one)]: '30', [key(two)]: '14' })
    assert.deepEqual(await instant('100 - requests_total', at), { [key(one)]: '85', [key(two)]: '93' })
    assert.deepEqual(await instant('requests_total > 10', at), {
      [key({ __name__: 'requests_total', ...one })]: '15',
    })
    assert.deepEqual(await instant('10 < requests_total', at), {
      [key({ __name__: 'requests_total', ...one })]: '15',
    })
    assert.deepEqual(await instant('requests_total > bool 10', at), { [key(one)]: '1', [key(two)]: '0' })
    assert.deepEqual(await instant('-requests_total', at), { [key(one)]: '-15', [key(two)]: '-7' })
    assert.deepEqual(await instant('requests_total / requests_total', at), { [key(one)]: '1', [key(two)]: '1' })
    assert.deepEqual(await instant('requests_total{instance="one"} - on(job) requests_total{instance="two"}', at), {
      '{"job":"api"}': '8',
    })
    assert.deepEqual(
      await instant('requests_total{instance="one"} - ignoring(instance) requests_total{instance="two"}', at),
      {
        '{"job":"api"}': '8',
      },
    )
    assert.deepEqual(await instant('requests_total % 4 ^ 2', at), { [key(one)]: '15', [key(two)]: '7' })
  })

  test('and, or, unless keep whole samples by their match groups', async () => {
    const at = T0 + 60 * S
    const one = key({ __name__: 'requests_total', instance: 'one', job: 'api' })
    const two = key({ __name__: 'requests_total', instance: 'two', job: 'api' })
    assert.deepEqual(await instant('requests_total and requests_total > 10', at), { [one]: '15' })
    assert.deepEqual(await instant('requests_total unless requests_total > 10', at), { [two]: '7' })
    assert.deepEqual(await instant('requests_total{instance="one"} or requests_total * 2', at), {
      [one]: '15',
      [key({ instance: 'two', job: 'api' })]: '14',
    })
    assert.deepEqual(await instant('requests_total and on(job) gauge', at), {})
    assert.deepEqual(await instant('requests_total and on() gauge', at), { [one]: '15', [two]: '7' })
    assert.deepEqual(await instant('requests_total unless on(job) gauge', at), { [one]: '15', [two]: '7' })
  })

  test('histogram_quantile interpolates within the bucket that holds the rank', async () => {
    // Rank 5 of 10 falls in (0.1, 0.5], which holds observations 3 to 6: 3/4 of the way.
    assert.deepEqual(await instant('histogram_quantile(0.5, wait_seconds_bucket)', T0), {
      '{"svc":"q"}': String(0.1 + (0.5 - 0.1) * (3 / 4)),
    })
    // Above the last finite bound: that bound.
    assert.deepEqual(await instant('histogram_quantile(0.95, wait_seconds_bucket)', T0), { '{"svc":"q"}': '1' })
    assert.deepEqual(await instant('histogram_quantile(0.5, wait_seconds_bucket{le!="+Inf"})', T0), {
      '{"svc":"q"}': 'NaN',
    })
  })

  test('scalars: instant and range', async () => {
    const a = await call('/api/v1/query', { query: '(1 + 2) * 2 ^ 3', time: '100.5' })
    assert.deepEqual(a.json, { status: 'success', data: { resultType: 'scalar', result: [100.5, '24'] } })
    const b = await call('/api/v1/query', { query: '1 / 0 > bool -Inf', time: '100' })
    assert.deepEqual(b.json, { status: 'success', data: { resultType: 'scalar', result: [100, '1'] } })
    const r = await call('/api/v1/query_range', { query: '-1 / 0', start: '100', end: '130', step: '15s' })
    assert.deepEqual(r.json, {
      status: 'success',
      data: {
        resultType: 'matrix',
        result: [
          {
            metric: {},
            values: [
              [100, '-Inf'],
              [115, '-Inf'],
              [130, '-Inf'],
            ],
          },
        ],
      },
    })
  })
})

describe('promql over the engine: range queries', () => {
  test('steps from start to end, each series with the steps it has', async () => {
    const r = await call('/api/v1/query_range', {
      query: 'gauge',
      start: String(T0 / 1000 - 30),
      end: String(T0 / 1000 + 360),
      step: '1m30s',
    })
    // Steps -30, 60, 150, 240, 330 s: host a from 0 s until 360 s; host b only before its marker.
    assert.deepEqual(r.json, {
      status: 'success',
      data: {
        resultType: 'matrix',
        result: [
          {
            metric: { __name__: 'gauge', host: 'a' },
            values: [
              [T0 / 1000 + 60, '2'],
              [T0 / 1000 + 150, '2'],
              [T0 / 1000 + 240, '2'],
              [T0 / 1000 + 330, '2'],
            ],
          },
        ],
      },
    })
  })

  test('a rate and a sum over steps', async () => {
    const r = await call('/api/v1/query_range', {
      query: 'sum by (job) (increase(requests_total[1m]))',
      start: String(T0 / 1000 + 60),
      end: String(T0 / 1000 + 70),
      step: '10',
    })
    // At 60 s: one's window [0, 60] holds 10..15 with the reset, an increase of 35 with no
    // extrapolation; two's is 6 × 35 / 30. At 70 s: one 25 × 60 / 45; two's window [10, 70]
    // holds 1, 4, 7 from 30 s on: 6 over 30 s, extrapolated 5 s back to the zero point (closer
    // than the window's start, 20 s) and 10 s forward to the end.
    const two70 = 6 * ((30 + 5 + 10) / 30)
    assert.deepEqual(r.json, {
      status: 'success',
      data: {
        resultType: 'matrix',
        result: [
          {
            metric: { job: 'api' },
            values: [
              [T0 / 1000 + 60, String(35 + 6 * (35 / 30))],
              [T0 / 1000 + 70, String(25 * (60 / 45) + two70)],
            ],
          },
        ],
      },
    })
  })

  test('a range query answers at each step what an instant query at that time answers', async () => {
    const start = T0 - 30 * S
    const stepMs = 7 * S
    const end = T0 + 400 * S
    for (const query of [
      'gauge',
      'gauge offset 20s',
      'rate(requests_total[1m])',
      'irate(requests_total[30s])',
      'avg_over_time(temperature[40s])',
      'sum by (job) (requests_total)',
      'topk(1, requests_total)',
      'requests_total > bool 9',
      'requests_total - on(instance) requests_total',
      'gauge or temperature',
    ]) {
      const r = await call('/api/v1/query_range', {
        query,
        start: String(start / 1000),
        end: String(end / 1000),
        step: String(stepMs / 1000),
      })
      assert.equal(r.status, 200, JSON.stringify(r.json))
      const data = r.json.data as { result: { metric: Record<string, string>; values: [number, string][] }[] }
      const fromRange = new Map<number, Record<string, string>>()
      for (const s of data.result) {
        for (const [t, v] of s.values) {
          const at = fromRange.get(t) ?? {}
          at[key(s.metric)] = v
          fromRange.set(t, at)
        }
      }
      for (let t = start; t <= end; t += stepMs) {
        assert.deepEqual(fromRange.get(t / 1000) ?? {}, await instant(query, t), `${query} at ${t - T0} ms`)
      }
    }
  })
})

describe('promql over the engine: series, labels, build info', () => {
  test('series and label values of the match[] selectors', async () => {
    const s = await call('/api/v1/series', { 'match[]': ['gauge', 'temperature'] })
    assert.deepEqual(s.json, {
      status: 'success',
      data: [
        { __name__: 'gauge', host: 'a' },
        { __name__: 'gauge', host: 'b' },
        { __name__: 'temperature', room: 'x' },
      ],
    })
    const l = await call('/api/v1/labels', { 'match[]': ['gauge', 'temperature'] })
    assert.deepEqual(l.json, { status: 'success', data: ['__name__', 'host', 'room'] })
    const v = await call('/api/v1/label/host/values', { 'match[]': 'gauge' })
    assert.deepEqual(v.json, { status: 'success', data: ['a', 'b'] })
    const n = await call('/api/v1/label/__name__/values', { 'match[]': ['gauge', 'temperature'] })
    assert.deepEqual(n.json, { status: 'success', data: ['gauge', 'temperature'] })
  })

  test('without match[]: every series', async () => {
    const n = await call('/api/v1/label/__name__/values', {})
    assert.deepEqual(n.json, {
      status: 'success',
      data: ['gauge', 'gauge2', 'requests_total', 'temperature', 'wait_seconds_bucket'],
    })
    const l = await call('/api/v1/labels', {})
    assert.deepEqual(l.json, { status: 'success', data: ['__name__', 'host', 'instance', 'job', 'le', 'room', 'svc'] })
    const v = await call('/api/v1/label/job/values', {})
    assert.deepEqual(v.json, { status: 'success', data: ['api'] })
    const none = await call('/api/v1/label/nothing/values', {})
    assert.deepEqual(none.json, { status: 'success', data: [] })
    // A tag key V3 stores that Prometheus' own syntax has no room for: asked for, not refused.
    const dotted = await call('/api/v1/label/com.docker-compose:service/values', {})
    assert.deepEqual(dotted.json, { status: 'success', data: [] })
  })

  test('start and end narrow the answers to series with a sample in [start, end]', async () => {
    const at = (sec: number): string => String(T0 / 1000 + sec)
    // gauge{host="b"} (0 s, 30 s) and the histogram (0 s) have nothing after 40 s.
    const s = await call('/api/v1/series', { 'match[]': ['gauge', 'temperature'], start: at(40), end: at(70) })
    assert.deepEqual(s.json, {
      status: 'success',
      data: [
        { __name__: 'gauge', host: 'a' },
        { __name__: 'temperature', room: 'x' },
      ],
    })
    // Both ends are inclusive: temperature has a sample at 35 s and none from 36 s to 49 s.
    const one = await call('/api/v1/series', { 'match[]': 'temperature', start: at(35), end: at(35) })
    assert.equal((one.json.data as unknown[]).length, 1)
    const gap = await call('/api/v1/series', { 'match[]': 'temperature', start: at(36), end: at(49) })
    assert.deepEqual(gap.json.data, [])
    // start alone runs to the end of time; end alone from its start.
    const names = await call('/api/v1/label/__name__/values', { start: at(40) })
    assert.deepEqual(names.json.data, ['gauge', 'gauge2', 'requests_total', 'temperature'])
    const labels = await call('/api/v1/labels', { start: at(40) })
    assert.deepEqual(labels.json.data, ['__name__', 'host', 'instance', 'job', 'room'])
    const early = await call('/api/v1/label/host/values', { 'match[]': 'gauge', end: at(10) })
    assert.deepEqual(early.json.data, ['a', 'b'])
    const late = await call('/api/v1/label/host/values', { 'match[]': 'gauge', start: at(31) })
    assert.deepEqual(late.json.data, ['a'])
  })

  test('a range holding more points than a query may read answers every matching series', async () => {
    const small = new BasicEngine({ dataDir: join(dir, 'small'), sync: 'off', maxPointsPerQuery: 2 })
    await small.open()
    try {
      const timestamps = Array.from({ length: 30 }, (_, i) => T0 + i * S)
      for (const host of ['busy', 'quiet']) {
        const ts = host === 'busy' ? timestamps : [T0 - 3_600_000]
        await small.write({
          series: [{ metric: 'load', tags: [{ key: 'host', value: host }], timestamps: ts, values: ts.map(() => 1) }],
        })
      }
      const smallApi = new PromQueryApi(small, { version: '9.9.9' })
      const params = new URLSearchParams({ start: String(T0 / 1000), end: String(T0 / 1000 + 60) })
      const answer = await smallApi.handle('/api/v1/label/host/values', params, live)
      // 30 points are more than the 20 a query of this engine may read: quiet is listed too.
      assert.deepEqual(JSON.parse(answer?.body ?? '{}'), { status: 'success', data: ['busy', 'quiet'] })
    } finally {
      await small.close()
    }
  })

  test('metadata and exemplars: none are kept, so both answer empty; a bad query or range is bad_data', async () => {
    assert.deepEqual((await call('/api/v1/metadata', {})).json, { status: 'success', data: {} })
    assert.deepEqual((await call('/api/v1/metadata', { metric: 'gauge' })).json, { status: 'success', data: {} })
    const ex = await call('/api/v1/query_exemplars', { query: 'rate(requests_total[1m])', start: '0', end: '100' })
    assert.deepEqual(ex.json, { status: 'success', data: [] })
    await failsWith('/api/v1/query_exemplars', { query: 'sum(' }, 400, 'bad_data', /parse error/)
    await failsWith(
      '/api/v1/query_exemplars',
      { query: 'gauge', start: '100', end: '0' },
      400,
      'bad_data',
      /end timestamp must not be before start/,
    )
  })

  test('build info and unknown paths', async () => {
    const b = await call('/api/v1/status/buildinfo', {})
    assert.equal(b.status, 200)
    assert.equal((b.json.data as { version: string }).version, '9.9.9')
    assert.equal(await api.handle('/api/v1/write', new URLSearchParams(), live), undefined)
    assert.equal(await api.handle('/api/v1/label/x', new URLSearchParams(), live), undefined)
  })
})

/** Every error in Prometheus' format, with its status. */
async function failsWith(
  path: string,
  params: Record<string, string | string[]>,
  status: number,
  type: string,
  pattern: RegExp,
  signal = live,
): Promise<void> {
  const a = await call(path, params, signal)
  assert.equal(a.status, status, JSON.stringify(a.json))
  assert.equal(a.json.status, 'error')
  assert.equal(a.json.errorType, type)
  assert.match(a.json.error ?? '', pattern)
  assert.deepEqual(Object.keys(a.json).sort(), ['error', 'errorType', 'status'])
}

describe('promql over the engine: errors in Prometheus format', () => {
  test('bad parameters answer 400 bad_data', async () => {
    await failsWith('/api/v1/query', { query: 'up', time: 'noon' }, 400, 'bad_data', /invalid parameter "time"/)
    await failsWith('/api/v1/query', {}, 400, 'bad_data', /invalid parameter "query"/)
    await failsWith('/api/v1/query', { query: 'sum(' }, 400, 'bad_data', /parse error/)
    await failsWith('/api/v1/query', { query: 'up', timeout: 'later' }, 400, 'bad_data', /"timeout"/)
    const range = { query: 'gauge', start: '100', end: '200', step: '10' }
    await failsWith('/api/v1/query_range', { ...range, start: 'x' }, 400, 'bad_data', /"start"/)
    await failsWith(
      '/api/v1/query_range',
      { ...range, end: '99' },
      400,
      'bad_data',
      /end timestamp must not be before start/,
    )
    await failsWith('/api/v1/query_range', { ...range, step: '0' }, 400, 'bad_data', /zero or negative/)
    await failsWith('/api/v1/query_range', { ...range, step: '0.0001' }, 400, 'bad_data', /at least 1ms/)
    await failsWith('/api/v1/query_range', { ...range, step: 'x' }, 400, 'bad_data', /"step"/)
    await failsWith('/api/v1/query_range', { ...range, end: '11101', step: '1' }, 400, 'bad_data', /11,000 points/)
    await failsWith('/api/v1/query_range', { ...range, query: 'gauge[1m]' }, 400, 'bad_data', /range vector/)
    await failsWith('/api/v1/query_range', { ...range, query: 'gauge[1m:10s]' }, 400, 'bad_data', /subqueries/)
    await failsWith('/api/v1/series', {}, 400, 'bad_data', /no match\[\] parameter/)
    await failsWith('/api/v1/series', { 'match[]': 'rate(x[1m])' }, 400, 'bad_data', /match\[\]/)
    await failsWith('/api/v1/series', { 'match[]': 'gauge', start: 'x' }, 400, 'bad_data', /"start"/)
    await failsWith(
      '/api/v1/labels',
      { start: '200', end: '100' },
      400,
      'bad_data',
      /end timestamp must not be before start/,
    )
    await failsWith('/api/v1/labels', { 'match[]': '{a=""}' }, 400, 'bad_data', /non-empty matcher/)
    await failsWith('/api/v1/label/1x/values', {}, 400, 'bad_data', /invalid label name/)
  })

  test('11,000 steps are allowed, 11,001 are not', async () => {
    const ok = await call('/api/v1/query_range', { query: '1', start: '0', end: '11000', step: '1' })
    assert.equal(ok.status, 200)
    await failsWith(
      '/api/v1/query_range',
      { query: '1', start: '0', end: '11001', step: '1' },
      400,
      'bad_data',
      /11,000/,
    )
  })

  test('matching that is not one-to-one fails the query with 422 execution', async () => {
    const at = String((T0 + 60 * S) / 1000)
    await failsWith(
      '/api/v1/query',
      { query: 'requests_total - ignoring(instance) requests_total', time: at },
      422,
      'execution',
      /many-to-many matching not allowed/,
    )
    await failsWith(
      '/api/v1/query',
      { query: 'requests_total - on(job) requests_total{instance="one"}', time: at },
      422,
      'execution',
      /multiple matches for labels/,
    )
  })

  test('a query holding more samples than the limit fails with execution', async () => {
    const query = parsePromQL('sum(requests_total)')
    const range = { startMs: T0, endMs: T0 + 99 * S, stepMs: S, lookbackMs: 300_000 }
    // Two series of 100 steps, then their sum: 300 values.
    const enough = new Evaluator(engine, range, live, 300)
    await enough.fetch(query.expr)
    assert.equal(enough.eval(query.expr).type, 'vector')
    const tooFew = new Evaluator(engine, range, live, 299)
    await tooFew.fetch(query.expr)
    assert.throws(
      () => tooFew.eval(query.expr),
      (err: unknown) => err instanceof PromQLError && err.type === 'execution' && /too many samples/.test(err.message),
    )
  })

  test('a cancelled request answers 503 canceled, a timeout 503 timeout', async () => {
    const gone = new AbortController()
    gone.abort()
    await failsWith('/api/v1/query', { query: 'gauge' }, 503, 'canceled', /canceled/, gone.signal)
    // An engine that answers only when the caller gives up, so the timeout decides.
    const stuck: StorageEngine = Object.create(engine, {
      query: {
        value: (_req: QueryRequest, ctx?: CallContext): Promise<SeriesPoints[]> =>
          new Promise((_resolve, reject) => {
            ctx?.signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true })
          }),
      },
    })
    const slow = new PromQueryApi(stuck, { version: 'x' })
    const answer = await slow.handle('/api/v1/query', new URLSearchParams({ query: 'gauge', timeout: '50ms' }), live)
    assert.equal(answer?.status, 503)
    assert.deepEqual(JSON.parse(answer?.body ?? '{}'), {
      status: 'error',
      errorType: 'timeout',
      error: 'query timed out in expression evaluation',
    })
  })
})
