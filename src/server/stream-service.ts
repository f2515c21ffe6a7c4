import type { FileRegistry } from '@bufbuild/protobuf'
import type {
  handleBidiStreamingCall,
  handleServerStreamingCall,
  ServerDuplexStream,
  StatusObject,
  UntypedServiceImplementation,
} from '@grpc/grpc-js'
import {
  type IngestResponse,
  type RejectReason,
  StreamServiceService,
  type SubscribeRequest,
} from '../../gen/v3storage/v1/stream_service.js'
import { UnavailableError, ValidationError } from '../model/errors.js'
import { decodeIngestEnvelope } from '../wire/ingest-codec.js'
import {
  decodeWriteRequest,
  type EncodedHeaderCache,
  encodeSeriesList,
  type SeriesHeaderCache,
  type WireWriteRequest,
} from '../wire/series-codec.js'
import { type BoundContext, bindCallContext, withConsistency } from './call-context.js'
import { consistencyFromProto, selectorFromProto, writeBatchFromWire } from './convert.js'
import { toStatus } from './errors.js'
import { type Decoded, decodeSafely, failureStatus, type HandlerDeps, unwrap } from './handler-kit.js'
import type { SeriesListResponse } from './query-service.js'
import { checkedService } from './request-check.js'
import { IN_FLIGHT_MESSAGES, isRejection, rejectedField, type StreamHandlerDeps } from './stream-limits.js'
import { SubscribeSession } from './subscribe-session.js'

/** An IngestRequest as the handler gets it: a malformed WriteRequest is rejected by sequence, not fatal. */
interface IngestMessage {
  readonly sequence: number
  readonly write: Decoded<WireWriteRequest>
}

function ingestDecoder(headers: SeriesHeaderCache): (bytes: Buffer) => IngestMessage {
  const decodeWrite = decodeSafely((bytes: Buffer) => decodeWriteRequest(bytes, headers))
  return (bytes) => {
    const envelope = decodeIngestEnvelope(bytes)
    return {
      sequence: envelope.sequence,
      write: decodeWrite(Buffer.from(envelope.write.buffer, envelope.write.byteOffset, envelope.write.byteLength)),
    }
  }
}

/**
 * StreamService with Ingest's WriteRequest decoded by the hand-written codec and Subscribe's points
 * encoded by it, straight from the engine's typed arrays.
 */
export function streamServiceDefinition(
  headers: SeriesHeaderCache,
  encoded: EncodedHeaderCache,
  registry: FileRegistry,
) {
  const checked = checkedService(StreamServiceService, registry)
  return {
    ...checked,
    ingest: { ...StreamServiceService.ingest, requestDeserialize: decodeSafely(ingestDecoder(headers)) },
    subscribe: {
      ...checked.subscribe,
      responseSerialize: (response: SeriesListResponse): Buffer => encodeSeriesList(response.series, encoded),
    },
  }
}

export interface StreamService {
  readonly handlers: UntypedServiceImplementation
  /**
   * Ends every open stream with UNAVAILABLE, so that a graceful shutdown does not wait for streams
   * that never end on their own: Ingest streams stop reading, acknowledge what is in flight once it
   * is durable, then end; subscriptions end at once.
   */
  shutdown(): void
}

const SHUTTING_DOWN = 'the server is shutting down; reconnect and resend after the last acknowledged sequence'

function unavailable(deps: HandlerDeps, details: string): StatusObject {
  return toStatus(new UnavailableError(details), deps.logger, 'StreamService')
}

export function streamService(deps: StreamHandlerDeps): StreamService {
  const open = new Set<() => void>()
  let shuttingDown = false

  const ingest: handleBidiStreamingCall<Decoded<IngestMessage>, IngestResponse> = (call) => {
    if (shuttingDown) {
      call.emit('error', unavailable(deps, SHUTTING_DOWN))
      return
    }
    new IngestSession(call, deps, open).start()
  }

  const subscribe: handleServerStreamingCall<Decoded<SubscribeRequest>, SeriesListResponse> = (call) => {
    if (shuttingDown) {
      call.emit('error', unavailable(deps, 'the server is shutting down'))
      return
    }
    let session: SubscribeSession
    try {
      const request = unwrap(call.request)
      const selector = selectorFromProto(request.selector)
      const sinceMs = request.sinceMs
      if (!Number.isSafeInteger(sinceMs) || sinceMs < 0) {
        throw ValidationError.field('since_ms', `must be 0 or a positive number of milliseconds, got ${sinceMs}`)
      }
      session = new SubscribeSession(call, deps, selector, sinceMs, () => open.delete(stop))
    } catch (err) {
      call.emit('error', toStatus(err, deps.logger, 'StreamService.Subscribe'))
      return
    }
    const stop = (): void => session.end(unavailable(deps, 'the server is shutting down'))
    open.add(stop)
    session.start()
  }

  return {
    handlers: { ingest, subscribe },
    shutdown: () => {
      shuttingDown = true
      for (const stop of [...open]) stop()
    },
  }
}

interface InFlight {
  readonly sequence: number
  state: 'pending' | 'durable' | 'rejected'
  reason?: RejectReason
}

/**
 * One Ingest stream. Messages are written in order, up to IN_FLIGHT_MESSAGES at once; the call is
 * paused while that many are in flight, so the producer is held back by gRPC flow control. An
 * acknowledgement names the highest sequence below which every message is durable or rejected, so
 * it can never run ahead of durable data even though a rejection is known before earlier writes
 * are durable.
 */
class IngestSession {
  private readonly bound: BoundContext
  private readonly inFlight: InFlight[] = []
  private lastSequence = 0
  private paused = false
  private ended = false
  private draining = false
  private finished = false
  /** A message that ends the call: set, the call drains what is in flight and ends with it. */
  private failure: { readonly err: unknown } | undefined
  private readonly stop = (): void => this.drainAndEnd()

  constructor(
    private readonly call: ServerDuplexStream<Decoded<IngestMessage>, IngestResponse>,
    private readonly deps: HandlerDeps,
    private readonly open: Set<() => void>,
  ) {
    this.bound = bindCallContext(call)
  }

  start(): void {
    this.open.add(this.stop)
    this.call.on('data', (message: Decoded<IngestMessage>) => this.receive(message))
    this.call.on('end', () => {
      this.ended = true
      this.settle()
    })
    this.call.on('cancelled', () => this.finish())
  }

  private receive(decoded: Decoded<IngestMessage>): void {
    if (this.finished || this.draining) return
    let message: IngestMessage
    try {
      message = unwrap(decoded)
      const expected = this.lastSequence + 1
      if (message.sequence === 0 || (this.lastSequence > 0 && message.sequence !== expected)) {
        throw ValidationError.field(
          'sequence',
          this.lastSequence === 0
            ? 'must be 1 or more'
            : `must be ${expected}, one more than the previous message's; got ${message.sequence}`,
        )
      }
    } catch (err) {
      // Without a trustworthy sequence nothing after this message can be acknowledged; the messages
      // before it are, once durable, and then the call ends with the error.
      this.failure = { err }
      this.drainAndEnd()
      return
    }
    this.lastSequence = message.sequence
    const entry: InFlight = { sequence: message.sequence, state: 'pending' }
    this.inFlight.push(entry)
    let write: Promise<unknown>
    try {
      // The WriteRequest inside states its consistency level, as a Write call's does.
      const request = unwrap(message.write)
      const ctx = withConsistency(this.bound.context, consistencyFromProto(request.consistency))
      write = this.deps.engine.write(writeBatchFromWire(request), ctx)
    } catch (err) {
      write = Promise.reject(err)
    }
    write.then(
      () => {
        entry.state = 'durable'
        this.settle()
      },
      (err: unknown) => {
        if (!isRejection(err)) {
          // The server, not the message, failed: leave it unacknowledged so the client resends it.
          this.fail(err)
          return
        }
        const reason = toStatus(err, this.deps.logger, 'StreamService.Ingest')
        entry.state = 'rejected'
        entry.reason = { code: reason.code, message: reason.details, field: rejectedField(err) }
        this.settle()
      },
    )
    if (this.inFlight.length >= IN_FLIGHT_MESSAGES && !this.paused) {
      this.paused = true
      this.call.pause()
    }
  }

  /** Acknowledges the settled prefix of the messages in flight, then reads on or ends. */
  private settle(): void {
    if (this.finished) return
    let through = 0
    while (this.inFlight.length > 0 && this.inFlight[0]!.state !== 'pending') {
      const entry = this.inFlight.shift()!
      if (entry.state === 'rejected') {
        this.call.write({ durableThrough: entry.sequence, rejectedSequence: entry.sequence, error: entry.reason })
        through = 0
      } else {
        through = entry.sequence
      }
    }
    if (through > 0) this.call.write({ durableThrough: through, rejectedSequence: 0, error: undefined })
    if (this.inFlight.length > 0) {
      if (this.paused && this.inFlight.length < IN_FLIGHT_MESSAGES && !this.draining) {
        this.paused = false
        this.call.resume()
      }
      return
    }
    if (this.draining && this.failure !== undefined) {
      this.fail(this.failure.err)
    } else if (this.draining) {
      this.finish()
      this.call.emit('error', unavailable(this.deps, SHUTTING_DOWN))
    } else if (this.ended) {
      this.finish()
      this.call.end()
    } else if (this.paused) {
      this.paused = false
      this.call.resume()
    }
  }

  private drainAndEnd(): void {
    this.draining = true
    this.call.pause()
    this.settle()
  }

  private fail(err: unknown): void {
    if (this.finished) return
    this.finish()
    this.call.emit('error', failureStatus(err, this.bound.context.signal, this.deps, 'StreamService.Ingest'))
  }

  private finish(): void {
    this.finished = true
    this.open.delete(this.stop)
    this.bound.dispose()
  }
}
