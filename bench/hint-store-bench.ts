// The hint store's group commit: appends of 200-byte bodies to a fresh store in a temp folder, one
// caller at a time and 64 at once, beside the same callers each writing their own synced batch
// straight to the same kind of database (SmallDb.write: one batch each, the fsyncs shared by
// LogSyncer in the thread pool).
//   npm run bench -- --hints
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HintStore } from '../src/cluster/hint-store.js'
import { SmallDb } from '../src/engine/small-db.js'

const N = 4000
const body = new Uint8Array(200).fill(7)

async function inFolder(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-hints-bench-'))
  try {
    await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function callers(count: number, each: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0
  const start = performance.now()
  await Promise.all(
    Array.from({ length: count }, async () => {
      while (next < N) await each(next++)
    }),
  )
  return N / ((performance.now() - start) / 1000)
}

function report(name: string, perSecond: number): void {
  console.log(`${name.padEnd(52)} ${Math.round(perSecond).toString().padStart(8)} appends/s`)
}

/** Appends per second of the hint store and of plain synced batches, 1 and 64 callers, printed as a table. */
export async function hintStoreBench(): Promise<void> {
  for (const concurrency of [1, 64]) {
    await inFolder(async (dir) => {
      const store = await HintStore.open({ dir, maxBytes: 1 << 30, maxAgeMs: 3_600_000 })
      report(`HintStore.append, ${concurrency} caller(s)`, await callers(concurrency, () => store.append('n1', body)))
      await store.close()
    })
  }
  for (const concurrency of [1, 64]) {
    await inFolder(async (dir) => {
      const db = await SmallDb.open(dir)
      const key = (i: number): Buffer => Buffer.from(`h${i.toString().padStart(10, '0')}`)
      const value = Buffer.from(body)
      report(
        `one synced batch per append, ${concurrency} caller(s)`,
        await callers(concurrency, (i) => db.write([{ type: 'put', key: key(i), value }], { sync: true })),
      )
      await db.close()
    })
  }
}
