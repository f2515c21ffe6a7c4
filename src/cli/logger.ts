/**
 * The process logger: pino, structured JSON lines on stderr (stdout carries only what scripts read,
 * such as the listening line), or pino-pretty's human-readable lines when stderr is a terminal.
 * Writes are synchronous so that the last lines before an exit are not lost.
 */
import { createRequire } from 'node:module'
import { type Logger as PinoLogger, pino } from 'pino'

/** pino-pretty is loaded only for a terminal: a server whose stderr goes to a file or a pipe never needs it. */
const require = createRequire(import.meta.url)

export type LogFormat = 'auto' | 'json' | 'pretty'

/**
 * Field paths that could hold a secret: nothing this code logs carries them, this is the guard for
 * what a future call might pass by mistake.
 */
const REDACT = ['token', '*.token', 'authorization', '*.authorization', 'password', '*.password']

export function createLogger(level: string, format: LogFormat): PinoLogger {
  const usePretty = format === 'pretty' || (format === 'auto' && process.stderr.isTTY === true)
  const options = { level, redact: { paths: REDACT, censor: '[redacted]' }, base: { pid: process.pid } }
  if (usePretty) {
    const pretty = require('pino-pretty') as typeof import('pino-pretty')
    return pino(options, pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY === true }))
  }
  return pino(options, pino.destination({ fd: 2, sync: true }))
}
