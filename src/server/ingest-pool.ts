import { Worker } from 'node:worker_threads'
import type { SeriesWrite } from '../model/types.js'
import {
  failureError,
  type IngestAnswer,
  IngestDecoder,
  type IngestJob,
  type PackedWrite,
  SeriesDirectory,
} from './ingest-decode.js'
import { BodyError } from './prom-remote.js'

/** A decoded body as the engine takes it. */
export interface DecodedBody {
  readonly series: SeriesWrite[]
  readonly points: number
  /** Line protocol: the line where each series first appears. */
  readonly firstLines?: ArrayLike<number>
  /** Remote write: the series are in the engine's normal form (see PackedWrite.normalized). */
  readonly normalized?: true
  /** Remote write, when entries of one series were merged: the body's first entry of each series. */
  readonly firstEntries?: ArrayLike<number>
}

/** A job as the caller gives it: the pool numbers it. */
export type IngestRequest = IngestJob extends infer J ? (J extends IngestJob ? Omit<J, 'id'> : never) : never

interface Slot {
  readonly worker: Worker
  readonly directory: SeriesDirectory
  readonly pending: Map<number, { resolve: (d: DecodedBody) => void; reject: (err: Error) => void }>
}

/**
 * Worker threads that decode HTTP ingest bodies, so that the main thread, which every call shares,
 * spends its time on the engine's writes. Each worker takes at most maxInFlight bodies at a time;
 * more wait here, in order, which bounds the bodies held in the workers' queues. A worker that
 * dies fails its bodies with 503 (the sender retries) and is replaced. Workers start when bodies
 * need them (one whenever every running worker is busy, up to size), so a server that is only
 * written to over gRPC holds none (each holds 13 to 15 MiB). They do not keep the process alive,
 * and close() stops them.
 */
export class IngestPool {
  private readonly slots: Slot[] = []
  private readonly waiting: Array<() => void> = []
  private nextId = 0
  private closed = false

  private readonly maxInFlight: number
  private readonly onError: (err: Error) => void

  constructor(
    private readonly size: number,
    options: {
      /** Bodies one worker holds at a time; default 4. */
      readonly maxInFlight?: number
      /** Told why a worker died (an uncaught error); it is replaced either way. */
      readonly onError?: (err: Error) => void
    } = {},
  ) {
    this.maxInFlight = options.maxInFlight ?? 4
    this.onError = options.onError ?? (() => {})
  }

  /** The running workers, to watch them (and, in tests, to stop one). */
  get threads(): readonly Worker[] {
    return this.slots.map((s) => s.worker)
  }

  /**
   * Decodes a body in a worker. Each chunk is transferred when it owns its whole buffer, as the
   * socket's chunks do, and copied otherwise (a small Buffer is a view of a shared pool that must
   * not be taken away): the main thread copies no body of the HTTP listener's.
   */
  async decode(request: IngestRequest): Promise<DecodedBody> {
    if (this.closed) throw closedError()
    let slot = this.free()
    while (slot === undefined) {
      if (this.closed) throw closedError()
      await new Promise<void>((resolve) => this.waiting.push(resolve))
      slot = this.free()
    }
    if (this.closed) throw closedError()
    // new Uint8Array(c) copies (a Buffer's slice() would be a view of the same memory).
    const chunks = request.body.chunks.map((c) => (ownsBuffer(c) ? c : new Uint8Array(c)))
    const id = this.nextId++
    const job = { ...request, id, body: { chunks, size: request.body.size } } as IngestJob
    const chosen = slot
    return new Promise<DecodedBody>((resolve, reject) => {
      chosen.pending.set(id, { resolve, reject })
      chosen.worker.postMessage(
        job,
        chunks.map((c) => c.buffer as ArrayBuffer),
      )
    })
  }

  async close(): Promise<void> {
    this.closed = true
    const slots = this.slots.splice(0)
    for (const wake of this.waiting.splice(0)) wake()
    await Promise.all(slots.map((s) => s.worker.terminate()))
    for (const s of slots) failAll(s, closedError())
  }

  /** An idle worker, else a new one while there are fewer than size, else the least busy with room. */
  private free(): Slot | undefined {
    const idle = this.slots.find((s) => s.pending.size === 0)
    if (idle) return idle
    if (this.slots.length < this.size && !this.closed) {
      const slot = this.start()
      this.slots.push(slot)
      return slot
    }
    let best: Slot | undefined
    for (const s of this.slots) {
      if (s.pending.size < this.maxInFlight && (best === undefined || s.pending.size < best.pending.size)) best = s
    }
    return best
  }

  private wakeOne(): void {
    this.waiting.shift()?.()
  }

  private start(): Slot {
    const worker = startWorker()
    worker.unref()
    const slot: Slot = { worker, directory: new SeriesDirectory(), pending: new Map() }
    worker.on('message', (answer: IngestAnswer) => this.answered(slot, answer))
    // An error event is followed by exit; exit alone comes from terminate() or process.exit.
    worker.on('error', (err) => this.onError(err))
    worker.once('exit', () => {
      if (this.closed) return
      failAll(slot, new BodyError(503, 'the ingest worker decoding this body stopped; send it again'))
      const i = this.slots.indexOf(slot)
      if (i >= 0) this.slots[i] = this.start()
      for (let k = 0; k < this.maxInFlight; k++) this.wakeOne()
    })
    return slot
  }

  private answered(slot: Slot, answer: IngestAnswer): void {
    const p = slot.pending.get(answer.id)
    slot.pending.delete(answer.id)
    this.wakeOne()
    // The series a body defined are learnt even when it failed: the worker remembers them.
    let decoded: DecodedBody | undefined
    let error: Error | undefined
    try {
      slot.directory.learn(answer.defined)
      if (answer.failure !== undefined) error = failureError(answer.failure)
      else decoded = toDecoded(slot.directory, answer.packed)
    } catch (err) {
      error = err as Error
    }
    if (p === undefined) return
    if (decoded !== undefined) p.resolve(decoded)
    else p.reject(error ?? new Error('BUG: an ingest answer with neither points nor a failure'))
  }
}

/**
 * A worker's decoding, done on the calling thread: the same decoder and series table, so that a body
 * decoded in place is merged and refused exactly as in a worker. For bodies whose decoding costs less
 * than the hand-off (see WORKER_MIN_BODY_BYTES), and for all of them without workers.
 */
export class InPlaceDecoder {
  private readonly decoder = new IngestDecoder()
  private readonly directory = new SeriesDirectory()

  decode(request: IngestRequest): DecodedBody {
    const decoded = this.decoder.decode({ ...request, id: 0 })
    this.directory.learn(decoded.defined)
    if ('error' in decoded) throw decoded.error
    return toDecoded(this.directory, decoded.packed)
  }
}

function toDecoded(directory: SeriesDirectory, packed: PackedWrite | undefined): DecodedBody {
  if (packed === undefined) throw new Error('BUG: an ingest answer with neither points nor a failure')
  const series = directory.series(packed)
  return {
    series,
    points: packed.points,
    ...(packed.firstLines === undefined ? {} : { firstLines: packed.firstLines }),
    ...(packed.normalized === undefined ? {} : { normalized: packed.normalized }),
    ...(packed.firstEntries === undefined ? {} : { firstEntries: packed.firstEntries }),
  }
}

function failAll(slot: Slot, err: Error): void {
  for (const p of slot.pending.values()) p.reject(err)
  slot.pending.clear()
}

function closedError(): BodyError {
  return new BodyError(503, 'the HTTP listener is shutting down')
}

function ownsBuffer(bytes: Uint8Array): boolean {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
}

/**
 * Built, the worker is the JavaScript file beside this one. Run from source through tsx (the tests,
 * `npm run bench`), it is TypeScript, and a worker does not inherit the parent's loader: a small
 * bootstrap registers tsx's loader in the worker, then imports the worker module (as the engine's
 * DecodePool does).
 */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./ingest-worker.js', import.meta.url))
  const source = JSON.stringify(new URL('./ingest-worker.ts', import.meta.url).href)
  // The loader is a development dependency, named in the bootstrap only: built code never loads it.
  const loader = JSON.stringify('tsx/esm/api')
  return new Worker(`import(${loader}).then(({ register }) => { register(); return import(${source}) })`, {
    eval: true,
  })
}
