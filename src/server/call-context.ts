import type { Deadline } from '@grpc/grpc-js'
import type { CallContext } from '../engine/storage-engine.js'
import { DeadlineError } from '../model/errors.js'

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
 * Ties an AbortSignal to the call. grpc-js emits 'cancelled' when the client cancels, the
 * connection drops, or the deadline passes (it answers DEADLINE_EXCEEDED itself), so the engine can
 * stop working on a call nobody waits for any more.
 */
export function bindCallContext(call: CancellableCall): BoundContext {
  const controller = new AbortController()
  const onCancelled = (): void => {
    const deadline = call.getDeadline()
    const passed = deadline instanceof Date ? deadline.getTime() <= Date.now() : deadline <= Date.now()
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
