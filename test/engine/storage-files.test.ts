// What the data folder holds: the write-ahead log shrinks once writes stop, and the retired posting
// records of older data folders are removed at open.
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { ColumnHandle } from '@nxtedition/rocksdb'
import {
  INDEX_PREFIX_METRIC_RETIRED,
  INDEX_PREFIX_TAG_RETIRED,
  META_SCHEMA_KEY,
  SCHEMA_VERSION,
} from '../../src/codec/schema.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { silentLogger } from '../../src/engine/config.js'
import { FLUSH_FREE_BYTES, RocksStore, WAL_IDLE_BYTES, WAL_IDLE_MS } from '../../src/engine/rocks-store.js'
import { ManualClock } from './manual-clock.js'

const T0 = Date.UTC(2026, 0, 1)

function engineAt(dataDir: string, clock: ManualClock): BasicEngine {
  return new BasicEngine({ dataDir, sync: 'off', sealIntervalMs: 3_600_000, moveIntervalMs: 3_600_000 }, { clock })
}

async function writeSeries(engine: BasicEngine, hosts: number, points: number): Promise<void> {
  const timestamps = Array.from({ length: points }, (_, i) => T0 + i * 10_000)
  for (let h = 0; h < hosts; h++) {
    await engine.write({
      series: [
        { metric: 'cpu', tags: [{ key: 'host', value: `h${h}` }], timestamps, values: timestamps.map((_, i) => i + h) },
      ],
    })
  }
}

const MIB = 1024 * 1024

/** Two maintenance ticks an idle spell apart: the first notes the last write, the second flushes. */
async function idleFlush(engine: BasicEngine, clock: ManualClock): Promise<void> {
  await engine.compact()
  clock.t += WAL_IDLE_MS
  await engine.compact()
}

/** Polls `done` until it holds or 10 s have passed: RocksDB flushes and compacts in the background. */
async function settle(done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!(await done()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
}

async function tableBytes(dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir)) if (name.endsWith('.sst')) total += (await stat(join(dir, name))).size
  return total
}

async function familyBytes(engine: BasicEngine, column: ColumnHandle): Promise<number> {
  let total = 0
  await engine.store.scan({ column }, (page) => {
    for (const [key, value] of page) total += key.length + value.length
  })
  return total
}

/**
 * Writes pieces of 256 KiB into the cold family, whose memtable (8 MiB) none of the tests fills:
 * log that only a flush of every family lets go.
 */
function pieceWriter(store: RocksStore): (pieces: number) => Promise<void> {
  let written = 0
  return async (pieces) => {
    for (let i = 0; i < pieces; i++, written++) {
      const batch = store.db.batch()
      batch._put(Buffer.from(`piece-${written}`), Buffer.alloc(256 * 1024, written), { column: store.columns.cold })
      await batch.write()
    }
  }
}

describe('data folder', () => {
  it('flushes the write-ahead log away once writes stop, and keeps every point', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const clock = new ManualClock(T0 + 48 * 3_600_000)
    let engine = engineAt(dir, clock)
    try {
      await engine.open()
      await writeSeries(engine, 20, 8640)
      await engine.compact()
      assert.ok((await engine.store.walBytes()) > WAL_IDLE_BYTES, 'the test writes more than the idle threshold')
      await idleFlush(engine, clock)
      // RocksDB drops the log files once its background flushes finish.
      await settle(async () => (await engine.store.walBytes()) <= WAL_IDLE_BYTES)
      assert.ok((await engine.store.walBytes()) <= WAL_IDLE_BYTES, `${await engine.store.walBytes()} bytes of log`)
      await engine.close()
      engine = engineAt(dir, clock)
      await engine.open()
      const got = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + 86_400_000 })
      assert.equal(got.length, 20)
      for (const s of got) assert.equal(s.timestamps.length, 8640)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('drops the sealed write-buffer records from the table files once writes stop', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const clock = new ManualClock(T0 + 48 * 3_600_000)
    const engine = engineAt(dir, clock)
    try {
      await engine.open()
      // About 2.6 M points: their write-buffer records outgrow the family's memtables many times
      // over, so most of them reach table files before the seal deletes them.
      await writeSeries(engine, 300, 8640)
      await engine.compact()
      const cold = await familyBytes(engine, engine.store.columns.cold)
      await idleFlush(engine, clock)
      // Compactions started by the idle flush end in the background.
      await settle(async () => (await tableBytes(dir)) <= 2 * cold + MIB)
      const tables = await tableBytes(dir)
      assert.ok(tables <= 2 * cold + MIB, `${tables} bytes of table files for ${cold} bytes of cold runs`)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('leaves (almost) no write-ahead log behind a clean stop', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const clock = new ManualClock(T0 + 48 * 3_600_000)
    const engine = engineAt(dir, clock)
    try {
      await engine.open()
      await writeSeries(engine, 20, 8640)
      assert.ok((await engine.store.walBytes()) > WAL_IDLE_BYTES, 'the test writes more than the idle threshold')
      await engine.close()
      assert.ok((await engine.store.walBytes()) <= WAL_IDLE_BYTES, `${await engine.store.walBytes()} bytes of log`)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('flushes the log while writes go on once it passes the flush threshold, and not before', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const store = new RocksStore(dir, 2 * MIB)
    try {
      await store.open(0)
      const write = pieceWriter(store)
      await write(6)
      await store.settleWal(T0)
      const under = await store.walBytes()
      assert.ok(under > WAL_IDLE_BYTES && under < 2 * MIB, `${under} bytes of log stay under the threshold`)
      await write(6)
      // A second later: writes are still going on, so the idle rule does not apply.
      await store.settleWal(T0 + 1000)
      const after = await store.walBytes()
      assert.ok(after <= WAL_IDLE_BYTES, `${after} bytes of log once it passed the threshold`)
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('puts the flush of the log off while the disk is short of space, and says so once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const warnings: string[] = []
    const logger = { ...silentLogger, warn: (_: object, msg?: string) => void warnings.push(msg ?? '') }
    let free = FLUSH_FREE_BYTES - 1
    const store = new RocksStore(dir, 2 * MIB, logger, async () => free)
    try {
      await store.open(0)
      const write = pieceWriter(store)
      await write(12)
      const before = await store.walBytes()
      assert.ok(before > 2 * MIB, `${before} bytes of log pass the threshold`)
      // The fill would write more log than the disk has room for: nothing is written, once warned.
      await store.settleWal(T0)
      await store.flushWal()
      assert.equal(await store.walBytes(), before, 'no filler was written')
      assert.deepEqual(warnings.length, 1, warnings.join('; '))
      assert.match(warnings[0]!, /short of space/)
      await store.flushWal()
      assert.equal(warnings.length, 1, 'said once')
      // Room at the start, none a moment later: the fill stops before a family is filled.
      let checks = 0
      const shrinking = new RocksStore(dir, 2 * MIB, logger, async () => (checks++ === 0 ? FLUSH_FREE_BYTES : 0))
      await store.close()
      await shrinking.open(0)
      const reopened = await shrinking.walBytes()
      await shrinking.flushWal()
      assert.equal(await shrinking.walBytes(), reopened, 'no filler was written once the room was gone')
      assert.equal(warnings.length, 2, warnings.join('; '))
      await shrinking.close()
      await store.open(0)
      // With room again the log goes.
      free = FLUSH_FREE_BYTES
      await store.flushWal()
      const after = await store.walBytes()
      assert.ok(after <= WAL_IDLE_BYTES, `${after} bytes of log once the disk has room`)
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('measures the log once per write, not on every tick of an idle server', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const store = new RocksStore(dir)
    try {
      await store.open(0)
      const measure = store.walBytes.bind(store)
      let measured = 0
      store.walBytes = () => {
        measured++
        return measure()
      }
      const write = async (): Promise<void> => {
        const batch = store.db.batch()
        batch._put(Buffer.from('k'), Buffer.from('v'), { column: store.columns.meta })
        await batch.write()
      }
      await write()
      await store.settleWal(T0)
      assert.equal(measured, 1, 'a write is measured')
      for (let tick = 1; tick <= 3; tick++) await store.settleWal(T0 + WAL_IDLE_MS * tick)
      assert.equal(measured, 1, 'idle ticks with a small log list nothing')
      await write()
      await store.settleWal(T0 + WAL_IDLE_MS * 4)
      assert.equal(measured, 2, 'the next write is measured')
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('removes the posting records an older build wrote, and still selects by tag', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const clock = new ManualClock(T0 + 48 * 3_600_000)
    let engine = engineAt(dir, clock)
    try {
      await engine.open()
      await writeSeries(engine, 3, 10)
      await engine.close()
      // Posting records as builds before their retirement wrote them.
      const store = new RocksStore(dir)
      await store.open(0)
      const batch = store.db.batch()
      const id = Buffer.alloc(8, 7)
      const empty = Buffer.alloc(0)
      const column = store.columns.index
      batch._put(Buffer.concat([Buffer.from([INDEX_PREFIX_METRIC_RETIRED]), Buffer.from('cpu\0'), id]), empty, {
        column,
      })
      batch._put(Buffer.concat([Buffer.from([INDEX_PREFIX_TAG_RETIRED]), Buffer.from('cpu\0host\0h1\0'), id]), empty, {
        column,
      })
      await batch.write()
      await store.close()

      engine = engineAt(dir, clock)
      await engine.open()
      const got = await engine.query({
        selector: { metric: 'cpu', matchers: [{ key: 'host', value: 'h1', op: 'eq' }] },
        startMs: T0,
        endMs: T0 + 86_400_000,
      })
      assert.equal(got.length, 1)
      const left: Buffer[] = []
      await engine.store.scan({ column: engine.store.columns.index }, (page) => {
        for (const [key] of page) left.push(key)
      })
      assert.deepEqual(
        left.map((k) => k[0]),
        [0x53, 0x53, 0x53],
        'only the three series definitions',
      )
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
  it('opens a folder of the schema version before packed timestamps, marks it, and refuses an unknown one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'v3-files-'))
    const clock = new ManualClock(T0 + 86_400_000)
    let engine = engineAt(dir, clock)
    const setVersion = async (version: number): Promise<void> => {
      const store = new RocksStore(dir)
      await store.open(0)
      const batch = store.db.batch()
      store.putMeta(batch, META_SCHEMA_KEY, Buffer.from([0, 0, 0, version]))
      await batch.write()
      await store.close()
    }
    const storedVersion = async (): Promise<number | undefined> =>
      (await engine.store.getMeta(META_SCHEMA_KEY))?.readUInt32BE(0)
    try {
      await engine.open()
      assert.equal(await storedVersion(), SCHEMA_VERSION)
      await writeSeries(engine, 2, 10)
      await engine.close()

      await setVersion(1)
      engine = engineAt(dir, clock)
      await engine.open()
      assert.equal(await storedVersion(), 2, 'version 1 is read as it is and marked 2')
      const got = await engine.query({ selector: { metric: 'cpu', matchers: [] }, startMs: T0, endMs: T0 + 86_400_000 })
      assert.deepEqual(
        got.map((s) => s.timestamps.length),
        [10, 10],
      )
      await engine.close()

      await setVersion(3)
      engine = engineAt(dir, clock)
      await assert.rejects(engine.open(), /its schema version is 3, this build reads 1, 2; run v3 migrate/)
    } finally {
      await engine.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
