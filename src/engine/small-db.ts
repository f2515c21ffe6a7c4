import { type IteratorOptions, RocksLevel } from '@nxtedition/rocksdb'
import { UnavailableError } from '../model/errors.js'
import { LogSyncer } from './log-syncer.js'
import { makeDirs } from './make-dirs.js'
import { scanPages } from './rocks-store.js'

const KIB = 1024
const MIB = 1024 * KIB

/** Options of a SmallDb; every field has a default. */
export interface SmallDbOptions {
  /**
   * Memtable budget in bytes (RocksDB `compaction: 'level'`: a write buffer of a quarter of it, at
   * most six of them). It also bounds the write-ahead log: with one family, a log file is dropped
   * as soon as the memtables it covers are flushed. Default 4 MiB.
   */
  readonly memtableBytes?: number
  /** Block cache in bytes; 0 disables it. Default 1 MiB. */
  readonly cacheBytes?: number
}

/** One write of a SmallDb batch: a put of value under key, or a delete of key. */
export type SmallDbWrite =
  | { readonly type: 'put'; readonly key: Buffer; readonly value: Buffer }
  | { readonly type: 'del'; readonly key: Buffer }

/** A key range: from gte (inclusive) to lt or lte, at most limit entries (default all). */
export interface SmallDbRange {
  readonly gte: Buffer
  readonly lt?: Buffer
  readonly lte?: Buffer
  readonly limit?: number
}

/**
 * A RocksDB database of its own with one family and a small memtable, for state that lives beside
 * the engine's database rather than in it: the cluster's hint queue. It is here, in the engine
 * layer, because only the engine layer talks to RocksDB (scripts/check-layers.mjs); the cluster
 * gets ordered keys, batches that are synced to the write-ahead log, and range reads.
 */
export class SmallDb {
  /** Syncs the write-ahead log off the event loop (see write). */
  private readonly log: LogSyncer

  private constructor(
    private readonly rocks: RocksLevel,
    readonly dir: string,
  ) {
    this.log = new LogSyncer(dir)
  }

  /** Opens (creating when missing) the database in dir. */
  static async open(dir: string, options: SmallDbOptions = {}): Promise<SmallDb> {
    await makeDirs(dir)
    // abstract-level opens a new database by itself on the next tick, with default options, unless
    // open() is called in the same tick as the constructor: so both happen here, together.
    const rocks = new RocksLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    try {
      await rocks.open({
        createIfMissing: true,
        walCompression: false,
        // One background thread: the database is small and written in small batches.
        parallelism: 1,
        cacheSize: options.cacheBytes ?? MIB,
        // Without a compaction style the binding leaves RocksDB's 64 MiB write buffer.
        compaction: 'level',
        memtableMemoryBudget: options.memtableBytes ?? 4 * MIB,
      })
    } catch (err) {
      throw new UnavailableError(`cannot open the database in ${dir}: ${(err as Error).message}`, { cause: err })
    }
    return new SmallDb(rocks, dir)
  }

  private get db(): RocksLevel {
    if (this.rocks.status !== 'open') throw new UnavailableError(`the database in ${this.dir} is not open`)
    return this.rocks
  }

  /**
   * Writes ops atomically, in order (a later write of the same key wins). With sync the promise
   * resolves once the batch is synced to the write-ahead log, so it survives a power loss, and the
   * fsync runs in the thread pool (LogSyncer); without, once it is in the log (it survives kill -9
   * of the process).
   */
  async write(ops: readonly SmallDbWrite[], options: { readonly sync: boolean }): Promise<void> {
    if (ops.length === 0) return
    const batch = this.db.batch()
    for (const op of ops) {
      if (op.type === 'put') batch._put(op.key, op.value)
      else batch._del(op.key)
    }
    await this.log.write(batch, options.sync)
  }

  /** The entries of range, in key order. */
  async read(range: SmallDbRange): Promise<Array<[Buffer, Buffer]>> {
    const out: Array<[Buffer, Buffer]> = []
    await this.scan(range, (page) => {
      for (const entry of page) out.push(entry)
    })
    return out
  }

  /** Reads range in pages, in key order; the iterator (and its snapshot) is created before this returns its promise. */
  scan(range: SmallDbRange, onPage: (entries: Array<[Buffer, Buffer]>) => void): Promise<void> {
    const options: IteratorOptions = { gte: range.gte }
    if (range.lt) options.lt = range.lt
    if (range.lte) options.lte = range.lte
    if (range.limit !== undefined) options.limit = range.limit
    return scanPages(this.db, options, onPage)
  }

  async close(): Promise<void> {
    await this.log.close()
    if (this.rocks.status === 'open') await this.rocks.close()
  }
}
