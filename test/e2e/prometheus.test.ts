// Debian's real Prometheus beside a real `v3 serve`: one Prometheus scrapes V3's /metrics every
// second and remote-writes what it scrapes to V3, while a client keeps gRPC calls going so that
// v3_grpc_requests_total moves. Once V3 holds every sample Prometheus has up to a chosen instant,
// the Prometheus query API of both answers the same query_range over that past, and a second
// Prometheus that reads V3 through remote_read answers as V3 does.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { waitFor } from '../fixtures/wait.js'
import {
  byLabels,
  labelKey,
  type MatrixSeries,
  matrixDifference,
  type PrometheusProcess,
  prometheusMissing,
  queryMatrix,
  startPrometheus,
} from './prometheus-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

/** The metrics compared: the scrape's own `up`, a counter the gRPC traffic moves, and a gauge. */
const METRICS = ['up', 'v3_grpc_requests_total', 'v3_buffered_points'] as const
const RAW_SELECTOR = `{__name__=~"${METRICS.join('|')}"}`
/** Scrapes Prometheus must have made before the compared range ends: enough for rate over [1m] to move. */
const SCRAPES = 12
/**
 * Both systems evaluate at the same instants on the same samples, so only the order of float
 * additions may differ (a sum over series, for one): nothing beyond float noise is tolerated.
 */
const TOLERANCE = 1e-9

/**
 * `up`, the rate the issue names, and two of the *_over_time family: the count says whether both
 * take the samples right at a window's two edges (Prometheus 2.42 does).
 */
const QUERIES = [
  'up',
  'sum by (method) (rate(v3_grpc_requests_total[1m]))',
  'max_over_time(v3_buffered_points[10s])',
  'count_over_time(up[10s])',
] as const

/** Seconds with milliseconds, as the query API takes times. */
const seconds = (ms: number): string => (ms / 1000).toFixed(3)

/** A series' latest timestamp by label key, of the samples in a matrix. */
function latest(matrix: ReadonlyMap<string, readonly (readonly [number, number])[]>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [key, values] of matrix) out.set(key, values.at(-1)?.[0] ?? Number.NEGATIVE_INFINITY)
  return out
}

describe('a real Prometheus scraping V3, remote-writing to it and reading from it', {
  skip: prometheusMissing(),
  timeout: 120_000,
}, () => {
  let v3: ServerProcess | undefined
  let scraper: PrometheusProcess | undefined
  let reader: PrometheusProcess | undefined
  /** V3's HTTP listener, http://host:port. */
  let v3Http = ''
  let stopTraffic = false
  let traffic: Promise<void> = Promise.resolve()
  let trafficError: unknown
  /** The first `up` sample Prometheus took, in ms: the query instants are laid on its grid. */
  let firstScrape = 0
  /** Every sample with a timestamp up to here (ms) is in both Prometheus and V3. */
  let end = 0

  /** V3's raw samples of METRICS up to `end`, read over gRPC, in the shape of a Prometheus matrix. */
  async function v3Raw(): Promise<MatrixSeries[]> {
    assert.ok(v3)
    const [first, ...rest] = METRICS.map((metric) => ({ metric }))
    assert.ok(first)
    const series = await v3.client.query({
      selector: first,
      additionalSelectors: rest,
      startMs: firstScrape - 60_000,
      endMs: end + 1,
    })
    // A scrape that fails (it may exceed its 1 s timeout on a loaded machine) ends the target's
    // series with staleness markers, which the query API of Prometheus leaves out of raw samples.
    // None of these metrics is ever NaN otherwise, so every NaN is such a marker and is left out too.
    return series.map((s) => ({
      metric: Object.fromEntries([['__name__', s.metric], ...s.tags.map((t) => [t.key, t.value])]),
      values: Array.from(s.timestamps, (t, i) => [t / 1000, String(s.values[i])] as const).filter(
        ([, v]) => v !== 'NaN',
      ),
    }))
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
        const have = latest(byLabels(await v3Raw()))
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
    const host = new URL(v3Http).host
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
    const global = { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' }
    // Both start at once; each that started is kept for after() to stop, even when the other failed.
    const started = await Promise.allSettled([
      startPrometheus({
        global,
        scrape_configs: [{ job_name: 'v3', static_configs: [{ targets: [host] }] }],
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

    // Enough scrapes. `up` is committed with the samples of its scrape, so every sample up to the
    // latest `up` Prometheus shows is in its TSDB: that instant ends the compared range.
    const ups = await waitFor(
      `${SCRAPES} scrapes of V3 by Prometheus`,
      async () => {
        const matrix = await queryMatrix(prometheus.url, '/api/v1/query', { query: 'up[5m]' })
        const values = matrix[0]?.values ?? []
        return values.length >= SCRAPES ? values : undefined
      },
      40_000,
      200,
    )
    firstScrape = Math.round((ups[0]?.[0] ?? 0) * 1000)
    end = Math.round((ups.at(-1)?.[0] ?? 0) * 1000)
  })

  after(async () => {
    stopTraffic = true
    await traffic
    // Prometheus first, so that neither of them calls a V3 that is gone; each stop runs even if another fails.
    const results = await Promise.allSettled([scraper?.stop(), reader?.stop()])
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
    // below hold whatever `up` says.
    const up = raw.find((s) => s.metric.__name__ === 'up')
    const succeeded = up?.values.filter(([, v]) => v === '1').length ?? 0
    assert.ok(up && up.values.length >= SCRAPES && succeeded > up.values.length / 2, JSON.stringify(up))
    assert.equal(trafficError, undefined, 'the gRPC traffic went through')
  })

  test('Prometheus remote-writes every sample to V3, which stores it unchanged', async () => {
    assert.ok(scraper)
    await received()
    // Timestamps in ms and values to the bit, as both print them.
    const difference = matrixDifference(await v3Raw(), await prometheusRaw(), 0)
    assert.equal(difference, undefined, `V3's samples against Prometheus':\n${difference}`)
    const scraperMetrics = await (await fetch(`${scraper.url}/metrics`)).text()
    const failed = /^prometheus_remote_storage_samples_failed_total\{[^}]*\} (\S+)$/m.exec(scraperMetrics)
    assert.equal(failed?.[1], '0', 'no remote-write request of Prometheus failed')
  })

  // Instants on the scrapes' grid put samples right at both edges of every range window (Prometheus
  // aligns scrape timestamps to the interval), which tests that both include them; instants half an
  // interval off test the look-back between samples. Each range starts a few steps before the
  // first sample, where neither may answer anything.
  const grids = [
    { name: 'on the scrape instants', offset: 0 },
    { name: 'between the scrape instants', offset: 500 },
  ] as const

  for (const query of QUERIES) {
    test(`query_range of ${query} on V3 equals Prometheus, ${grids.map((g) => g.name).join(' and ')}`, async () => {
      assert.ok(scraper)
      await received()
      for (const grid of grids) {
        const start = firstScrape - 3000 + grid.offset
        const last = start + Math.floor((end - start) / 1000) * 1000
        const params = { query, start: seconds(start), end: seconds(last), step: '1' }
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
        // Equal answers must not be empty ones: each query has a series with values at most instants.
        assert.ok(fromV3.length > 0, `${query} answers something`)
        for (const series of fromV3) {
          assert.ok(series.values.length >= SCRAPES - 3, `${labelKey(series.metric)} has a value at most instants`)
        }
      }
    })
  }

  test('the rate of gRPC calls summed by method has the methods the traffic called, above zero', async () => {
    await received()
    const params = {
      query: QUERIES[1],
      start: seconds(firstScrape + 3000),
      end: seconds(end),
      step: '1',
    }
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
    const start = firstScrape - 3000
    const params = { start: seconds(start), end: seconds(start + Math.floor((end - start) / 1000) * 1000), step: '1' }
    for (const query of QUERIES.slice(0, 2)) {
      const [fromReader, fromScraper] = await Promise.all([
        queryMatrix(reader.url, '/api/v1/query_range', { query, ...params }),
        queryMatrix(scraper.url, '/api/v1/query_range', { query, ...params }),
      ])
      assert.ok(fromReader.length > 0, `the remote-reading Prometheus answers ${query} from V3's data`)
      const fromTsdb = matrixDifference(fromReader, fromScraper, TOLERANCE)
      assert.equal(fromTsdb, undefined, `${query}, the remote-reading Prometheus against the scraping one: ${fromTsdb}`)
      const fromV3 = await queryMatrix(v3Http, '/api/v1/query_range', { query, ...params })
      const fromApi = matrixDifference(fromReader, fromV3, TOLERANCE)
      assert.equal(fromApi, undefined, `${query}, the remote-reading Prometheus against V3's query API: ${fromApi}`)
    }
  })
})
