import { RUN_MS } from '../codec/row-key.js'
import { BLOCK_MS } from '../codec/schema.js'
import { firstAtLeast } from '../model/timestamps.js'

/** Sorted, deduplicated points. */
export interface PointRun {
  readonly ts: Float64Array
  readonly vals: Float64Array
  /**
   * The write versions of the points, where the run comes from writes that carried them (a cluster
   * node's); absent otherwise, which means version 0 for every point.
   */
  readonly vers?: Float64Array
}

/** Points of one series taken from the buffer to be sealed: sorted, deduplicated, last write winning. */
export interface Taken extends PointRun {
  readonly handle: number
  /** The write-buffer sequence of the oldest write these points came from. */
  readonly minSeq: number
}

/** Points in arrival order, with their versions when any has one. */
interface Arrived {
  readonly ts: Float64Array
  readonly vals: Float64Array
  readonly vers: Float64Array | undefined
  readonly minSeq: number
}

/**
 * The buffered points of one series in arrival order, in growable typed arrays: one object per
 * series rather than one per block or point keeps the garbage collector out of the write path.
 */
class SeriesBuffer {
  ts: Float64Array
  vals: Float64Array
  /**
   * The write-buffer sequence of the points, so the buffer can be trimmed exactly: per write, not
   * per point, as pairs (index of the write's first point, its sequence) for the segments of points
   * in arrival order. A write brings a series many points at once; a sequence per point cost a third
   * of the buffer's memory (8 of 24 bytes a point).
   */
  private segs = new Float64Array(2 * MIN_SEGMENTS)
  private segCount = 0
  /**
   * The write version of each point, allocated by the first point that has one (0 for the points
   * before it): a series written without versions (every series of a single node) never has it.
   */
  vers: Float64Array | undefined
  /**
   * The versions array of an earlier cycle, kept by clear() for the series' next versioned points: a
   * cluster node's writes all carry versions, and with a new array of the buffer's capacity at every
   * seal its head cost twice what the same points cost without versions (a scratch loop of 333
   * series written 50 points at a time: 25.5 against 11.5 ns a point; 16.5 to 20 with the array kept
   * and the taken versions in the seal's memory).
   */
  private spareVers: Float64Array | undefined
  n = 0
  maxTs = Number.NEGATIVE_INFINITY
  minSeq = Number.POSITIVE_INFINITY
  /** The points the last seal that emptied the buffer took: what a new buffer of the series starts with. */
  lastTaken = 0
  /** Points came since the last takeDue: the series is being written. */
  written = false

  constructor(capacity: number) {
    const c = columns(capacity)
    this.ts = c[0]
    this.vals = c[1]
  }

  reserve(extra: number): void {
    const need = this.n + extra
    if (need <= this.ts.length) return
    const capacity = Math.max(need, this.ts.length * 2)
    const c = columns(capacity)
    c[0].set(this.ts.subarray(0, this.n))
    c[1].set(this.vals.subarray(0, this.n))
    this.ts = c[0]
    this.vals = c[1]
    if (this.vers !== undefined) {
      const vers = new Float64Array(capacity)
      vers.set(this.vers.subarray(0, this.n))
      this.vers = vers
    }
    this.spareVers = undefined
  }

  /** `vers`: each point's write version, or one version for all of them. */
  push(ts: Float64Array, vals: Float64Array, seq: number, vers?: Float64Array | number): void {
    const n = ts.length
    // No points, no sequence to keep: the run a failed seal puts back may have lost all its points
    // to a delete.
    if (n === 0) return
    this.reserve(n)
    const at = this.n
    this.segment(at, seq)
    if (n <= SMALL_PUSH) {
      // A write of a point or two per series (remote write's) is copied by a loop: two calls into
      // set() cost more. From one Float64Array to another, so a NaN keeps its bits.
      for (let i = 0; i < n; i++) {
        this.ts[at + i] = ts[i]!
        this.vals[at + i] = vals[i]!
      }
    } else {
      this.ts.set(ts, at)
      this.vals.set(vals, at)
    }
    if (vers !== undefined && this.vers === undefined) this.vers = this.versionsFrom(at)
    if (typeof vers === 'number') this.vers!.fill(vers, at, at + n)
    else if (vers !== undefined) this.vers!.set(vers, at)
    else this.vers?.fill(0, at, at + n)
    this.n += n
    this.written = true
    for (let i = 0; i < n; i++) if ((ts[i] as number) > this.maxTs) this.maxTs = ts[i] as number
    if (seq < this.minSeq) this.minSeq = seq
  }

  /**
   * Empties the buffer whose points were copied out, keeping its arrays for the series' next points.
   * Versions go (the next points may come without them, as those of a new buffer); their array is
   * kept for the next points that have them.
   */
  clear(): void {
    this.lastTaken = this.n
    this.n = 0
    this.segCount = 0
    this.maxTs = Number.NEGATIVE_INFINITY
    this.minSeq = Number.POSITIVE_INFINITY
    if (this.vers !== undefined) this.spareVers = this.vers
    this.vers = undefined
  }

  /**
   * Points from index `at` on came with sequence `seq`: a new segment, unless the last one has the
   * same sequence (it runs on to `at`, since segments cover the points in order).
   */
  private segment(at: number, seq: number): void {
    const k = this.segCount
    if (k > 0 && this.segs[2 * k - 1] === seq) return
    if (2 * k === this.segs.length) {
      const grown = new Float64Array(2 * this.segs.length)
      grown.set(this.segs)
      this.segs = grown
    }
    this.segs[2 * k] = at
    this.segs[2 * k + 1] = seq
    this.segCount = k + 1
  }

  /** Appends every point of `newer`, with its versions and sequences, after this buffer's. */
  absorb(newer: SeriesBuffer): void {
    const at = this.n
    this.reserve(newer.n)
    if (newer.vers !== undefined && this.vers === undefined) this.vers = this.versionsFrom(at)
    this.ts.set(newer.ts.subarray(0, newer.n), at)
    this.vals.set(newer.vals.subarray(0, newer.n), at)
    if (newer.vers !== undefined) this.vers!.set(newer.vers.subarray(0, newer.n), at)
    else this.vers?.fill(0, at, at + newer.n)
    for (let k = 0; k < newer.segCount; k++) this.segment(at + newer.segs[2 * k]!, newer.segs[2 * k + 1]!)
    this.n += newer.n
    this.maxTs = Math.max(this.maxTs, newer.maxTs)
    this.minSeq = Math.min(this.minSeq, newer.minSeq)
  }

  /** A versions array of the buffer's capacity whose first `at` points (written without versions) are 0. */
  private versionsFrom(at: number): Float64Array {
    const spare = this.spareVers
    this.spareVers = undefined
    if (spare === undefined || spare.length !== this.ts.length) return new Float64Array(this.ts.length)
    return spare.fill(0, 0, at)
  }

  /**
   * Removes the points matching `take` (in place, keeping order) and returns them in arrival order,
   * their timestamps and values in `memory` when given.
   */
  extract(take: (t: number) => boolean, memory?: SealMemory): Arrived {
    let count = 0
    for (let r = 0; r < this.n; r++) if (take(this.ts[r] as number)) count++
    if (count === 0) return { ts: new Float64Array(0), vals: new Float64Array(0), vers: undefined, minSeq: Infinity }
    // Typed arrays, not number[]: V8 quiets a signalling NaN (Prometheus' staleness marker) that
    // it stores into a plain array, and values must keep their bit patterns.
    const array = (): Float64Array => memory?.take(count) ?? new Float64Array(count)
    const outTs = array()
    const outVals = array()
    const vers = this.vers
    const outVers = vers === undefined ? undefined : array()
    let taken = 0
    let minSeq = Number.POSITIVE_INFINITY
    let w = 0
    let maxTs = Number.NEGATIVE_INFINITY
    let keptMinSeq = Number.POSITIVE_INFINITY
    // The kept points' segments are rewritten in place: the k-th segment read gives at most the
    // k-th kept one, so a pair is overwritten only once it has been read.
    const segs = this.segs
    const segCount = this.segCount
    let kept = 0
    let k = 0
    let seq = segs[1] as number
    let segEnd = segCount > 1 ? (segs[2] as number) : Number.POSITIVE_INFINITY
    for (let r = 0; r < this.n; r++) {
      if (r === segEnd) {
        k++
        seq = segs[2 * k + 1] as number
        segEnd = k + 1 < segCount ? (segs[2 * k + 2] as number) : Number.POSITIVE_INFINITY
      }
      const t = this.ts[r] as number
      if (take(t)) {
        outTs[taken] = t
        outVals[taken] = this.vals[r] as number
        if (outVers !== undefined) outVers[taken] = vers![r] as number
        taken++
        if (seq < minSeq) minSeq = seq
      } else {
        this.ts[w] = t
        this.vals[w] = this.vals[r] as number
        if (vers !== undefined) vers[w] = vers[r] as number
        if (kept === 0 || segs[2 * kept - 1] !== seq) {
          segs[2 * kept] = w
          segs[2 * kept + 1] = seq
          kept++
        }
        w++
        if (t > maxTs) maxTs = t
        if (seq < keptMinSeq) keptMinSeq = seq
      }
    }
    this.n = w
    this.segCount = kept
    this.maxTs = maxTs
    this.minSeq = keptMinSeq
    return { ts: outTs, vals: outVals, vers: outVers, minSeq }
  }
}

/**
 * Memory for the points one seal takes, handed out as views of a few large chunks: a seal takes
 * points of every series written since the one before, and two ArrayBuffers per series cost the
 * allocator and the garbage collector more than copying the points does. The chunks go with the
 * seal's runs, once it is done with them.
 */
class SealMemory {
  private chunk = new Float64Array(0)
  private used = 0

  take(n: number): Float64Array {
    // A large array gets its own memory, so a chunk is never mostly wasted.
    if (n > SEAL_CHUNK / 8) return new Float64Array(n)
    if (this.used + n > this.chunk.length) {
      this.chunk = new Float64Array(SEAL_CHUNK)
      this.used = 0
    }
    const view = this.chunk.subarray(this.used, this.used + n)
    this.used += n
    return view
  }

  /** The first `n` values of `from`, copied into this memory. */
  copy(from: Float64Array, n: number): Float64Array {
    const out = this.take(n)
    out.set(from.subarray(0, n))
    return out
  }
}

/** Values per chunk of a SealMemory (256 KiB). */
const SEAL_CHUNK = 32_768

/** Pushes of at most this many points copy them by a loop (see SeriesBuffer.push). */
const SMALL_PUSH = 8

/**
 * Timestamps and values of `capacity` points, as views of one allocation: a buffer is made for
 * every series that starts or comes back, and when it grows, and one ArrayBuffer costs the
 * allocator and the garbage collector half of what two do.
 */
function columns(capacity: number): [Float64Array, Float64Array] {
  const memory = new Float64Array(2 * capacity)
  return [memory.subarray(0, capacity), memory.subarray(capacity, 2 * capacity)]
}

/** Segments a series buffer has room for before its segment array first grows. */
const MIN_SEGMENTS = 4

/** The largest starting capacity a hint gives a series buffer, in points (24 bytes each). */
const MAX_CAPACITY_HINT = 65_536

/** Which runs takeDue may leave in the buffer for their writers (see Head.runsToHold). */
export interface HoldRuns {
  /** Runs that end at or before this go to the cold tier when sealed. */
  readonly coldRunsBeforeMs: number
  /** The most points the held runs may keep buffered together. */
  readonly maxPoints: number
}

/**
 * The in-memory write buffer. Acknowledged points live here (and in the buffer column family) until
 * the sealer merges them into their stored blocks, so a block is written once per seal instead of
 * once per write. Points being sealed stay readable until their stored version is written.
 */
export class Head {
  private readonly active = new Map<number, SeriesBuffer>()
  /**
   * The points a series buffered before the seal that emptied its buffer, once the buffer is
   * dropped (see takeDue): the next buffer of that series starts that large, because a steady
   * writer fills it alike, and growing from 16 by doubling reallocated and copied every array
   * several times per seal (7.6% of the server's time under the batching-writer bench). Taken out
   * when used, so it holds only series not written since.
   */
  private readonly capacityHint = new Map<number, number>()
  /**
   * Per series, the runs being sealed, oldest first: each as its seal took it (what the seal
   * finishes or aborts with) to the run as it is now, which a delete may have cut since (see drop).
   */
  private readonly sealing = new Map<number, Map<Taken, Taken>>()
  private points = 0

  get bufferedPoints(): number {
    return this.points
  }

  /**
   * Appends points of one series; `seq` is the write-buffer record that holds them, `vers` their
   * write versions when they have any (one for all of them, or one per point).
   */
  append(handle: number, ts: Float64Array, vals: Float64Array, seq: number, vers?: Float64Array | number): void {
    let buf = this.active.get(handle)
    if (!buf) {
      const hint = this.capacityHint.get(handle)
      if (hint !== undefined) this.capacityHint.delete(handle)
      buf = new SeriesBuffer(Math.max(16, ts.length, hint ?? 0))
      this.active.set(handle, buf)
    }
    buf.push(ts, vals, seq, vers)
    this.points += ts.length
  }

  /**
   * Takes the points due for sealing: those whose 30-second block ended at least `idleMs` ago (a
   * late point for a just-ended block usually arrives within that), or every point with `force`.
   * With `hold`, the open cold run of a series being written stays, forced or not (see runsToHold).
   * Taken points stay readable until finishSeal().
   *
   * A step per series, for a caller that gives the event loop back between them (Slicer.drive):
   * taking a few hundred thousand series at once held the loop for seconds. Each series is taken
   * whole in its step, so a write or a read between steps finds every series either not yet taken
   * or taken; points a write adds to a taken series wait for the next seal.
   */
  *takeDueSteps(nowMs: number, idleMs: number, force: boolean, hold?: HoldRuns): Generator<void, Taken[], void> {
    const boundary = Math.floor((nowMs - idleMs) / BLOCK_MS) * BLOCK_MS
    const out: Taken[] = []
    const memory = new SealMemory()
    const holds = hold === undefined ? undefined : this.runsToHold(hold)
    for (const [handle, buf] of this.active) {
      buf.written = false
      const holdFrom = holds?.get(buf) ?? Number.POSITIVE_INFINITY
      if (buf.n === 0) {
        // Empty since a seal before, or since a delete: the series may have stopped, so its arrays
        // go, and its size is remembered for when it comes back.
        this.active.delete(handle)
        if (buf.lastTaken > 0) this.capacityHint.set(handle, Math.min(MAX_CAPACITY_HINT, buf.lastTaken))
        continue
      }
      let part: Arrived
      if (holdFrom !== Number.POSITIVE_INFINITY) {
        const before = force ? holdFrom : Math.min(boundary, holdFrom)
        part = buf.extract((t) => t < before, memory)
        if (part.ts.length === 0) continue
      } else if (force || buf.maxTs < boundary) {
        // Every point is due: they are copied out and the buffer kept for the series' next points,
        // so that a writer of past timestamps (a backfill, a benchmark) does not cost every series
        // a new buffer at every seal.
        const n = buf.n
        part = {
          ts: memory.copy(buf.ts, n),
          vals: memory.copy(buf.vals, n),
          vers: buf.vers === undefined ? undefined : memory.copy(buf.vers, n),
          minSeq: buf.minSeq,
        }
        buf.clear()
      } else {
        // The newest blocks are still open: take only the ended ones.
        part = buf.extract((t) => t < boundary, memory)
        if (part.ts.length === 0) continue
      }
      const run = sortDedupLastWins(part.ts, part.vals, part.vers)
      const taken: Taken = { ...run, handle, minSeq: part.minSeq }
      // Duplicates collapse here, so the buffered count drops by them now and by the rest on finishSeal().
      this.points -= part.ts.length - run.ts.length
      const runs = this.sealing.get(handle)
      if (runs) runs.set(taken, taken)
      else this.sealing.set(handle, new Map([[taken, taken]]))
      out.push(taken)
      yield
    }
    return out
  }

  /**
   * Where each series written since the last seal, whose newest point lies in a run bound for the
   * cold tier, starts that run: its writer is most likely still filling it (a backfill writes hours
   * in order), and a run sealed in parts is read back, merged and encoded again for every part. No
   * run is held when together they would keep more than hold.maxPoints in the buffer.
   */
  private runsToHold(hold: HoldRuns): Map<SeriesBuffer, number> | undefined {
    const out = new Map<SeriesBuffer, number>()
    let held = 0
    for (const buf of this.active.values()) {
      if (!buf.written || buf.n === 0) continue
      const runStart = Math.floor(buf.maxTs / RUN_MS) * RUN_MS
      if (runStart + RUN_MS > hold.coldRunsBeforeMs) continue
      for (let i = 0; i < buf.n; i++) if ((buf.ts[i] as number) >= runStart) held++
      if (held > hold.maxPoints) return undefined
      out.set(buf, runStart)
    }
    return out
  }

  /** Called once the taken points are durable in their stored blocks. */
  finishSeal(taken: readonly Taken[]): void {
    for (const t of taken) {
      const run = this.removeSealing(t)
      if (run) this.points -= run.ts.length
    }
  }

  /**
   * Puts taken points back after a failed seal, before anything written since (they are older):
   * those of the run as it is now, without what a delete dropped from it meanwhile.
   */
  abortSeal(taken: readonly Taken[]): void {
    for (const t of taken) {
      const run = this.removeSealing(t)
      if (!run) continue
      const newer = this.active.get(t.handle)
      const buf = new SeriesBuffer(run.ts.length + (newer?.n ?? 0))
      buf.push(run.ts, run.vals, run.minSeq, run.vers)
      if (newer) buf.absorb(newer)
      this.active.set(t.handle, buf)
    }
  }

  /** Takes the run a seal took out of the runs being sealed: as it is now (see drop). */
  private removeSealing(t: Taken): Taken | undefined {
    const runs = this.sealing.get(t.handle)
    const run = runs?.get(t)
    if (!runs || !run) return undefined
    runs.delete(t)
    if (runs.size === 0) this.sealing.delete(t.handle)
    return run
  }

  /** The smallest buffer sequence still needed, or undefined when the head is empty. */
  minSeq(): number | undefined {
    let min = Number.POSITIVE_INFINITY
    for (const buf of this.active.values()) if (buf.n > 0 && buf.minSeq < min) min = buf.minSeq
    for (const runs of this.sealing.values()) for (const t of runs.values()) if (t.minSeq < min) min = t.minSeq
    return min === Number.POSITIVE_INFINITY ? undefined : min
  }

  /**
   * The buffered points of a series in [startMs, endMs), sorted, last write winning (or with
   * versions, the highest version, then the last written); points being sealed come before active
   * ones because they are older.
   */
  read(handle: number, startMs: number, endMs: number): PointRun | undefined {
    const sealing = this.sealing.get(handle)
    const buf = this.active.get(handle)
    if (!sealing && !buf) return undefined
    let versioned = buf?.vers !== undefined
    if (sealing) for (const t of sealing.values()) versioned ||= t.vers !== undefined
    // Counted first, so that the points go straight into typed arrays of their size: a plain
    // number[] would quiet signalling NaNs (see SeriesBuffer.extract).
    let n = 0
    const count = (pts: Float64Array, size: number): void => {
      for (let i = 0; i < size; i++) {
        const t = pts[i] as number
        if (t >= startMs && t < endMs) n++
      }
    }
    if (sealing) for (const t of sealing.values()) count(t.ts, t.ts.length)
    if (buf) count(buf.ts, buf.n)
    if (n === 0) return undefined
    const ts = new Float64Array(n)
    const vals = new Float64Array(n)
    const vers = versioned ? new Float64Array(n) : undefined
    let w = 0
    const take = (pts: Float64Array, vs: Float64Array, size: number, pv: Float64Array | undefined): void => {
      for (let i = 0; i < size; i++) {
        const t = pts[i] as number
        if (t >= startMs && t < endMs) {
          ts[w] = t
          vals[w] = vs[i] as number
          if (vers !== undefined) vers[w] = pv === undefined ? 0 : (pv[i] as number)
          w++
        }
      }
    }
    if (sealing) for (const t of sealing.values()) take(t.ts, t.vals, t.ts.length, t.vers)
    if (buf) take(buf.ts, buf.vals, buf.n, buf.vers)
    return sortDedupLastWins(ts, vals, vers)
  }

  /**
   * The latest buffered point of a series; among equal timestamps the highest version, then the
   * last written.
   */
  last(handle: number): { ts: number; val: number } | undefined {
    let best: { ts: number; val: number; ver: number } | undefined
    const consider = (pts: Float64Array, vs: Float64Array, n: number, pv: Float64Array | undefined): void => {
      for (let i = 0; i < n; i++) {
        const t = pts[i] as number
        const v = pv === undefined ? 0 : (pv[i] as number)
        if (!best || t > best.ts || (t === best.ts && v >= best.ver)) best = { ts: t, val: vs[i] as number, ver: v }
      }
    }
    const sealing = this.sealing.get(handle)
    if (sealing) for (const t of sealing.values()) consider(t.ts, t.vals, t.ts.length, t.vers)
    const buf = this.active.get(handle)
    if (buf) consider(buf.ts, buf.vals, buf.n, buf.vers)
    return best && { ts: best.ts, val: best.val }
  }

  /**
   * The version of the buffered point that wins each of `timestamps` (as read() picks it), or -1
   * where the head holds no point of that timestamp. Points without versions count as version 0.
   */
  versionsAt(handle: number, timestamps: Float64Array): Float64Array {
    const out = new Float64Array(timestamps.length).fill(-1)
    const at = new Map<number, number>()
    timestamps.forEach((t, i) => {
      at.set(t, i)
    })
    const consider = (pts: Float64Array, n: number, pv: Float64Array | undefined): void => {
      for (let i = 0; i < n; i++) {
        const k = at.get(pts[i] as number)
        if (k === undefined) continue
        const v = pv === undefined ? 0 : (pv[i] as number)
        if (v >= (out[k] as number)) out[k] = v
      }
    }
    for (const t of this.sealing.get(handle)?.values() ?? []) consider(t.ts, t.ts.length, t.vers)
    const buf = this.active.get(handle)
    if (buf) consider(buf.ts, buf.n, buf.vers)
    return out
  }

  /**
   * The series was deleted and its handle is never used again: its empty buffer and its capacity
   * hint go. Points that a write racing the deletion buffered under the handle stay until the next
   * seal, which finds no series for them and discards them.
   */
  forget(handle: number): void {
    this.capacityHint.delete(handle)
    if (this.active.get(handle)?.n === 0) this.active.delete(handle)
  }

  /** Drops every buffered point of a series in [startMs, endMs); returns how many there were. */
  drop(handle: number, startMs: number, endMs: number): number {
    const before = this.points
    const buf = this.active.get(handle)
    if (buf) {
      const removed = buf.extract((t) => t >= startMs && t < endMs)
      this.points -= removed.ts.length
    }
    // The cut run stays under the run its seal took: the seal finishes or aborts with that one.
    const sealing = this.sealing.get(handle)
    if (sealing) {
      for (const [taken, run] of sealing) {
        const keep = keepOutside(run, startMs, endMs)
        this.points -= run.ts.length - keep.ts.length
        sealing.set(taken, { ...run, ...keep })
      }
    }
    return before - this.points
  }
}

/** The points of a run outside [startMs, endMs), with their versions when the run has them. */
export function keepOutside(run: PointRun, startMs: number, endMs: number): PointRun {
  // Typed arrays throughout: a plain number[] would quiet signalling NaNs (see SeriesBuffer.extract).
  const n = run.ts.length
  const ts = new Float64Array(n)
  const vals = new Float64Array(n)
  const vers = run.vers === undefined ? undefined : new Float64Array(n)
  let w = 0
  for (let i = 0; i < n; i++) {
    const t = run.ts[i] as number
    if (t < startMs || t >= endMs) {
      ts[w] = t
      vals[w] = run.vals[i] as number
      if (vers !== undefined) vers[w] = run.vers![i] as number
      w++
    }
  }
  const kept = { ts: ts.slice(0, w), vals: vals.slice(0, w) }
  return vers === undefined ? kept : { ...kept, vers: vers.slice(0, w) }
}

/** Concatenates sorted, time-disjoint runs given in time order; one run is returned as it is. */
export function concatRuns(pieces: readonly PointRun[]): PointRun {
  if (pieces.length === 1) return pieces[0] as PointRun
  let n = 0
  for (const p of pieces) n += p.ts.length
  const ts = new Float64Array(n)
  const vals = new Float64Array(n)
  let off = 0
  for (const p of pieces) {
    ts.set(p.ts, off)
    vals.set(p.vals, off)
    off += p.ts.length
  }
  return { ts, vals }
}

/**
 * Sorts points by timestamp; among equal timestamps the last in input order wins. Buffered points
 * are usually a few ascending runs (writes that arrived out of order), so the ascending runs are
 * found and merged in one pass (mergeAscending), later runs winning ties; only input with many
 * short runs falls back to a comparison sort. With versions, the highest version of a timestamp
 * wins, then the last.
 */
export function sortDedupLastWins(ts: ArrayLike<number>, vals: ArrayLike<number>, vers?: ArrayLike<number>): PointRun {
  if (vers !== undefined) return sortDedupVersioned(ts, vals, vers)
  const n = ts.length
  const starts: number[] = [0]
  for (let i = 1; i < n; i++) if ((ts[i] as number) < (ts[i - 1] as number)) starts.push(i)
  if (starts.length > 1 && starts.length <= 64) {
    return mergeAscending(starts.map((from, k) => dedupAscending(ts, vals, from, starts[k + 1] ?? n)))
  }
  if (starts.length === 1) return dedupAscending(ts, vals, 0, n)
  const idx = new Uint32Array(n)
  for (let i = 0; i < n; i++) idx[i] = i
  // Ties sort by input position, so the last of equal timestamps comes last and wins below.
  idx.sort((a, b) => (ts[a] as number) - (ts[b] as number) || a - b)
  const outTs = new Float64Array(n)
  const outVals = new Float64Array(n)
  let w = 0
  for (let i = 0; i < n; i++) {
    const j = idx[i] as number
    const t = ts[j] as number
    if (w > 0 && outTs[w - 1] === t) {
      outVals[w - 1] = vals[j] as number
    } else {
      outTs[w] = t
      outVals[w] = vals[j] as number
      w++
    }
  }
  return { ts: outTs.subarray(0, w), vals: outVals.subarray(0, w) }
}

/**
 * sortDedupLastWins with versions: the highest version of a timestamp wins, then the last. Like
 * the unversioned sort, the ascending runs of the input are merged in one pass (a later run winning
 * ties of version), and only input of many short runs takes a comparison sort.
 */
function sortDedupVersioned(ts: ArrayLike<number>, vals: ArrayLike<number>, vers: ArrayLike<number>): PointRun {
  const n = ts.length
  const starts: number[] = [0]
  for (let i = 1; i < n; i++) if ((ts[i] as number) < (ts[i - 1] as number)) starts.push(i)
  if (starts.length <= 64) {
    return mergeAscending(starts.map((from, k) => dedupAscendingVersioned(ts, vals, vers, from, starts[k + 1] ?? n)))
  }
  // Many short runs: a stable sort by timestamp (ties keep input order), then the same pass that
  // keeps, of equal timestamps, the highest version and then the last.
  const idx = new Uint32Array(n)
  for (let i = 0; i < n; i++) idx[i] = i
  idx.sort((a, b) => (ts[a] as number) - (ts[b] as number) || a - b)
  const sortedTs = new Float64Array(n)
  const sortedVals = new Float64Array(n)
  const sortedVers = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const j = idx[i] as number
    sortedTs[i] = ts[j] as number
    sortedVals[i] = vals[j] as number
    sortedVers[i] = vers[j] as number
  }
  return dedupAscendingVersioned(sortedTs, sortedVals, sortedVers, 0, n)
}

type VersionedRun = Required<PointRun>

/** Points [from, to) that ascend (equal neighbours allowed): of equal ones the highest version, then the last. */
function dedupAscendingVersioned(
  ts: ArrayLike<number>,
  vals: ArrayLike<number>,
  vers: ArrayLike<number>,
  from: number,
  to: number,
): VersionedRun {
  if (!hasRepeats(ts, from, to)) {
    if (ts instanceof Float64Array && vals instanceof Float64Array && vers instanceof Float64Array) {
      return { ts: ts.subarray(from, to), vals: vals.subarray(from, to), vers: vers.subarray(from, to) }
    }
    return { ts: float64Copy(ts, from, to), vals: float64Copy(vals, from, to), vers: float64Copy(vers, from, to) }
  }
  const outTs = new Float64Array(to - from)
  const outVals = new Float64Array(to - from)
  const outVers = new Float64Array(to - from)
  let w = 0
  for (let i = from; i < to; i++) {
    const t = ts[i] as number
    const v = vers[i] as number
    if (w > 0 && outTs[w - 1] === t) {
      if (v >= (outVers[w - 1] as number)) {
        outVals[w - 1] = vals[i] as number
        outVers[w - 1] = v
      }
    } else {
      outTs[w] = t
      outVals[w] = vals[i] as number
      outVers[w++] = v
    }
  }
  return { ts: outTs.subarray(0, w), vals: outVals.subarray(0, w), vers: outVers.subarray(0, w) }
}

/**
 * Merges sorted, deduplicated runs given in input order into one: on equal timestamps the highest
 * version wins (versions absent count as 0), then the later run. Up to MERGE_WAYS runs are merged
 * in one pass (mergeFew); more are merged in groups of that many first, in input order, so that a
 * step never scans more than MERGE_WAYS runs.
 */
function mergeAscending(runs: readonly PointRun[]): PointRun {
  if (runs.length <= MERGE_WAYS) return mergeFew(runs)
  const groups: PointRun[] = []
  for (let i = 0; i < runs.length; i += MERGE_WAYS) groups.push(mergeFew(runs.slice(i, i + MERGE_WAYS)))
  return mergeAscending(groups)
}

/** The most runs mergeFew takes: each of its steps looks at every run. */
const MERGE_WAYS = 8

/** Points mergeFew looks at one by one before it searches; fewer are copied by a loop, not set(). */
const FEW_POINTS = 8

/**
 * mergeAscending of a few runs, in a single pass. Each step finds the run with the smallest next
 * timestamp and copies, as one block, its points below the next timestamp of every other run:
 * writes that overtook each other (as when several nodes coordinate the writes of one backfill)
 * interleave in whole writes, so a step usually moves a write's points at once. A merge two runs at
 * a time instead copied every point once per level and allocated each level anew.
 */
function mergeFew(runs: readonly PointRun[]): PointRun {
  const r = runs.length
  let total = 0
  for (const run of runs) total += run.ts.length
  const versioned = runs.some((run) => run.vers !== undefined)
  const ts = new Float64Array(total)
  const vals = new Float64Array(total)
  const vers = versioned ? new Float64Array(total) : undefined
  const pos = new Int32Array(r)
  let w = 0
  for (;;) {
    // The run with the smallest next timestamp, and the smallest next timestamp of the others.
    let best = -1
    let bestT = Number.POSITIVE_INFINITY
    let nextT = Number.POSITIVE_INFINITY
    for (let k = 0; k < r; k++) {
      const run = runs[k] as PointRun
      const p = pos[k] as number
      if (p === run.ts.length) continue
      const t = run.ts[p] as number
      if (t < bestT) {
        nextT = bestT
        bestT = t
        best = k
      } else if (t < nextT) nextT = t
    }
    if (best < 0) break
    if (bestT < nextT) {
      const run = runs[best] as PointRun
      const from = pos[best] as number
      // Points interleaved one by one are common too: a few are looked at, and copied by a loop,
      // before a binary search and a block copy. Versions a run lacks stay 0, as allocated.
      let to = from + 1
      while (to < run.ts.length && to - from < FEW_POINTS && (run.ts[to] as number) < nextT) to++
      if (to - from === FEW_POINTS) to = firstAtLeast(run.ts, to, nextT)
      if (to - from < FEW_POINTS) {
        for (let i = from; i < to; i++, w++) {
          ts[w] = run.ts[i] as number
          vals[w] = run.vals[i] as number
          if (vers !== undefined && run.vers !== undefined) vers[w] = run.vers[i] as number
        }
      } else {
        ts.set(run.ts.subarray(from, to), w)
        vals.set(run.vals.subarray(from, to), w)
        if (vers !== undefined && run.vers !== undefined) vers.set(run.vers.subarray(from, to), w)
        w += to - from
      }
      pos[best] = to
      continue
    }
    // Runs tie at bestT: the point of the highest version wins, then that of the latest run.
    let winner = -1
    let winnerVer = Number.NEGATIVE_INFINITY
    for (let k = 0; k < r; k++) {
      const run = runs[k] as PointRun
      const p = pos[k] as number
      if (p === run.ts.length || run.ts[p] !== bestT) continue
      const v = run.vers?.[p] ?? 0
      if (v >= winnerVer) {
        winner = k
        winnerVer = v
      }
      pos[k] = p + 1
    }
    const won = runs[winner] as PointRun
    ts[w] = bestT
    vals[w] = won.vals[(pos[winner] as number) - 1] as number
    if (vers !== undefined) vers[w] = winnerVer
    w++
  }
  const out = { ts: ts.subarray(0, w), vals: vals.subarray(0, w) }
  return vers === undefined ? out : { ...out, vers: vers.subarray(0, w) }
}

/** Whether ascending timestamps [from, to) hold a timestamp twice (next to each other). */
function hasRepeats(ts: ArrayLike<number>, from: number, to: number): boolean {
  for (let i = from + 1; i < to; i++) if (ts[i] === ts[i - 1]) return true
  return false
}

/** Points [from, to) that ascend (equal neighbours allowed), the last of equal ones kept. */
function dedupAscending(ts: ArrayLike<number>, vals: ArrayLike<number>, from: number, to: number): PointRun {
  if (!hasRepeats(ts, from, to)) {
    if (ts instanceof Float64Array && vals instanceof Float64Array) {
      return { ts: ts.subarray(from, to), vals: vals.subarray(from, to) }
    }
    return { ts: float64Copy(ts, from, to), vals: float64Copy(vals, from, to) }
  }
  const outTs = new Float64Array(to - from)
  const outVals = new Float64Array(to - from)
  let w = 0
  for (let i = from; i < to; i++) {
    const t = ts[i] as number
    if (w > 0 && outTs[w - 1] === t) outVals[w - 1] = vals[i] as number
    else {
      outTs[w] = t
      outVals[w++] = vals[i] as number
    }
  }
  return { ts: outTs.subarray(0, w), vals: outVals.subarray(0, w) }
}

/** Merges two sorted, deduplicated runs; on equal timestamps `newer` wins. */
export function mergeRuns(older: PointRun, newer: PointRun): PointRun {
  if (older.ts.length === 0) return newer
  if (newer.ts.length === 0) return older
  const a = older.ts
  const b = newer.ts
  const ts = new Float64Array(a.length + b.length)
  const vals = new Float64Array(a.length + b.length)
  let i = 0
  let j = 0
  let w = 0
  while (i < a.length && j < b.length) {
    const ta = a[i] as number
    const tb = b[j] as number
    if (ta < tb) {
      ts[w] = ta
      vals[w++] = older.vals[i++] as number
    } else {
      ts[w] = tb
      vals[w++] = newer.vals[j++] as number
      if (ta === tb) i++
    }
  }
  while (i < a.length) {
    ts[w] = a[i] as number
    vals[w++] = older.vals[i++] as number
  }
  while (j < b.length) {
    ts[w] = b[j] as number
    vals[w++] = newer.vals[j++] as number
  }
  return { ts: ts.subarray(0, w), vals: vals.subarray(0, w) }
}

/**
 * Elements [from, to) of an array as a new Float64Array, copied bytes and all where the source is
 * one (a copy through JavaScript numbers may quiet a signalling NaN such as Prometheus' staleness
 * marker).
 */
function float64Copy(a: ArrayLike<number>, from = 0, to = a.length): Float64Array {
  if (a instanceof Float64Array) return a.slice(from, to)
  const out = new Float64Array(to - from)
  for (let i = from; i < to; i++) out[i - from] = a[i] as number
  return out
}
