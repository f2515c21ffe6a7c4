/**
 * The status a call really ended with, for the interceptors that observe calls (metrics, request
 * logging).
 *
 * grpc-js ends some calls itself: a request message over grpc.max_receive_message_length
 * (RESOURCE_EXHAUSTED), a deadline passing on the server (DEADLINE_EXCEEDED), a request it cannot
 * decompress or deserialize, a response it cannot serialize or that is over the send limit. It
 * sends that status by calling sendStatus on its own innermost call object
 * (BaseServerInterceptingCall), so no interceptor's sendStatus sees it; they see only onCancel,
 * which grpc-js raises at the end of every call, answered or not, and counted such a call as
 * CANCELLED although its client got another status.
 *
 * The other way round, a status can pass the interceptors and never reach the client: when a
 * client resets a call whose request grpc-js is still reading, or its connection closes, Node ends
 * the request stream before it closes it, grpc-js passes that on as the client's half-close, and
 * the handler answers (a unary method without its request message answers UNIMPLEMENTED) on a
 * stream that is gone, which grpc-js drops. The client cancelled; that is what counts.
 *
 * callStatusInterceptor, listed first so that it wraps that innermost call, takes its sendStatus
 * and records the first status that goes out, from whoever sent it: the handler, an interceptor
 * or grpc-js. The first is the one the client gets, as grpc-js sends one status per call and
 * drops the later ones. An interceptor further out reads the record at onCancel: without a status
 * there, the call ended with none sent, because the client cancelled or went away (its own
 * deadline timer included: a gRPC client resets the stream when its deadline passes, before the
 * server's deadline, counted from the call's arrival, does).
 */
import {
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type status,
} from '@grpc/grpc-js'

export interface SentStatus {
  readonly code: status
  readonly details: string | undefined
}

/** What callStatusInterceptor learnt of one call. */
export interface CallStatusRecord {
  /** The status sent to the client; undefined until one is, and for ever when none was. */
  readonly sent: SentStatus | undefined
}

/**
 * The records, by call. A call is known by its metrics recorder: the one per-call object that every
 * layer of the call hands out as the same instance (ServerInterceptingCall forwards
 * getMetricsRecorder to the call it wraps), so an interceptor anywhere in the chain finds the
 * record the innermost one keeps. Keys are held weakly, so a record goes with its call, and every
 * call has its own, so servers in one process do not see each other's calls. It is module state
 * because the observers are built before the server (in src/cli) and only ever hold a call.
 */
const records = new WeakMap<object, { sent: SentStatus | undefined }>()

/** Records the status of every call; must be the first of the server's interceptors. */
export function callStatusInterceptor(): ServerInterceptor {
  return (_descriptor, call) => {
    const record: { sent: SentStatus | undefined } = { sent: undefined }
    records.set(call.getMetricsRecorder(), record)
    // getPeer reads the stream's session, which Node clears when it destroys the stream (the
    // client reset it or the connection closed); grpc-js then sends nothing. A call on a socket
    // without a remote address (a Unix socket) is 'unknown' from the start and cannot tell.
    const peer = call.getPeer()
    const gone = (): boolean => peer !== 'unknown' && call.getPeer() === 'unknown'
    const send = call.sendStatus.bind(call)
    // grpc-js sends the statuses of its own with this.sendStatus on this object: a property of the
    // instance takes those as well as the ones from the interceptors and the handler.
    call.sendStatus = (s) => {
      if (record.sent === undefined && !gone()) record.sent = { code: s.code, details: s.details }
      send(s)
    }
    return new ServerInterceptingCall(call)
  }
}

/** The record of a call, or undefined when callStatusInterceptor does not wrap it. */
export function callStatusRecord(call: ServerInterceptingCallInterface): CallStatusRecord | undefined {
  return records.get(call.getMetricsRecorder())
}
