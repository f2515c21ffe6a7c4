/**
 * Request logging: one line per finished call with its method, status, duration and peer. Request
 * and response bodies and metadata are never logged: metadata carries bearer tokens, and bodies
 * carry users' data.
 */
import { ServerInterceptingCall, type ServerInterceptor, status } from '@grpc/grpc-js'

export interface RequestLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
}

/** Logs every call at info, or at warn when it ended with an error. */
export function requestLogInterceptor(logger: RequestLogger): ServerInterceptor {
  return (descriptor, call) => {
    const started = process.hrtime.bigint()
    let done = false
    const log = (code: status, details: string | undefined): void => {
      if (done) return
      done = true
      const entry = {
        method: descriptor.path,
        code: status[code] ?? String(code),
        durationMs: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
        peer: call.getPeer(),
        ...(code === status.OK ? {} : { details }),
      }
      if (code === status.OK) logger.info(entry, 'call')
      else logger.warn(entry, 'call failed')
    }
    return new ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => log(status.CANCELLED, 'cancelled by the client') }),
      sendStatus: (s, next) => {
        log(s.code ?? status.UNKNOWN, s.details)
        next(s)
      },
    })
  }
}
