// A single node on a small filesystem of its own (a 64 MiB tmpfs, mounted by the test; it needs
// root, and is skipped, saying so, where mount is refused): an idle server does not spend the last
// free space on its own, a full disk refuses writes with UNAVAILABLE and keeps every acknowledged
// point, and writes go on without a restart once space is back.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtemp, open, rm, statfs } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { SeriesInput, V3ClientError } from '../../src/client/index.js'
import { waitFor } from './cluster-kit.js'
import { startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const MIB = 1024 * 1024

async function freeBytes(dir: string): Promise<number> {
  const fs = await statfs(dir)
  return fs.bavail * fs.bsize
}

/** Grows `path` by `bytes` of real blocks (tmpfs has no holes to skip them). */
async function fill(path: string, bytes: number): Promise<void> {
  const file = await open(path, 'a')
  try {
    const chunk = Buffer.alloc(MIB, 1)
    for (let done = 0; done < bytes; done += chunk.length) {
      await file.write(chunk.subarray(0, Math.min(chunk.length, bytes - done)))
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    await file.close()
  }
}

/** One write of `n` points of series `s`, from timestamp index `from`. */
function batch(s: number, from: number, n: number): SeriesInput[] {
  const timestamps = Array.from({ length: n }, (_, i) => T0 + (from + i) * 1000)
  return [{ metric: 'disk_full', tags: { s: String(s) }, timestamps, values: timestamps.map((_, i) => from + i) }]
}

describe('a full disk', { timeout: 180_000 }, () => {
  it('is not filled by an idle server, refuses writes with UNAVAILABLE, keeps every acknowledged point, and recovers', async (t) => {
    const mount = await mkdtemp(join(tmpdir(), 'v3-diskfull-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mount], { stdio: 'pipe' })
    } catch (err) {
      await rm(mount, { recursive: true, force: true })
      t.skip(`cannot mount a tmpfs here: ${(err as Error).message.split('\n')[0]}`)
      return
    }
    const filler = join(mount, 'filler')
    const server = await startServerProcess({ dataDir: join(mount, 'data'), args: ['--log-level', 'info'] })
    try {
      // Acknowledged points: series 0 to 9, 20,000 each, written before the disk fills.
      const acked = new Map<number, number>()
      for (let s = 0; s < 10; s++) {
        for (let from = 0; from < 20_000; from += 5_000) await server.client.write(batch(s, from, 5_000))
        acked.set(s, 20_000)
      }
      // Leave 12 MiB: less than the log flush of an idle server needs, which it must then put off.
      await fill(filler, (await freeBytes(mount)) - 12 * MIB)
      const before = await freeBytes(mount)
      await waitFor(
        'the flush put off',
        async () => (/the disk is short of space/.test(server.stderr()) ? true : undefined),
        60_000,
      )
      const after = await freeBytes(mount)
      assert.ok(
        before - after < 4 * MIB,
        `the idle server took ${(before - after) / MIB} MiB of the last ${before / MIB}`,
      )

      // Fill the rest: writes fail with UNAVAILABLE naming the cause; what was acknowledged counts.
      await fill(filler, 64 * MIB)
      let refused: V3ClientError | undefined
      for (let from = 0; from < 2_000_000 && refused === undefined; from += 5_000) {
        try {
          await server.client.write(batch(10, from, 5_000))
          acked.set(10, from + 5_000)
        } catch (err) {
          refused = err as V3ClientError
        }
      }
      assert.ok(refused !== undefined, 'a write was refused')
      assert.equal(refused.code, 14, `UNAVAILABLE: ${refused.message}`)
      assert.match(refused.message, /No space left on device/)
      const health = await fetch(server.metricsUrl!.replace('/metrics', '/healthz'))
      assert.equal(health.status, 200, 'the server runs on')
      const [first] = await server.client.query({
        selector: { metric: 'disk_full', matchers: [{ key: 's', value: '0', op: 'eq' }] },
        startMs: T0,
        endMs: T0 + 20_000_000,
      })
      assert.equal(first?.timestamps.length, 20_000, 'queries answer while the disk is full')
      // The sealer keeps failing meanwhile: it is retried less and less often, and logged once.
      const sealFailures = async (): Promise<number> =>
        Number(/^v3_seal_failures (\d+)$/m.exec(await (await fetch(server.metricsUrl!)).text())?.[1] ?? 0)
      await waitFor('a failed seal', async () => ((await sealFailures()) >= 1 ? true : undefined), 60_000)
      const firstFailure = Date.now()
      await waitFor('four failed seals', async () => ((await sealFailures()) >= 4 ? true : undefined), 60_000)
      // Retried after 1, 2 and 4 s, not every second (which would take about 3 s).
      const spread = Date.now() - firstFailure
      assert.ok(spread >= 5000, `four failed seals within ${spread} ms`)
      const sealLines = server.stderr().match(/sealing blocks failed/g)?.length ?? 0
      assert.equal(sealLines, 1, `${sealLines} lines for ${await sealFailures()} failed seals`)

      // Space back: writes go on without a restart.
      await rm(filler)
      await waitFor(
        'a write to succeed again',
        async () => {
          await server.client.write(batch(11, 0, 100))
          return true
        },
        60_000,
      )
      acked.set(11, 100)
      for (const [s, n] of acked) {
        const [series] = await server.client.query({
          selector: { metric: 'disk_full', matchers: [{ key: 's', value: String(s), op: 'eq' }] },
          startMs: T0,
          endMs: T0 + n * 1000,
        })
        assert.ok((series?.timestamps.length ?? 0) >= n, `series ${s}: ${series?.timestamps.length} of ${n} points`)
      }
      await waitFor('the sealer to recover', async () =>
        /sealing blocks works again/.test(server.stderr()) ? true : undefined,
      )
      const { code } = await server.stop()
      assert.equal(code, 0, server.stderr().slice(-2000))
    } finally {
      await server.kill()
      execFileSync('umount', [mount])
      await rm(mount, { recursive: true, force: true })
    }
  })
})
