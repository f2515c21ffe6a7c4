import { BLOCK_MS } from '../codec/schema.js'

/** Points of one series in one 30-second block, in arrival order, not yet sealed into a stored block. */
export interface OpenBlock {
  readonly handle: number
  readonly block: number
  readonly ts: number[]
  readonly vals: number[]
  /** The write-buffer sequence of the first write in this block; the buffer is kept from here on. */
  readonly minSeq: number
  lastWriteMs: number
}

/** Sorted, deduplicated points. */
export interface PointRun {
  readonly ts: Float64Array
  readonly vals: Float64Array
}

/**
 * The in-memory write buffer. Acknowledged points live here (and in the buffer column family) until
 * the sealer merges them into their stored block, so a block is written once per seal instead of
 * once per point. Blocks being sealed stay readable until their stored version is written.
 */
export class Head {
  private readonly active = new Map<number, Map<number, OpenBlock>>()
  private readonly sealing = new Map<number, Map<number, OpenBlock[]>>()
  private points = 0

  get bufferedPoints(): number {
    return this.points
  }

  /** Appends sorted points of one series. */
  append(handle: number, ts: Float64Array, vals: Float64Array, seq: number, nowMs: number): void {
    let blocks = this.active.get(handle)
    if (!blocks) {
      blocks = new Map()
      this.active.set(handle, blocks)
    }
    let current: OpenBlock | undefined
    let currentBlock = Number.NaN
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i] as number
      const block = Math.floor(t / BLOCK_MS)
      if (block !== currentBlock) {
        currentBlock = block
        current = blocks.get(block)
        if (!current) {
          current = { handle, block, ts: [], vals: [], minSeq: seq, lastWriteMs: nowMs }
          blocks.set(block, current)
        }
        current.lastWriteMs = nowMs
      }
      current?.ts.push(t)
      current?.vals.push(vals[i] as number)
    }
    this.points += ts.length
  }

  /**
   * Picks the blocks to seal and moves them to the sealing set. A block is due once its end has
   * passed and it has been idle for `idleMs`; `force` takes every block.
   */
  takeDue(nowMs: number, idleMs: number, force: boolean): OpenBlock[] {
    const due: OpenBlock[] = []
    for (const [handle, blocks] of this.active) {
      for (const [block, open] of blocks) {
        const ended = (block + 1) * BLOCK_MS <= nowMs
        if (force || (ended && nowMs - open.lastWriteMs >= idleMs)) {
          due.push(open)
          blocks.delete(block)
          let sealing = this.sealing.get(handle)
          if (!sealing) {
            sealing = new Map()
            this.sealing.set(handle, sealing)
          }
          const list = sealing.get(block)
          if (list) list.push(open)
          else sealing.set(block, [open])
        }
      }
      if (blocks.size === 0) this.active.delete(handle)
    }
    return due
  }

  /** Called once the sealed blocks are durable in the hot family. */
  finishSeal(sealed: readonly OpenBlock[]): void {
    for (const open of sealed) {
      const sealing = this.sealing.get(open.handle)
      const list = sealing?.get(open.block)
      if (!sealing || !list) continue
      const i = list.indexOf(open)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) sealing.delete(open.block)
      if (sealing.size === 0) this.sealing.delete(open.handle)
      this.points -= open.ts.length
    }
  }

  /** Returns blocks taken for sealing to the active set after a failed seal, keeping their order. */
  abortSeal(sealed: readonly OpenBlock[]): void {
    for (const open of sealed) {
      const list = this.sealing.get(open.handle)?.get(open.block)
      const i = list ? list.indexOf(open) : -1
      if (list && i >= 0) list.splice(i, 1)
      let blocks = this.active.get(open.handle)
      if (!blocks) {
        blocks = new Map()
        this.active.set(open.handle, blocks)
      }
      const newer = blocks.get(open.block)
      if (newer) {
        // Points that arrived during the failed seal are newer: replay them after the old ones.
        open.ts.push(...newer.ts)
        open.vals.push(...newer.vals)
      }
      blocks.set(open.block, open)
    }
  }

  /** The smallest buffer sequence still needed, or undefined when the head is empty. */
  minSeq(): number | undefined {
    let min: number | undefined
    for (const blocks of this.active.values()) {
      for (const open of blocks.values()) if (min === undefined || open.minSeq < min) min = open.minSeq
    }
    for (const blocks of this.sealing.values()) {
      for (const list of blocks.values()) {
        for (const open of list) if (min === undefined || open.minSeq < min) min = open.minSeq
      }
    }
    return min
  }

  /** The smallest block number buffered for any series, or undefined. */
  minBlock(): number | undefined {
    let min: number | undefined
    for (const blocks of this.active.values()) for (const b of blocks.keys()) if (min === undefined || b < min) min = b
    for (const blocks of this.sealing.values()) for (const b of blocks.keys()) if (min === undefined || b < min) min = b
    return min
  }

  /**
   * The buffered points of a series in [startMs, endMs), sorted, last write winning; sealing
   * blocks come before active ones because they are older.
   */
  read(handle: number, startMs: number, endMs: number): PointRun | undefined {
    const sealing = this.sealing.get(handle)
    const active = this.active.get(handle)
    if (!sealing && !active) return undefined
    const fromBlock = Math.floor(startMs / BLOCK_MS)
    const toBlock = Math.floor((endMs - 1) / BLOCK_MS)
    const ts: number[] = []
    const vals: number[] = []
    const take = (open: OpenBlock): void => {
      for (let i = 0; i < open.ts.length; i++) {
        const t = open.ts[i] as number
        if (t >= startMs && t < endMs) {
          ts.push(t)
          vals.push(open.vals[i] as number)
        }
      }
    }
    const consider = (block: number): boolean => block >= fromBlock && block <= toBlock
    if (sealing) for (const [block, list] of sealing) if (consider(block)) for (const open of list) take(open)
    if (active) for (const [block, open] of active) if (consider(block)) take(open)
    if (ts.length === 0) return undefined
    return sortDedupLastWins(ts, vals)
  }

  /** The latest buffered point of a series. */
  last(handle: number): { ts: number; val: number } | undefined {
    let best: { ts: number; val: number } | undefined
    const consider = (open: OpenBlock): void => {
      for (let i = 0; i < open.ts.length; i++) {
        const t = open.ts[i] as number
        // Later entries win ties: they were written later.
        if (!best || t >= best.ts) best = { ts: t, val: open.vals[i] as number }
      }
    }
    const sealing = this.sealing.get(handle)
    if (sealing) for (const list of sealing.values()) for (const open of list) consider(open)
    const active = this.active.get(handle)
    if (active) for (const open of active.values()) consider(open)
    return best
  }

  /** Drops every buffered point of a series in [startMs, endMs). */
  drop(handle: number, startMs: number, endMs: number): void {
    for (const open of this.blocksOf(handle)) {
      let w = 0
      for (let r = 0; r < open.ts.length; r++) {
        const t = open.ts[r] as number
        if (t >= startMs && t < endMs) continue
        open.ts[w] = t
        open.vals[w] = open.vals[r] as number
        w++
      }
      this.points -= open.ts.length - w
      open.ts.length = w
      open.vals.length = w
    }
  }

  private *blocksOf(handle: number): Generator<OpenBlock> {
    const sealing = this.sealing.get(handle)
    if (sealing) for (const list of sealing.values()) yield* list
    const active = this.active.get(handle)
    if (active) yield* active.values()
  }
}

/** Sorts points by timestamp; among equal timestamps the last in input order wins. */
export function sortDedupLastWins(ts: ArrayLike<number>, vals: ArrayLike<number>): PointRun {
  const n = ts.length
  let sorted = true
  for (let i = 1; i < n; i++) {
    if ((ts[i] as number) <= (ts[i - 1] as number)) {
      sorted = false
      break
    }
  }
  if (sorted) return { ts: Float64Array.from(ts), vals: Float64Array.from(vals) }
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  // Array.prototype.sort is stable, so equal timestamps keep input order and the last one wins below.
  const idx = Array.from(order).sort((a, b) => (ts[a] as number) - (ts[b] as number))
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
