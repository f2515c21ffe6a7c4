import { readdir, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import {
  type ChainedBatch,
  type ColumnHandle,
  type Iterator,
  type IteratorOptions,
  RocksLevel,
} from '@nxtedition/rocksdb'
import {
  CF_BUFFER,
  CF_COLD,
  CF_DEFAULT,
  CF_HOT,
  CF_INDEX,
  CF_META,
  CF_VERSIONS,
  FLUSH_FILLER_KEY,
  META_SCHEMA_KEY,
  READ_AS_IS_SCHEMA_VERSIONS,
  SCHEMA_VERSION,
} from '../codec/schema.js'
import { UnavailableError } from '../model/errors.js'
import { type Logger, silentLogger } from './config.js'
import { LogSyncer } from './log-syncer.js'
import { makeDirs } from './make-dirs.js'

export interface Columns {
  readonly meta: ColumnHandle
  readonly index: ColumnHandle
  readonly buffer: ColumnHandle
  readonly hot: ColumnHandle
  readonly cold: ColumnHandle
  readonly versions: ColumnHandle
}

const KIB = 1024
const MIB = 1024 * KIB

/**
 * Memtable budget of each family (RocksDB `compaction: 'level'`: a write buffer of a quarter of it,
 * at most six of them). Small on purpose: RocksDB keeps a write-ahead log file until every family
 * with data in it has flushed, and when the logs outgrow four times the families' memtables
 * together it flushes the families holding the oldest one. So these budgets bound the log (about
 * 4 × 1.5 × 100 MiB in all) and the replay of a restart after kill -9; see flushWal for the idle case.
 */
const MEMTABLE_BUDGET: Readonly<Record<string, number>> = {
  [CF_DEFAULT]: 256 * KIB,
  [CF_META]: 256 * KIB,
  [CF_INDEX]: 4 * MIB,
  [CF_BUFFER]: 32 * MIB,
  [CF_HOT]: 32 * MIB,
  [CF_COLD]: 32 * MIB,
  [CF_VERSIONS]: 4 * MIB,
}

/** Write buffer size RocksDB derives from a family's budget. */
function writeBufferBytes(family: string): number {
  return (MEMTABLE_BUDGET[family] ?? 0) / 4
}

/** The log is flushed away while writes go on once it is this large, which bounds the replay of a restart. */
export const WAL_FLUSH_BYTES = 256 * MIB
/** After this long without a write, a log larger than WAL_IDLE_BYTES is flushed away. */
export const WAL_IDLE_MS = 10_000
export const WAL_IDLE_BYTES = MIB
/**
 * The size of each put that fills a memtable (see flushWal). The binding's write runs on the event
 * loop, and one put of a whole write buffer and a quarter more (up to 10 MiB) held it for 30 to
 * 360 ms on two cores, in front of any query that came meanwhile.
 */
const FILL_PIECE_BYTES = 512 * KIB
/**
 * Keys a read takes on the calling thread (getManyNow): a day of one series' cold runs. Cold runs
 * are a few KiB each and a series' runs share blocks, so such a read holds the loop for a few
 * hundred µs at most: 7–9 µs a run for 13 or 32 consecutive runs read from the OS page cache, as
 * queries read them (the cold family has no block cache: see open()).
 */
export const SYNC_GET_MAX_KEYS = 32

/**
 * Reads a key range of `db` in pages of up to 1,000 entries; the iterator (and its snapshot) is
 * created before this returns its promise, so writes made after the call are not seen.
 */
export function scanPages(
  db: RocksLevel,
  options: IteratorOptions,
  onPage: (entries: Array<[Buffer, Buffer]>) => void,
): Promise<void> {
  const it = db.iterator(options)
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

/**
 * One iterator (and its snapshot) over a key range, read on the calling thread at the places a
 * caller seeks to. A read of many series' blocks costs a seek per series this way instead of an
 * iterator per series: opening a RocksDB iterator, one hand-off to the thread pool to read it and
 * one to close it took 65-78 µs a series in a scratch read of 100,000 one-block series, a seek
 * and a synchronous read on one iterator 10-12 µs.
 */
export class RangeCursor {
  private closed = false
  /**
   * Entries the last read returned: the next range, of the next series, likely holds as many. The
   * first read of a cursor asks for 16.
   */
  private lastCount = 15

  constructor(private readonly it: Iterator) {}

  /**
   * The entries in [gte, lt), in key order, read now. `most` bounds the entries the range can hold
   * (one a block or run): no read asks for more than are left of it. The first read asks for one
   * more than the last range held (at most 64), as the series of a wide read tend to look alike, and
   * each next one for twice as many. Every entry read past the range's end is a key and a value the
   * binding made buffers of for nothing: asking for 16 each time made that most of the read of
   * 150,000 series of four blocks.
   */
  read(gte: Buffer, lt: Buffer, most: number): Array<[Buffer, Buffer]> {
    if (this.closed) throw new Error('BUG: a read of a closed range cursor')
    this.it.seek(gte)
    const out: Array<[Buffer, Buffer]> = []
    let ask = Math.min(this.lastCount + 1, 64)
    reading: while (out.length < most) {
      const { rows, finished } = this.it._nextvSync(Math.min(most - out.length, ask))
      ask = Math.min(2 * ask, 1024)
      for (let k = 0; k + 1 < rows.length; k += 2) {
        const key = rows[k] as Buffer
        if (Buffer.compare(key, lt) >= 0) break reading
        out.push([key, rows[k + 1] as Buffer])
      }
      if (finished || rows.length === 0) break
    }
    this.lastCount = out.length
    return out
  }

  close(): Promise<void> {
    this.closed = true
    return this.it.close()
  }
}

/**
 * The RocksDB database with its fixed column families. The hot family favours writes and cached
 * reads (no compression on the levels that churn, a block cache); the cold family stores long runs
 * once and is read rarely, so it is compressed with ZSTD on every level.
 */
export class RocksStore {
  private rocks: RocksLevel | undefined
  private cfs: Columns | undefined
  /** The last sequence number seen by settleWal, when it changed, and what it was after the last flush. */
  private lastSeq = -1
  private lastSeqChangeMs = 0
  private flushedAtSeq = -1
  /** The sequence number at settleWal's last measurement of the log, and the bytes it found. */
  private measuredSeq = -1
  private measuredBytes = 0

  /** Syncs the write-ahead log off the event loop (see writeBatch). */
  private readonly log: LogSyncer
  /** Set while flushes of the log are put off for want of disk space (see flushWal), to log it once. */
  private shortOfSpace = false

  /**
   * `walFlushBytes`: the log size that makes settleWal flush while writes go on (tests set a small
   * one). `freeBytes`: the space the filesystem lets the server use (tests give a fake one).
   */
  constructor(
    readonly dataDir: string,
    private readonly walFlushBytes = WAL_FLUSH_BYTES,
    private readonly logger: Logger = silentLogger,
    /** The bytes the filesystem of the folder lets the server use. */
    readonly freeBytes: () => Promise<number> = () => freeBytesOf(dataDir),
  ) {
    this.log = new LogSyncer(dataDir)
  }

  /**
   * Writes a batch; when `durable`, resolves only once the write-ahead log holding it is on disk.
   * The binding's synced write holds the event loop for its fsync (0.5 to 9 ms measured on this
   * project's machine): LogSyncer.write runs the fsync in the thread pool instead.
   */
  writeBatch(batch: ChainedBatch, durable: boolean): Promise<void> {
    return this.log.write(batch, durable)
  }

  /** Makes every write made before this call durable (see LogSyncer.sync). */
  syncWal(): Promise<void> {
    return this.log.sync()
  }

  /** Syncs of the log run so far. */
  get walSyncs(): number {
    return this.log.syncs
  }

  /** The log files the last sync covered, by name. */
  get walSynced(): readonly string[] {
    return this.log.lastSynced
  }

  get db(): RocksLevel {
    if (!this.rocks) throw new UnavailableError('the engine is not open')
    return this.rocks
  }

  async open(blockCacheBytes: number): Promise<void> {
    try {
      await makeDirs(this.dataDir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const why =
        code === 'EEXIST' || code === 'ENOTDIR' ? 'it, or a folder above it, is not a folder' : (err as Error).message
      throw new UnavailableError(`cannot create the database folder ${this.dataDir}: ${why}`, { cause: err })
    }
    // abstract-level opens a new database by itself on the next tick, without our column families,
    // unless open() is called in the same tick as the constructor: so both happen here, together.
    this.rocks = new RocksLevel(this.dataDir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    try {
      await this.rocks.open({
        createIfMissing: true,
        walCompression: false,
        cacheSize: 8 * MIB,
        columns: {
          [CF_DEFAULT]: { cacheSize: 0, ...budget(CF_DEFAULT) },
          [CF_META]: { cacheSize: MIB, ...budget(CF_META) },
          [CF_INDEX]: { cacheSize: 16 * MIB, optimize: 'point-lookup', ...budget(CF_INDEX) },
          // Sealed points leave the buffer within seconds: no compression.
          [CF_BUFFER]: { compression: false, cacheSize: 0, ...budget(CF_BUFFER) },
          [CF_HOT]: { cacheSize: blockCacheBytes, ...budget(CF_HOT) },
          // Universal compaction, not level: the binding's level style leaves levels 0 and 1
          // uncompressed, where a small data set's cold runs all live; universal compresses every
          // output but the newest fifth with ZSTD.
          //
          // No block cache: what a query makes of a cold run (its decoded points, or its summary)
          // is kept in the decoded-block cache, where a repeated read finds it without RocksDB. A
          // block cache held a second copy, and taking a block into it costs fresh memory: a first
          // read cost 45–59 µs against 23 µs without (page faults, on a server just started); a
          // block read again comes from the OS page cache instead (23 µs against 7–17).
          [CF_COLD]: {
            compression: true,
            cacheSize: 0,
            blockSize: 16 * 1024,
            compaction: 'universal',
            memtableMemoryBudget: MEMTABLE_BUDGET[CF_COLD],
          },
          // Small values read only where writes of one point meet (late writes, repair); a few hours
          // of blocks, dropped by range deletes.
          [CF_VERSIONS]: { compression: false, cacheSize: 0, ...budget(CF_VERSIONS) },
        },
      })
    } catch (err) {
      throw new UnavailableError(`cannot open the database in ${this.dataDir}: ${openFailure(err)}`, { cause: err })
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
      versions: need(CF_VERSIONS),
    }
    await this.checkSchema()
  }

  /**
   * Keeps the write-ahead log small: flushes every family when no write came for WAL_IDLE_MS and the
   * log holds more than WAL_IDLE_BYTES, or at once when it holds more than walFlushBytes. The
   * sealer calls it on every tick. Without it a family written rarely (meta, index) never fills a
   * memtable, and the log files it pins stay on disk however long the server is idle.
   */
  async settleWal(nowMs: number): Promise<void> {
    const seq = this.db.sequence
    if (seq !== this.lastSeq) {
      this.lastSeq = seq
      this.lastSeqChangeMs = nowMs
    }
    if (seq === this.flushedAtSeq) return
    const limit = nowMs - this.lastSeqChangeMs >= WAL_IDLE_MS ? WAL_IDLE_BYTES : this.walFlushBytes
    // Only a write makes the log grow, and every write moves the sequence number: a log measured
    // under the limit at this sequence number still is, so an idle server with a small log does not
    // list the data folder every second.
    if (seq === this.measuredSeq && this.measuredBytes <= limit) return
    const bytes = await this.walBytes()
    this.measuredSeq = seq
    this.measuredBytes = bytes
    if (bytes > limit) await this.flushWal()
  }

  /** Bytes of the write-ahead log files (their length; RocksDB preallocates more on disk for the live one). */
  async walBytes(): Promise<number> {
    let total = 0
    for (const name of await readdir(this.dataDir)) {
      if (!name.endsWith('.log')) continue
      const info = await stat(join(this.dataDir, name)).catch(() => undefined)
      total += info?.size ?? 0
    }
    return total
  }

  /**
   * Flushes every family's memtables, so that RocksDB can drop the log files behind them. The
   * binding has no flush call, and max_total_wal_size does not reach RocksDB through it, so this
   * fills each memtable instead: puts of FLUSH_FILLER_KEY, FILL_PIECE_BYTES at a time with the
   * event loop free between them, each deleted in the same batch (no reader ever sees it, and the
   * flush drops the values), until RocksDB switches the memtable or they add up to more than the
   * family's write buffer. RocksDB switches a full memtable at the next write, so each piece is
   * followed by a small delete in another family. With
   * compaction 'level' a family flushes only once two memtables wait, and whether one already waits
   * cannot be read through the binding: a family is filled again when no table file appeared. The
   * families whose records die young are filled twice (see fillFamilies). Costs at most about 55 MiB
   * of log writes (twice that when every fill must be repeated), dropped with the rest.
   */
  async flushWal(): Promise<void> {
    // The fill writes log files before the flushes let the old ones go: on a disk short of space it
    // would take the last of it, and the server could neither write nor stop cleanly. The log stays
    // as it is until there is room (it is only replayed at the next start).
    if (!(await this.roomFor(FLUSH_FREE_BYTES))) return
    const filler = Buffer.alloc(FILL_PIECE_BYTES)
    // A compaction can pass for the flush of a family that still holds a memtable: a pass that
    // leaves more than the newest log behind is repeated.
    for (let pass = 0; pass < 3; pass++) {
      if (!(await this.fillFamilies(filler))) return
      await this.backgroundIdle()
      if ((await this.walBytes()) <= WAL_IDLE_BYTES) break
    }
    this.flushedAtSeq = this.db.sequence
  }

  /** Whether the disk has `bytes` free for the server; when not, says so once, until a check finds the room. */
  private async roomFor(bytes: number): Promise<boolean> {
    const free = await this.freeBytes()
    if (free >= bytes) {
      if (this.shortOfSpace)
        this.logger.info({ freeBytes: free }, 'the disk has room again: the write-ahead log is flushed away')
      this.shortOfSpace = false
      return true
    }
    if (!this.shortOfSpace) {
      this.shortOfSpace = true
      this.logger.warn(
        { freeBytes: free, neededBytes: bytes, walBytes: await this.walBytes() },
        'the disk is short of space: the write-ahead log is not flushed away until it has room (its flush writes filler records first)',
      )
    }
    return false
  }

  /** Fills every family's memtable in turn; false when it stopped for want of disk space. */
  private async fillFamilies(filler: Buffer): Promise<boolean> {
    const key = Buffer.from(FLUSH_FILLER_KEY)
    for (const role of FILL_ORDER) {
      const column = this.columns[role]
      const trigger = role === 'meta' ? this.columns.index : this.columns.meta
      const size = fillerBytes(FAMILY_OF_ROLE[role])
      // Writes may have taken space since the pass began.
      if (!(await this.roomFor(2 * size + FILL_RESERVE_BYTES))) return false
      for (let attempt = 0; attempt < 2; attempt++) {
        await this.backgroundIdle()
        const before = await this.newestFile('.sst')
        // Each piece is followed by the small delete that switches a full memtable. A switch starts a
        // new log file, and the fill stops there: a piece written after it would sit in the new
        // memtable and keep the logs before it on disk until that memtable filled.
        const log = await this.newestFile('.log')
        for (let written = 0; written < size; written += filler.length) {
          const fill = this.db.batch()
          fill._put(key, filler.subarray(0, Math.min(filler.length, size - written)), { column })
          fill._del(key, { column })
          await fill.write({ sync: false })
          const next = this.db.batch()
          next._del(key, { column: trigger })
          await next.write({ sync: false })
          if ((await this.newestFile('.log')) > log) break
          // The binding writes on the event loop: calls waiting for it go between the pieces.
          await new Promise((resolve) => setImmediate(resolve))
        }
        await this.backgroundIdle()
        if ((await this.newestFile('.sst')) > before) break
      }
    }
    return true
  }

  /** Waits (up to 10 s) until RocksDB runs no flush and no compaction. */
  private async backgroundIdle(): Promise<void> {
    const deadline = Date.now() + 10_000
    const busy = (): boolean =>
      this.db.getProperty('rocksdb.num-running-flushes') !== '0' ||
      this.db.getProperty('rocksdb.num-running-compactions') !== '0'
    // A flush is scheduled by the write that switched the memtable; give it a moment to start.
    await new Promise((resolve) => setTimeout(resolve, 5))
    while (busy() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
  }

  /**
   * The number of the newest file ending in `suffix`: for '.sst' it grows with every flush (and
   * compaction), for '.log' with every memtable switch.
   */
  private async newestFile(suffix: '.sst' | '.log'): Promise<number> {
    let newest = 0
    for (const name of await readdir(this.dataDir)) {
      if (name.endsWith(suffix)) newest = Math.max(newest, Number.parseInt(name, 10) || 0)
    }
    return newest
  }

  get columns(): Columns {
    if (!this.cfs) throw new UnavailableError('the engine is not open')
    return this.cfs
  }

  private async checkSchema(): Promise<void> {
    const key = Buffer.from(META_SCHEMA_KEY)
    const [stored] = await this.db.getMany([key], { column: this.columns.meta })
    if (stored !== undefined) {
      const version = stored.readUInt32BE(0)
      if (version === SCHEMA_VERSION) return
      if (!READ_AS_IS_SCHEMA_VERSIONS.includes(version)) {
        throw new UnavailableError(
          `cannot open ${this.dataDir}: its schema version is ${version}, this build reads ${[...READ_AS_IS_SCHEMA_VERSIONS, SCHEMA_VERSION].join(', ')}; run v3 migrate`,
        )
      }
    }
    // A new folder, or one of an older version read as it is and marked: a build that reads only
    // the old version must refuse it from now on.
    const batch = this.db.batch()
    batch._put(key, u32(SCHEMA_VERSION), { column: this.columns.meta })
    await batch.write({ sync: true })
  }

  async getMeta(name: string): Promise<Buffer | undefined> {
    const [value] = await this.db.getMany([Buffer.from(name)], { column: this.columns.meta })
    return value
  }

  putMeta(batch: ChainedBatch, name: string, value: Buffer): void {
    batch._put(Buffer.from(name), value, { column: this.columns.meta })
  }

  /** Reads a key range in pages; the iterator (and its snapshot) is created before this returns its promise. */
  scan(options: IteratorOptions, onPage: (entries: Array<[Buffer, Buffer]>) => void): Promise<void> {
    return scanPages(this.db, options, onPage)
  }

  /** A cursor over [gte, lt) of a family (see RangeCursor); its snapshot is taken now. */
  cursor(column: ColumnHandle, gte: Buffer, lt: Buffer): RangeCursor {
    return new RangeCursor(this.db.iterator({ gte, lt, column }))
  }

  /**
   * Reads a few keys on the calling thread, at this moment; undefined when there are more than
   * SYNC_GET_MAX_KEYS or the database is not open, and the caller goes through getMany. A
   * multi-get through the thread pool costs a hand-off each way, measured at 80–100 µs for two
   * keys on a loaded two-core machine against 10 µs here: most of what a one-series query spent
   * reading. Few keys keep the event loop's stall as short as one such hand-off.
   */
  getManyNow(column: ColumnHandle, keys: Buffer[]): Array<Buffer | undefined> | undefined {
    if (keys.length > SYNC_GET_MAX_KEYS || this.rocks?.status !== 'open') return undefined
    return this.rocks._getManySync(keys, { column })
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
    // A clean stop leaves (almost) no log behind, so the next start has nothing to replay.
    if (this.rocks?.status === 'open' && this.cfs && (await this.walBytes()) > WAL_IDLE_BYTES) await this.flushWal()
    await this.log.close()
    if (this.rocks?.status === 'open') await this.rocks.close()
    this.cfs = undefined
  }
}

/**
 * Why the binding could not open a database. Its error says only "Database is not open"; RocksDB's
 * reason is the cause, and a folder another open database holds (another server on the same
 * --data) has the code LEVEL_LOCKED.
 */
function openFailure(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : undefined
  if (cause === undefined) return err instanceof Error ? err.message : String(err)
  if ((cause as { code?: unknown }).code === 'LEVEL_LOCKED') {
    return `it is in use by another server or tool, which holds its lock (${cause.message})`
  }
  return cause.message
}

/** The options that give a family its memtable budget (see MEMTABLE_BUDGET). */
function budget(family: string): { compaction: 'level'; memtableMemoryBudget: number } {
  return { compaction: 'level', memtableMemoryBudget: MEMTABLE_BUDGET[family] ?? 0 }
}

const FAMILY_OF_ROLE: Readonly<Record<keyof Columns, string>> = {
  meta: CF_META,
  index: CF_INDEX,
  buffer: CF_BUFFER,
  hot: CF_HOT,
  cold: CF_COLD,
  versions: CF_VERSIONS,
}

/**
 * A filler that surely marks a memtable full: RocksDB flushes once the memtable's arena exceeds the
 * write buffer by more than part of an arena block (at most 1 MiB), so a quarter more is enough.
 */
function fillerBytes(family: string): number {
  const wb = writeBufferBytes(family)
  return wb + Math.max(wb / 4, 64 * KIB)
}

/**
 * The families flushWal fills, in order. Meta goes last: the deletes that switch the other
 * families' memtables land in it. The families whose records are deleted soon after they are
 * written (the write buffer once sealed, hot blocks once moved, versions once expired) are flushed
 * twice: their level 0 then holds two files, which starts a compaction of level 0 with the level 1
 * files under it, and the records the deletes cover leave the disk instead of waiting, with their
 * tombstones, for the next writes.
 */
const FILL_ORDER: ReadonlyArray<keyof Columns> = [
  'buffer',
  'buffer',
  'hot',
  'hot',
  'cold',
  'versions',
  'versions',
  'index',
  'meta',
]

/** Space kept free beyond what a fill writes: the server's own writes go on meanwhile. */
const FILL_RESERVE_BYTES = 32 * MIB
/**
 * The free space a flush of the log starts with: each family may be filled twice before all the
 * log files written meanwhile go (about 55 MiB a fill of every family), plus the reserve.
 */
export const FLUSH_FREE_BYTES =
  2 * FILL_ORDER.reduce((n, role) => n + fillerBytes(FAMILY_OF_ROLE[role]), 0) + FILL_RESERVE_BYTES

/** The bytes the filesystem holding `dir` lets an unprivileged writer use. */
async function freeBytesOf(dir: string): Promise<number> {
  const fs = await statfs(dir)
  return fs.bavail * fs.bsize
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
