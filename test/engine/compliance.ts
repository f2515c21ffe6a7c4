// The engine compliance suite: every StorageEngine implementation runs it (the basic engine now,
// the cluster engine and custom engines later), as abstract-level's shared suite does for stores.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { StorageEngine } from '../../src/engine/storage-engine.js'
import { LimitError, ValidationError } from '../../src/model/errors.js'
import type { SeriesPoints, Tag } from '../../src/model/types.js'

export interface EngineUnderTest {
  readonly engine: StorageEngine
  /** Stops the engine and removes what it stored. */
  cleanup(): Promise<void>
}

/** Creates a fresh, open engine; `maxPointsPerQuery` must be honoured when given. */
export type EngineFactory = (options: { maxPointsPerQuery?: number }) => Promise<EngineUnderTest>

const T0 = Date.UTC(2026, 0, 1)

function tags(record: Record<string, string>): Tag[] {
  return Object.entries(record).map(([key, value]) => ({ key, value }))
}

function plain(series: SeriesPoints[]): Array<{ tags: Record<string, string>; ts: number[]; vals: number[] }> {
  return series.map((s) => ({
    tags: Object.fromEntries(s.tags.map((t) => [t.key, t.value])),
    ts: Array.from(s.timestamps),
    vals: Array.from(s.values),
  }))
}

async function withEngine(
  factory: EngineFactory,
  fn: (e: StorageEngine) => Promise<void>,
  options = {},
): Promise<void> {
  const { engine, cleanup } = await factory(options)
  try {
    await fn(engine)
  } finally {
    await cleanup()
  }
}

export function runComplianceSuite(name: string, factory: EngineFactory): void {
  describe(`${name}: engine compliance`, () => {
    it('returns raw points sorted by timestamp within [start, end)', () =>
      withEngine(factory, async (e) => {
        const res = await e.write({
          series: [
            {
              metric: 'cpu',
              tags: tags({ host: 'a' }),
              timestamps: [T0 + 2000, T0, T0 + 1000, T0 + 60_000],
              values: [3, 1, 2, 4],
            },
          ],
        })
        assert.deepEqual(res, { pointsWritten: 4, seriesWritten: 1 })
        const got = await e.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + 60_000 })
        assert.deepEqual(plain(got), [{ tags: { host: 'a' }, ts: [T0, T0 + 1000, T0 + 2000], vals: [1, 2, 3] }])
      }))

    it('keeps the last write of a series and timestamp', () =>
      withEngine(factory, async (e) => {
        const s = { metric: 'm', tags: tags({ k: 'v' }) }
        await e.write({ series: [{ ...s, timestamps: [T0, T0 + 10], values: [1, 1] }] })
        await e.write({ series: [{ ...s, timestamps: [T0], values: [2] }] })
        await e.write({ series: [{ ...s, timestamps: [T0 + 10, T0 + 10], values: [5, 6] }] })
        const got = await e.query({ selector: { metric: 'm', matchers: [] }, startMs: T0, endMs: T0 + 100 })
        assert.deepEqual(plain(got)[0]?.vals, [2, 6])
      }))

    it('leaves out series without points in the range and resolves every matcher op', () =>
      withEngine(factory, async (e) => {
        const hosts = ['h01', 'h02', 'h012', 'x1']
        await e.write({
          series: [
            ...hosts.map((h, i) => ({
              metric: 'up',
              tags: tags({ host: h, dc: i % 2 ? 'eu' : 'us' }),
              timestamps: [T0],
              values: [i],
            })),
            { metric: 'up', tags: tags({ dc: 'eu' }), timestamps: [T0], values: [9] },
            { metric: 'up', tags: tags({ host: 'late' }), timestamps: [T0 + 1_000_000], values: [9] },
          ],
        })
        const q = async (matchers: Array<{ key: string; value: string; op: 'eq' | 'neq' | 'regex' | 'not_regex' }>) =>
          (await e.query({ selector: { metric: 'up', matchers }, startMs: T0, endMs: T0 + 1 }))
            .map((s) => s.tags.find((t) => t.key === 'host')?.value ?? '-')
            .sort()
        assert.deepEqual(await q([{ key: 'host', value: 'h0[12]', op: 'regex' }]), ['h01', 'h02'])
        assert.deepEqual(await q([{ key: 'host', value: 'h01', op: 'eq' }]), ['h01'])
        assert.deepEqual(await q([{ key: 'host', value: 'h01', op: 'neq' }]), ['-', 'h012', 'h02', 'x1'])
        assert.deepEqual(await q([{ key: 'host', value: 'h.*', op: 'not_regex' }]), ['-', 'x1'])
        assert.deepEqual(await q([{ key: 'host', value: '', op: 'eq' }]), ['-'])
        // Finite sets of values, read from the posting lists: absent values, the empty value (which
        // selects the series without the tag), and beside an equality matcher.
        assert.deepEqual(await q([{ key: 'host', value: 'x1|h01|nope', op: 'regex' }]), ['h01', 'x1'])
        assert.deepEqual(await q([{ key: 'host', value: 'h01|', op: 'regex' }]), ['-', 'h01'])
        assert.deepEqual(await q([{ key: 'host', value: 'nope|none', op: 'regex' }]), [])
        assert.deepEqual(
          await q([
            { key: 'dc', value: 'eu', op: 'eq' },
            { key: 'host', value: 'h01|h02|x1', op: 'regex' },
          ]),
          ['h02', 'x1'],
        )
        assert.deepEqual(
          await q([
            { key: 'dc', value: 'eu', op: 'eq' },
            { key: 'host', value: 'h.*', op: 'regex' },
          ]),
          ['h02'],
        )
        const listed = await e.listSeries({ metric: 'up', matchers: [] })
        assert.equal(listed.length, 6)
      }))

    it('aggregates into aligned buckets with group_by and merge_series', () =>
      withEngine(factory, async (e) => {
        const base = T0 + 600_000
        await e.write({
          series: [
            {
              metric: 'load',
              tags: tags({ host: 'a', dc: 'x' }),
              timestamps: [base, base + 30_000, base + 60_000],
              values: [1, 3, 5],
            },
            {
              metric: 'load',
              tags: tags({ host: 'b', dc: 'x' }),
              timestamps: [base, base + 30_000, base + 60_000],
              values: [2, 4, 6],
            },
            { metric: 'load', tags: tags({ host: 'c' }), timestamps: [base], values: [10] },
          ],
        })
        const sel = { metric: 'load', matchers: [] }
        const byDc = await e.query({
          selector: sel,
          startMs: base,
          endMs: base + 120_000,
          aggregation: { func: 'max', stepMs: 60_000, groupBy: ['dc'], mergeSeries: false },
        })
        const key = (s: { tags: Record<string, string> }): string => JSON.stringify(s.tags)
        assert.deepEqual(
          plain(byDc).sort((a, b) => (key(a) < key(b) ? -1 : 1)),
          [
            { tags: { dc: 'x' }, ts: [base, base + 60_000], vals: [4, 6] },
            { tags: {}, ts: [base], vals: [10] },
          ],
        )
        const merged = await e.query({
          selector: sel,
          startMs: base,
          endMs: base + 120_000,
          aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: true },
        })
        assert.deepEqual(plain(merged), [{ tags: {}, ts: [base], vals: [7] }])
        const avg = await e.query({
          selector: { metric: 'load', matchers: [{ key: 'host', value: 'a', op: 'eq' }] },
          startMs: base,
          endMs: base + 120_000,
          aggregation: { func: 'avg', stepMs: 0, groupBy: [], mergeSeries: false },
        })
        assert.deepEqual(plain(avg), [{ tags: { dc: 'x', host: 'a' }, ts: [base], vals: [3] }])
      }))

    it('filters points by value before returning or aggregating them', () =>
      withEngine(factory, async (e) => {
        const ts = Array.from({ length: 10 }, (_, i) => T0 + i * 1000)
        await e.write({
          series: [
            {
              metric: 'hot',
              tags: tags({ h: 'a' }),
              timestamps: ts,
              values: [5, 95, 91, 90, 3, 99, Number.MAX_VALUE, 0, 92, 1],
            },
          ],
        })
        await e.write({ series: [{ metric: 'hot', tags: tags({ h: 'b' }), timestamps: ts, values: ts.map(() => 1) }] })
        const sel = { metric: 'hot', matchers: [] }
        const raw = await e.query({
          selector: sel,
          startMs: T0,
          endMs: T0 + 10_000,
          valueFilter: { op: 'gt', value: 90 },
        })
        assert.deepEqual(plain(raw), [
          {
            tags: { h: 'a' },
            ts: [T0 + 1000, T0 + 2000, T0 + 5000, T0 + 6000, T0 + 8000],
            vals: [95, 91, 99, Number.MAX_VALUE, 92],
          },
        ])
        const counted = await e.query({
          selector: sel,
          startMs: T0,
          endMs: T0 + 10_000,
          valueFilter: { op: 'lte', value: 1 },
          aggregation: { func: 'count', stepMs: 0, groupBy: ['h'], mergeSeries: false },
        })
        assert.deepEqual(
          plain(counted).map((s) => s.vals),
          [[2], [10]],
        )
      }))

    it('answers additional selectors in the same query, each as if alone, in order', () =>
      withEngine(factory, async (e) => {
        const ts = [T0, T0 + 30_000, T0 + 60_000, T0 + 90_000]
        await e.write({
          series: [
            { metric: 'user', tags: tags({ host: 'a' }), timestamps: ts, values: [1, 2, 3, 4] },
            { metric: 'user', tags: tags({ host: 'b' }), timestamps: ts, values: [5, 6, 7, 8] },
            { metric: 'system', tags: tags({ host: 'a' }), timestamps: ts, values: [9, 8, 7, 6] },
            { metric: 'idle', tags: tags({ host: 'a' }), timestamps: ts, values: [0, 0, 0, 0] },
          ],
        })
        const hostA = [{ key: 'host', value: 'a', op: 'eq' as const }]
        const perMetric = await e.query({
          selector: { metric: 'system', matchers: hostA },
          additionalSelectors: [
            { metric: 'user', matchers: [] },
            { metric: 'absent', matchers: [] },
          ],
          startMs: T0,
          endMs: T0 + 120_000,
          aggregation: { func: 'max', stepMs: 60_000, groupBy: [], mergeSeries: true },
        })
        // merge_series merges within each selector, never across them.
        assert.deepEqual(
          perMetric.map((s) => ({ metric: s.metric, ...plain([s])[0] })),
          [
            { metric: 'system', tags: {}, ts: [T0, T0 + 60_000], vals: [9, 7] },
            { metric: 'user', tags: {}, ts: [T0, T0 + 60_000], vals: [6, 8] },
          ],
        )
        const raw = await e.query({
          selector: { metric: 'user', matchers: hostA },
          additionalSelectors: [{ metric: 'system', matchers: hostA }],
          startMs: T0 + 30_000,
          endMs: T0 + 90_000,
        })
        assert.deepEqual(
          raw.map((s) => ({ metric: s.metric, ...plain([s])[0] })),
          [
            { metric: 'user', tags: { host: 'a' }, ts: [T0 + 30_000, T0 + 60_000], vals: [2, 3] },
            { metric: 'system', tags: { host: 'a' }, ts: [T0 + 30_000, T0 + 60_000], vals: [8, 7] },
          ],
        )
        await assert.rejects(
          e.query({
            selector: { metric: 'user', matchers: [] },
            additionalSelectors: [{ metric: 'system', matchers: [{ key: 'host', value: '(', op: 'regex' }] }],
            startMs: T0,
            endMs: T0 + 1,
          }),
          ValidationError,
        )
      }))

    it('bounds all the selectors of one query together by the points-per-query limit', () =>
      withEngine(
        factory,
        async (e) => {
          const ts = Array.from({ length: 15 }, (_, i) => T0 + i * 1000)
          const one = (metric: string) => ({ metric, tags: [], timestamps: ts, values: ts.map(() => 1) })
          await e.write({ series: [one('p'), one('q')] })
          const sel = (metric: string) => ({ metric, matchers: [] })
          assert.equal(
            (await e.query({ selector: sel('p'), startMs: T0, endMs: T0 + 15_000 }))[0]?.timestamps.length,
            15,
          )
          await assert.rejects(
            e.query({ selector: sel('p'), additionalSelectors: [sel('q')], startMs: T0, endMs: T0 + 15_000 }),
            (err: unknown) => err instanceof LimitError && err.limit === 'max_points_per_query',
          )
        },
        { maxPointsPerQuery: 20 },
      ))

    it('returns the latest point of every matching series', () =>
      withEngine(factory, async (e) => {
        await e.write({
          series: [
            { metric: 'temp', tags: tags({ room: '1' }), timestamps: [T0, T0 + 5000, T0 + 1000], values: [1, 2, 3] },
            { metric: 'temp', tags: tags({ room: '2' }), timestamps: [T0 - 86_400_000], values: [7] },
          ],
        })
        const got = await e.latest({ metric: 'temp', matchers: [] })
        assert.deepEqual(plain(got), [
          { tags: { room: '1' }, ts: [T0 + 5000], vals: [2] },
          { tags: { room: '2' }, ts: [T0 - 86_400_000], vals: [7] },
        ])
      }))

    it('normalizes timestamps from every precision', () =>
      withEngine(factory, async (e) => {
        const sec = Math.floor(T0 / 1000)
        await e.write({
          precision: 's',
          series: [{ metric: 'p', tags: tags({ u: 's' }), timestamps: [sec], values: [1] }],
        })
        await e.write({
          precision: 'us',
          series: [{ metric: 'p', tags: tags({ u: 'us' }), timestamps: [T0 * 1000 + 999], values: [1] }],
        })
        await e.write({
          precision: 'ns',
          series: [
            { metric: 'p', tags: tags({ u: 'ns' }), timestamps: [BigInt(T0) * 1_000_000n + 999_999n], values: [1] },
          ],
        })
        const got = await e.query({ selector: { metric: 'p', matchers: [] }, startMs: T0, endMs: T0 + 1 })
        assert.equal(got.length, 3)
        for (const s of got) assert.deepEqual(Array.from(s.timestamps), [T0])
      }))

    it('rejects a bad request whole: nothing of it is stored', () =>
      withEngine(factory, async (e) => {
        await assert.rejects(
          e.write({
            series: [
              { metric: 'ok', tags: tags({ a: 'b' }), timestamps: [T0], values: [1] },
              { metric: 'ok', tags: tags({ a: 'c' }), timestamps: [T0, T0 + 1], values: [1] },
            ],
          }),
          (err: unknown) => err instanceof ValidationError && /series\[1\]\.values/.test(err.message),
        )
        assert.deepEqual(await e.listSeries({ metric: 'ok', matchers: [] }), [])
        const got = await e.query({ selector: { metric: 'ok', matchers: [] }, startMs: T0 - 1, endMs: T0 + 10 })
        assert.deepEqual(got, [])
      }))

    it('rejects a bad selector and range', () =>
      withEngine(factory, async (e) => {
        await assert.rejects(
          e.query({ selector: { metric: '9a', matchers: [] }, startMs: 0, endMs: 1 }),
          ValidationError,
        )
        await assert.rejects(
          e.query({
            selector: { metric: 'a', matchers: [{ key: 'x', value: '(', op: 'regex' }] },
            startMs: 0,
            endMs: 1,
          }),
          ValidationError,
        )
        await assert.rejects(e.query({ selector: { metric: 'a', matchers: [] }, startMs: 5, endMs: 5 }), /end_ms/)
      }))

    it('fails a query that would return too many points with a limit error', () =>
      withEngine(
        factory,
        async (e) => {
          const ts = Array.from({ length: 50 }, (_, i) => T0 + i * 1000)
          await e.write({ series: [{ metric: 'big', tags: [], timestamps: ts, values: ts.map(() => 1) }] })
          await assert.rejects(
            e.query({ selector: { metric: 'big', matchers: [] }, startMs: T0, endMs: T0 + 100_000 }),
            (err: unknown) => err instanceof LimitError && err.limit === 'max_points_per_query',
          )
          const ok = await e.query({ selector: { metric: 'big', matchers: [] }, startMs: T0, endMs: T0 + 10_000 })
          assert.equal(ok[0]?.timestamps.length, 10)
        },
        { maxPointsPerQuery: 20 },
      ))

    it('counts the points a value filter keeps against the points-per-query limit, not those it reads', () =>
      withEngine(
        factory,
        async (e) => {
          const ts = Array.from({ length: 50 }, (_, i) => T0 + i * 1000)
          await e.write({ series: [{ metric: 'vf', tags: [], timestamps: ts, values: ts.map((_, i) => i) }] })
          const range = { selector: { metric: 'vf', matchers: [] }, startMs: T0, endMs: T0 + 100_000 }
          const kept = await e.query({ ...range, valueFilter: { op: 'gt', value: 44 } })
          assert.deepEqual(Array.from(kept[0]?.values ?? []), [45, 46, 47, 48, 49])
          await assert.rejects(
            e.query({ ...range, valueFilter: { op: 'gt', value: 10 } }),
            (err: unknown) => err instanceof LimitError && err.limit === 'max_points_per_query',
          )
        },
        { maxPointsPerQuery: 20 },
      ))

    it('subscribe hands over the matching points of later writes, once durable, until closed', () =>
      withEngine(factory, async (e) => {
        await e.write({ series: [{ metric: 'tail', tags: tags({ h: 'a' }), timestamps: [T0], values: [0] }] })
        assert.throws(() => e.subscribe({ metric: '', matchers: [] }, () => {}), ValidationError)
        const seen: SeriesPoints[] = []
        const sub = e.subscribe({ metric: 'tail', matchers: [{ key: 'h', value: 'a', op: 'eq' }] }, (series) => {
          seen.push(...series)
        })
        await e.write({
          series: [
            { metric: 'tail', tags: tags({ h: 'a' }), timestamps: [T0 + 2, T0 + 1], values: [2, 1] },
            { metric: 'tail', tags: tags({ h: 'b' }), timestamps: [T0 + 1], values: [9] },
            { metric: 'other', tags: tags({ h: 'a' }), timestamps: [T0 + 1], values: [9] },
          ],
        })
        assert.deepEqual(plain(seen), [{ tags: { h: 'a' }, ts: [T0 + 1, T0 + 2], vals: [1, 2] }])
        sub.close()
        await e.write({ series: [{ metric: 'tail', tags: tags({ h: 'a' }), timestamps: [T0 + 3], values: [3] }] })
        assert.equal(seen.length, 1)
      }))

    it('deletes a time range of selected series, and whole series', () =>
      withEngine(factory, async (e) => {
        const ts = Array.from({ length: 10 }, (_, i) => T0 + i * 20_000)
        await e.write({
          series: ['a', 'b'].map((h) => ({
            metric: 'd',
            tags: tags({ h }),
            timestamps: ts,
            values: ts.map((_, i) => i),
          })),
        })
        const r = await e.deleteSeries({
          selector: { metric: 'd', matchers: [{ key: 'h', value: 'a', op: 'eq' }] },
          startMs: T0 + 20_000,
          endMs: T0 + 100_000,
        })
        assert.equal(r.seriesMatched, 1)
        const got = await e.query({ selector: { metric: 'd', matchers: [] }, startMs: T0, endMs: T0 + 1_000_000 })
        assert.deepEqual(
          plain(got).map((s) => s.vals),
          [
            [0, 5, 6, 7, 8, 9],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
          ],
        )
        await e.deleteSeries({ selector: { metric: 'd', matchers: [{ key: 'h', value: 'b', op: 'eq' }] } })
        assert.deepEqual(
          (await e.listSeries({ metric: 'd', matchers: [] })).map((s) => s.tags),
          [tags({ h: 'a' })],
        )
      }))
  })
}
