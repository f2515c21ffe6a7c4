import type { handleClientStreamingCall, UntypedServiceImplementation } from '@grpc/grpc-js'
import {
  type WriteResponse,
  WriteServiceService,
  type WriteStreamResponse,
} from '../../gen/v3storage/v1/write_service.js'
import { LimitError, ValidationError } from '../model/errors.js'
import type { WriteResult } from '../model/types.js'
import { decodeWriteRequest, type SeriesHeaderCache, type WireWriteRequest } from '../wire/series-codec.js'
import { bindCallContext, withConsistency } from './call-context.js'
import { consistencyFromProto, writeBatchFromWire } from './convert.js'
import { type Decoded, decodeSafely, failureStatus, type HandlerDeps, unary, unwrap } from './handler-kit.js'
import { IN_FLIGHT_MESSAGES } from './stream-limits.js'

/**
 * WriteService with Write and WriteStream decoded by the hand-written codec: it keeps nanosecond
 * timestamps beyond 2^53 exact (as bigint) and reads points straight into typed arrays.
 */
export function writeServiceDefinition(headers: SeriesHeaderCache) {
  const decode = decodeSafely((bytes: Buffer) => decodeWriteRequest(bytes, headers))
  return {
    ...WriteServiceService,
    write: { ...WriteServiceService.write, requestDeserialize: decode },
    writeStream: { ...WriteServiceService.writeStream, requestDeserialize: decode },
  }
}

/** Names the message of a stream in a rejection: `messages[3].series[0].tags[1].key`. */
function inMessage(err: unknown, index: number): unknown {
  if (err instanceof ValidationError) {
    return new ValidationError(err.violations.map((v) => ({ ...v, field: `messages[${index}].${v.field}` })))
  }
  if (err instanceof LimitError) {
    return new LimitError(err.limit, err.value, `messages[${index}]: ${err.reason}`)
  }
  return err
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

export function writeServiceHandlers(deps: HandlerDeps): UntypedServiceImplementation {
  /**
   * Each message is written as it arrives, up to IN_FLIGHT_MESSAGES at once. A message is handed to
   * the engine only once the one before it has passed validation, which the engine does before it
   * queues a write: so when message i is rejected, the messages before it are written and none after
   * it. The response waits until every accepted message is durable.
   */
  const writeStream: handleClientStreamingCall<Decoded<WireWriteRequest>, WriteStreamResponse> = (call, callback) => {
    const bound = bindCallContext(call)
    let received = 0
    let inFlight = 0
    let checking = false
    let ended = false
    let answered = false
    let failure: { err: unknown; index: number } | undefined
    const total = { pointsWritten: 0, seriesWritten: 0 }

    const maybeAnswer = (): void => {
      if (answered || inFlight > 0 || checking || !(ended || failure)) return
      answered = true
      bound.dispose()
      if (failure)
        callback(
          failureStatus(inMessage(failure.err, failure.index), bound.context.signal, deps, 'WriteService.WriteStream'),
        )
      else callback(null, total)
    }
    const fail = (err: unknown, index: number): void => {
      if (!failure || index < failure.index) failure = { err, index }
    }

    call.on('data', (message: Decoded<WireWriteRequest>) => {
      if (failure || answered) return
      const index = received++
      call.pause()
      let write: Promise<WriteResult>
      try {
        // Each message states its own level, as a WriteRequest does.
        const request = unwrap(message)
        const ctx = withConsistency(bound.context, consistencyFromProto(request.consistency))
        write = deps.engine.write(writeBatchFromWire(request), ctx)
      } catch (err) {
        write = Promise.reject(err)
      }
      inFlight++
      void write
        .then(
          (result) => {
            total.pointsWritten += result.pointsWritten
            total.seriesWritten += result.seriesWritten
          },
          (err: unknown) => fail(err, index),
        )
        .finally(() => {
          inFlight--
          if (!checking && !failure && inFlight < IN_FLIGHT_MESSAGES) call.resume()
          maybeAnswer()
        })
      // One turn of the event loop lets a rejection the engine found before queueing the write
      // arrive, before the next message is read.
      checking = true
      void nextTurn().then(() => {
        checking = false
        if (!failure && inFlight < IN_FLIGHT_MESSAGES) call.resume()
        maybeAnswer()
      })
    })
    call.on('end', () => {
      ended = true
      maybeAnswer()
    })
    call.on('cancelled', () => {
      answered = true
      bound.dispose()
    })
  }

  return {
    write: unary(
      deps,
      'WriteService.Write',
      async (decoded: Decoded<WireWriteRequest>, ctx): Promise<WriteResponse> => {
        const request = unwrap(decoded)
        const consistency = consistencyFromProto(request.consistency)
        const result = await deps.engine.write(writeBatchFromWire(request), withConsistency(ctx, consistency))
        return { pointsWritten: result.pointsWritten, seriesWritten: result.seriesWritten }
      },
    ),
    writeStream,
  }
}
