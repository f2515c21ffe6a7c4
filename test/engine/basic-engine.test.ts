import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import type { BasicEngineOptions } from '../../src/engine/config.js'
import { ManualClock } from './manual-clock.js'

const T0 = Date.UTC(2026, 0, 1)
const HOUR = 3_600_000

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'v3-engine-'))
}

function engineAt(dataDir: string, clock: ManualClock, options: Partial<BasicEngineOptions> = {}): BasicEngine {
  // Long timer intervals: the tests drive sealing and moving through compact().
  return new BasicEngine(
    { dataDir, sync: 'off', sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000, ...options },
    { clock },
  )
}

const everything = { selector: { metric: 'cpu', matchers: [] }, startMs: T0 - 100 * HOUR, endMs: T0 + 100 * HOUR }

describe('basic engine: tiers, retention, restart', () => {
  it('keeps recent blocks hot, puts old ones in cold runs, and reads across the boundary', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 3 * HOUR)
    let engine = engineAt(dir, clock, { hotWindowMs: HOUR })
    try {
      await engine.open()
      const ts = Array.from({ length: 3 * 360 }, (_, i) => T0 + i * 10_000)
      await engine.write({
        series: [
          { metric: 'cpu', tags: [{ key: 'host', value: 'a' }], timestamps: ts, values: ts.map((_, i) => i / 4) },
        ],
      })
      // The first two hours are past the hot window: sealed straight into cold runs. The last
      // hour's blocks stay hot.
      let c = await engine.compact()
      assert.equal(c.blocksSealed, 3 * 120)
      assert.equal(c.blocksMoved, 0)
      let stats = await engine.stats()
      assert.equal(stats.hotBlocks, 120)
      assert.equal(stats.coldRuns, 2)
      assert.equal(stats.coldBlocks, 240)
      assert.equal(stats.bufferedPoints, 0)

      // A late write into a cold run and one into a hot block, both overwriting a point.
      await engine.write({
        series: [
          {
            metric: 'cpu',
            tags: [{ key: 'host', value: 'a' }],
            timestamps: [T0 + 0.5 * HOUR, T0 + 2.5 * HOUR],
            values: [-1, 42],
          },
        ],
      })
      const check = async (): Promise<void> => {
        const [s] = await engine.query(everything)
        assert.ok(s)
        assert.equal(s.timestamps.length, ts.length)
        assert.equal(s.values[180], -1)
        assert.equal(s.values[179], 179 / 4)
        assert.equal(s.values[900], 42)
        assert.equal(s.values[901], 901 / 4)
      }
      await check()

      // Seven hours later the hot blocks move to the cold family and merge with their run.
      clock.t = T0 + 10 * HOUR
      c = await engine.compact()
      assert.equal(c.blocksMoved, 120)
      stats = await engine.stats()
      assert.equal(stats.hotBlocks, 0)
      assert.equal(stats.coldRuns, 3)
      assert.equal(stats.coldBlocks, 360)
      await check()

      const agg = await engine.query({
        ...everything,
        aggregation: { func: 'count', stepMs: HOUR, groupBy: [], mergeSeries: false },
      })
      assert.deepEqual(Array.from(agg[0]?.values ?? []), [360, 360, 360])

      await engine.close()
      engine = engineAt(dir, clock, { hotWindowMs: HOUR })
      await engine.open()
      await check()
      stats = await engine.stats()
      assert.equal(stats.series, 1)
      assert.equal(stats.coldRuns, 3)
      assert.equal(stats.pointsWritten, ts.length + 2)
      const [latest] = await engine.latest({ metric: 'cpu', matchers: [] })
      assert.deepEqual(Array.from(latest?.timestamps ?? []), [ts[ts.length - 1]])
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('hides and then removes data older than the retention', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 10 * HOUR)
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR, retentionMs: 2 * HOUR })
    try {
      await engine.open()
      const old = Array.from({ length: 360 }, (_, i) => T0 + 4 * HOUR + i * 10_000)
      const recent = Array.from({ length: 360 }, (_, i) => T0 + 9 * HOUR + i * 10_000)
      const written = await engine.write({
        series: [
          { metric: 'cpu', tags: [], timestamps: [...old, ...recent], values: [...old, ...recent].map(() => 1) },
        ],
      })
      // Points already past the retention are acknowledged and counted, and never shown.
      assert.equal(written.pointsWritten, 720)
      const [s] = await engine.query(everything)
      assert.equal(s?.timestamps.length, 360)
      // The old hour has passed the retention: compaction removes it at once.
      const first = await engine.compact()
      assert.equal(first.seriesExpired, 1)
      let stats = await engine.stats()
      assert.equal(stats.coldRuns, 0)
      assert.equal(stats.hotBlocks, 120)
      clock.t += HOUR
      const second = await engine.compact()
      assert.equal(second.seriesExpired, 0)
      stats = await engine.stats()
      assert.equal(stats.coldRuns, 1)
      assert.equal(stats.hotBlocks, 0)
      const [kept] = await engine.query(everything)
      assert.equal(kept?.timestamps.length, 360)
      assert.equal(kept?.timestamps[0], T0 + 9 * HOUR)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('answers Latest from the cache correctly across seals, back-fill and deletes', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + HOUR)
    const engine = engineAt(dir, clock)
    const sel = { metric: 'cpu', matchers: [] }
    const latest = async (): Promise<number[]> => {
      const [s] = await engine.latest(sel)
      return s ? [s.timestamps[0] as number, s.values[0] as number] : []
    }
    const write = (t: number, v: number) =>
      engine.write({ series: [{ metric: 'cpu', tags: [], timestamps: [T0 + t], values: [v] }] })
    try {
      await engine.open()
      await write(100_000, 1)
      await engine.compact()
      assert.deepEqual(await latest(), [T0 + 100_000, 1])
      await write(50_000, 2)
      await engine.compact()
      assert.deepEqual(await latest(), [T0 + 100_000, 1])
      await write(200_000, 3)
      assert.deepEqual(await latest(), [T0 + 200_000, 3])
      await engine.compact()
      assert.deepEqual(await latest(), [T0 + 200_000, 3])
      await write(200_000, 4)
      await engine.compact()
      assert.deepEqual(await latest(), [T0 + 200_000, 4])
      await engine.deleteSeries({ selector: sel, startMs: T0 + 150_000, endMs: T0 + 250_000 })
      assert.deepEqual(await latest(), [T0 + 100_000, 1])
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('aggregates from run summaries exactly as from the points', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 48 * HOUR)
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR })
    try {
      await engine.open()
      const ts = Array.from({ length: 6 * 360 }, (_, i) => T0 + i * 10_000)
      await engine.write({
        series: [
          {
            metric: 'm',
            tags: [{ key: 'k', value: 'a' }],
            timestamps: ts,
            values: ts.map((_, i) => Math.sin(i / 7) * 100),
          },
          { metric: 'm', tags: [{ key: 'k', value: 'b' }], timestamps: ts, values: ts.map((_, i) => i) },
        ],
      })
      await engine.compact()
      // Newer points in hour 2 (buffered) make that hour merge point by point.
      await engine.write({
        series: [{ metric: 'm', tags: [{ key: 'k', value: 'a' }], timestamps: [T0 + 2 * HOUR + 5000], values: [1e6] }],
      })
      const sel = { metric: 'm', matchers: [] }
      const raw = await engine.query({ selector: sel, startMs: T0, endMs: T0 + 6 * HOUR })
      const { aggregate } = await import('../../src/engine/aggregate.js')
      for (const func of ['count', 'sum', 'min', 'max', 'avg', 'first', 'last'] as const) {
        for (const [stepMs, startMs, endMs] of [
          [HOUR, T0, T0 + 6 * HOUR],
          [0, T0, T0 + 6 * HOUR],
          [2 * HOUR, T0 + HOUR, T0 + 5 * HOUR + 1000],
          [60_000, T0, T0 + 3 * HOUR],
        ] as const) {
          // Each series alone (the per-series fold, over the cold runs as they were read), merged,
          // and grouped by a tag.
          for (const [groupBy, mergeSeries] of [
            [[], false],
            [[], true],
            [['k'], false],
          ] as const) {
            const agg = { func, stepMs, groupBy: [...groupBy], mergeSeries }
            const got = await engine.query({ selector: sel, startMs, endMs, aggregation: agg })
            const want = aggregate(raw, agg, startMs, endMs)
            assert.equal(got.length, want.length)
            got.forEach((s, i) => {
              const w = want[i]
              assert.deepEqual(Array.from(s.timestamps), Array.from(w?.timestamps ?? []))
              s.values.forEach((v, j) => {
                const expected = w?.values[j] as number
                const close = Math.abs(v - expected) <= 1e-9 * Math.max(1, Math.abs(expected))
                assert.ok(close, `${func} step ${stepMs}: ${v} != ${expected}`)
              })
            })
          }
        }
      }
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('serves repeated queries from its caches and never a stale answer', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 48 * HOUR)
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR })
    const sel = { metric: 'c', matchers: [{ key: 'k', value: 'a.*', op: 'regex' as const }] }
    const raw = { selector: sel, startMs: T0, endMs: T0 + 2 * HOUR }
    const agg = { ...raw, aggregation: { func: 'count' as const, stepMs: HOUR, groupBy: [], mergeSeries: true } }
    const counts = async (): Promise<number[]> => Array.from((await engine.query(agg))[0]?.values ?? [])
    const write = (k: string, ts: number[]) =>
      engine.write({
        series: [{ metric: 'c', tags: [{ key: 'k', value: k }], timestamps: ts, values: ts.map(() => 1) }],
      })
    try {
      await engine.open()
      await write(
        'a1',
        Array.from({ length: 720 }, (_, i) => T0 + i * 10_000),
      )
      await engine.compact()
      assert.deepEqual(await counts(), [360, 360])
      assert.deepEqual(await counts(), [360, 360])
      let stats = await engine.stats()
      assert.equal(stats.caches?.results.hits, 1)

      // A write inside the range: the next answer has it.
      await write('a1', [T0 + 5])
      assert.deepEqual(await counts(), [361, 360])
      // A write outside the range leaves the cached answer in place.
      await write('a1', [T0 + 5 * HOUR])
      const before = (await engine.stats()).caches?.results.hits ?? 0
      assert.deepEqual(await counts(), [361, 360])
      stats = await engine.stats()
      assert.equal(stats.caches?.results.hits, before + 1)
      // A new series that the selector matches.
      await write('a2', [T0 + HOUR])
      assert.deepEqual(await counts(), [361, 361])
      // A series the selector does not match changes nothing.
      await write('b', [T0 + HOUR + 1])
      assert.deepEqual(await counts(), [361, 361])
      // Sealing moves buffered points into cold runs; decoded runs in the cache are dropped.
      const rawBefore = await engine.query(raw)
      await engine.compact()
      await write('a1', [T0 + 10_000])
      await engine.compact()
      const rawAfter = await engine.query(raw)
      assert.equal(rawAfter[0]?.timestamps.length, rawBefore[0]?.timestamps.length)
      assert.equal(rawAfter[0]?.values[2], 1)
      // Deletes show at once.
      await engine.deleteSeries({ selector: { metric: 'c', matchers: [{ key: 'k', value: 'a2', op: 'eq' }] } })
      assert.deepEqual(await counts(), [361, 360])
      stats = await engine.stats()
      assert.ok((stats.caches?.selectors.hits ?? 0) > 0)
      assert.ok((stats.caches?.decodedBlocks.hits ?? 0) > 0)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('answers whole hours from cached run summaries, never stale after rewrites, moves and deletes', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 48 * HOUR)
    // Without the result cache every query below goes down to the runs and their summaries.
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR, resultCachePoints: 0 })
    const sel = { metric: 's', matchers: [] }
    const write = (ts: number[], vals: number[]) =>
      engine.write({ series: [{ metric: 's', tags: [{ key: 'k', value: 'a' }], timestamps: ts, values: vals }] })
    const { aggregate } = await import('../../src/engine/aggregate.js')
    const hits = async (): Promise<number> => (await engine.stats()).caches?.decodedBlocks.hits ?? 0
    /** Hourly sums over [from, to) must equal the sums computed from the raw points. */
    const check = async (from: number, to: number): Promise<void> => {
      const agg = { func: 'sum' as const, stepMs: HOUR, groupBy: [], mergeSeries: true }
      const got = await engine.query({ selector: sel, startMs: from, endMs: to, aggregation: agg })
      const want = aggregate(await engine.query({ selector: sel, startMs: from, endMs: to }), agg, from, to)
      assert.deepEqual(
        got.map((x) => [Array.from(x.timestamps), Array.from(x.values)]),
        want.map((x) => [Array.from(x.timestamps), Array.from(x.values)]),
      )
    }
    try {
      await engine.open()
      const ts = Array.from({ length: 3 * 360 }, (_, i) => T0 + i * 10_000)
      await write(
        ts,
        ts.map((_, i) => i),
      )
      // Back-filled hours are sealed straight into cold runs, their summaries cached as written.
      await engine.compact()
      const before = await hits()
      await check(T0, T0 + 3 * HOUR)
      assert.ok((await hits()) >= before + 3, 'the three hours came from cached summaries')
      // A rewrite still in the write buffer: its hour is merged point by point, not summarized.
      await write([T0 + HOUR], [1e6])
      await check(T0, T0 + 3 * HOUR)
      // Sealed into its run: the run's cached summary is replaced, not reused.
      await engine.compact()
      await check(T0, T0 + 3 * HOUR)
      await write([T0 + 5000], [-7])
      await engine.compact()
      await check(T0, T0 + 3 * HOUR)
      // A deleted range inside a summarized hour.
      await engine.deleteSeries({ selector: sel, startMs: T0 + 2 * HOUR, endMs: T0 + 2 * HOUR + 600_000 })
      await check(T0, T0 + 3 * HOUR)
      // Live points go hot first, then move into cold runs once past the hot window.
      const live = Array.from({ length: 360 }, (_, i) => T0 + 48 * HOUR + i * 10_000)
      await write(
        live,
        live.map((_, i) => i * 2),
      )
      await engine.compact()
      await check(T0 + 48 * HOUR, T0 + 49 * HOUR)
      clock.t = T0 + 51 * HOUR
      await engine.compact()
      await check(T0, T0 + 52 * HOUR)
      await check(T0 + 48 * HOUR, T0 + 49 * HOUR)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('aggregates over the whole storable time range without reading run by run', async () => {
    const dir = await tempDir()
    const engine = engineAt(dir, new ManualClock(T0 + 48 * HOUR), { hotWindowMs: HOUR })
    try {
      await engine.open()
      const ts = Array.from({ length: 720 }, (_, i) => T0 + i * 10_000)
      await engine.write({ series: [{ metric: 'wide', tags: [], timestamps: ts, values: ts.map(() => 2) }] })
      await engine.compact()
      const { MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS } = await import('../../src/model/timestamps.js')
      for (const func of ['count', 'sum', 'p50'] as const) {
        const [s] = await engine.query({
          selector: { metric: 'wide', matchers: [] },
          startMs: MIN_TIMESTAMP_MS,
          endMs: MAX_TIMESTAMP_MS + 1,
          aggregation: { func, stepMs: 0, groupBy: [], mergeSeries: false },
        })
        assert.deepEqual(Array.from(s?.values ?? []), [func === 'count' ? 720 : func === 'sum' ? 1440 : 2])
      }
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('decodes long ranges in a worker thread to the same points', async () => {
    const dirs = [await tempDir(), await tempDir()]
    const clock = new ManualClock(T0 + 48 * HOUR)
    const withWorker = engineAt(dirs[0] as string, clock, { hotWindowMs: HOUR, workerDecodeMinRuns: 2 })
    const inline = engineAt(dirs[1] as string, clock, { hotWindowMs: HOUR, decodeWorkers: 0 })
    try {
      const ts = Array.from({ length: 6 * 360 }, (_, i) => T0 + i * 10_000)
      const series = [{ metric: 'w', tags: [], timestamps: ts, values: ts.map((_, i) => Math.cos(i) * 1e3) }]
      for (const e of [withWorker, inline]) {
        await e.open()
        await e.write({ series })
        await e.compact()
      }
      const q = { selector: { metric: 'w', matchers: [] }, startMs: T0 + 5_000, endMs: T0 + 5 * HOUR }
      const [a] = await withWorker.query(q)
      const [b] = await inline.query(q)
      assert.ok(withWorker.decodePool.runsDecoded >= 5)
      assert.equal(inline.decodePool.runsDecoded, 0)
      assert.deepEqual(Array.from(a?.timestamps ?? []), Array.from(b?.timestamps ?? []))
      assert.deepEqual(Array.from(a?.values ?? []), Array.from(b?.values ?? []))
      assert.equal(a?.timestamps.length, 5 * 360 - 1)
    } finally {
      await withWorker.close()
      await inline.close()
      for (const d of dirs) await rm(d, { recursive: true, force: true })
    }
  })

  it('refuses calls when closed', async () => {
    const dir = await tempDir()
    const engine = engineAt(dir, new ManualClock(T0))
    await engine.open()
    await engine.close()
    await assert.rejects(engine.query(everything), /closed/)
    await rm(dir, { recursive: true, force: true })
  })
})

describe('basic engine: reads of many series', () => {
  // 300 series: more than one group read takes at once, so both the raw and the aggregate read go
  // series by series, sharing one cursor over the hot family. Each round writes new points, then
  // queries while a compaction seals the write buffer and moves hot blocks to cold runs: every
  // answer must hold each point written before it exactly once, whichever tier it was in.
  for (const { name, SERIES, HOURS } of [
    { name: 'a range of a few cold runs, read by their keys', SERIES: 300, HOURS: 3 },
    // More than 32 runs in the range: each series' runs are scanned, through one cold cursor.
    { name: 'a range of many cold runs, scanned', SERIES: 40, HOURS: 40 },
  ])
    it(`finds every point once while seals and moves run beside the reads: ${name}`, async () => {
      const dir = await tempDir()
      const clock = new ManualClock(T0 + HOURS * HOUR)
      const engine = engineAt(dir, clock, { hotWindowMs: HOUR, resultCachePoints: 0 })
      const tags = (i: number) => [{ key: 'host', value: `h${i}` }]
      const written = Array.from({ length: SERIES }, () => [] as number[])
      const write = async (from: number, to: number, stepMs: number): Promise<void> => {
        const ts = Array.from({ length: Math.floor((to - from) / stepMs) }, (_, k) => from + k * stepMs)
        await engine.write({
          series: written.map((points, i) => {
            points.push(...ts)
            return { metric: 'cpu', tags: tags(i), timestamps: ts, values: ts.map((t) => t / 1000 + i) }
          }),
        })
      }
      try {
        await engine.open()
        await write(T0, T0 + HOURS * HOUR, 60_000)
        await engine.compact()
        let stats = await engine.stats()
        assert.ok(stats.hotBlocks > 0 && stats.coldRuns > 0, JSON.stringify(stats))
        for (let round = 0; round < 16; round++) {
          const now = clock.t
          await write(now, now + 5 * 60_000, 30_000)
          clock.t = now + 5 * 60_000
          const range = { selector: { metric: 'cpu', matchers: [] }, startMs: T0 - HOUR, endMs: clock.t + HOUR }
          const reads = Promise.all([
            engine.query(range),
            engine.query({ ...range, aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: false } }),
          ])
          // The compaction starts a few turns of the event loop into the reads, a different number
          // each round, so that its seal and its move land at different points of them.
          for (let turn = 0; turn < round % 8; turn++) await new Promise((resolve) => setImmediate(resolve))
          const [[raw, counts]] = await Promise.all([reads, engine.compact()])
          assert.equal(raw.length, SERIES)
          assert.equal(counts.length, SERIES)
          for (const s of raw) {
            const i = Number(s.tags[0]?.value.slice(1))
            assert.deepEqual(Array.from(s.timestamps), written[i], `round ${round}, series h${i}`)
            assert.ok(
              s.values.every((v, k) => v === (s.timestamps[k] as number) / 1000 + i),
              `round ${round}, values of h${i}`,
            )
          }
          for (const s of counts) {
            const i = Number(s.tags[0]?.value.slice(1))
            assert.equal(s.values[0], written[i]?.length, `round ${round}, count of h${i}`)
          }
        }
        stats = await engine.stats()
        assert.ok(stats.coldRuns > SERIES, 'the rounds moved hot blocks into cold runs')
      } finally {
        await engine.close()
        await rm(dir, { recursive: true, force: true })
      }
    })
})

describe('basic engine: work bounded by data', () => {
  it('answers aggregations over ranges as wide as int64 allows with what is stored, at once', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 10 * HOUR)
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR })
    try {
      await engine.open()
      await engine.write({
        series: [{ metric: 'cpu', tags: [{ key: 'host', value: 'a' }], timestamps: [T0, T0 + HOUR], values: [1, 2] }],
      })
      await engine.compact()
      assert.equal((await engine.stats()).coldRuns, 2)
      const sum = { func: 'sum' as const, stepMs: HOUR, groupBy: [], mergeSeries: false }
      const max = 2 ** 53 - 1
      // Before the fix these listed every hour of the range: 19 s for [-1e15, -1), minutes for ±(2^53 - 1).
      const started = performance.now()
      for (const [metric, startMs, endMs] of [
        ['no_such_metric', -1e15, -1],
        ['no_such_metric', -max, max],
        ['cpu', -1e15, -1],
      ] as const) {
        const r = await engine.query({ selector: { metric, matchers: [] }, startMs, endMs, aggregation: sum })
        assert.deepEqual(r, [])
      }
      const all = await engine.query({
        selector: { metric: 'cpu', matchers: [] },
        startMs: -max,
        endMs: max,
        aggregation: sum,
      })
      assert.deepEqual([...(all[0]?.timestamps ?? [])], [T0, T0 + HOUR])
      assert.deepEqual([...(all[0]?.values ?? [])], [1, 2])
      const raw = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: -max, endMs: max })
      assert.deepEqual([...(raw[0]?.timestamps ?? [])], [T0, T0 + HOUR])
      // Generous: the point is that it does not take seconds or minutes.
      assert.ok(performance.now() - started < 5000)
      // The mark that bounds the runs to list survives a restart.
      await engine.close()
      const again = engineAt(dir, clock, { hotWindowMs: HOUR })
      await again.open()
      const after = await again.query({
        selector: { metric: 'cpu', matchers: [] },
        startMs: -max,
        endMs: max,
        aggregation: sum,
      })
      assert.deepEqual([...(after[0]?.values ?? [])], [1, 2])
      await again.close()
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('refuses an aggregation whose call is already cancelled', async () => {
    const dir = await tempDir()
    const clock = new ManualClock(T0 + 10 * HOUR)
    const engine = engineAt(dir, clock, { hotWindowMs: HOUR })
    try {
      await engine.open()
      await engine.write({
        series: [{ metric: 'cpu', tags: [{ key: 'host', value: 'a' }], timestamps: [T0 - HOUR], values: [1] }],
      })
      const controller = new AbortController()
      controller.abort()
      await assert.rejects(
        engine.query(
          {
            selector: { metric: 'cpu', matchers: [] },
            startMs: 0,
            endMs: T0,
            aggregation: { func: 'sum', stepMs: HOUR, groupBy: [], mergeSeries: false },
          },
          { signal: controller.signal },
        ),
        /cancelled or its deadline passed/,
      )
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
