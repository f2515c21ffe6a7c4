// A codec worker: decodes cold runs for long reads (their encoded bytes and start in, their points
// out) and encodes the runs a seal or a move writes (their points and the stored run in, the value
// to store out), handing the typed arrays back without copying them.
import { parentPort } from 'node:worker_threads'
import { decodeRun } from '../codec/run-codec.js'
import { encodeColdInput } from './cold-encode.js'

export interface DecodeJob {
  readonly kind: 'decode'
  readonly id: number
  readonly runs: ReadonlyArray<{ readonly runStartMs: number; readonly bytes: Uint8Array }>
}

/**
 * Runs to encode: run k's points are points[offset, offset + count) of `ts` and `vals`, and its
 * stored value, when it has one, is old[oldOffset, oldOffset + oldLength) of `old`.
 */
export interface EncodeJob {
  readonly kind: 'encode'
  readonly id: number
  readonly ts: Float64Array
  readonly vals: Float64Array
  readonly old: Uint8Array
  readonly runs: ReadonlyArray<{
    readonly runStartMs: number
    readonly offset: number
    readonly count: number
    readonly oldOffset: number
    /** -1: nothing stored. */
    readonly oldLength: number
  }>
}

export interface DecodeAnswer {
  readonly id: number
  readonly runs?: Array<{ readonly ts: Float64Array; readonly vals: Float64Array }>
  /** Encoded values, run k's at bytes[offset, offset + length), with its block counts. */
  readonly encoded?: {
    readonly bytes: Uint8Array
    readonly runs: Array<{ offset: number; length: number; oldBlocks: number; newBlocks: number }>
  }
  readonly error?: string
}

function decode(job: DecodeJob): void {
  const runs = job.runs.map((r) => {
    const d = decodeRun(r.bytes, r.runStartMs)
    return { ts: d.timestamps, vals: d.values }
  })
  const transfer = runs.flatMap((r) => [r.ts.buffer, r.vals.buffer]) as ArrayBuffer[]
  parentPort?.postMessage({ id: job.id, runs } satisfies DecodeAnswer, transfer)
}

function encode(job: EncodeJob): void {
  const values = job.runs.map((r) =>
    encodeColdInput({
      runStartMs: r.runStartMs,
      ts: job.ts.subarray(r.offset, r.offset + r.count),
      vals: job.vals.subarray(r.offset, r.offset + r.count),
      old: r.oldLength < 0 ? undefined : job.old.subarray(r.oldOffset, r.oldOffset + r.oldLength),
    }),
  )
  // One fresh buffer for all: a small Buffer is a view of a shared pool, which must not be transferred.
  let total = 0
  for (const v of values) total += v.value.length
  const bytes = new Uint8Array(total)
  let offset = 0
  const runs = values.map((v) => {
    bytes.set(v.value, offset)
    const placed = { offset, length: v.value.length, oldBlocks: v.oldBlocks, newBlocks: v.newBlocks }
    offset += v.value.length
    return placed
  })
  parentPort?.postMessage({ id: job.id, encoded: { bytes, runs } } satisfies DecodeAnswer, [bytes.buffer])
}

parentPort?.on('message', (job: DecodeJob | EncodeJob) => {
  try {
    if (job.kind === 'encode') encode(job)
    else decode(job)
  } catch (err) {
    parentPort?.postMessage({ id: job.id, error: (err as Error).message } satisfies DecodeAnswer)
  }
})
