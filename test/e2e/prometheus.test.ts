// Debian's real Prometheus beside a real `v3 serve`. One Prometheus scrapes V3's /metrics every
// second, and a small exporter of the test's own whose gauge is at times NaN or ±Inf and which
// goes away midway (Prometheus then ends its series with staleness markers); it remote-writes all
// of it to V3, while a client keeps gRPC calls going so that v3_grpc_requests_total moves. Once V3
// holds every sample Prometheus has up to a chosen instant, the Prometheus query API of both
// answers the same query_range over that past, and a second Prometheus that reads V3 through
// remote_read answers as both do.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { waitFor } from '../fixtures/wait.js'
import {
  byLabels,
  formatValue,
  labelKey,
  type MatrixSeries,
  matrixDifference,
  type PrometheusProcess,
  prometheusMissing,
  queryMatrix,
  startPrometheus,
} from './prometheus-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

/** The metrics compared: the scrapes' own `up`, a counter the gRPC traffic moves, and two gauges. */
const METRICS = ['up', 'v3_grpc_requests_total', 'v3_buffered_points', 'e2e_gauge'] as const
const RAW_SELECTOR = `{__name__=~"${METRICS.join('|')}"}`
/** Scrapes of V3 Prometheus must have made before the compared range ends: enough for rate over [1m] to move. */
const SCRAPES = 12
/** Scrapes of the exporter before the test stops it, and failed ones after. */
const EXPORTER_SCRAPES = 6
const EXPORTER_FAILURES = 4
/**
 * Both systems evaluate at the same instants on the same samples, so only the order of float
 * additions may differ (a sum over series, for one): nothing beyond float noise is tolerated.
 */
const TOLERANCE = 1e-9
/** The bits of Prometheus' staleness marker, a NaN (value.StaleNaN). */
const STALE_NAN = 0x7ff0000000000002n

/**
 * `up`, the rate the issue names, and *_over_time: the count says whether both take the samples
 * right at a window's two edges (Prometheus 2.42 does). The exporter's gauge tests staleness after
 * it goes away, and NaN and ±Inf inside a window.
 */
const QUERIES = [
  'up',
  'sum by (method) (rate(v3_grpc_requests_total[1m]))',
  'max_over_time(v3_buffered_points[10s])',
  'count_over_time(up[10s])',
  'e2e_gauge',
  'max_over_time(e2e_gauge[5s])',
  // An offset on the right operand, and a sign that binds looser than ^ (both parsed apart once).
  'e2e_gauge - e2e_gauge offset 2s',
  '-2 ^ 2 * e2e_gauge',
] as const

/** Seconds with milliseconds, as the query API takes times. */
const seconds = (ms: number): string => (ms / 1000).toFixed(3)

/** A series' latest timestamp by label key, of the samples in a matrix. */
function latest(matrix: ReadonlyMap<string, readonly (readonly [number, number])[]>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [key, values] of matrix) out.set(key, values.at(-1)?.[0] ?? Number.NEGATIVE_INFINITY)
  return out
}

interface Exporter {
  /** host:port. */
  readonly host: string
  close(): Promise<void>
}

/**
 * A scrape target in this process: e2e_gauge{kind="steps"} is a quarter of the scrape's number,
 * e2e_gauge{kind="special"} goes through NaN, the number, +Inf, -Inf and a third of it.
 */
async function startExporter(): Promise<Exporter> {
  let scrapes = 0
  const server: Server = createServer((_req, res) => {
    scrapes++
    const special = [Number.NaN, scrapes, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, scrapes / 3][scrapes % 5]
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' })
    res.end(
      [
        '# TYPE e2e_gauge gauge',
        `e2e_gauge{kind="steps"} ${scrapes / 4}`,
        `e2e_gauge{kind="special"} ${formatValue(special ?? 0)}`,
        '',
      ].join('\n'),
    )
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  assert.ok(typeof address === 'object' && address !== null)
  return {
    host: `127.0.0.1:${address.port}`,
    async close() {
      if (!server.listening) return
      const closed = once(server, 'close')
      server.close()
      // Prometheus keeps its connection alive; without this close() would wait for it to time out.
      server.closeAllConnections()
      await closed
    },
  }
}

describe('a real Prometheus scraping V3, remote-writing to it and reading from it', {
  skip: prometheusMissing(),
  timeout: 120_000,
}, () => {
  let v3: ServerProcess | undefined
  let exporter: Exporter | undefined
  let scraper: PrometheusProcess | undefined
  let reader: PrometheusProcess | undefined
  /** V3's HTTP listener, http://host:port. */
  let v3Http = ''
  let stopTraffic = false
  let traffic: Promise<void> = Promise.resolve()
  let trafficError: unknown
  /** The first `up` sample of V3 Prometheus took, in ms: the query instants are laid on its grid. */
  let firstScrape = 0
  /** Every sample with a timestamp up to here (ms) is in Prometheus' TSDB, and in V3 once received() is. */
  let end = 0
  /** The exporter's `up` samples up to `end`, as Prometheus holds them. */
  let exporterUp: MatrixSeries['values'] = []

  /**
   * V3's raw samples of METRICS up to `end`, read over gRPC, in the shape of a Prometheus matrix;
   * with the timestamps of the staleness markers apart, since the query API of Prometheus leaves
   * them out of raw samples.
   */
  async function v3Raw(): Promise<{ matrix: MatrixSeries[]; markers: Map<string, number[]> }> {
    assert.ok(v3)
    const [first, ...rest] = METRICS.map((metric) => ({ metric }))
    assert.ok(first)
    const series = await v3.client.query({
      selector: first,
      additionalSelectors: rest,
      startMs: firstScrape - 60_000,
      endMs: end + 1,
    })
    const markers = new Map<string, number[]>()
    const matrix = series.map((s) => {
      const metric = Object.fromEntries([['__name__', s.metric], ...s.tags.map((t) => [t.key, t.value])])
      const bits = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)
      const values: [number, string][] = []
      s.timestamps.forEach((t, i) => {
        if (bits[i] === STALE_NAN) markers.set(labelKey(metric), [...(markers.get(labelKey(metric)) ?? []), t])
        else values.push([t / 1000, formatValue(s.values[i] ?? 0)])
      })
      return { metric, values }
    })
    return { matrix, markers }
  }

  /** Prometheus' raw samples of METRICS up to `end`: a range selector reaching back past its start. */
  async function prometheusRaw(): Promise<MatrixSeries[]> {
    assert.ok(scraper)
    return queryMatrix(scraper.url, '/api/v1/query', { query: `${RAW_SELECTOR}[5m]`, time: seconds(end) })
  }

  /**
   * Waits until V3 holds every sample Prometheus has up to `end`, once for all the tests that
   * compare. Remote write sends each series' samples in order, so V3 has all of a series up to
   * `end` once it has the series' last sample up to `end`.
   */
  let arrival: Promise<void> | undefined
  function received(): Promise<void> {
    arrival ??= (async () => {
      const want = latest(byLabels(await prometheusRaw()))
      const behind = async (): Promise<[string, number][]> => {
        const have = latest(byLabels((await v3Raw()).matrix))
        return [...want].filter(([key, t]) => (have.get(key) ?? Number.NEGATIVE_INFINITY) < t)
      }
      try {
        await waitFor(
          'V3 to receive every sample Prometheus has up to the compared instant',
          async () => (await behind()).length === 0,
          20_000,
          200,
        )
      } catch (err) {
        const log = (scraper?.output() ?? '').split('\n').filter((l) => /remote/i.test(l))
        throw new Error(
          `${(err as Error).message}; series behind: ${JSON.stringify((await behind()).slice(0, 5))}; Prometheus logged:\n${log.slice(-5).join('\n')}`,
        )
      }
    })()
    return arrival
  }

  before(async () => {
    v3 = await startServerProcess({ args: ['--log-level', 'warn'] })
    assert.ok(v3.metricsUrl, 'v3 serve prints its HTTP address')
    v3Http = v3.metricsUrl.replace(/\/metrics$/, '')
    const client = v3.client
    // Calls between scrapes, so that the counter has a rate to compare: a write and a query a round.
    traffic = (async () => {
      for (let i = 0; !stopTraffic; i++) {
        try {
          await client.write([{ metric: 'e2e_load', tags: { n: 'a' }, timestamps: [Date.now()], values: [i] }])
          await client.query({ selector: { metric: 'e2e_load' }, startMs: 0, endMs: Date.now() + 1 })
        } catch (err) {
          trafficError ??= err
        }
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    })()
    exporter = await startExporter()
    const global = { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' }
    // Both start at once; each that started is kept for after() to stop, even when the other failed.
    const started = await Promise.allSettled([
      startPrometheus({
        global,
        scrape_configs: [
          { job_name: 'v3', static_configs: [{ targets: [new URL(v3Http).host] }] },
          { job_name: 'exporter', static_configs: [{ targets: [exporter.host] }] },
        ],
        // A short deadline sends each scrape's samples within a second instead of batching them up to 5 s.
        remote_write: [{ url: `${v3Http}/api/v1/write`, queue_config: { batch_send_deadline: '500ms' } }],
      }),
      startPrometheus({ global, remote_read: [{ url: `${v3Http}/api/v1/read`, read_recent: true }] }),
    ])
    scraper = started[0].status === 'fulfilled' ? started[0].value : undefined
    reader = started[1].status === 'fulfilled' ? started[1].value : undefined
    for (const s of started) if (s.status === 'rejected') throw s.reason
    const prometheus = scraper
    assert.ok(prometheus)
    const upOf = async (job: string): Promise<MatrixSeries['values']> =>
      (await queryMatrix(prometheus.url, '/api/v1/query', { query: `up{job="${job}"}[5m]` }))[0]?.values ?? []

    await waitFor(
      `${EXPORTER_SCRAPES} scrapes of the exporter`,
      async () => (await upOf('exporter')).length >= EXPORTER_SCRAPES,
      40_000,
      200,
    )
    await exporter.close()
    // `up` is committed with the samples of its scrape, so every sample up to the latest `up` of
    // both jobs is in Prometheus' TSDB: that instant ends the compared range.
    const [v3Up, stoppedUp] = await waitFor(
      `${SCRAPES} scrapes of V3 and ${EXPORTER_FAILURES} failed ones of the stopped exporter`,
      async () => {
        const [a, b] = await Promise.all([upOf('v3'), upOf('exporter')])
        return a.length >= SCRAPES && b.filter(([, v]) => v === '0').length >= EXPORTER_FAILURES ? [a, b] : undefined
      },
      40_000,
      200,
    )
    const lastOf = (values: MatrixSeries['values']): number => Math.round((values.at(-1)?.[0] ?? 0) * 1000)
    firstScrape = Math.round((v3Up[0]?.[0] ?? 0) * 1000)
    end = Math.min(lastOf(v3Up), lastOf(stoppedUp))
    exporterUp = stoppedUp.filter(([t]) => t * 1000 <= end)
  })

  after(async () => {
    stopTraffic = true
    await traffic
    // Prometheus first, so that neither of them calls a V3 that is gone; each stop runs even if another fails.
    const results = await Promise.allSettled([scraper?.stop(), reader?.stop(), exporter?.close()])
    const v3Exit = await v3?.stop()
    if (v3 !== undefined) await removeDataDir(v3.dataDir)
    for (const r of results) if (r.status === 'rejected') throw r.reason
    assert.equal(v3Exit?.code, 0, v3?.stderr())
  })

  test("Prometheus scrapes V3's /metrics every second", async () => {
    assert.ok(scraper)
    const raw = await prometheusRaw()
    const names = new Set(raw.map((s) => s.metric.__name__))
    for (const metric of METRICS) assert.ok(names.has(metric), `Prometheus scraped ${metric}`)
    // Most scrapes succeed; one may exceed its 1 s timeout on a loaded machine, and the comparisons
    // below hold whatever `up` says. The range ends at the exporter's last scrape when that came
    // first, which may leave out V3's last.
    const up = raw.find((s) => s.metric.__name__ === 'up' && s.metric.job === 'v3')
    const succeeded = up?.values.filter(([, v]) => v === '1').length ?? 0
    assert.ok(up && up.values.length >= SCRAPES - 1 && succeeded > up.values.length / 2, JSON.stringify(up))
    assert.equal(trafficError, undefined, 'the gRPC traffic went through')
  })

  test('Prometheus remote-writes every sample to V3, which stores it unchanged, NaN, ±Inf and staleness markers included', async () => {
    assert.ok(scraper)
    await received()
    const prometheus = await prometheusRaw()
    const { matrix, markers } = await v3Raw()
    // Timestamps in ms and values to the bit, as both print them.
    const difference = matrixDifference(matrix, prometheus, 0)
    assert.equal(difference, undefined, `V3's samples against Prometheus':\n${difference}`)
    for (const v of ['NaN', '+Inf', '-Inf']) {
      assert.ok(
        prometheus.some((s) => s.values.some(([, x]) => x === v)),
        `Prometheus holds ${v} of the exporter's gauge`,
      )
    }
    // Prometheus writes a marker into each of a target's series at the first scrape that fails
    // after one that succeeded; V3 holds them where Prometheus put them, with their bits.
    const failedAt = exporterUp
      .filter(([, v], i) => v === '0' && exporterUp[i - 1]?.[1] === '1')
      .map(([t]) => Math.round(t * 1000))
    assert.ok(failedAt.length > 0)
    assert.ok(exporter)
    for (const kind of ['steps', 'special']) {
      const key = labelKey({ __name__: 'e2e_gauge', instance: exporter.host, job: 'exporter', kind })
      assert.deepEqual(markers.get(key), failedAt, `staleness markers of ${key}`)
    }
    const scraperMetrics = await (await fetch(`${scraper.url}/metrics`)).text()
    const failed = /^prometheus_remote_storage_samples_failed_total\{[^}]*\} (\S+)$/m.exec(scraperMetrics)
    assert.equal(failed?.[1], '0', 'no remote-write request of Prometheus failed')
  })

  test("V3's query API answers a raw range selector of several metrics as Prometheus does", async () => {
    assert.ok(scraper)
    await received()
    const params = { query: `${RAW_SELECTOR}[5m]`, time: seconds(end) }
    const [fromV3, fromPrometheus] = await Promise.all([
      queryMatrix(v3Http, '/api/v1/query', params),
      queryMatrix(scraper.url, '/api/v1/query', params),
    ])
    const difference = matrixDifference(fromV3, fromPrometheus, 0)
    assert.equal(difference, undefined, `V3 against Prometheus: ${difference}`)
  })

  // Instants on the scrapes' grid put samples right at both edges of every range window (Prometheus
  // aligns scrape timestamps to the interval), which tests that both include them; instants half an
  // interval off test the look-back between samples. Each range starts a few steps before the
  // first sample, where neither may answer anything.
  const grids = [
    { name: 'on the scrape instants', offset: 0 },
    { name: 'between the scrape instants', offset: 500 },
  ] as const
  const rangeParams = (offset: number) => {
    const start = firstScrape - 3000 + offset
    return { start: seconds(start), end: seconds(start + Math.floor((end - start) / 1000) * 1000), step: '1' }
  }

  for (const query of QUERIES) {
    test(`query_range of ${query} on V3 equals Prometheus, ${grids.map((g) => g.name).join(' and ')}`, async () => {
      assert.ok(scraper)
      await received()
      for (const grid of grids) {
        const params = { query, ...rangeParams(grid.offset) }
        const [fromV3, fromPrometheus] = await Promise.all([
          queryMatrix(v3Http, '/api/v1/query_range', params),
          queryMatrix(scraper.url, '/api/v1/query_range', params),
        ])
        const difference = matrixDifference(fromV3, fromPrometheus, TOLERANCE)
        assert.equal(
          difference,
          undefined,
          `${query} ${grid.name} (${JSON.stringify(params)}), V3 against Prometheus: ${difference}`,
        )
        // Equal answers must not be empty ones.
        assert.ok(fromV3.length > 0, `${query} answers something`)
        for (const series of fromV3) assert.ok(series.values.length >= 3, `${labelKey(series.metric)} has values`)
      }
    })
  }

  test("the exporter's gauge ends at its staleness marker in V3's answers, not five minutes later", async () => {
    await received()
    const stoppedAt = Math.round((exporterUp.find(([, v]) => v === '0')?.[0] ?? 0) * 1000)
    const answer = await queryMatrix(v3Http, '/api/v1/query_range', { query: 'e2e_gauge', ...rangeParams(0) })
    assert.equal(answer.length, 2)
    for (const series of answer) {
      const last = Math.round((series.values.at(-1)?.[0] ?? 0) * 1000)
      assert.ok(last < stoppedAt && stoppedAt < end, `${labelKey(series.metric)} ends at ${last}, before ${stoppedAt}`)
    }
  })

  test('the rate of gRPC calls summed by method has the methods the traffic called, above zero', async () => {
    await received()
    const params = { query: QUERIES[1], start: seconds(firstScrape + 3000), end: seconds(end), step: '1' }
    const methods = new Map(
      (await queryMatrix(v3Http, '/api/v1/query_range', params)).map((s) => [s.metric.method, s.values]),
    )
    for (const method of ['WriteService/Write', 'QueryService/Query']) {
      const values = methods.get(method) ?? []
      assert.ok(values.length > 0 && values.every(([, v]) => Number(v) > 0), `${method}: ${JSON.stringify(values)}`)
    }
  })

  test('a second Prometheus with V3 as remote_read answers from V3 as the scraping one and V3 do', async () => {
    assert.ok(reader && scraper)
    await received()
    for (const query of ['up', QUERIES[1], 'e2e_gauge']) {
      const params = { query, ...rangeParams(0) }
      const [fromReader, fromScraper] = await Promise.all([
        queryMatrix(reader.url, '/api/v1/query_range', params),
        queryMatrix(scraper.url, '/api/v1/query_range', params),
      ])
      assert.ok(fromReader.length > 0, `the remote-reading Prometheus answers ${query} from V3's data`)
      const fromTsdb = matrixDifference(fromReader, fromScraper, TOLERANCE)
      assert.equal(fromTsdb, undefined, `${query}, the remote-reading Prometheus against the scraping one: ${fromTsdb}`)
      const fromV3 = await queryMatrix(v3Http, '/api/v1/query_range', params)
      const fromApi = matrixDifference(fromReader, fromV3, TOLERANCE)
      assert.equal(fromApi, undefined, `${query}, the remote-reading Prometheus against V3's query API: ${fromApi}`)
    }
  })
})
