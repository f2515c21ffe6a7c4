import { V3Error, ValidationError } from '../model/errors.js'
import type { SeriesPoints } from '../model/types.js'
import type { HandlerDeps } from './handler-kit.js'

export const STREAM_DEFAULTS = {
  /** Points a subscriber may have waiting before it is cut off with RESOURCE_EXHAUSTED. */
  subscriberBufferPoints: 100_000,
} as const

export interface StreamHandlerDeps extends HandlerDeps {
  /** Upper bound of the encoded size of one Subscribe message, in bytes. */
  readonly streamChunkBytes: number
  /** Points one subscriber may have waiting; default STREAM_DEFAULTS.subscriberBufferPoints. */
  readonly subscriberBufferPoints?: number
}

/**
 * Messages of one WriteStream or Ingest stream handed to the engine at once. More than one lets
 * the engine's group commit share an fsync between them; few keep the memory of a stream small:
 * the server reads the next message only while fewer are in flight, so gRPC flow control slows a
 * faster producer. grpc-js reads up to 16 further messages ahead of the handler (its readable
 * buffer), so one stream holds at most IN_FLIGHT_MESSAGES + 17 messages.
 */
export const IN_FLIGHT_MESSAGES = 8

/** Whether a write failed because of its content (reported, the stream goes on) rather than the server. */
export function isRejection(err: unknown): err is V3Error {
  return err instanceof V3Error && (err.code === 'invalid_argument' || err.code === 'limit_exceeded')
}

/** The field a rejection names first, or '' when no one field is at fault. */
export function rejectedField(err: V3Error): string {
  return err instanceof ValidationError ? (err.violations[0]?.field ?? '') : ''
}

export function pointCount(series: readonly SeriesPoints[]): number {
  let n = 0
  for (const s of series) n += s.timestamps.length
  return n
}
