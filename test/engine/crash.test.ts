import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'

const T0 = Date.UTC(2026, 0, 1)

it('keeps every acknowledged write when the process is killed with SIGKILL', async () => {
  await killAndCheck([])
})

it('keeps every acknowledged write when killed between flushes of the write-ahead log', async () => {
  await killAndCheck(['flush-wal'])
})

async function killAndCheck(writerArgs: string[]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-crash-'))
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/crash-writer.ts', dir, ...writerArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let acked = -1
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`writer exited early with ${code}`)))
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = /^ack (\d+)$/.exec(line)
        if (!m) return
        acked = Number(m[1])
        // Enough batches that some were sealed into blocks and some are only in the write buffer.
        if (acked === 40) {
          child.kill('SIGKILL')
          resolve()
        }
      })
    })
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  await new Promise((resolve) => child.once('close', resolve))
  const engine = new BasicEngine({ dataDir: dir, sync: 'off' })
  await engine.open()
  try {
    const got = await engine.query({ selector: { metric: 'crash', matchers: [] }, startMs: T0, endMs: T0 + 1e9 })
    assert.equal(got.length, 3)
    for (const [s, series] of got.entries()) {
      const n = (acked + 1) * 100
      assert.ok(series.timestamps.length >= n, `series ${s}: ${series.timestamps.length} points, ${n} acknowledged`)
      for (let i = 0; i < n; i++) {
        assert.equal(series.timestamps[i], T0 + i * 1000)
        assert.equal(series.values[i], T0 + i * 1000 + s)
      }
    }
  } finally {
    await engine.close()
    await rm(dir, { recursive: true, force: true })
  }
}
