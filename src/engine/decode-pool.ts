import { Worker } from 'node:worker_threads'
import type { DecodeAnswer, DecodeJob } from './decode-worker.js'
import type { PointRun } from './head.js'

/**
 * Worker threads that decode cold runs for queries large enough to pay for the hand-off (posting
 * the bytes and the transferred arrays costs tens of microseconds, a run decodes in a few), so a
 * long query does not hold the event loop that every other call shares. Workers start on first use
 * and do not keep the process alive.
 */
export class DecodePool {
  private readonly workers: Worker[] = []
  private readonly pending = new Map<number, { resolve: (runs: PointRun[]) => void; reject: (err: Error) => void }>()
  private nextId = 0
  /** Runs decoded in workers since the pool started. */
  runsDecoded = 0
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
      this.pending.set(id, { resolve, reject })
      worker.postMessage({ id, runs: views } satisfies DecodeJob, [packed.buffer])
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
        if (answer.runs) {
          this.runsDecoded += answer.runs.length
          p.resolve(answer.runs)
        } else p.reject(new Error(`cannot decode runs in a worker: ${answer.error}`))
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
