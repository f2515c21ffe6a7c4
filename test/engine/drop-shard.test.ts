import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import type { BasicEngineOptions } from '../../src/engine/config.js'
import type { BlockDigest, SeriesBuckets, SeriesFilter } from '../../src/engine/shard.js'
import { canonicalSeriesKey, seriesIdFromKey, seriesToken, sortTags } from '../../src/model/series-key.js'
import type { SeriesPoints, SeriesRef, Tag } from '../../src/model/types.js'
import { MemoryEngine } from '../fixtures/memory-engine.js'
import { assertSameSeries } from '../fixtures/series-assert.js'
import { ManualClock } from './manual-clock.js'

const T0 = Date.UTC(2026, 0, 1)
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
/** With a one-hour hot window, a compaction at NOW puts the first three hours in cold runs and the fourth in hot blocks. */
const NOW = T0 + 4.5 * HOUR
const METRICS = ['cpu', 'mem', 'disk'] as const
const HOSTS = 8
const GRID_POINTS = 240
/** Points of one series written before the drop: the grid and one more, the head's overwrites counting once. */
const POINTS_PER_SERIES = GRID_POINTS + 1
/** A series of a cluster coordinator's write carries a version, so the versions family holds some. */
const VERSION = (T0 + 1000) * 1024

function engineAt(dataDir: string, clock: ManualClock, options: Partial<BasicEngineOptions> = {}): BasicEngine {
  // Long timer intervals: the tests drive sealing and moving through compact().
  return new BasicEngine(
    { dataDir, sync: 'off', hotWindowMs: HOUR, sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000, ...options },
    { clock },
  )
}

function hostTags(host: number): Tag[] {
  return [{ key: 'host', value: `h${host}` }]
}

function keyOf(metric: string, tags: readonly Tag[]): string {
  return canonicalSeriesKey(metric, sortTags(tags))
}

/** The series of odd hosts go, those of even hosts stay. */
function isDropped(s: { metric: string; tags: readonly Tag[] }): boolean {
  return Number(s.tags.find((t) => t.key === 'host')?.value.slice(1)) % 2 === 1
}

const oddHosts: SeriesFilter = {
  key: 'odd-hosts',
  accepts: (key) => {
    for (const metric of [...METRICS, 'extra']) {
      for (let h = 1; h < 16; h += 2) if (key === keyOf(metric, hostTags(h))) return true
    }
    return false
  },
}
const everything: SeriesFilter = { key: 'all', accepts: () => true }
/** Bucket 0 holds the series that stay, bucket 1 those that go. */
const keptAndDropped: SeriesBuckets = {
  bucketOf: (key, token) => (oddHosts.accepts(key, token) ? 1 : 0),
}

function gridValue(metric: number, host: number, i: number): number {
  return metric * 1000 + host * 10 + i / 4
}

/** Every 60 s over four hours, for every metric and host: 24 series, half of them to be dropped. */
async function writeGrid(engine: BasicEngine): Promise<void> {
  const ts = Array.from({ length: GRID_POINTS }, (_, i) => T0 + i * MINUTE)
  await engine.write({
    series: METRICS.flatMap((metric, m) =>
      Array.from({ length: HOSTS }, (_, h) => ({
        metric,
        tags: hostTags(h),
        timestamps: ts,
        values: ts.map((_, i) => gridValue(m, h, i)),
        version: VERSION,
      })),
    ),
  })
}

/**
 * Writes that stay in the write buffer until the drop seals it: an overwrite of a cold point and of a
 * hot one, a new point after the grid, and a series ('extra', host 9, dropped) never sealed before.
 */
async function writeBuffered(engine: BasicEngine): Promise<void> {
  await engine.write({
    series: METRICS.flatMap((metric) =>
      Array.from({ length: HOSTS }, (_, h) => ({
        metric,
        tags: hostTags(h),
        timestamps: [T0 + HOUR, T0 + 3.5 * HOUR, T0 + 4 * HOUR],
        values: [-1, -2, -3 - h],
        version: VERSION + 1,
      })),
    ),
  })
  await engine.write({
    series: [
      {
        metric: 'extra',
        tags: hostTags(9),
        timestamps: [0, 1, 2, 3, 4].map((k) => T0 + 4 * HOUR + k * MINUTE),
        values: [1, 2, 3, 4, 5],
      },
    ],
  })
}

/** The series and points of writeGrid and writeBuffered that oddHosts accepts. */
const DROPPED_SERIES = METRICS.length * (HOSTS / 2) + 1
const DROPPED_POINTS = METRICS.length * (HOSTS / 2) * POINTS_PER_SERIES + 5
/** The grid series of even hosts. */
const KEPT_SERIES = METRICS.length * (HOSTS / 2)

interface Snapshot {
  readonly query: SeriesPoints[]
  readonly latest: SeriesPoints[]
  readonly list: SeriesRef[]
  readonly read: SeriesPoints[]
  readonly digests: BlockDigest[]
}

/** What every read says about every series; run twice, the second time from the caches. */
async function snapshot(engine: BasicEngine): Promise<Snapshot> {
  const query: SeriesPoints[] = []
  const latest: SeriesPoints[] = []
  const list: SeriesRef[] = []
  for (const metric of [...METRICS, 'extra']) {
    const selector = { metric, matchers: [] }
    query.push(...(await engine.query({ selector, startMs: T0 - DAY, endMs: T0 + DAY })))
    latest.push(...(await engine.latest(selector)))
    list.push(...(await engine.listSeries(selector)))
  }
  return {
    query,
    latest,
    list,
    read: sortSeries(await engine.readShard(everything, T0 - DAY, T0 + DAY)),
    digests: sortDigests(await engine.digestShard(keptAndDropped, T0 - DAY, T0 + DAY)),
  }
}

function sortSeries<T extends SeriesRef>(list: readonly T[]): T[] {
  const key = (s: SeriesRef) => keyOf(s.metric, s.tags)
  return [...list].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
}

function sortDigests(list: readonly BlockDigest[]): BlockDigest[] {
  return [...list].sort((a, b) => a.bucket - b.bucket || a.blockStartMs - b.blockStartMs)
}

/** The snapshot of the series that stay. */
function kept(s: Snapshot): Snapshot {
  const keep = <T extends SeriesRef>(list: readonly T[]) => list.filter((x) => !isDropped(x))
  return {
    query: keep(s.query),
    latest: keep(s.latest),
    list: keep(s.list),
    read: keep(s.read),
    digests: s.digests.filter((d) => d.bucket === 0),
  }
}

function assertSnapshot(actual: Snapshot, expected: Snapshot, context: string): void {
  assertSameSeries(actual.query, expected.query, `${context}: query`)
  assertSameSeries(actual.latest, expected.latest, `${context}: latest`)
  assert.deepEqual(actual.list, expected.list, `${context}: listSeries`)
  assertSameSeries(actual.read, expected.read, `${context}: readShard`)
  assert.deepEqual(actual.digests, expected.digests, `${context}: digestShard`)
}

async function keyCount(engine: BasicEngine, column: 'hot' | 'cold' | 'index'): Promise<number> {
  let n = 0
  await engine.store.scan({ column: engine.store.columns[column], values: false }, (page) => {
    n += page.length
  })
  return n
}

/** The ids of the series that have stored versions. */
async function versionedIds(engine: BasicEngine): Promise<Set<string>> {
  const ids = new Set<string>()
  await engine.store.scan({ column: engine.store.columns.versions, values: false }, (page) => {
    for (const [key] of page) ids.add(key.subarray(4, 12).toString('hex'))
  })
  return ids
}

/**
 * The stored state agrees with the engine: as many hot and cold keys as its counters say, one index
 * record per series, versions only of series it has, and at least one for each series that stays.
 */
async function assertStorage(engine: BasicEngine, series: number, context: string): Promise<void> {
  const stats = await engine.stats()
  assert.equal(stats.series, series, `${context}: series`)
  assert.equal(await keyCount(engine, 'index'), series, `${context}: index records`)
  assert.equal(await keyCount(engine, 'hot'), stats.hotBlocks, `${context}: hot blocks`)
  assert.equal(await keyCount(engine, 'cold'), stats.coldRuns, `${context}: cold runs`)
  assert.ok(stats.hotBlocks > 0 && stats.coldRuns > 0, `${context}: both tiers hold blocks`)
  const ids = await versionedIds(engine)
  for (const metric of METRICS) {
    for (let h = 0; h < HOSTS; h++) {
      const id = seriesIdFromKey(keyOf(metric, hostTags(h))).toString('hex')
      assert.equal(ids.has(id), h % 2 === 0, `${context}: versions of ${metric} h${h}`)
    }
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-drop-'))
  try {
    await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** An engine holding the grid in both tiers and the buffered writes in its head. */
async function prepared(dir: string, clock: ManualClock): Promise<BasicEngine> {
  const engine = engineAt(dir, clock)
  await engine.open()
  await writeGrid(engine)
  const c = await engine.compact()
  assert.ok(c.blocksSealed > 0)
  await writeBuffered(engine)
  return engine
}

function registerTests(): void {
  describe('dropShard on the basic engine', () => {
    it('drops the accepted series from every tier, the index, the versions and the caches, and keeps the rest', async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(NOW)
        let engine = await prepared(dir, clock)
        try {
          const before = await snapshot(engine)
          assert.equal(before.list.length, KEPT_SERIES + DROPPED_SERIES)
          // A second time, so that query results and latest points come from the caches.
          assertSnapshot(await snapshot(engine), before, 'before, cached')

          const dropped = await engine.dropShard(oddHosts)
          assert.deepEqual(dropped, { series: DROPPED_SERIES, points: DROPPED_POINTS })

          const after = await snapshot(engine)
          assert.ok(after.list.every((s) => !isDropped(s)))
          assert.equal(after.list.length, KEPT_SERIES)
          assertSnapshot(after, kept(before), 'after the drop')
          await assertStorage(engine, KEPT_SERIES, 'after the drop')
          // Nothing left to drop.
          assert.deepEqual(await engine.dropShard(oddHosts), { series: 0, points: 0 })

          await engine.close()
          engine = engineAt(dir, clock)
          await engine.open()
          assertSnapshot(await snapshot(engine), kept(before), 'after a restart')
          await assertStorage(engine, KEPT_SERIES, 'after a restart')
          // Maintenance after the drop brings nothing back either.
          clock.t += 2 * HOUR
          await engine.compact()
          assertSnapshot(await snapshot(engine), kept(before), 'after a compaction')
        } finally {
          await engine.close()
        }
      })
    })

    it('takes a dropped series written again as a new series with only its new points', async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(NOW)
        const engine = await prepared(dir, clock)
        try {
          const selector = { metric: 'cpu', matchers: [{ key: 'host', value: 'h1', op: 'eq' as const }] }
          const range = { selector, startMs: T0 - DAY, endMs: T0 + DAY }
          // Hourly counts, answered from the summaries of cold runs where whole hours are stored.
          const hourly = {
            ...range,
            aggregation: { func: 'count' as const, stepMs: HOUR, groupBy: [], mergeSeries: false },
          }
          const counts = await engine.query(hourly)
          assert.deepEqual(Array.from(counts[0]?.values ?? []), [60, 60, 60, 60, 1])
          await engine.dropShard(oddHosts)
          assert.deepEqual(await engine.query(range), [])
          // New points in the old cold range, the old hot range and past both.
          const ts = [T0 + 30 * MINUTE, T0 + 3.5 * HOUR, T0 + 4 * HOUR + 10 * MINUTE]
          await engine.write({ series: [{ metric: 'cpu', tags: hostTags(1), timestamps: ts, values: [7, 8, 9] }] })
          const expected = [
            { metric: 'cpu', tags: hostTags(1), timestamps: Float64Array.from(ts), values: Float64Array.of(7, 8, 9) },
          ]
          const check = async (context: string): Promise<void> => {
            assertSameSeries(await engine.query(range), expected, `${context}: query`)
            assertSameSeries(
              await engine.latest(selector),
              [{ ...expected[0]!, timestamps: Float64Array.of(ts[2]!), values: Float64Array.of(9) }],
              `${context}: latest`,
            )
            assert.deepEqual(await engine.listSeries(selector), [{ metric: 'cpu', tags: hostTags(1) }])
            assertSameSeries(
              await engine.query(hourly),
              [
                {
                  ...expected[0]!,
                  timestamps: Float64Array.of(T0, T0 + 3 * HOUR, T0 + 4 * HOUR),
                  values: Float64Array.of(1, 1, 1),
                },
              ],
              `${context}: hourly counts`,
            )
            const one: SeriesFilter = { key: 'cpu-h1', accepts: (key) => key === keyOf('cpu', hostTags(1)) }
            assertSameSeries(await engine.readShard(one, T0 - DAY, T0 + DAY), expected, `${context}: readShard`)
          }
          await check('buffered')
          // Sealed into blocks and runs of their own: no dropped neighbour comes back.
          await engine.compact()
          await check('sealed')
          clock.t += 2 * HOUR
          await engine.compact()
          await check('moved')
          assert.deepEqual(await engine.dropShard(oddHosts), { series: 1, points: 3 })
        } finally {
          await engine.close()
        }
      })
    })

    it('keeps the drop, and writes acknowledged after it, when the process is killed with SIGKILL', async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(NOW)
        let engine = engineAt(dir, clock)
        await engine.open()
        await writeGrid(engine)
        await engine.compact()
        const before = kept(await snapshot(engine))
        await engine.close()

        const [dropped] = await runChild(dir, 'drop')
        assert.equal(dropped, `dropped ${DROPPED_SERIES} ${DROPPED_POINTS}`)

        engine = engineAt(dir, clock)
        await engine.open()
        try {
          const after = await snapshot(engine)
          // The child's buffered writes changed the points that stay; those of host 0 come below.
          assert.deepEqual(after.list, before.list)
          assert.ok(after.query.every((s) => !isDropped(s)))
          const h0 = after.query.find((s) => s.metric === 'cpu' && s.tags[0]?.value === 'h0')
          const at = (t: number) => h0?.values[Array.from(h0.timestamps).indexOf(t)]
          assert.equal(h0?.timestamps.length, POINTS_PER_SERIES + 1)
          assert.equal(at(T0 + HOUR), -1)
          assert.equal(at(T0 + 4 * HOUR), -3)
          assert.equal(at(T0 + 4 * HOUR + MINUTE), 42, 'the write acknowledged after the drop')
          await assertStorage(engine, KEPT_SERIES, 'after SIGKILL')
        } finally {
          await engine.close()
        }
      })
    })

    // Points a drop or delete discarded, whose write-buffer records a restart would replay, stay
    // gone: the ranged delete once left such records behind, and deleted points came back.
    for (const [mode, what] of [
      ['own-race', 'the drop of their own series'],
      ['own-race-delete', 'deleteSeries of their own series'],
      ['own-race-range-delete', 'a ranged deleteSeries of their series'],
    ] as const) {
      it(`shows after SIGKILL what it showed before, where writes raced ${what}`, async () => {
        await withDir(async (dir) => {
          const [dropped, shown] = await runChild(dir, mode)
          assert.equal(dropped, 'dropped 1')
          const engine = engineAt(dir, new ManualClock(NOW))
          await engine.open()
          try {
            assert.equal(JSON.stringify(await raceView(engine)), shown)
          } finally {
            await engine.close()
          }
        })
      })
    }

    it('loses no write to other series that races a drop of many batches', async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(NOW)
        const engine = engineAt(dir, clock)
        await engine.open()
        try {
          // One point an hour over 300 days: 7200 cold runs a series, 144 000 for 20 series, so the
          // drop deletes in several batches and lets other work in between.
          const DAYS = 300
          const old = Array.from({ length: 20 }, (_, s) => [{ key: 's', value: String(s) }])
          const oldTs = Array.from({ length: DAYS * 24 }, (_, i) => T0 - DAYS * DAY + i * HOUR)
          for (const [s, tags] of old.entries()) {
            await engine.write({
              series: [{ metric: 'old', tags, timestamps: oldTs, values: oldTs.map((t) => t + s) }],
            })
          }
          await engine.compact()
          assert.equal((await engine.stats()).coldRuns, old.length * oldTs.length)
          const oldKeys = new Set(old.map((tags) => keyOf('old', tags)))
          const filter: SeriesFilter = { key: 'old', accepts: (key) => oldKeys.has(key) }

          const live = [0, 1, 2, 3].map((s) => [{ key: 's', value: String(s) }])
          let done = false
          let acked = 0
          let ackedDuringDrop = 0
          const writer = (async () => {
            for (let k = 0; !done || k < 3; k++) {
              const t = T0 + 4 * HOUR + k * 1000
              await engine.write({
                series: live.map((tags, s) => ({ metric: 'live', tags, timestamps: [t], values: [k * 10 + s] })),
              })
              acked = k + 1
              if (!done) ackedDuringDrop = acked
            }
          })()
          const dropped = await engine.dropShard(filter)
          done = true
          await writer
          assert.deepEqual(dropped, { series: old.length, points: old.length * oldTs.length })
          assert.ok(ackedDuringDrop > 0, 'some writes were acknowledged while the drop ran')

          const check = async (context: string): Promise<void> => {
            assert.deepEqual(await engine.listSeries({ metric: 'old', matchers: [] }), [], context)
            const got = await engine.query({
              selector: { metric: 'live', matchers: [] },
              startMs: T0 - DAY,
              endMs: T0 + DAY,
            })
            assert.equal(got.length, live.length, context)
            for (const [s, series] of got.entries()) {
              assert.deepEqual(
                Array.from(series.timestamps),
                Array.from({ length: acked }, (_, k) => T0 + 4 * HOUR + k * 1000),
                `${context}: live series ${s}`,
              )
              assert.deepEqual(
                Array.from(series.values),
                Array.from({ length: acked }, (_, k) => k * 10 + s),
                `${context}: live series ${s}`,
              )
            }
            const stats = await engine.stats()
            assert.equal(stats.coldRuns, 0, context)
            assert.equal(await keyCount(engine, 'cold'), 0, context)
          }
          await check('after the drop')
          await engine.compact()
          await check('after a compaction')
        } finally {
          await engine.close()
        }
      })
    })

    it('keeps the write-buffer record of a write to another series committed while the drop seals', async () => {
      await withDir(async (dir) => {
        const engine = engineAt(dir, new ManualClock(NOW))
        await engine.open()
        const held = holdNextCommit(engine)
        try {
          await engine.write({ series: [{ metric: 'cpu', tags: hostTags(1), timestamps: [T0], values: [1] }] })
          held.arm()
          const write = engine.write({
            series: [{ metric: 'cpu', tags: hostTags(0), timestamps: [T0 + MINUTE], values: [2] }],
          })
          await held.written
          // The drop seals the write buffer, which holds nothing else, and trims its records.
          const drop = engine.dropShard(oddHosts)
          while (engine.bufferTrimmedTo === 0) await new Promise((resolve) => setImmediate(resolve))
          // Were the held write's record trimmed, its point, acknowledged once it is in the head,
          // would live in memory only until sealed, lost to a SIGKILL.
          assert.equal(await bufferRecords(engine), 1)
          held.release()
          await write
          assert.deepEqual(await drop, { series: 1, points: 1 })
          const [s] = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + DAY })
          assert.deepEqual(Array.from(s?.values ?? []), [2])
        } finally {
          held.release()
          await engine.close()
        }
      })
    })

    it('trims the write-buffer record of a write to a dropped series in flight when its batch went', async () => {
      await withDir(async (dir) => {
        const engine = engineAt(dir, new ManualClock(NOW))
        await engine.open()
        const held = holdNextCommit(engine)
        try {
          await engine.write({ series: [{ metric: 'cpu', tags: hostTags(1), timestamps: [T0], values: [1] }] })
          // The write takes the series before the drop, which discards its point once it is in.
          held.arm()
          const write = engine.write({
            series: [{ metric: 'cpu', tags: hostTags(1), timestamps: [T0 + MINUTE], values: [2] }],
          })
          await held.written
          const drop = engine.dropShard(oddHosts)
          setTimeout(held.release, 200)
          await write
          assert.deepEqual(await drop, { series: 1, points: 1 })
          // Its record names the dropped series: a restart would fail on it, or replay it into the
          // series written again.
          assert.equal(await bufferRecords(engine), 0)
          assert.deepEqual(await engine.listSeries({ metric: 'cpu', matchers: [] }), [])
        } finally {
          held.release()
          await engine.close()
        }
      })
    })

    it('deleteSeries trims the write-buffer record of a write to a deleted series in flight', async () => {
      await withDir(async (dir) => {
        const engine = engineAt(dir, new ManualClock(NOW))
        await engine.open()
        const held = holdNextCommit(engine)
        try {
          await engine.write({ series: [{ metric: 'cpu', tags: hostTags(1), timestamps: [T0], values: [1] }] })
          // The write takes the series before the delete, which discards its point once it is in.
          held.arm()
          const write = engine.write({
            series: [{ metric: 'cpu', tags: hostTags(1), timestamps: [T0 + MINUTE], values: [2] }],
          })
          await held.written
          const remove = engine.deleteSeries({ selector: { metric: 'cpu', matchers: [] } })
          setTimeout(held.release, 200)
          await write
          assert.deepEqual(await remove, { seriesMatched: 1 })
          assert.equal(await bufferRecords(engine), 0)
          assert.deepEqual(await engine.listSeries({ metric: 'cpu', matchers: [] }), [])
        } finally {
          held.release()
          await engine.close()
        }
      })
    })

    it('counts a point once where a crash during a move left its block in both tiers', async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(T0 + 1.5 * HOUR)
        let engine = engineAt(dir, clock)
        await engine.open()
        const ts = Array.from({ length: 60 }, (_, i) => T0 + i * MINUTE)
        await engine.write({
          series: [{ metric: 'cpu', tags: hostTags(1), timestamps: ts, values: ts.map((_, i) => i) }],
        })
        // The first half hour is past the hot window: moved to a cold run.
        await engine.compact()
        assert.equal(await keyCount(engine, 'hot'), 30)
        // The next move merges the second half hour into the run, then fails to delete the hot blocks
        // it moved, as a crash would.
        clock.t = T0 + 3 * HOUR
        const db = engine.store.db
        const clear = db.clear.bind(db)
        const hot = engine.store.columns.hot
        db.clear = ((options: { column?: unknown }) =>
          options.column === hot ? Promise.reject(new Error('simulated crash')) : clear(options as never)) as never
        await assert.rejects(engine.compact(), /simulated crash/)
        db.clear = clear
        await engine.close()
        engine = engineAt(dir, clock)
        await engine.open()
        try {
          assert.equal(await keyCount(engine, 'hot'), 30)
          assert.equal(await keyCount(engine, 'cold'), 1)
          const [s] = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + DAY })
          assert.equal(s?.timestamps.length, 60)
          assert.deepEqual(await engine.dropShard(everything), { series: 1, points: 60 })
          assert.equal(await keyCount(engine, 'hot'), 0)
          assert.equal(await keyCount(engine, 'cold'), 0)
          assert.equal((await engine.stats()).hotBlocks, 0)
        } finally {
          await engine.close()
        }
      })
    })

    it('drops nothing when the filter accepts no series', async () => {
      await withDir(async (dir) => {
        const engine = await prepared(dir, new ManualClock(NOW))
        try {
          const before = await snapshot(engine)
          assert.deepEqual(await engine.dropShard({ key: 'none', accepts: () => false }), { series: 0, points: 0 })
          assertSnapshot(await snapshot(engine), before, 'after an empty drop')
        } finally {
          await engine.close()
        }
      })
    })

    it("gives filters and buckets each series' ring token, for series written since the open and loaded at it", async () => {
      await withDir(async (dir) => {
        const clock = new ManualClock(NOW)
        const seen = new Map<string, number[]>()
        const recording: SeriesFilter = {
          key: 'recording',
          accepts: (key, token) => {
            seen.set(key, [...(seen.get(key) ?? []), token])
            return true
          },
        }
        const buckets: SeriesBuckets = { bucketOf: (key, token) => (recording.accepts(key, token) ? 0 : -1) }
        const check = async (engine: BasicEngine, when: string): Promise<void> => {
          seen.clear()
          const read = await engine.readShard(recording, T0, NOW)
          await engine.digestShard(buckets, T0, NOW)
          await engine.queryShard({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: NOW }, recording)
          assert.equal(seen.size, read.length, when)
          for (const [key, tokens] of seen) {
            for (const token of tokens) assert.equal(token, seriesToken(key), `${when}: ${JSON.stringify(key)}`)
          }
        }
        const engine = await prepared(dir, clock)
        await engine.close()
        const reopened = engineAt(dir, clock)
        await reopened.open()
        try {
          await check(reopened, 'series loaded at the open')
          await reopened.write({ series: [{ metric: 'cpu', tags: hostTags(99), timestamps: [T0], values: [1] }] })
          await check(reopened, 'with a series written since the open')
        } finally {
          await reopened.close()
        }
      })
    })
  })

  describe('dropShard on the memory engine', () => {
    it('drops the accepted series and counts their points', async () => {
      const engine = new MemoryEngine()
      await engine.open()
      const ts = [T0, T0 + MINUTE, T0 + 2 * MINUTE]
      await engine.write({
        series: [0, 1, 2, 3].map((h) => ({ metric: 'cpu', tags: hostTags(h), timestamps: ts, values: [1, 2, 3] })),
      })
      assert.deepEqual(await engine.dropShard(oddHosts), { series: 2, points: 6 })
      const left = await engine.listSeries({ metric: 'cpu', matchers: [] })
      assert.deepEqual(left, [
        { metric: 'cpu', tags: hostTags(0) },
        { metric: 'cpu', tags: hostTags(2) },
      ])
      await engine.close()
    })
  })
}

/**
 * Holds the next write, once armed, between its batch reaching RocksDB and its points reaching the
 * head: `written` resolves once the batch is in, and the write goes on after release().
 */
function holdNextCommit(engine: BasicEngine): { arm(): void; written: Promise<void>; release(): void } {
  const db = engine.store.db
  const batch = db.batch.bind(db)
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  let reached: () => void = () => {}
  const written = new Promise<void>((resolve) => {
    reached = resolve
  })
  const arm = (): void => {
    db.batch = (() => {
      const b = batch()
      db.batch = batch
      const write = b.write.bind(b)
      b.write = (async (options: never) => {
        await write(options)
        reached()
        await held
      }) as never
      return b
    }) as never
  }
  return { arm, written, release: () => release() }
}

async function bufferRecords(engine: BasicEngine): Promise<number> {
  let records = 0
  await engine.store.scan({ column: engine.store.columns.buffer, values: false }, (page) => {
    records += page.length
  })
  return records
}

type ChildMode = 'drop' | 'own-race' | 'own-race-delete' | 'own-race-range-delete'

/**
 * Runs this file as a child process on `dir` (see childMain), kills it with SIGKILL once it says
 * "acked", and returns the lines it wrote before.
 */
async function runChild(dir: string, mode: ChildMode): Promise<string[]> {
  const { NODE_TEST_CONTEXT: _, ...env } = process.env
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    env: { ...env, DROP_SHARD_CHILD: dir, DROP_SHARD_CHILD_MODE: mode },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines: string[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the child exited early with ${code}`)))
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (line !== 'acked') {
          lines.push(line)
          return
        }
        child.kill('SIGKILL')
        resolve()
      })
    })
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  await new Promise((resolve) => child.once('close', resolve))
  return lines
}

const racing = { metric: 'racing', tags: hostTags(1) }
const steady = { metric: 'steady', tags: hostTags(0) }

/** The points of the series of the own-race child. */
async function raceView(engine: BasicEngine): Promise<Array<{ series: string; ts: number[]; vals: number[] }>> {
  const out: Array<{ series: string; ts: number[]; vals: number[] }> = []
  for (const s of [racing, steady]) {
    const got = await engine.query({ selector: { metric: s.metric, matchers: [] }, startMs: T0, endMs: T0 + DAY })
    for (const g of got) out.push({ series: g.metric, ts: Array.from(g.timestamps), vals: Array.from(g.values) })
  }
  return out
}

/**
 * A child of the SIGKILL tests. `drop`: buffers writes, drops, writes once more. `own-race`: writes
 * one series and another without pause while dropping the first, then reports what reads show;
 * `own-race-delete` does the same with deleteSeries, `own-race-range-delete` with a ranged one.
 * Either reports each step and then waits to be killed, never closing the engine (which would
 * seal the write buffer).
 */
async function childMain(dir: string, mode: ChildMode): Promise<void> {
  const engine = engineAt(dir, new ManualClock(NOW))
  await engine.open()
  if (mode === 'drop') {
    await writeBuffered(engine)
    const dropped = await engine.dropShard(oddHosts)
    process.stdout.write(`dropped ${dropped.series} ${dropped.points}\n`)
    await engine.write({
      series: [{ metric: 'cpu', tags: hostTags(0), timestamps: [T0 + 4 * HOUR + MINUTE], values: [42] }],
    })
  } else {
    const write = (k: number) =>
      engine.write({ series: [racing, steady].map((s) => ({ ...s, timestamps: [T0 + k * 1000], values: [k] })) })
    await write(0)
    let done = false
    const writer = (async () => {
      for (let k = 1; !done; k++) await write(k)
    })()
    const key = keyOf(racing.metric, racing.tags)
    const selector = { metric: racing.metric, matchers: [] }
    const dropped =
      mode === 'own-race'
        ? await engine.dropShard({ key: 'racing', accepts: (k) => k === key })
        : mode === 'own-race-delete'
          ? { series: (await engine.deleteSeries({ selector })).seriesMatched }
          : { series: (await engine.deleteSeries({ selector, startMs: T0, endMs: T0 + DAY })).seriesMatched }
    done = true
    await writer
    process.stdout.write(`dropped ${dropped.series}\n`)
    process.stdout.write(`${JSON.stringify(await raceView(engine))}\n`)
  }
  process.stdout.write('acked\n')
  setInterval(() => {}, 1000)
}

// Last, once every constant above is initialized. Run as the child of a SIGKILL test, the file
// registers no tests.
const childDir = process.env.DROP_SHARD_CHILD
if (childDir !== undefined) await childMain(childDir, process.env.DROP_SHARD_CHILD_MODE as ChildMode)
else registerTests()
