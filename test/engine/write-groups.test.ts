// Writes that arrive together are committed together (one log sync for the group), but a commit
// holds the event loop from its first series to its last, and creating a series costs tens of µs.
// Sixteen writers of 5,000 new series each, all committed in one group, held the loop for seconds;
// a group now stops at 5,000 series or 50,000 points, unless one request alone is bigger.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'

const WRITERS = 16
const REQUESTS = 2
const PER_REQUEST = 5_000
/** Far above a commit of one such request (about 0.2 s here), far below sixteen of them at once. */
const MAX_HOLD_MS = 1_000

describe('group commit', () => {
  it('commits a burst of writes of many new series in groups the event loop can wait for', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-write-groups-'))
    const engine = new BasicEngine({ dataDir: dir, resultCachePoints: 0, sealIntervalMs: 3_600_000 })
    const delay = monitorEventLoopDelay({ resolution: 5 })
    try {
      await engine.open()
      const t0 = Math.floor((Date.now() - 3_600_000) / 60_000) * 60_000
      delay.enable()
      await Promise.all(
        Array.from({ length: WRITERS }, async (_, w) => {
          for (let r = 0; r < REQUESTS; r++) {
            const series = Array.from({ length: PER_REQUEST }, (_, k) => ({
              metric: 'burst',
              tags: [
                { key: 'writer', value: `w${w}` },
                { key: 'n', value: `${r}-${k}` },
              ],
              timestamps: [t0, t0 + 60_000],
              values: [w, k],
            }))
            await engine.write({ series })
          }
        }),
      )
      delay.disable()
      const heldMs = delay.max / 1e6
      assert.ok(heldMs < MAX_HOLD_MS, `the event loop was held for ${heldMs.toFixed(0)} ms at a time`)
      const [total] = await engine.query({
        selector: { metric: 'burst', matchers: [] },
        startMs: t0,
        endMs: t0 + 120_000,
        aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: true },
      })
      assert.deepEqual(Array.from(total?.values ?? []), [2 * WRITERS * REQUESTS * PER_REQUEST])
      assert.equal((await engine.stats()).series, WRITERS * REQUESTS * PER_REQUEST)
    } finally {
      delay.disable()
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
