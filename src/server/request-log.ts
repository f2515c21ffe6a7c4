/**
 * Request logging: one line per finished call with its method, status, duration and peer. Request
 * and response bodies and metadata are never logged: metadata carries bearer tokens, and bodies
 * carry users' data.
 */
import { ServerInterceptingCall, type ServerInterceptor, status } from '@grpc/grpc-js'
import { callStatusRecord } from './call-status.js'

export interface RequestLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

/** Logs every call at info, or at warn when it ended with an error. */
export function requestLogInterceptor(logger: RequestLogger): ServerInterceptor {
  return (descriptor, call) => {
    const started = process.hrtime.bigint()
    // Read now: grpc-js reports 'unknown' once the stream is gone, as it is when a client cancels.
    const peer = call.getPeer()
    let done = false
    const log = (code: status, details: string | undefined): void => {
      if (done) return
      done = true
      const entry = {
        method: descriptor.path,
        code: status[code] ?? String(code),
        durationMs: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
        peer,
        ...(code === status.OK ? {} : { details }),
      }
      if (code === status.OK) logger.info(entry, 'call')
      else logger.warn(entry, 'call failed')
    }
    // As in metrics.ts: the status the client got is callStatusInterceptor's, read at the end.
    const record = callStatusRecord(call)
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onCancel: () => {
            const sent = record?.sent
            if (sent === undefined) log(status.CANCELLED, 'cancelled by the client')
            else log(sent.code, sent.details)
          },
        }),
      sendStatus: (s, next) => {
        if (record === undefined) log(s.code ?? status.UNKNOWN, s.details)
        next(s)
      },
    })
  }
}
