import { once } from 'node:events'
import type { ServerWritableStream, StatusObject } from '@grpc/grpc-js'
import type { SubscribeRequest } from '../../gen/v3storage/v1/stream_service.js'
import type { Subscription } from '../engine/storage-engine.js'
import { LimitError } from '../model/errors.js'
import { canonicalSeriesKey } from '../model/series-key.js'
import { MAX_TIMESTAMP_MS } from '../model/timestamps.js'
import type { Selector, SeriesPoints } from '../model/types.js'
import { type BoundContext, bindCallContext } from './call-context.js'
import { chunkSeries } from './chunking.js'
import { toStatus } from './errors.js'
import { type Decoded, failureStatus } from './handler-kit.js'
import type { SeriesListResponse } from './query-service.js'
import { pointCount, STREAM_DEFAULTS, type StreamHandlerDeps } from './stream-limits.js'

type SubscribeCall = ServerWritableStream<Decoded<SubscribeRequest>, SeriesListResponse>

/**
 * Removes from the live points those the replay already holds (series are keyed by their canonical
 * key: the engine hands out sorted tags both ways). The listener is registered before
 * the stored points are read, so a point written in between arrives both ways; the same series,
 * timestamp and value is the same point (a rewrite with an equal value changes nothing either).
 */
function dropReplayed(live: readonly (readonly SeriesPoints[])[], replayed: readonly SeriesPoints[]): SeriesPoints[][] {
  const wanted = new Set<string>()
  for (const batch of live) for (const s of batch) wanted.add(canonicalSeriesKey(s.metric, s.tags))
  const stored = new Map<string, Map<number, number>>()
  for (const s of replayed) {
    const key = canonicalSeriesKey(s.metric, s.tags)
    if (!wanted.has(key)) continue
    const points = stored.get(key) ?? new Map<number, number>()
    for (let i = 0; i < s.timestamps.length; i++) points.set(s.timestamps[i]!, s.values[i]!)
    stored.set(key, points)
  }
  if (stored.size === 0) return live.map((batch) => [...batch])
  return live.map((batch) =>
    batch.flatMap((s) => {
      const points = stored.get(canonicalSeriesKey(s.metric, s.tags))
      if (!points) return [s]
      const keep: number[] = []
      s.timestamps.forEach((t, i) => {
        const value = points.get(t)
        if (value === undefined || !Object.is(value, s.values[i])) keep.push(i)
      })
      if (keep.length === 0) return []
      return [
        {
          metric: s.metric,
          tags: s.tags,
          timestamps: Float64Array.from(keep, (i) => s.timestamps[i]!),
          values: Float64Array.from(keep, (i) => s.values[i]!),
        },
      ]
    }),
  )
}

/**
 * One Subscribe call. The engine's listener only queues; a timer turn later the queue goes out in
 * messages of at most streamChunkBytes, and while the client does not take them (grpc-js reports
 * the stream full) they wait in the queue. Once more than subscriberBufferPoints points wait, the
 * subscription ends with RESOURCE_EXHAUSTED: a slow subscriber costs a bounded amount of memory
 * and never slows a writer. Memory per subscriber: the queue (at most that many points) plus the
 * messages grpc-js holds (at most 16, of at most streamChunkBytes each).
 */
export class SubscribeSession {
  private readonly bound: BoundContext
  private readonly stopped = new AbortController()
  private readonly limit: number
  private subscription: Subscription | undefined
  private queue: SeriesPoints[][] = []
  private queuedPoints = 0
  private live = false
  private scheduled = false
  private waitingForDrain = false
  private done = false

  constructor(
    private readonly call: SubscribeCall,
    private readonly deps: StreamHandlerDeps,
    private readonly selector: Selector,
    private readonly sinceMs: number,
    private readonly onEnd: () => void,
  ) {
    this.bound = bindCallContext(call)
    this.limit = deps.subscriberBufferPoints ?? STREAM_DEFAULTS.subscriberBufferPoints
  }

  start(): void {
    this.call.on('cancelled', () => this.release())
    try {
      this.subscription = this.deps.engine.subscribe(this.selector, (series) => this.enqueue(series))
    } catch (err) {
      this.fail(err)
      return
    }
    // The first message tells the client from when it sees every point: from now.
    this.call.write({ series: [] })
    if (this.sinceMs === 0) {
      this.goLive()
      return
    }
    this.replay().then(
      () => this.goLive(),
      (err: unknown) => this.fail(err),
    )
  }

  /** Ends the call with the status; a no-op once it has ended. */
  end(statusObject: StatusObject): void {
    if (this.done) return
    this.release()
    this.call.emit('error', statusObject)
  }

  private async replay(): Promise<void> {
    const signal = AbortSignal.any([this.bound.context.signal, this.stopped.signal])
    const stored = await this.deps.engine.query(
      { selector: this.selector, startMs: this.sinceMs, endMs: MAX_TIMESTAMP_MS + 1 },
      { signal },
    )
    if (this.done) return
    this.queue = dropReplayed(this.queue, stored)
    this.queuedPoints = this.queue.reduce((n, batch) => n + pointCount(batch), 0)
    for (const chunk of chunkSeries(stored, this.deps.streamChunkBytes)) {
      signal.throwIfAborted()
      if (!this.call.write({ series: chunk })) await once(this.call, 'drain', { signal })
    }
  }

  private goLive(): void {
    if (this.done) return
    this.live = true
    this.schedule()
  }

  /** The engine's listener: runs inside the write path, so it only queues. */
  private enqueue(series: readonly SeriesPoints[]): void {
    if (this.done) return
    this.queue.push([...series])
    this.queuedPoints += pointCount(series)
    if (this.queuedPoints > this.limit) {
      const behind = new LimitError(
        'subscriber_buffer_points',
        this.limit,
        'the subscriber fell behind; subscribe again, with since_ms to catch up',
      )
      this.release()
      // The status goes out after the write path has finished.
      setImmediate(() => this.call.emit('error', toStatus(behind, this.deps.logger, 'StreamService.Subscribe')))
      return
    }
    this.schedule()
  }

  private schedule(): void {
    if (!this.live || this.scheduled || this.waitingForDrain || this.done) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      this.pump()
    })
  }

  /** Sends what waits, all queued batches merged into as few messages as fit, until the stream is full. */
  private pump(): void {
    if (this.done || this.waitingForDrain || this.queue.length === 0) return
    let chunks: SeriesPoints[][]
    try {
      chunks = chunkSeries(this.queue.flat(), this.deps.streamChunkBytes)
    } catch (err) {
      this.fail(err)
      return
    }
    this.queue = []
    for (let i = 0; i < chunks.length; i++) {
      const chunk = chunks[i]!
      this.queuedPoints -= pointCount(chunk)
      if (!this.call.write({ series: chunk })) {
        this.queue = chunks.slice(i + 1)
        this.waitingForDrain = true
        this.call.once('drain', () => {
          this.waitingForDrain = false
          this.pump()
        })
        return
      }
    }
  }

  private fail(err: unknown): void {
    this.end(failureStatus(err, this.bound.context.signal, this.deps, 'StreamService.Subscribe'))
  }

  /** Frees everything the subscription holds: the engine's listener, the queue, the call's context. */
  private release(): void {
    if (this.done) return
    this.done = true
    this.subscription?.close()
    this.queue = []
    this.queuedPoints = 0
    this.stopped.abort()
    this.bound.dispose()
    this.onEnd()
  }
}
