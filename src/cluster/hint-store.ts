import { SmallDb, type SmallDbWrite } from '../engine/small-db.js'
import { UnavailableError, ValidationError } from '../model/errors.js'

// The on-disk schema of the hint database (docs/format/hints.md). It is a database of its own, in
// the folder the node names (`<data dir>/hints`), so its keys are declared here, beside the only
// code that reads them, rather than in codec/schema.ts with the engine's.

/** Stored under META_SCHEMA_KEY; a hint folder with another version is refused at open. */
export const HINT_SCHEMA_VERSION = 1
/** 'M' name → meta value. */
const PREFIX_META = 0x4d
/** 'H' target 0x00 seq 8 → ENCODING_HINT_V1 createdMs f64 body. */
const PREFIX_HINT = 0x48
/** 'R' target → empty: the target needs repair. */
const PREFIX_REPAIR = 0x52
/** u32be: HINT_SCHEMA_VERSION. */
const META_SCHEMA_KEY = 'schema_version'
/**
 * seq 8: the highest sequence ever given to a hint, written with every batch of appends, so that
 * sequences keep growing after a restart that finds the queue empty.
 */
const META_LAST_SEQ_KEY = 'last_seq'
/** The first byte of every hint value. */
const ENCODING_HINT_V1 = 0x01
/** Ends the target in a hint key, so that no target's range holds another's ('n1' vs 'n10'). */
const TARGET_END = 0x00
const SEQ_BYTES = 8
const HINT_HEADER_BYTES = 1 + 8
/** Longest target id, in UTF-8 bytes. */
export const MAX_TARGET_BYTES = 1024
const EMPTY = Buffer.alloc(0)

/** Options of a hint store: dir, maxBytes and maxAgeMs are required. */
export interface HintStoreOptions {
  /** Folder of the hint database; created when missing. */
  readonly dir: string
  /** Total bytes of queued bodies over all targets; an append beyond it is refused (counted as dropped, reason 'full'). */
  readonly maxBytes: number
  /** Hints older than this are dropped (reason 'age') rather than delivered. */
  readonly maxAgeMs: number
  /** Clock, for tests; default Date.now. */
  readonly now?: () => number
  /**
   * Called for every drop, with target, count, bytes and reason, once the drop and the target's
   * repair mark are durable; the node logs it and marks the target for repair.
   */
  readonly onDrop?: (drop: HintDrop) => void
}

/** Hints given up for one target: too old to deliver ('age'), or refused because the store was full ('full'). */
export interface HintDrop {
  readonly target: string
  readonly hints: number
  /** Bytes of the dropped bodies. */
  readonly bytes: number
  readonly reason: 'age' | 'full'
}

/** One queued hint: its sequence (ack through it once delivered), when it was queued, and the opaque body. */
export interface Hint {
  readonly seq: number
  /** Milliseconds since the epoch, from the store's clock. */
  readonly createdMs: number
  readonly body: Uint8Array
}

/** Figures of one target: the backlog now, counters since open, and whether it needs repair. */
export interface HintTargetStats {
  readonly target: string
  /** Hints queued now, and the bytes of their bodies. */
  readonly hints: number
  readonly bytes: number
  /** createdMs of the oldest queued hint; undefined when none is queued. */
  readonly oldestMs: number | undefined
  /** Hints appended, acknowledged as delivered, and dropped since open. */
  readonly queued: number
  readonly delivered: number
  readonly dropped: number
  /** Hints of the target were dropped, and clearRepair has not been called since (survives a restart). */
  readonly needsRepair: boolean
}

/**
 * The queued hints of one target, oldest first, as parallel arrays from `head` on: sequence,
 * createdMs and body bytes of each. Kept in memory so that counters stay exact, acks and drops know
 * their keys without reading the bodies, and a peek starts its read at the first live key instead
 * of iterating over the tombstones of delivered hints.
 */
class TargetQueue {
  readonly seqs: number[] = []
  readonly created: number[] = []
  readonly sizes: number[] = []
  head = 0
  bytes = 0
  queued = 0
  delivered = 0
  dropped = 0

  constructor(
    readonly name: string,
    /** The target as it is encoded in keys. */
    readonly key: Buffer,
  ) {}

  get length(): number {
    return this.seqs.length - this.head
  }

  push(seq: number, createdMs: number, size: number): void {
    this.seqs.push(seq)
    this.created.push(createdMs)
    this.sizes.push(size)
    this.bytes += size
  }

  /** Removes the n oldest hints and returns their bytes. */
  shift(n: number): number {
    let bytes = 0
    for (let i = this.head; i < this.head + n; i++) bytes += this.sizes[i]!
    this.head += n
    this.bytes -= bytes
    // Drop the consumed front now and then, not on every shift.
    if (this.head >= 1024 && this.head * 2 >= this.seqs.length) {
      this.seqs.splice(0, this.head)
      this.created.splice(0, this.head)
      this.sizes.splice(0, this.head)
      this.head = 0
    }
    return bytes
  }

  /** Removes the hint seq wherever it is (an append whose write failed); returns its bytes, or undefined when absent. */
  remove(seq: number): number | undefined {
    for (let i = this.seqs.length - 1; i >= this.head; i--) {
      if (this.seqs[i] !== seq) continue
      const size = this.sizes[i]!
      this.seqs.splice(i, 1)
      this.created.splice(i, 1)
      this.sizes.splice(i, 1)
      this.bytes -= size
      return size
    }
    return undefined
  }
}

/** A target's repair mark; durable once its put is synced. A new object replaces it after clearRepair. */
interface RepairMark {
  durable: boolean
}

interface Waiter {
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

/**
 * The durable hinted-handoff queue: while a write's owner is down, the coordinator keeps the
 * owner's part of the write here and delivers it, in order, once the owner is back. Every change
 * is synced to RocksDB's write-ahead log before its promise resolves; changes that arrive together
 * share one synced batch (group commit).
 */
export class HintStore {
  private readonly queues = new Map<string, TargetQueue>()
  private readonly repair = new Map<string, RepairMark>()
  private readonly now: () => number
  private totalBytes = 0
  /** The sequence the next append gets. */
  private nextSeq = 1
  /** Every hint up to this sequence that is still queued is durable; later ones are being written. */
  private durableSeq = 0
  /** createdMs of the last append: createdMs never goes back, so queues are ordered by age too. */
  private lastCreatedMs = 0
  /** The batch being gathered, its waiters, and the highest sequence appended in it (0: none). */
  private group: SmallDbWrite[] = []
  private waiters: Waiter[] = []
  private groupSeq = 0
  private flushing: Promise<void> | undefined
  private closed = false

  private constructor(
    private readonly db: SmallDb,
    private readonly options: HintStoreOptions,
  ) {
    this.now = options.now ?? Date.now
  }

  /** Opens (creating when missing) the hint store in options.dir and rebuilds its backlog from disk. */
  static async open(options: HintStoreOptions): Promise<HintStore> {
    if (typeof options.dir !== 'string' || options.dir === '') {
      throw ValidationError.field('dir', 'must be a non-empty folder path')
    }
    if (!(options.maxBytes > 0)) throw ValidationError.field('maxBytes', 'must be a positive number of bytes')
    if (!(options.maxAgeMs > 0)) throw ValidationError.field('maxAgeMs', 'must be a positive number of milliseconds')
    const db = await SmallDb.open(options.dir)
    const store = new HintStore(db, options)
    try {
      await store.load()
    } catch (err) {
      await db.close()
      throw err
    }
    return store
  }

  private async load(): Promise<void> {
    const dir = this.options.dir
    const [schema] = await this.db.read({ gte: metaKey(META_SCHEMA_KEY), lte: metaKey(META_SCHEMA_KEY) })
    if (schema === undefined) {
      const version = Buffer.allocUnsafe(4)
      version.writeUInt32BE(HINT_SCHEMA_VERSION, 0)
      await this.db.write([{ type: 'put', key: metaKey(META_SCHEMA_KEY), value: version }], { sync: true })
    } else if (schema[1].length !== 4 || schema[1].readUInt32BE(0) !== HINT_SCHEMA_VERSION) {
      throw new UnavailableError(
        `cannot open the hint store in ${dir}: its schema version is ${schema[1].length === 4 ? schema[1].readUInt32BE(0) : 'unreadable'}, this build reads ${HINT_SCHEMA_VERSION}`,
      )
    }
    let maxSeq = 0
    const [last] = await this.db.read({ gte: metaKey(META_LAST_SEQ_KEY), lte: metaKey(META_LAST_SEQ_KEY) })
    if (last !== undefined && last[1].length === SEQ_BYTES) maxSeq = readSeq(last[1], 0)

    let queue: TargetQueue | undefined
    await this.db.scan({ gte: Buffer.of(PREFIX_HINT), lt: Buffer.of(PREFIX_HINT + 1) }, (page) => {
      for (const [key, value] of page) {
        const end = key.length - SEQ_BYTES - 1
        if (end < 2 || key[end] !== TARGET_END) {
          throw new UnavailableError(`cannot open the hint store in ${dir}: malformed hint key ${key.toString('hex')}`)
        }
        const seq = readSeq(key, end + 1)
        // Keys come sorted by target: decode a target once, when it changes.
        if (!queue || queue.key.length !== end - 1 || queue.key.compare(key, 1, end) !== 0) {
          const name = key.toString('utf8', 1, end)
          queue = this.queue(name, Buffer.from(key.subarray(1, end)))
        }
        if (value.length < HINT_HEADER_BYTES || value[0] !== ENCODING_HINT_V1) {
          throw new UnavailableError(
            `cannot open the hint store in ${dir}: hint ${seq} of ${queue.name} has encoding byte ${value[0]}, this build reads ${ENCODING_HINT_V1}`,
          )
        }
        const createdMs = value.readDoubleBE(1)
        const size = value.length - HINT_HEADER_BYTES
        queue.push(seq, createdMs, size)
        this.totalBytes += size
        if (seq > maxSeq) maxSeq = seq
        if (createdMs > this.lastCreatedMs) this.lastCreatedMs = createdMs
      }
    })
    await this.db.scan({ gte: Buffer.of(PREFIX_REPAIR), lt: Buffer.of(PREFIX_REPAIR + 1) }, (page) => {
      for (const [key] of page) {
        const name = key.toString('utf8', 1)
        this.queue(name, Buffer.from(key.subarray(1)))
        this.repair.set(name, { durable: true })
      }
    })
    this.nextSeq = maxSeq + 1
    this.durableSeq = maxSeq
  }

  /**
   * Queues a body for target; resolves once it is durable (synced to the WAL), so a write
   * acknowledged on the strength of this hint survives kill -9. Returns false (and reports a 'full'
   * drop) when the store is full. The body is copied.
   */
  async append(target: string, body: Uint8Array): Promise<boolean> {
    this.checkOpen()
    const key = encodeTarget(target)
    if (!(body instanceof Uint8Array)) throw ValidationError.field('body', 'must be a Uint8Array')
    const queue = this.queue(target, key)
    if (this.totalBytes + body.length > this.options.maxBytes) {
      await this.commitDrops([{ queue, hints: 1, bytes: body.length, reason: 'full' }], [])
      return false
    }
    const seq = this.nextSeq++
    const createdMs = Math.max(this.now(), this.lastCreatedMs)
    this.lastCreatedMs = createdMs
    queue.push(seq, createdMs, body.length)
    queue.queued++
    this.totalBytes += body.length
    const value = Buffer.allocUnsafe(HINT_HEADER_BYTES + body.length)
    value[0] = ENCODING_HINT_V1
    value.writeDoubleBE(createdMs, 1)
    value.set(body, HINT_HEADER_BYTES)
    try {
      await this.commit([{ type: 'put', key: hintKey(key, seq), value }], seq)
    } catch (err) {
      const size = queue.remove(seq)
      if (size !== undefined) this.totalBytes -= size
      queue.queued--
      throw new UnavailableError(`cannot queue a hint for ${target}: ${(err as Error).message}`, { cause: err })
    }
    return true
  }

  /**
   * The oldest hints of target, in append order, at most maxCount and about maxBytes of bodies (at
   * least one); hints past maxAgeMs are dropped (deleted, reported) instead of returned. Hints whose
   * append has not resolved yet are not returned.
   */
  async peek(target: string, maxCount: number, maxBytes: number): Promise<Hint[]> {
    this.checkOpen()
    encodeTarget(target)
    if (!Number.isInteger(maxCount) || maxCount < 1) throw ValidationError.field('maxCount', 'must be an integer >= 1')
    if (!(maxBytes >= 0)) throw ValidationError.field('maxBytes', 'must be a number of bytes >= 0')
    const queue = this.queues.get(target)
    if (!queue) return []
    const ops: SmallDbWrite[] = []
    const expired = this.expire(queue, ops)
    if (expired) await this.commitDrops([expired], ops)
    let count = 0
    let bytes = 0
    for (let i = queue.head; i < queue.seqs.length && count < maxCount; i++) {
      if (queue.seqs[i]! > this.durableSeq) break
      const size = queue.sizes[i]!
      if (count > 0 && bytes + size > maxBytes) break
      count++
      bytes += size
    }
    if (count === 0) return []
    const first = queue.seqs[queue.head]!
    const last = queue.seqs[queue.head + count - 1]!
    const entries = await this.db.read({ gte: hintKey(queue.key, first), lte: hintKey(queue.key, last) })
    // An ack or a drop may have removed some of them while the read ran: they are not returned.
    const live = queue.length > 0 ? queue.seqs[queue.head]! : Number.POSITIVE_INFINITY
    const hints: Hint[] = []
    for (const [key, value] of entries) {
      const seq = readSeq(key, key.length - SEQ_BYTES)
      if (seq < live) continue
      if (value.length < HINT_HEADER_BYTES || value[0] !== ENCODING_HINT_V1) {
        throw new Error(
          `BUG: hint ${seq} of ${target} has encoding byte ${value[0]}, this build reads ${ENCODING_HINT_V1}`,
        )
      }
      hints.push({ seq, createdMs: value.readDoubleBE(1), body: value.subarray(HINT_HEADER_BYTES) })
    }
    return hints
  }

  /**
   * Deletes the hints of target up to and including throughSeq (delivered), durably. Only hints
   * whose append has resolved are deleted; a sequence below the oldest queued one does nothing.
   */
  async ack(target: string, throughSeq: number): Promise<void> {
    this.checkOpen()
    encodeTarget(target)
    if (typeof throughSeq !== 'number' || Number.isNaN(throughSeq)) {
      throw ValidationError.field('throughSeq', 'must be a sequence number')
    }
    const queue = this.queues.get(target)
    if (!queue) return
    const through = Math.min(throughSeq, this.durableSeq)
    const ops: SmallDbWrite[] = []
    for (let i = queue.head; i < queue.seqs.length && queue.seqs[i]! <= through; i++) {
      ops.push({ type: 'del', key: hintKey(queue.key, queue.seqs[i]!) })
    }
    if (ops.length === 0) return
    this.totalBytes -= queue.shift(ops.length)
    queue.delivered += ops.length
    // The counters already leave the hints out: if this write fails they stay on disk and are
    // delivered again after a restart, which is harmless, as a write replayed is (last write wins).
    await this.commit(ops)
  }

  /**
   * Deletes every durable hint of target and its repair mark, in one synced batch: for an owner the
   * ring no longer lists, whose ranges went to other owners from the other copies, so that nothing
   * of it needs delivery or repair. Not counted as dropped. Answers how many hints it deleted.
   */
  async forget(target: string): Promise<number> {
    this.checkOpen()
    const key = encodeTarget(target)
    const ops: SmallDbWrite[] = []
    const queue = this.queues.get(target)
    if (queue) {
      for (let i = queue.head; i < queue.seqs.length && queue.seqs[i]! <= this.durableSeq; i++) {
        ops.push({ type: 'del', key: hintKey(queue.key, queue.seqs[i]!) })
      }
      this.totalBytes -= queue.shift(ops.length)
    }
    const hints = ops.length
    if (this.repair.delete(target)) ops.push({ type: 'del', key: repairKey(key) })
    if (ops.length > 0) await this.commit(ops)
    return hints
  }

  /** Drops every target's hints past the age window, in one synced batch; the node calls it on a timer. */
  async dropExpired(): Promise<void> {
    this.checkOpen()
    const ops: SmallDbWrite[] = []
    const drops: Drop[] = []
    for (const queue of this.queues.values()) {
      const drop = this.expire(queue, ops)
      if (drop) drops.push(drop)
    }
    if (drops.length > 0) await this.commitDrops(drops, ops)
  }

  /** Hints of target queued, counting those whose append is under way. */
  backlog(target: string): number {
    return this.queues.get(target)?.length ?? 0
  }

  /** Targets with hints queued, sorted. */
  targets(): string[] {
    const out: string[] = []
    for (const queue of this.queues.values()) if (queue.length > 0) out.push(queue.name)
    return out.sort()
  }

  /** Per-target figures, sorted by target: backlog now, counters since open (queued, delivered, dropped), and needsRepair. */
  stats(): HintTargetStats[] {
    return [...this.queues.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((q) => ({
        target: q.name,
        hints: q.length,
        bytes: q.bytes,
        oldestMs: q.length > 0 ? q.created[q.head] : undefined,
        queued: q.queued,
        delivered: q.delivered,
        dropped: q.dropped,
        needsRepair: this.repair.has(q.name),
      }))
  }

  /** Bytes of queued bodies over all targets. */
  get bytes(): number {
    return this.totalBytes
  }

  /** A target with dropped hints needs repair; the mark is persisted, so it survives a restart, until this clears it (durably). */
  async clearRepair(target: string): Promise<void> {
    this.checkOpen()
    const key = encodeTarget(target)
    if (!this.repair.delete(target)) return
    await this.commit([{ type: 'del', key: repairKey(key) }])
  }

  /** Waits for the writes under way, then closes the database. Later calls fail with UnavailableError. */
  async close(): Promise<void> {
    this.closed = true
    while (this.flushing) await this.flushing
    await this.db.close()
  }

  private checkOpen(): void {
    if (this.closed) throw new UnavailableError(`the hint store in ${this.options.dir} is closed`)
  }

  private queue(name: string, key: Buffer): TargetQueue {
    let queue = this.queues.get(name)
    if (!queue) {
      queue = new TargetQueue(name, key)
      this.queues.set(name, queue)
    }
    return queue
  }

  /** Takes the durable hints of queue past the age window off it, adding their deletes to ops. */
  private expire(queue: TargetQueue, ops: SmallDbWrite[]): Drop | undefined {
    const cutoff = this.now() - this.options.maxAgeMs
    let n = 0
    // createdMs never goes back, so the expired hints are a prefix of the queue.
    for (let i = queue.head; i < queue.seqs.length; i++) {
      if (queue.seqs[i]! > this.durableSeq || queue.created[i]! >= cutoff) break
      ops.push({ type: 'del', key: hintKey(queue.key, queue.seqs[i]!) })
      n++
    }
    if (n === 0) return undefined
    const bytes = queue.shift(n)
    this.totalBytes -= bytes
    return { queue, hints: n, bytes, reason: 'age' }
  }

  /**
   * Counts drops, marks their targets for repair in the same batch as ops, and reports them once
   * that batch is durable. Every onDrop is called even when one throws; the first error is rethrown.
   */
  private async commitDrops(drops: readonly Drop[], ops: SmallDbWrite[]): Promise<void> {
    const marks: RepairMark[] = []
    for (const drop of drops) {
      drop.queue.dropped += drop.hints
      let mark = this.repair.get(drop.queue.name)
      if (!mark) {
        mark = { durable: false }
        this.repair.set(drop.queue.name, mark)
      }
      // A mark still being written is written again: this drop must not be reported before it is durable.
      if (!mark.durable) ops.push({ type: 'put', key: repairKey(drop.queue.key), value: EMPTY })
      marks.push(mark)
    }
    await this.commit(ops)
    for (const mark of marks) mark.durable = true
    const onDrop = this.options.onDrop
    if (!onDrop) return
    let failure: { err: unknown } | undefined
    for (const drop of drops) {
      try {
        onDrop({ target: drop.queue.name, hints: drop.hints, bytes: drop.bytes, reason: drop.reason })
      } catch (err) {
        failure ??= { err }
      }
    }
    if (failure) throw failure.err
  }

  /**
   * Adds ops to the batch being gathered and resolves once that batch is synced. One batch is
   * written at a time; what arrives meanwhile waits for the next, so callers that come together
   * share one fsync. appendedSeq is the sequence of a hint put among ops.
   */
  private commit(ops: readonly SmallDbWrite[], appendedSeq = 0): Promise<void> {
    if (ops.length === 0) return Promise.resolve()
    for (const op of ops) this.group.push(op)
    if (appendedSeq > this.groupSeq) this.groupSeq = appendedSeq
    const done = new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject })
    })
    this.flushing ??= this.flush()
    return done
  }

  private async flush(): Promise<void> {
    // Let the callers of this turn of the event loop join the first batch.
    await new Promise<void>((resolve) => setImmediate(resolve))
    while (this.waiters.length > 0) {
      const ops = this.group
      const waiters = this.waiters
      const seq = this.groupSeq
      this.group = []
      this.waiters = []
      this.groupSeq = 0
      if (seq > 0) {
        const value = Buffer.allocUnsafe(SEQ_BYTES)
        writeSeq(value, 0, seq)
        ops.push({ type: 'put', key: metaKey(META_LAST_SEQ_KEY), value })
      }
      try {
        await this.db.write(ops, { sync: true })
        // Batches are written in sequence order, and the hints of a failed one are taken off
        // their queues, so every queued hint up to seq is now durable.
        if (seq > this.durableSeq) this.durableSeq = seq
        for (const waiter of waiters) waiter.resolve()
      } catch (err) {
        for (const waiter of waiters) waiter.reject(err)
      }
    }
    this.flushing = undefined
  }
}

interface Drop {
  readonly queue: TargetQueue
  readonly hints: number
  readonly bytes: number
  readonly reason: 'age' | 'full'
}

/** The target as it is stored in keys; throws when it is not a valid target id. */
function encodeTarget(target: string): Buffer {
  if (typeof target !== 'string' || target === '') throw ValidationError.field('target', 'must be a non-empty string')
  if (target.includes('\0')) throw ValidationError.field('target', 'must not contain the character U+0000')
  const key = Buffer.from(target, 'utf8')
  // A lone surrogate encodes as U+FFFD, so two different ids could share a key.
  if (key.toString('utf8') !== target) throw ValidationError.field('target', 'must be well-formed Unicode')
  if (key.length > MAX_TARGET_BYTES) throw ValidationError.field('target', `must be at most ${MAX_TARGET_BYTES} bytes`)
  return key
}

function hintKey(target: Buffer, seq: number): Buffer {
  const key = Buffer.allocUnsafe(1 + target.length + 1 + SEQ_BYTES)
  key[0] = PREFIX_HINT
  target.copy(key, 1)
  key[1 + target.length] = TARGET_END
  writeSeq(key, 2 + target.length, seq)
  return key
}

function repairKey(target: Buffer): Buffer {
  return Buffer.concat([Buffer.of(PREFIX_REPAIR), target])
}

function metaKey(name: string): Buffer {
  return Buffer.concat([Buffer.of(PREFIX_META), Buffer.from(name)])
}

/** Sequences are stored as u64be, so that RocksDB's key order is append order. */
function writeSeq(buf: Buffer, offset: number, seq: number): void {
  buf.writeUInt32BE(Math.floor(seq / 2 ** 32), offset)
  buf.writeUInt32BE(seq >>> 0, offset + 4)
}

function readSeq(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * 2 ** 32 + buf.readUInt32BE(offset + 4)
}
