/**
 * Write versions: a hybrid logical clock. A version is physical milliseconds since the epoch times
 * HLC_LOGICAL_STEPS plus a logical counter, held in a float64: exact below 2^53, that is until the
 * year 2248. A node's versions strictly increase, and a node that observes a peer's version issues
 * only larger ones afterwards, so "newer" means the same on every node as long as clocks stay close.
 * Version 0 means none: data written before versions existed, or on a single node, where arrival
 * order is already the order of writes.
 */

/** Logical steps per millisecond: a node issues up to this many versions per millisecond without running ahead. */
export const HLC_LOGICAL_STEPS = 1024
/** The largest version: the largest safe integer, so every version is exact in a float64. */
export const MAX_VERSION = Number.MAX_SAFE_INTEGER
/** How far ahead of this node's clock an observed version may be, in ms, before it is ignored. Default 60 s. */
export const DEFAULT_MAX_DRIFT_MS = 60_000

/** Whether `v` can be a write version: 0 (none) or a positive integer up to MAX_VERSION. */
export function isVersion(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0
}

/** The physical milliseconds a version was issued at. */
export function versionMs(version: number): number {
  return Math.floor(version / HLC_LOGICAL_STEPS)
}

export class HybridLogicalClock {
  private last = 0

  /**
   * `physicalMs` is the wall clock; `maxDriftMs` bounds how far ahead of it an observed version may
   * pull this clock (a peer with a clock far ahead would otherwise drag every node's versions along).
   */
  constructor(
    private readonly physicalMs: () => number = Date.now,
    private readonly maxDriftMs: number = DEFAULT_MAX_DRIFT_MS,
  ) {}

  /** A version larger than every version this clock issued or observed. */
  now(): number {
    const physical = Math.floor(this.physicalMs()) * HLC_LOGICAL_STEPS
    this.last = physical > this.last ? physical : this.last + 1
    if (this.last > MAX_VERSION) throw new Error(`BUG: write version ${this.last} is beyond 2^53`)
    return this.last
  }

  /**
   * Advances the clock past a version received from a peer. Returns false, leaving the clock as it
   * is, for a version that is not one or lies more than maxDriftMs ahead of this node's clock.
   */
  observe(remote: number): boolean {
    if (!isVersion(remote)) return false
    if (remote <= this.last) return true
    if (versionMs(remote) > this.physicalMs() + this.maxDriftMs) return false
    this.last = remote
    return true
  }
}
