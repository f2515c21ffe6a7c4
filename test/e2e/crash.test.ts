import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { removeDataDir, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)

describe('v3 serve crash', () => {
  test('SIGKILL right after acknowledged writes loses none of them', async () => {
    const first = await startServerProcess({ args: ['--seal-interval', '50ms', '--seal-idle', '0s'] })
    let acknowledged = 0
    try {
      // Writers keep going while the server is killed: some writes are acknowledged, some sealed
      // into blocks, some only in the write buffer, and some in flight when the process dies.
      let stop = false
      const acked: Array<{ w: number; base: number }> = []
      const writer = async (w: number): Promise<void> => {
        for (let batch = 0; !stop; batch++) {
          const base = T0 + (batch * 4 + w) * 100_000
          const timestamps = Array.from({ length: 100 }, (_, i) => base + i * 1000)
          try {
            await first.client.write([{ metric: 'kill9', tags: { w: String(w) }, timestamps, values: timestamps }])
          } catch {
            return
          }
          acked.push({ w, base })
        }
      }
      const writers = [0, 1, 2, 3].map(writer)
      while (acked.length < 60) await new Promise((resolve) => setTimeout(resolve, 5))
      await first.kill()
      stop = true
      await Promise.all(writers)
      acknowledged = acked.length

      const second = await startServerProcess({ dataDir: first.dataDir })
      try {
        const got = await second.client.query({ selector: { metric: 'kill9' }, startMs: T0, endMs: T0 + 1e9 })
        const stored = new Map<string, Set<number>>()
        for (const s of got) {
          const w = s.tags.find((t) => t.key === 'w')?.value ?? ''
          stored.set(w, new Set(s.timestamps))
          s.timestamps.forEach((t, i) => {
            assert.equal(s.values[i], t)
          })
        }
        for (const { w, base } of acked) {
          const points = stored.get(String(w))
          for (let i = 0; i < 100; i++)
            assert.ok(points?.has(base + i * 1000), `writer ${w} batch at ${base}: point ${i} lost`)
        }
      } finally {
        await second.stop()
      }
    } finally {
      await first.kill()
      await removeDataDir(first.dataDir)
    }
    assert.ok(acknowledged >= 60)
  })
})
