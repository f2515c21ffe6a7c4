// Reads of one series' hot blocks: a range of up to 32 blocks is read by key on the calling thread,
// a longer one scanned. Both must return exactly the points stored in the range.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { ManualClock } from './manual-clock.js'

const T0 = Date.UTC(2026, 0, 1)
const MINUTE = 60_000

describe('hot reads of one series', () => {
  it('return the points of every range, short or long, raw and aggregated', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-hot-read-'))
    const clock = new ManualClock(T0 + 60 * MINUTE)
    const engine = new BasicEngine(
      { dataDir: dir, sync: 'off', sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000 },
      { clock },
    )
    try {
      await engine.open()
      // 40 minutes of points every 7 s (so blocks hold 4 or 5), with a gap from minute 10 to 12.
      const timestamps: number[] = []
      for (let t = T0; t < T0 + 40 * MINUTE; t += 7_000)
        if (t < T0 + 10 * MINUTE || t >= T0 + 12 * MINUTE) timestamps.push(t)
      const values = timestamps.map((_, i) => i * 0.25)
      const tags = [{ key: 'host', value: 'a' }]
      await engine.write({ series: [{ metric: 'cpu', tags, timestamps, values }] })
      await engine.write({ series: [{ metric: 'cpu', tags: [{ key: 'host', value: 'b' }], timestamps, values }] })
      await engine.compact()
      const stats = await engine.stats()
      assert.ok(
        stats.hotBlocks > 0 && stats.coldRuns === 0,
        `${stats.hotBlocks} hot blocks, ${stats.coldRuns} cold runs`,
      )

      const selector = { metric: 'cpu', matchers: [{ key: 'host', value: 'a', op: 'eq' as const }] }
      const ranges: Array<[number, number]> = [
        [T0, T0 + 30_000], // one block
        [T0 + 5_000, T0 + 5 * MINUTE + 1], // mid-block ends
        [T0, T0 + 16 * MINUTE], // 32 blocks: read by key
        [T0 + 1, T0 + 16 * MINUTE + 1], // 33 blocks: scanned
        [T0 + 9 * MINUTE, T0 + 13 * MINUTE], // across the gap
        [T0 + 10 * MINUTE, T0 + 12 * MINUTE], // inside the gap: nothing
        [T0 + 39 * MINUTE, T0 + 45 * MINUTE], // past the last point
        [T0 - 5 * MINUTE, T0 + 50 * MINUTE], // everything
      ]
      for (const [startMs, endMs] of ranges) {
        const want = timestamps.flatMap((t, i) => (t >= startMs && t < endMs ? [[t, values[i]]] : []))
        const raw = await engine.query({ selector, startMs, endMs })
        const got = raw.flatMap((s) => Array.from(s.timestamps, (t, i) => [t, s.values[i]]))
        assert.deepEqual(got, want, `raw [${startMs - T0}, ${endMs - T0})`)
        const agg = await engine.query({
          selector,
          startMs,
          endMs,
          aggregation: { func: 'count', stepMs: MINUTE, groupBy: [], mergeSeries: false },
        })
        const counted = agg.reduce((n, s) => n + s.values.reduce((a, b) => a + b, 0), 0)
        assert.equal(counted, want.length, `count [${startMs - T0}, ${endMs - T0})`)
      }
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
