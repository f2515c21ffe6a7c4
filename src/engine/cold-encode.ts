// Encoding a cold run for the cold family, the same on the event loop and in a codec worker: the
// functions here are pure, so a worker gives the bytes the event loop would.
import { coldRun, encodeColdValue } from '../codec/cold-value.js'
import { decodeRun, encodeRun } from '../codec/run-codec.js'
import { BLOCK_MS } from '../codec/schema.js'
import { summarizePoints } from './aggregate.js'
import { mergeRuns, type PointRun } from './head.js'

/** A run to write: its new points (sorted) and the value already stored under its key, if any. */
export interface ColdEncodeInput {
  readonly runStartMs: number
  readonly ts: Float64Array
  readonly vals: Float64Array
  readonly old: Uint8Array | undefined
}

/** The value to store, and the blocks (hours) with points before and after: the engine counts them. */
export interface ColdEncoded {
  readonly value: Uint8Array
  readonly oldBlocks: number
  readonly newBlocks: number
}

/** The blocks that sorted timestamps fall in. */
export function distinctBlocks(ts: Float64Array): number {
  let count = 0
  let last = Number.NaN
  for (let i = 0; i < ts.length; i++) {
    const b = Math.floor((ts[i] as number) / BLOCK_MS)
    if (b !== last) {
      count++
      last = b
    }
  }
  return count
}

/** A run as the cold family stores it: encoded, behind the summary that aggregations use. */
export function encodeCold(run: PointRun, runStartMs: number): Buffer {
  return encodeColdValue(encodeRun(run.ts, run.vals, run.ts.length, runStartMs), summarizePoints(run.ts, run.vals))
}

/** Merges the new points over the stored run (new points win) and encodes the result. */
export function encodeColdInput(input: ColdEncodeInput): ColdEncoded {
  let run: PointRun = { ts: input.ts, vals: input.vals }
  let oldBlocks = 0
  if (input.old !== undefined) {
    const d = decodeRun(coldRun(input.old), input.runStartMs)
    oldBlocks = distinctBlocks(d.timestamps)
    run = mergeRuns({ ts: d.timestamps, vals: d.values }, run)
  }
  return { value: encodeCold(run, input.runStartMs), oldBlocks, newBlocks: distinctBlocks(run.ts) }
}
