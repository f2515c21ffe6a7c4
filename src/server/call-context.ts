import type { Deadline } from '@grpc/grpc-js'
import type { CallContext } from '../engine/storage-engine.js'
import { DeadlineError } from '../model/errors.js'
import type { ConsistencyLevel } from '../model/types.js'

/**
 * What every kind of server call offers: its deadline and the 'cancelled' event. Structural, so
 * that unary, client-streaming, server-streaming and bidi calls all fit.
 */
export interface CancellableCall {
  getDeadline(): Deadline
  on(event: 'cancelled', listener: () => void): unknown
  off(event: 'cancelled', listener: () => void): unknown
}

/** A CallContext tied to one call, and the function that detaches it once the call is answered. */
export interface BoundContext {
  readonly context: CallContext & { readonly signal: AbortSignal }
  dispose(): void
}

/**
 * How close to its deadline a cancellation counts as the deadline passing. The client's own
 * deadline timer fires first and resets the stream; the server computed its deadline from the
 * grpc-timeout header when the call arrived, so it lies a little later, by the transit time plus
 * any event-loop lag, and a cancellation that close to it is the client's deadline, not a user's
 * cancel.
 */
const DEADLINE_RACE_MS = 250

/**
 * Ties an AbortSignal to the call. grpc-js emits 'cancelled' when the client cancels, the
 * connection drops, or the deadline passes (it answers DEADLINE_EXCEEDED itself), so the engine can
 * stop working on a call nobody waits for any more.
 */
export function bindCallContext(call: CancellableCall): BoundContext {
  const controller = new AbortController()
  const onCancelled = (): void => {
    const deadline = call.getDeadline()
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline
    const passed = deadlineMs - Date.now() <= DEADLINE_RACE_MS
    controller.abort(new DeadlineError(passed ? 'the deadline passed' : 'the client cancelled the call'))
  }
  call.on('cancelled', onCancelled)
  return {
    context: { signal: controller.signal },
    dispose: () => {
      call.off('cancelled', onCancelled)
    },
  }
}

/**
 * The context of one request of a call: the call's, with the consistency level the request asks
 * for. undefined (CONSISTENCY_UNSPECIFIED) leaves the context as it is, so the engine applies the
 * server's default.
 */
export function withConsistency<C extends CallContext>(ctx: C, consistency: ConsistencyLevel | undefined): C {
  return consistency === undefined ? ctx : { ...ctx, consistency }
}
