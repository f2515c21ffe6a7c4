// A decode worker: takes cold runs (their encoded bytes and start) and answers with their points,
// handing the typed arrays back without copying them.
import { parentPort } from 'node:worker_threads'
import { decodeRun } from '../codec/run-codec.js'

export interface DecodeJob {
  readonly id: number
  readonly runs: ReadonlyArray<{ readonly runStartMs: number; readonly bytes: Uint8Array }>
}

export interface DecodeAnswer {
  readonly id: number
  readonly runs?: Array<{ readonly ts: Float64Array; readonly vals: Float64Array }>
  readonly error?: string
}

parentPort?.on('message', (job: DecodeJob) => {
  try {
    const runs = job.runs.map((r) => {
      const d = decodeRun(r.bytes, r.runStartMs)
      return { ts: d.timestamps, vals: d.values }
    })
    const transfer = runs.flatMap((r) => [r.ts.buffer, r.vals.buffer]) as ArrayBuffer[]
    parentPort?.postMessage({ id: job.id, runs } satisfies DecodeAnswer, transfer)
  } catch (err) {
    parentPort?.postMessage({ id: job.id, error: (err as Error).message } satisfies DecodeAnswer)
  }
})
