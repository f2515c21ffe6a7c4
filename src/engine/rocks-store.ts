import { mkdir } from 'node:fs/promises'
import { type ChainedBatch, type ColumnHandle, type IteratorOptions, RocksLevel } from '@nxtedition/rocksdb'
import {
  CF_BUFFER,
  CF_COLD,
  CF_DEFAULT,
  CF_HOT,
  CF_INDEX,
  CF_META,
  META_SCHEMA_KEY,
  SCHEMA_VERSION,
} from '../codec/schema.js'
import { UnavailableError } from '../model/errors.js'

export interface Columns {
  readonly meta: ColumnHandle
  readonly index: ColumnHandle
  readonly buffer: ColumnHandle
  readonly hot: ColumnHandle
  readonly cold: ColumnHandle
}

const MIB = 1024 * 1024

/**
 * The RocksDB database with its fixed column families. The hot family favours writes and cached
 * reads (no compression on the levels that churn, a block cache); the cold family stores long runs
 * once and is read rarely, so it is compressed with ZSTD on every level.
 */
export class RocksStore {
  private rocks: RocksLevel | undefined
  private cfs: Columns | undefined

  constructor(readonly dataDir: string) {}

  get db(): RocksLevel {
    if (!this.rocks) throw new UnavailableError('the engine is not open')
    return this.rocks
  }

  async open(blockCacheBytes: number): Promise<void> {
    await mkdir(this.dataDir, { recursive: true })
    // abstract-level opens a new database by itself on the next tick, without our column families,
    // unless open() is called in the same tick as the constructor: so both happen here, together.
    this.rocks = new RocksLevel(this.dataDir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    try {
      await this.rocks.open({
        createIfMissing: true,
        walCompression: false,
        cacheSize: 8 * MIB,
        columns: {
          [CF_DEFAULT]: { cacheSize: 0 },
          [CF_META]: { cacheSize: MIB },
          [CF_INDEX]: { cacheSize: 16 * MIB, optimize: 'point-lookup' },
          // Sealed points leave the buffer within seconds: no compression, small memtables.
          [CF_BUFFER]: { compression: false, cacheSize: 0, compaction: 'level', memtableMemoryBudget: 64 * MIB },
          [CF_HOT]: { compaction: 'level', memtableMemoryBudget: 128 * MIB, cacheSize: blockCacheBytes },
          [CF_COLD]: { compression: true, cacheSize: blockCacheBytes, blockSize: 16 * 1024 },
        },
      })
    } catch (err) {
      throw new UnavailableError(`cannot open the database in ${this.dataDir}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    const c = this.rocks.columns
    const need = (name: string): ColumnHandle => {
      const handle = c[name]
      if (!handle) throw new Error(`BUG: column family ${name} missing after open`)
      return handle
    }
    this.cfs = {
      meta: need(CF_META),
      index: need(CF_INDEX),
      buffer: need(CF_BUFFER),
      hot: need(CF_HOT),
      cold: need(CF_COLD),
    }
    await this.checkSchema()
  }

  get columns(): Columns {
    if (!this.cfs) throw new UnavailableError('the engine is not open')
    return this.cfs
  }

  private async checkSchema(): Promise<void> {
    const key = Buffer.from(META_SCHEMA_KEY)
    const [stored] = await this.db.getMany([key], { column: this.columns.meta })
    if (stored === undefined) {
      const batch = this.db.batch()
      batch.put(key, u32(SCHEMA_VERSION), { column: this.columns.meta })
      await batch.write({ sync: true })
      return
    }
    const version = stored.readUInt32BE(0)
    if (version !== SCHEMA_VERSION) {
      throw new UnavailableError(
        `cannot open ${this.dataDir}: its schema version is ${version}, this build reads ${SCHEMA_VERSION}; run v3 migrate`,
      )
    }
  }

  async getMeta(name: string): Promise<Buffer | undefined> {
    const [value] = await this.db.getMany([Buffer.from(name)], { column: this.columns.meta })
    return value
  }

  putMeta(batch: ChainedBatch, name: string, value: Buffer): void {
    batch.put(Buffer.from(name), value, { column: this.columns.meta })
  }

  /** Reads a key range in pages; the iterator (and its snapshot) is created before this returns its promise. */
  scan(options: IteratorOptions, onPage: (entries: Array<[Buffer, Buffer]>) => void): Promise<void> {
    const it = this.db.iterator(options)
    return (async () => {
      try {
        for (;;) {
          const page = await it.nextv(1000)
          if (page.length === 0) break
          onPage(page)
        }
      } finally {
        await it.close()
      }
    })()
  }

  async getMany(column: ColumnHandle, keys: Buffer[]): Promise<Array<Buffer | undefined>> {
    const out: Array<Buffer | undefined> = []
    for (let i = 0; i < keys.length; i += 4096) {
      const part = await this.db.getMany(keys.slice(i, i + 4096), { column })
      for (const v of part) out.push(v)
    }
    return out
  }

  async close(): Promise<void> {
    if (this.rocks?.status === 'open') await this.rocks.close()
    this.cfs = undefined
  }
}

export function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n >>> 0, 0)
  return b
}

export function f64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeDoubleBE(n, 0)
  return b
}
