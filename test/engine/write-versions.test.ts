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

function engineAt(dataDir: string, clock: ManualClock, options: Partial<BasicEngineOptions> = {}): BasicEngine {
  return new BasicEngine(
    { dataDir, sync: 'off', sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000, resultCachePoints: 0, ...options },
    { clock },
  )
}

const tags = [{ key: 'host', value: 'a' }]
const everything = { selector: { metric: 'cpu', matchers: [] }, startMs: T0 - 100 * HOUR, endMs: T0 + 100 * HOUR }

function write(engine: BasicEngine, ts: number, value: number, version?: number): Promise<unknown> {
  return engine.write({
    series: [{ metric: 'cpu', tags, timestamps: [ts], values: [value], ...(version === undefined ? {} : { version }) }],
  })
}

async function valueAt(engine: BasicEngine, ts: number): Promise<number | undefined> {
  const [s] = await engine.query(everything)
  if (s === undefined) return undefined
  const i = Array.from(s.timestamps).indexOf(ts)
  return i < 0 ? undefined : s.values[i]
}

async function versionKeys(engine: BasicEngine): Promise<number> {
  let n = 0
  await engine.store.scan({ column: engine.store.columns.versions, values: false }, (page) => {
    n += page.length
  })
  return n
}

async function withEngine(
  fn: (engine: BasicEngine, clock: ManualClock, dir: string) => Promise<void>,
  options: Partial<BasicEngineOptions> = {},
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-versions-'))
  const clock = new ManualClock(T0 + HOUR)
  const engine = engineAt(dir, clock, options)
  try {
    await engine.open()
    await fn(engine, clock, dir)
  } finally {
    await engine.close()
    await rm(dir, { recursive: true, force: true })
  }
}

const TS = T0 + 30 * 60_000
const V1 = (T0 + 1000) * 1024
const V2 = (T0 + 2000) * 1024

describe('write versions in the basic engine', () => {
  for (const order of ['w1 then w2', 'w2 then w1'] as const) {
    const first: [number, number] = order === 'w1 then w2' ? [1, V1] : [2, V2]
    const second: [number, number] = order === 'w1 then w2' ? [2, V2] : [1, V1]

    it(`${order}: both in the head, the higher version stays`, () =>
      withEngine(async (engine) => {
        await write(engine, TS, ...first)
        await write(engine, TS, ...second)
        assert.equal(await valueAt(engine, TS), 2)
        const [latest] = await engine.latest(everything.selector)
        assert.equal(latest?.values[0], 2)
        await engine.compact()
        assert.equal(await valueAt(engine, TS), 2)
      }))

    it(`${order}: one sealed and one in the head, the higher version stays`, () =>
      withEngine(async (engine) => {
        await write(engine, TS, ...first)
        await engine.compact()
        await write(engine, TS, ...second)
        assert.equal(await valueAt(engine, TS), 2)
        await engine.compact()
        assert.equal(await valueAt(engine, TS), 2)
        const [latest] = await engine.latest(everything.selector)
        assert.equal(latest?.values[0], 2)
      }))

    it(`${order}: after a restart that replays the write buffer`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'v3-versions-'))
      const clock = new ManualClock(T0 + HOUR)
      const engine = engineAt(dir, clock)
      let again: BasicEngine | undefined
      try {
        await engine.open()
        await write(engine, TS, ...first)
        await write(engine, TS, ...second)
        // Closing the store alone leaves the buffered points in the buffer family, as a crash would.
        await engine.store.close()
        await engine.decodePool.close()
        again = engineAt(dir, clock)
        await again.open()
        assert.equal((await again.stats()).bufferedPoints, 2)
        assert.equal(await valueAt(again, TS), 2)
        await again.compact()
        assert.equal(await valueAt(again, TS), 2)
      } finally {
        await again?.close()
        await rm(dir, { recursive: true, force: true })
      }
    })

    it(`${order}: both sealed, and after the blocks move to the cold tier`, () =>
      withEngine(
        async (engine, clock) => {
          await write(engine, TS, ...first)
          await engine.compact()
          clock.t = T0 + 3 * HOUR
          await engine.compact()
          assert.equal((await engine.stats()).coldRuns, 1)
          await write(engine, TS, ...second)
          await engine.compact()
          assert.equal(await valueAt(engine, TS), 2)
          assert.equal((await engine.stats()).hotBlocks, 0)
        },
        { hotWindowMs: HOUR },
      ))
  }

  it('a versioned write beats a point without a version, and a point without one never beats a version', () =>
    withEngine(async (engine) => {
      await write(engine, TS, 1)
      await engine.compact()
      await write(engine, TS, 2, V1)
      await engine.compact()
      assert.equal(await valueAt(engine, TS), 2)
      await write(engine, TS, 3)
      assert.equal(await valueAt(engine, TS), 2)
      await engine.compact()
      assert.equal(await valueAt(engine, TS), 2)
      // Equal versions: arrival order, as without versions.
      await write(engine, TS, 4, V1)
      await engine.compact()
      assert.equal(await valueAt(engine, TS), 4)
    }))

  it('versionsOf answers from the head and from the versions family', () =>
    withEngine(async (engine) => {
      await write(engine, TS, 1, V1)
      await engine.compact()
      await write(engine, TS + 1000, 2, V2)
      const versions = await engine.versionsOf({ metric: 'cpu', tags }, Float64Array.of(TS, TS + 1000, TS + 2000))
      assert.deepEqual(Array.from(versions), [V1, V2, 0])
      const unknown = await engine.versionsOf({ metric: 'cpu', tags: [] }, Float64Array.of(TS))
      assert.deepEqual(Array.from(unknown), [0])
    }))

  it('drops the versions of blocks older than the window with a range delete; older points then compare as 0', () =>
    withEngine(
      async (engine, clock) => {
        await write(engine, TS, 2, V2)
        await engine.compact()
        assert.equal(await versionKeys(engine), 1)
        clock.t = TS + 3 * HOUR
        await engine.compact()
        assert.equal(await versionKeys(engine), 0)
        assert.deepEqual(Array.from(await engine.versionsOf({ metric: 'cpu', tags }, Float64Array.of(TS))), [0])
        // Expired: a versioned write wins whatever its version.
        await write(engine, TS, 1, V1)
        await engine.compact()
        assert.equal(await valueAt(engine, TS), 1)
        assert.equal(await versionKeys(engine), 0)
      },
      { versionWindowMs: 2 * HOUR },
    ))

  it('a deleted point does not keep its version', () =>
    withEngine(async (engine) => {
      await write(engine, TS, 2, V2)
      await engine.compact()
      await engine.deleteSeries({ selector: everything.selector, startMs: TS, endMs: TS + 1 })
      await write(engine, TS, 1, V1)
      await engine.compact()
      assert.equal(await valueAt(engine, TS), 1)
    }))

  it('writes without versions store nothing in the versions family', () =>
    withEngine(async (engine) => {
      for (let i = 0; i < 10; i++) await write(engine, TS + (i % 3) * 1000, i)
      await engine.compact()
      await write(engine, TS, 42)
      await engine.compact()
      assert.equal(await valueAt(engine, TS), 42)
      assert.equal(await versionKeys(engine), 0)
      assert.deepEqual(engine.versionMarks, {
        minBlock: Number.POSITIVE_INFINITY,
        maxBlock: Number.NEGATIVE_INFINITY,
      })
    }))
})
