// A node that seals a very large write buffer still answers its other calls: health checks, the
// Consul check a cluster node renews, peers' requests. Every one of them waits while the seal holds
// the event loop. Sealing 100,000 series written with write versions (as a cluster node's are) held
// it for 3.3-3.5 s at a time before the seal was cut into slices, and 65-70 ms after.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'

const SERIES = 100_000
const PER_WRITE = 5_000
/** Far above what a sliced seal holds the loop for, far below what the whole seal at once held it. */
const MAX_HOLD_MS = 1_000

describe('a seal of many series', () => {
  it('gives the event loop back while it runs, and seals every point', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-seal-slices-'))
    // The default seal timer: the seal starts while the writes still come, as on a loaded node.
    const engine = new BasicEngine({ dataDir: dir, sync: 'off', resultCachePoints: 0 })
    const delay = monitorEventLoopDelay({ resolution: 5 })
    try {
      await engine.open()
      // Points an hour old: every block is due at the first seal.
      const t0 = Math.floor((Date.now() - 3_600_000) / 60_000) * 60_000
      delay.enable()
      for (let from = 0; from < SERIES; from += PER_WRITE) {
        const series = Array.from({ length: PER_WRITE }, (_, k) => ({
          metric: 'wide',
          tags: [{ key: 'host', value: `h${from + k}` }],
          timestamps: [t0, t0 + 60_000],
          values: [from + k, -(from + k)],
          version: from + k + 1,
        }))
        await engine.write({ series })
      }
      while ((await engine.stats()).bufferedPoints > 0) await new Promise((resolve) => setTimeout(resolve, 100))
      delay.disable()
      const heldMs = delay.max / 1e6
      assert.ok(heldMs < MAX_HOLD_MS, `the event loop was held for ${heldMs.toFixed(0)} ms at a time`)
      const [total] = await engine.query({
        selector: { metric: 'wide', matchers: [] },
        startMs: t0,
        endMs: t0 + 120_000,
        aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: true },
      })
      assert.deepEqual(Array.from(total?.values ?? []), [2 * SERIES])
      const [one] = await engine.query({
        selector: { metric: 'wide', matchers: [{ key: 'host', value: 'h12345', op: 'eq' }] },
        startMs: t0,
        endMs: t0 + 120_000,
      })
      assert.deepEqual(Array.from(one?.values ?? []), [12_345, -12_345])
    } finally {
      delay.disable()
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
