// Durable writes: the write-ahead log is synced off the event loop, one sync covers the writes made
// before it began, and a failed sync fails the writes waiting on it and every one after.
import assert from 'node:assert/strict'
import { appendFile, mkdtemp, readdir, rename, rm, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { LogSyncer } from '../../src/engine/log-syncer.js'
import { RocksStore } from '../../src/engine/rocks-store.js'
import { UnavailableError } from '../../src/model/errors.js'

const T0 = Date.UTC(2026, 0, 1)

function point(host: string, i: number) {
  return { metric: 'cpu', tags: [{ key: 'host', value: host }], timestamps: [T0 + i * 1000], values: [i] }
}

/** Every timestamp the engine holds of `cpu`, series after series. */
async function cpuTimestamps(engine: BasicEngine): Promise<number[]> {
  const answer = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + 60_000 })
  return answer.flatMap((s) => Array.from(s.timestamps))
}

/** cpuTimestamps of an engine opened on `dir`, closed again after. */
async function reopenedTimestamps(dir: string): Promise<number[]> {
  const reopened = new BasicEngine({ dataDir: dir, sync: 'group' })
  await reopened.open()
  try {
    return await cpuTimestamps(reopened)
  } finally {
    await reopened.close()
  }
}

/** Runs `test` on a RocksStore open in a temporary folder, then closes it and removes the folder. */
async function withStore(test: (store: RocksStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'v3-walsync-'))
  const store = new RocksStore(dir)
  try {
    await store.open(1024 * 1024)
    await test(store, dir)
  } finally {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/** Writes one key to the meta family, synced to disk when `durable`. */
async function put(store: RocksStore, key: string, durable: boolean): Promise<void> {
  const batch = store.db.batch()
  batch._put(Buffer.from(key), Buffer.from('v'), { column: store.columns.meta })
  await store.writeBatch(batch, durable)
}

describe('write-ahead log sync', () => {
  it('syncs once for the calls that come while a sync runs', () =>
    withStore(async (store) => {
      await put(store, 'k', true)
      assert.equal(store.walSyncs, 1)
      // One runs, the others share the one queued behind it.
      await Promise.all(Array.from({ length: 20 }, () => store.syncWal()))
      assert.equal(store.walSyncs, 3)
      await put(store, 'k2', false)
      assert.equal(store.walSyncs, 3)
    }))

  it('syncs a log until a sync has covered it behind a newer one, and only the logs in the folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-walsync-'))
    const syncer = new LogSyncer(dir)
    try {
      await appendFile(join(dir, '000009.log'), 'a')
      await appendFile(join(dir, 'LOG'), 'not a write-ahead log')
      await syncer.sync()
      assert.deepEqual(syncer.lastSynced, ['000009.log'])
      await appendFile(join(dir, '000009.log'), 'b')
      // RocksDB starts a new log (numbers grow past six digits): the last writes to the old one are
      // synced by the next sync, which the writes made before the switch wait for.
      await appendFile(join(dir, '000010.log'), 'c')
      await appendFile(join(dir, '1000011.log'), 'd')
      await syncer.sync()
      assert.deepEqual([...syncer.lastSynced].sort(), ['000009.log', '000010.log', '1000011.log'])
      // RocksDB writes only to its newest log: the others are complete and on disk.
      await syncer.sync()
      assert.deepEqual(syncer.lastSynced, ['1000011.log'])
      // A log that RocksDB deletes leaves the syncer; one it starts joins it.
      await unlink(join(dir, '000009.log'))
      await appendFile(join(dir, '1000012.log'), 'e')
      await syncer.sync()
      assert.deepEqual(syncer.lastSynced, ['1000011.log', '1000012.log'])
      await syncer.sync()
      assert.deepEqual(syncer.lastSynced, ['1000012.log'])
    } finally {
      await syncer.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('follows RocksDB to the log it switches to, and stops syncing the ones behind it', () =>
    withStore(async (store, dir) => {
      await put(store, 'a', true)
      const [first] = store.walSynced
      assert.equal(store.walSynced.length, 1)
      // Filling every memtable makes RocksDB switch them, and start a new log for the writes after.
      await store.flushWal()
      await put(store, 'b', true)
      const logs = (await readdir(dir)).filter((name) => name.endsWith('.log'))
      const newest = logs.sort((x, y) => Number.parseInt(x, 10) - Number.parseInt(y, 10)).at(-1)
      assert.ok(newest !== undefined && newest !== first, `${first} then ${logs.join(', ')}`)
      assert.ok(store.walSynced.includes(newest), `${newest} not in ${store.walSynced.join(', ')}`)
      await put(store, 'c', true)
      assert.deepEqual(store.walSynced, [newest])
    }))

  it('acknowledges synced writes, which a reopened engine finds', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-walsync-'))
    try {
      const engine = new BasicEngine({ dataDir: dir, sync: 'group' })
      await engine.open()
      const before = engine.store.walSyncs
      await Promise.all(Array.from({ length: 50 }, (_, i) => engine.write({ series: [point(`h${i % 5}`, i)] })))
      // Group commit: fifty concurrent writes take far fewer than fifty syncs.
      const syncs = engine.store.walSyncs - before
      assert.ok(syncs >= 1 && syncs < 50, `${syncs} syncs for 50 writes`)
      await engine.close()
      assert.equal((await reopenedTimestamps(dir)).length, 50)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('answers writes that come while a sync runs in the order they came, each once a query sees it, and keeps them', async () => {
    // A group goes to RocksDB while the group before it waits for its sync: the answers still come in
    // the order of the writes, and each only once its point is in the head, where queries read.
    const dir = await mkdtemp(join(tmpdir(), 'v3-walsync-'))
    try {
      const engine = new BasicEngine({ dataDir: dir, sync: 'group' })
      await engine.open()
      const WRITERS = 8
      const EACH = 25
      const answered: number[] = []
      const unseen: number[] = []
      let issued = 0
      const all = async (of: BasicEngine): Promise<number[]> => {
        const got = await of.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + 1e6 })
        return got.flatMap((s) => Array.from(s.timestamps))
      }
      await Promise.all(
        Array.from({ length: WRITERS }, async (_, w) => {
          for (let k = 0; k < EACH; k++) {
            const i = issued++
            await engine.write({ series: [point(`h${w}`, i)] })
            answered.push(i)
            if (!(await all(engine)).includes(T0 + i * 1000)) unseen.push(i)
          }
        }),
      )
      assert.deepEqual(unseen, [], 'answered writes a query did not see')
      assert.deepEqual(
        answered,
        Array.from({ length: WRITERS * EACH }, (_, i) => i),
      )
      await engine.close()
      const reopened = new BasicEngine({ dataDir: dir })
      await reopened.open()
      try {
        assert.equal((await all(reopened)).length, WRITERS * EACH)
      } finally {
        await reopened.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('fails the write whose sync fails, and every later durable write, without losing the engine state; close still releases the folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-walsync-'))
    const moved = `${dir}-moved`
    const engine = new BasicEngine({ dataDir: dir, sync: 'group' })
    try {
      await engine.open()
      await engine.write({ series: [point('a', 1)] })
      // RocksDB keeps its open files; the sync, which lists the folder by name, cannot find it.
      await rename(dir, moved)
      await assert.rejects(engine.write({ series: [point('a', 2)] }), (err: unknown) => {
        assert.ok(err instanceof UnavailableError)
        assert.match(err.message, /write-ahead log could not be synced/)
        return true
      })
      await rename(moved, dir)
      // The folder is back, but a sync failed once: Linux may have dropped the pages it could not
      // write, so no later sync can vouch for them.
      await assert.rejects(engine.write({ series: [point('a', 3)] }), UnavailableError)
      // The unacknowledged writes reached the database, and the engine shows what it holds.
      assert.deepEqual(await cpuTimestamps(engine), [T0 + 1000, T0 + 2000, T0 + 3000])
      // Closing cannot seal (its write must be synced), but it still releases the folder: an engine
      // opened on it in the same process replays the write buffer and finds every point.
      await assert.rejects(engine.close())
      assert.deepEqual(await reopenedTimestamps(dir), [T0 + 1000, T0 + 2000, T0 + 3000])
    } finally {
      await rename(moved, dir).catch(() => undefined)
      await engine.close().catch(() => undefined)
      await rm(dir, { recursive: true, force: true })
    }
  })
})
