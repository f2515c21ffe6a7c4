import { Worker } from 'node:worker_threads'
import type { ColdEncoded, ColdEncodeInput } from './cold-encode.js'
import type { DecodeAnswer, DecodeJob, EncodeJob } from './decode-worker.js'
import type { PointRun } from './head.js'

/**
 * Worker threads that decode cold runs for queries large enough to pay for the hand-off (posting
 * the bytes and the transferred arrays costs tens of microseconds, a run decodes in a few), so a
 * long query does not hold the event loop that every other call shares; and that encode the runs
 * large seals and moves write, so that ingest uses a second core. Workers start on first use and do
 * not keep the process alive.
 */
export class DecodePool {
  private readonly workers: Worker[] = []
  private readonly pending = new Map<
    number,
    { resolve: (answer: DecodeAnswer) => void; reject: (err: Error) => void }
  >()
  private nextId = 0
  /** Runs decoded in workers since the pool started. */
  runsDecoded = 0
  /** Runs encoded in workers since the pool started. */
  runsEncoded = 0
  private nextWorker = 0
  private closed = false

  constructor(private readonly size: number) {}

  get enabled(): boolean {
    return this.size > 0 && !this.closed
  }

  /**
   * Decodes the runs in a worker; the answer keeps their order. The bytes are packed into one
   * buffer that is transferred, since posting views of RocksDB's buffers would copy whatever
   * larger buffers they are views of.
   */
  decodeRuns(runs: ReadonlyArray<{ runStartMs: number; bytes: Uint8Array }>): Promise<PointRun[]> {
    let total = 0
    for (const r of runs) total += r.bytes.length
    const packed = new Uint8Array(total)
    let offset = 0
    const views = runs.map((r) => {
      packed.set(r.bytes, offset)
      const view = packed.subarray(offset, offset + r.bytes.length)
      offset += r.bytes.length
      return { runStartMs: r.runStartMs, bytes: view }
    })
    const worker = this.worker()
    const id = this.nextId++
    return new Promise<PointRun[]>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (answer) => {
          if (!answer.runs) {
            reject(new Error('BUG: a decode job answered without runs'))
            return
          }
          this.runsDecoded += answer.runs.length
          resolve(answer.runs)
        },
        reject,
      })
      worker.postMessage({ kind: 'decode', id, runs: views } satisfies DecodeJob, [packed.buffer])
    })
  }

  /**
   * Encodes cold runs in a worker, with the bytes encodeColdInput gives; the answer keeps their
   * order. The points and stored values are copied into three buffers that are transferred (the
   * points may be views of buffers the head still uses).
   */
  encodeRuns(inputs: readonly ColdEncodeInput[]): Promise<ColdEncoded[]> {
    let points = 0
    let oldBytes = 0
    for (const r of inputs) {
      points += r.ts.length
      oldBytes += r.old?.length ?? 0
    }
    const ts = new Float64Array(points)
    const vals = new Float64Array(points)
    const old = new Uint8Array(oldBytes)
    let offset = 0
    let oldOffset = 0
    const runs = inputs.map((r) => {
      ts.set(r.ts, offset)
      vals.set(r.vals, offset)
      const placed = { runStartMs: r.runStartMs, offset, count: r.ts.length, oldOffset, oldLength: -1 }
      offset += r.ts.length
      if (r.old !== undefined) {
        old.set(r.old, oldOffset)
        placed.oldLength = r.old.length
        oldOffset += r.old.length
      }
      return placed
    })
    const worker = this.worker()
    const id = this.nextId++
    return new Promise<ColdEncoded[]>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (answer) => {
          const encoded = answer.encoded
          if (!encoded) {
            reject(new Error('BUG: an encode job answered without values'))
            return
          }
          this.runsEncoded += encoded.runs.length
          resolve(
            encoded.runs.map((r) => ({
              value: encoded.bytes.subarray(r.offset, r.offset + r.length),
              oldBlocks: r.oldBlocks,
              newBlocks: r.newBlocks,
            })),
          )
        },
        reject,
      })
      const job: EncodeJob = { kind: 'encode', id, ts, vals, old, runs }
      worker.postMessage(job, [ts.buffer, vals.buffer, old.buffer])
    })
  }

  async close(): Promise<void> {
    this.closed = true
    const workers = this.workers.splice(0)
    await Promise.all(workers.map((w) => w.terminate()))
    for (const p of this.pending.values()) p.reject(new Error('the decode pool closed'))
    this.pending.clear()
  }

  private worker(): Worker {
    if (this.workers.length < this.size) {
      const w = startWorker()
      w.unref()
      w.on('message', (answer: DecodeAnswer) => {
        const p = this.pending.get(answer.id)
        if (!p) return
        this.pending.delete(answer.id)
        if (answer.error === undefined) p.resolve(answer)
        else p.reject(new Error(`the codec worker failed: ${answer.error}`))
      })
      w.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err)
        this.pending.clear()
        const i = this.workers.indexOf(w)
        if (i >= 0) this.workers.splice(i, 1)
      })
      this.workers.push(w)
      return w
    }
    const w = this.workers[this.nextWorker++ % this.workers.length]
    if (!w) throw new Error('BUG: the decode pool has no worker')
    return w
  }
}

/**
 * Built, the worker is the JavaScript file beside this one. Run from source through tsx (the tests,
 * `npm run bench`), it is TypeScript, and a worker does not inherit the parent's loader: a small
 * bootstrap registers tsx's loader in the worker, then imports the worker module.
 */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./decode-worker.js', import.meta.url))
  const source = JSON.stringify(new URL('./decode-worker.ts', import.meta.url).href)
  // The loader is a development dependency, named in the bootstrap only: built code never loads it.
  const loader = JSON.stringify('tsx/esm/api')
  return new Worker(`import(${loader}).then(({ register }) => { register(); return import(${source}) })`, {
    eval: true,
  })
}
