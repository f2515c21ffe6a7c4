import { type Client, type ClientReadableStream, type Metadata, status } from '@grpc/grpc-js'
import type { Selector as ProtoSelector } from '../../gen/v3storage/v1/common.js'
import { StreamServiceService } from '../../gen/v3storage/v1/stream_service.js'
import type { SeriesPoints } from '../model/types.js'
import { decodeSeriesList } from '../wire/series-codec.js'
import { toClientError } from './errors.js'

export interface SubscribeOptions {
  /** Replay stored points from this time on (ms since the epoch) before the live ones; absent or 0: live only. */
  readonly sinceMs?: number
  /** Ends the subscription when aborted; the iterator then simply finishes. */
  readonly signal?: AbortSignal
}

/**
 * A live subscription: iterate it for the points as they are written (one array of series per
 * server message, each series' points in timestamp order), or `cancel()` it. A failure (such as
 * RESOURCE_EXHAUSTED for a subscriber that fell too far behind) is thrown by the iterator as a
 * V3ClientError.
 */
export interface LiveSubscription extends AsyncIterable<SeriesPoints[]> {
  /**
   * Resolves once the server has the subscription live: every matching point written from then on
   * will be delivered. Rejects with the error when the subscription fails before that.
   */
  readonly live: Promise<void>
  cancel(): void
}

/** Messages the subscription holds before it stops reading, so that gRPC flow control holds the server back. */
const QUEUE_HIGH = 16

function toSeriesPoints(bytes: Buffer): SeriesPoints[] {
  return decodeSeriesList(bytes).map((s) => ({
    metric: s.metric,
    tags: s.tags,
    // Subscribed points are milliseconds and always fit a double.
    timestamps: s.timestamps instanceof Float64Array ? s.timestamps : Float64Array.from(s.timestamps, Number),
    values: s.values,
  }))
}

export function openSubscription(
  client: Client,
  metadata: Metadata,
  selector: ProtoSelector,
  options: SubscribeOptions = {},
): LiveSubscription {
  const def = StreamServiceService.subscribe
  const call: ClientReadableStream<SeriesPoints[]> = client.makeServerStreamRequest(
    def.path,
    def.requestSerialize,
    toSeriesPoints,
    { selector, sinceMs: options.sinceMs ?? 0 },
    metadata,
    {},
  )
  const queue: SeriesPoints[][] = []
  let failure: unknown
  let ended = false
  let cancelled = false
  let wake: (() => void) | undefined
  let markLive: () => void = () => {}
  let failLive: (err: unknown) => void = () => {}
  const live = new Promise<void>((resolve, reject) => {
    markLive = resolve
    failLive = reject
  })
  // A caller that only iterates need not await `live`; its failure reaches the iterator too.
  live.catch(() => {})

  const cancel = (): void => {
    cancelled = true
    call.cancel()
  }
  if (options.signal?.aborted) cancel()
  options.signal?.addEventListener('abort', cancel, { once: true })

  call.on('data', (series: SeriesPoints[]) => {
    markLive()
    if (series.length === 0) return
    queue.push(series)
    if (queue.length >= QUEUE_HIGH) call.pause()
    wake?.()
  })
  call.on('error', (err: unknown) => {
    const clientError = toClientError(err)
    if (cancelled && clientError.code === status.CANCELLED) ended = true
    else failure = clientError
    failLive(clientError)
    wake?.()
  })
  call.on('end', () => {
    ended = true
    failLive(toClientError(new Error('the subscription ended before it was live')))
    wake?.()
  })

  async function* iterate(): AsyncGenerator<SeriesPoints[]> {
    try {
      for (;;) {
        const next = queue.shift()
        if (next !== undefined) {
          if (queue.length < QUEUE_HIGH / 2) call.resume()
          yield next
          continue
        }
        if (failure !== undefined) throw failure
        if (ended) return
        await new Promise<void>((resolve) => {
          wake = resolve
        })
        wake = undefined
      }
    } finally {
      options.signal?.removeEventListener('abort', cancel)
      // Frees the server's side when the consumer stops early; a no-op once the call has ended.
      cancel()
    }
  }

  return { live, cancel, [Symbol.asyncIterator]: iterate }
}
