// A real `v3 serve` stays responsive while the worst requests of issue 14 run: aggregations over
// ranges as wide as int64 allows (over nothing, and over stored data) and a big aggregation. On
// other connections, health checks and a small query keep answering, with the right answers. Then
// a stream of the hostile requests leaves a fresh server's memory within 1.5× of where it
// was. Assertions are on answers, not timings, but for generous bounds on the worst requests.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, describe, test } from 'node:test'
import { type Client, credentials, makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js'
import { service as healthService } from 'grpc-health-check'
import { V3Client } from '../../src/client/index.js'
import { encodeQuery, encodeSelectorRequest, healthServing, MatchOp, Rng, rawCall, rawClient } from './fuzz-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const HOUR = 3_600_000
const SERIES = 200
const POINTS_PER_SERIES = 8640
const MAX = 2 ** 53 - 1

type HealthClient = Client & {
  check(req: { service: string }, cb: (err: ServiceError | null, res: { status: string }) => void): void
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN)
}

/** A metric of the server's /metrics text, or NaN. */
async function scrape(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text()
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
}

describe('a responsive server under the worst requests', () => {
  let server: ServerProcess
  // Separate channels: grpc-js would otherwise share one connection between the clients.
  let probe: V3Client
  let health: HealthClient

  before(async () => {
    server = await startServerProcess()
    const apart = { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } }
    probe = new V3Client(server.address, apart)
    const Health = makeGenericClientConstructor(healthService, 'Health')
    health = new Health(server.address, credentials.createInsecure(), apart.channelOptions) as unknown as HealthClient
    // A day of 10 s points for 200 series, back-filled, so compaction puts it all in cold runs.
    const ts = Array.from({ length: POINTS_PER_SERIES }, (_, i) => T0 + i * 10_000)
    for (let h = 0; h < SERIES; h += 20) {
      await server.client.write(
        Array.from({ length: 20 }, (_, k) => ({
          metric: 'big',
          tags: { host: `h${h + k}` },
          timestamps: ts,
          values: ts.map((_, i) => (i % 100) + h + k),
        })),
      )
    }
    await server.client.write([
      { metric: 'small', tags: { host: 'a' }, timestamps: [T0], values: [42] },
      // A value on which `(a+)+$` backtracks for ever in a backtracking engine.
      { metric: 'evil', tags: { v: `${'a'.repeat(40)}!` }, timestamps: [T0], values: [1] },
    ])
    await server.client.compact()
  })

  after(async () => {
    probe.close()
    health.close()
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    await removeDataDir(server.dataDir)
  })

  test('health checks and a small query answer while the worst requests run', async () => {
    assert.ok(server.metricsUrl)
    // Starts the interval the event-loop figures cover.
    await scrape(server.metricsUrl, 'v3_event_loop_delay_max_seconds')
    const worst = async <T>(name: string, run: () => Promise<T>): Promise<T> => {
      const started = performance.now()
      const result = await run()
      const ms = performance.now() - started
      // Generous: before the fix the first of these took about 19 s, the second minutes.
      assert.ok(ms < 10_000, `${name} took ${ms.toFixed(0)} ms`)
      return result
    }
    let running = true
    const answers = { health: 0, small: 0 }
    const probing = (async () => {
      while (running) {
        const status = await new Promise<string>((resolve, reject) =>
          health.check({ service: '' }, (err, res) => (err ? reject(err) : resolve(res.status))),
        )
        assert.equal(status, 'SERVING')
        answers.health++
        const [small] = await probe.query({ selector: { metric: 'small' }, startMs: T0, endMs: T0 + 1 })
        assert.deepEqual(Array.from(small?.values ?? []), [42])
        answers.small++
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    })()
    try {
      const [nothing, everything, percentiles, perSeries] = await Promise.all([
        worst('SUM over nothing, [-1e15, -1)', () =>
          server.client.query({
            selector: { metric: 'no_such_metric' },
            startMs: -1e15,
            endMs: -1,
            aggregation: { func: 'sum', stepMs: HOUR },
          }),
        ),
        worst('COUNT over ±(2^53 - 1)', () =>
          server.client.query({
            selector: { metric: 'big' },
            startMs: -MAX,
            endMs: MAX,
            aggregation: { func: 'count', mergeSeries: true },
          }),
        ),
        worst('P99 of every point, by hour', () =>
          server.client.query({
            selector: { metric: 'big' },
            startMs: -MAX,
            endMs: MAX,
            aggregation: { func: 'p99', stepMs: HOUR, mergeSeries: true },
          }),
        ),
        worst('STDDEV per series, by minute', () =>
          server.client.query({
            selector: { metric: 'big' },
            startMs: T0 - 1e12,
            endMs: T0 + 1e12,
            aggregation: { func: 'stddev', stepMs: 60_000 },
          }),
        ),
      ])
      assert.deepEqual(nothing, [])
      assert.equal(everything.length, 1)
      assert.deepEqual(Array.from(everything[0]?.timestamps ?? []), [-MAX])
      assert.deepEqual(Array.from(everything[0]?.values ?? []), [SERIES * POINTS_PER_SERIES])
      assert.equal(percentiles[0]?.timestamps.length, 24)
      assert.equal(perSeries.length, SERIES)
      assert.equal(perSeries[0]?.timestamps.length, 1440)
    } finally {
      running = false
      await probing
    }
    assert.ok(answers.health > 0 && answers.small > 0, JSON.stringify(answers))
    const maxDelay = await scrape(server.metricsUrl, 'v3_event_loop_delay_max_seconds')
    const p99Delay = await scrape(server.metricsUrl, 'v3_event_loop_delay_p99_seconds')
    assert.ok(Number.isFinite(maxDelay) && Number.isFinite(p99Delay), 'the event-loop delay is exported')
    console.log(
      `probes answered: ${JSON.stringify(answers)}; server event-loop delay p99 ${(p99Delay * 1000).toFixed(1)} ms, max ${(maxDelay * 1000).toFixed(1)} ms`,
    )
  })

  test('a stream of hostile requests leaves memory where it was', async () => {
    // Measured from a fresh process on the same data: the load and the worst requests above leave a
    // high level behind (about 460 MiB), from which 1.5× would be easy.
    const dataDir = server.dataDir
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    server = await startServerProcess({ dataDir })
    const raw = rawClient(server.address)
    try {
      const [small0] = await server.client.query({ selector: { metric: 'small' }, startMs: T0, endMs: T0 + 1 })
      assert.deepEqual(Array.from(small0?.values ?? []), [42])
      const rng = new Rng(14)
      const nested = `${'(?:a|'.repeat(10_000)}h${')'.repeat(10_000)}`
      const Q = '/v3storage.v1.QueryService/'
      const call = (path: string, bytes: Buffer) => rawCall(raw, path, 'unary', [bytes], { timeoutMs: 30_000 })
      // The kinds of issue 14, in turn: a 60 KB nested regex, a backtracking one, aggregations over
      // nothing and over all stored time, random bytes, invalid UTF-8, and a new 50 KB selector every
      // time, which the caches must not keep.
      const kinds: Array<(i: number) => Promise<unknown>> = [
        () =>
          call(
            `${Q}ListSeries`,
            encodeSelectorRequest({ metric: 'big', matchers: [{ key: 'host', value: nested, op: MatchOp.REGEX }] }),
          ),
        () =>
          call(
            `${Q}Query`,
            encodeQuery({
              selector: { metric: 'evil', matchers: [{ key: 'v', value: '(a+)+$', op: MatchOp.NOT_REGEX }] },
              startMs: -MAX,
              endMs: MAX,
            }),
          ),
        (i) =>
          server.client.query({
            selector: { metric: `m_${i}`.padEnd(1000, 'x') },
            startMs: -1e15,
            endMs: -1,
            aggregation: { func: 'sum', stepMs: HOUR },
          }),
        (i) =>
          server.client.query({
            selector: { metric: 'big', matchers: [{ key: 'host', op: 'eq', value: `h${i % SERIES}` }] },
            startMs: -MAX,
            endMs: MAX,
            aggregation: { func: 'sum', stepMs: HOUR },
          }),
        () => call(`${Q}${rng.pick(['Query', 'ListSeries', 'Latest'])}`, rng.bytes(1 + rng.int(2000))),
        () =>
          call(
            `${Q}ListSeries`,
            encodeSelectorRequest({
              metric: 'big',
              matchers: [{ key: 'host', value: Uint8Array.from([0x68, 0xff, 0x31]), op: MatchOp.EQ }],
            }),
          ),
        (i) =>
          server.client.query({
            selector: { metric: 'big', matchers: [{ key: 'host', op: 'eq', value: `${i}`.padEnd(50_000, 'x') }] },
            startMs: -MAX,
            endMs: MAX,
          }),
      ]
      // One request of each kind first: the code of each path loads and compiles once (tsx
      // transforms modules on first import), which is not growth under a stream of requests.
      for (let i = 0; i < kinds.length; i++) await (kinds[i] as (i: number) => Promise<unknown>)(i).catch(() => {})
      await sleep(2000)
      const pid = server.child.pid as number
      const before = await rssKiB(pid)
      const total = 3000
      let next = 0
      const settled = { ok: 0, failed: 0 }
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < total) {
            const i = next++
            await (kinds[i % kinds.length] as (i: number) => Promise<unknown>)(i).then(
              () => settled.ok++,
              () => settled.failed++,
            )
          }
        }),
      )
      await sleep(3000)
      const afterIdle = await rssKiB(pid)
      console.log(
        `RSS of a fresh server with the data set ${(before / 1024).toFixed(0)} MiB, after ${total} hostile requests and 3 s idle ${(afterIdle / 1024).toFixed(0)} MiB, ${(afterIdle / before).toFixed(2)}× (${JSON.stringify(settled)})`,
      )
      assert.equal(settled.ok + settled.failed, total)
      assert.ok(afterIdle <= before * 1.5, `RSS grew from ${before} KiB to ${afterIdle} KiB`)
      // The server still answers, with the same data.
      assert.equal(await healthServing(raw), true)
      const [small] = await server.client.query({ selector: { metric: 'small' }, startMs: T0, endMs: T0 + 1 })
      assert.deepEqual(Array.from(small?.values ?? []), [42])
    } finally {
      raw.close()
    }
  })
})
