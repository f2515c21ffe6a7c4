import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { DIGEST_BLOCK_MS } from '../../src/engine/digest.js'
import type { BlockDigest, SeriesBuckets, SeriesFilter } from '../../src/engine/shard.js'

// Hours long past, so that a compaction moves their blocks to the cold tier.
const H0 = Date.UTC(2024, 0, 1)
const HOURS = 3
const SERIES = ['a', 'b', 'c', 'd']

/** Every series of every test in one bucket, except series d, which is in bucket 1. */
const buckets: SeriesBuckets = { bucketOf: (key) => (key.endsWith('\u0000s\u0000d') ? 1 : 0) }
const everything: SeriesFilter = { key: 'all', accepts: () => true }

/** Points of series `s`: every 10 s over HOURS hours, with values that depend on both. */
function points(s: string): { ts: number[]; vals: number[] } {
  const ts: number[] = []
  const vals: number[] = []
  for (let t = H0; t < H0 + HOURS * DIGEST_BLOCK_MS; t += 10_000) {
    ts.push(t)
    vals.push((t - H0) / 1000 + s.charCodeAt(0) * 0.25)
  }
  return { ts, vals }
}

function sorted(digests: readonly BlockDigest[]): string[] {
  return digests.map((d) => `${d.bucket}@${d.blockStartMs}:${d.digest.toString(16)}/${d.points}`).sort()
}

describe('repair digests of a node', () => {
  let dir: string
  const engines: BasicEngine[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-digest-'))
  })

  after(async () => {
    for (const e of engines) await e.close()
    await rm(dir, { recursive: true, force: true })
  })

  async function open(name: string): Promise<BasicEngine> {
    // Only the test's compact() moves blocks to the cold tier: no background move within the test.
    const engine = new BasicEngine({
      dataDir: join(dir, name),
      sync: 'off',
      hotWindowMs: DIGEST_BLOCK_MS,
      moveIntervalMs: 3_600_000,
    })
    await engine.open()
    engines.push(engine)
    return engine
  }

  const window = [H0 - DIGEST_BLOCK_MS, H0 + 10 * DIGEST_BLOCK_MS] as const

  it('are equal for the same points written in other orders, split otherwise, and after a compaction', async () => {
    const whole = await open('whole')
    await whole.write({
      series: SERIES.map((s) => ({
        metric: 'm',
        tags: [{ key: 's', value: s }],
        timestamps: points(s).ts,
        values: points(s).vals,
      })),
    })
    // The same points series by series in reverse order, in slices of 7 points, each slice reversed.
    const pieces = await open('pieces')
    for (const s of [...SERIES].reverse()) {
      const { ts, vals } = points(s)
      for (let end = ts.length; end > 0; end -= 7) {
        const from = Math.max(0, end - 7)
        await pieces.write({
          series: [
            {
              metric: 'm',
              tags: [{ key: 's', value: s }],
              timestamps: ts.slice(from, end).reverse(),
              values: vals.slice(from, end).reverse(),
            },
          ],
        })
      }
    }
    const first = await whole.digestShard(buckets, ...window)
    assert.equal(first.length, 2 * HOURS, 'one block per bucket and hour')
    assert.deepEqual(
      first.filter((d) => d.bucket === 0).map((d) => d.points),
      [360 * 3, 360 * 3, 360 * 3],
    )
    assert.deepEqual(sorted(await pieces.digestShard(buckets, ...window)), sorted(first))
    // Sealed into hot blocks and moved into cold runs on one node only: the digests stay.
    assert.equal((await whole.stats()).coldRuns, 0)
    await whole.compact()
    assert.ok((await whole.stats()).coldRuns > 0, 'the compaction put the points in cold runs')
    assert.deepEqual(sorted(await whole.digestShard(buckets, ...window)), sorted(first))
    assert.deepEqual(sorted(await pieces.digestShard(buckets, ...window)), sorted(first))
  })

  it('differ in the one block where one point differs, and read back every point exactly', async () => {
    const one = await open('one')
    const other = await open('other')
    const { ts, vals } = points('a')
    for (const e of [one, other]) {
      await e.write({ series: [{ metric: 'm', tags: [{ key: 's', value: 'a' }], timestamps: ts, values: vals }] })
    }
    await one.compact()
    // The same timestamp with another value in the second hour.
    const changed = H0 + DIGEST_BLOCK_MS + 20_000
    await other.write({
      series: [{ metric: 'm', tags: [{ key: 's', value: 'a' }], timestamps: [changed], values: [-1] }],
    })
    const a = new Map((await one.digestShard(buckets, ...window)).map((d) => [d.blockStartMs, d]))
    const b = new Map((await other.digestShard(buckets, ...window)).map((d) => [d.blockStartMs, d]))
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort())
    for (const [hour, d] of a) {
      const differs = d.digest !== b.get(hour)?.digest
      assert.equal(differs, hour === H0 + DIGEST_BLOCK_MS, `hour ${hour}`)
      assert.equal(d.points, b.get(hour)?.points, 'the same number of points either way')
    }
    // A digest over part of an hour covers that part only: one point fewer, another digest.
    const cut = await one.digestShard(buckets, H0, H0 + DIGEST_BLOCK_MS - 10_000)
    assert.equal(cut.length, 1)
    assert.equal(cut[0]?.points, 359)
    assert.notEqual(cut[0]?.digest, a.get(H0)?.digest)

    const [read] = await one.readShard(everything, H0 + DIGEST_BLOCK_MS, H0 + 2 * DIGEST_BLOCK_MS)
    assert.ok(read)
    assert.deepEqual([...read.timestamps], ts.slice(360, 720))
    assert.deepEqual([...read.values], vals.slice(360, 720))
    const none: SeriesFilter = { key: 'none', accepts: () => false }
    assert.deepEqual(await one.readShard(none, ...window), [])
  })
})
