import type { handleUnaryCall, StatusObject } from '@grpc/grpc-js'
import type { CallContext, StorageEngine } from '../engine/storage-engine.js'
import { bindCallContext } from './call-context.js'
import { type ServerLogger, toStatus } from './errors.js'

/** What the handlers of every service need. */
export interface HandlerDeps {
  readonly engine: StorageEngine
  readonly logger: ServerLogger
}

/**
 * The status of a failed call. Once the call is cancelled or past its deadline, whatever the work
 * failed with (an AbortError from a wait, say) is a consequence of that, not a fault to log; the
 * client is gone or has its status already, so the abort reason stands in for it.
 */
export function failureStatus(err: unknown, signal: AbortSignal, deps: HandlerDeps, method: string): StatusObject {
  return toStatus(signal.aborted ? signal.reason : err, deps.logger, method)
}

/**
 * Adapts a promise-returning function to a grpc-js unary handler: the call's cancellation and
 * deadline reach the function as an AbortSignal, and every failure goes through toStatus.
 */
export function unary<Req, Res>(
  deps: HandlerDeps,
  method: string,
  fn: (request: Req, ctx: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const bound = bindCallContext(call)
    fn(call.request, bound.context).then(
      (response) => {
        bound.dispose()
        callback(null, response)
      },
      (err: unknown) => {
        bound.dispose()
        callback(failureStatus(err, bound.context.signal, deps, method))
      },
    )
  }
}

/** A request message that failed to decode; the handler rethrows it so that toStatus maps it. */
export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown }

/**
 * Wraps a decoder so that a malformed message reaches the handler as an error to map (a
 * ValidationError naming the field becomes INVALID_ARGUMENT), rather than grpc-js's INTERNAL
 * "Error deserializing request".
 */
export function decodeSafely<T>(decode: (bytes: Buffer) => T): (bytes: Buffer) => Decoded<T> {
  return (bytes) => {
    try {
      return { ok: true, value: decode(bytes) }
    } catch (error) {
      return { ok: false, error }
    }
  }
}

export function unwrap<T>(decoded: Decoded<T>): T {
  if (!decoded.ok) throw decoded.error
  return decoded.value
}
