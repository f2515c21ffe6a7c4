import { performance } from 'node:perf_hooks'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { DeadlineError } from '../model/errors.js'
import type { CallContext } from './storage-engine.js'

/**
 * How long one call may run on the event loop before it lets other calls in. Every call shares the
 * one event loop, health checks included, so a long read or aggregation is cut into slices of this
 * length; 10 ms keeps the worst wait of the others well under 50 ms while the yields themselves
 * (one setImmediate per slice) cost nothing measurable.
 */
export const SLICE_MS = 10

export function checkSignal(ctx: CallContext | undefined): void {
  if (ctx?.signal?.aborted) throw new DeadlineError('the call was cancelled or its deadline passed')
}

/**
 * Cuts one call's synchronous work into time slices. Loops call pause() (or test due() first in
 * tight loops): once the slice is used up it yields to the event loop with setImmediate, so timers,
 * I/O and other calls run, and then checks the call's deadline and cancellation. A promise alone
 * would not do: microtasks run before the event loop gets back control.
 */
export class Slicer {
  private sliceStart = performance.now()
  /** The turn the call's tasks wait for once the slice is used up, until it comes. */
  private turn: Promise<void> | undefined

  constructor(private readonly ctx: CallContext | undefined) {}

  /** Whether the current slice is used up. */
  due(): boolean {
    return performance.now() - this.sliceStart >= SLICE_MS
  }

  /**
   * Yields to the event loop when the slice is used up, then throws if the call was cancelled.
   * Tasks of one call that run side by side (a read of many series, queryConcurrency at a time)
   * share its slices: all that find the slice used up wait for the same turn, and the next slice
   * starts once, when it comes. Each restarting the slice for itself gave every task a slice of its
   * own per turn, and held the loop sixteen slices at a time.
   */
  async pause(): Promise<void> {
    if (!this.due()) return
    this.turn ??= nextTurn().then(() => {
      this.turn = undefined
      this.sliceStart = performance.now()
    })
    await this.turn
    checkSignal(this.ctx)
  }

  /** Runs a generator that yields between units of work to the end, pausing between them. */
  async drive<T>(work: Generator<void, T, void>): Promise<T> {
    for (;;) {
      const step = work.next()
      if (step.done) return step.value
      await this.pause()
    }
  }
}

/** Runs a generator that yields between units of work to the end in one go, for synchronous callers. */
export function runToEnd<T>(work: Generator<void, T, void>): T {
  for (;;) {
    const step = work.next()
    if (step.done) return step.value
  }
}

/**
 * Lets large pieces of synchronous work (decoding, validating or committing a request of thousands
 * of series) into the event loop one at a time, with a whole turn of the loop (its timers and its
 * I/O) between two of them. Each such piece holds the loop for tens of milliseconds, and requests
 * that arrive together (a peer's writes read off one socket, a burst of client writes) would
 * otherwise run theirs back to back: a cluster node's loop was held over a second at a time while
 * it took an import, and every health check, Consul renewal and peer answer waited.
 */
export class TurnGate {
  private readonly waiting: Array<() => void> = []
  /** Whether a piece went in since the last turn of the loop. */
  private taken = false

  /** Resolves when the caller's piece may run: at once if none ran since the loop last turned. */
  async enter(ctx?: CallContext): Promise<void> {
    if (!this.taken && this.waiting.length === 0) {
      this.take()
      return
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve))
    checkSignal(ctx)
  }

  /**
   * Marks a turn taken until the loop has turned: two immediates, so that timers and I/O run in
   * between whichever phase the piece ran in (one set in the poll phase runs in the same turn).
   */
  private take(): void {
    this.taken = true
    setImmediate(() => setImmediate(() => this.next()))
  }

  private next(): void {
    this.taken = false
    const resolve = this.waiting.shift()
    if (resolve === undefined) return
    this.take()
    resolve()
  }
}

/** The gate of the process: every engine and peer service in it shares the one event loop. */
export const largeWork = new TurnGate()

/** Requests of at least this many series count as large work (see TurnGate). */
export const LARGE_WORK_SERIES = 1_000
