/** Time values on the command line and in CSV cells: RFC 3339, epoch numbers, and `-1h` relative to now. */
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, normalizeTimestamp, parseRfc3339 } from '../model/timestamps.js'
import type { Precision } from '../model/types.js'
import { parseDuration, UsageError } from './args.js'

const INTEGER = /^-?\d+$/

export const PRECISIONS: readonly Precision[] = ['s', 'ms', 'us', 'ns']

/**
 * A CSV timestamp cell: an epoch integer in `precision`, or RFC 3339. Returns milliseconds, or a
 * string saying why the cell is not a timestamp.
 */
export function parseTimestampCell(text: string, precision: Precision): number | string {
  if (INTEGER.test(text)) {
    // Nanoseconds since the epoch exceed 2^53: a bigint keeps them exact until they are divided.
    const raw = text.length > 15 ? BigInt(text) : Number(text)
    const ms = normalizeTimestamp(raw, precision)
    return Number.isNaN(ms) ? `timestamp ${text} (${precision}) is out of range` : ms
  }
  const ms = parseRfc3339(text, true)
  if (Number.isNaN(ms)) {
    return `timestamp ${JSON.stringify(text)} is neither an integer in ${precision} nor RFC 3339 (2026-01-01T00:00:00Z)`
  }
  if (ms < MIN_TIMESTAMP_MS || ms > MAX_TIMESTAMP_MS) return `timestamp ${text} is out of range`
  return ms
}

/**
 * `--start`/`--end`: RFC 3339, epoch milliseconds, `now`, or a duration before now (`-1h`, `-30d`).
 */
export function parseTimeFlag(flag: string, text: string, nowMs: number): number {
  if (text === 'now') return nowMs
  if (text.startsWith('-') && !INTEGER.test(text)) return nowMs - parseDuration(flag, text.slice(1))
  if (INTEGER.test(text)) {
    const ms = Number(text)
    if (!Number.isSafeInteger(ms)) throw new UsageError(`--${flag} is out of range: ${text} is beyond ±2^53 ms`)
    return ms
  }
  const ms = parseRfc3339(text, true)
  if (Number.isNaN(ms)) {
    throw new UsageError(
      `--${flag} must be RFC 3339 (2026-01-01T00:00:00Z), epoch milliseconds, now, or relative (-1h), got ${JSON.stringify(text)}`,
    )
  }
  return ms
}

/** Milliseconds since the epoch as RFC 3339 in UTC, the form export and query print. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString()
}

export function parsePrecision(text: string | undefined): Precision {
  if (text === undefined) return 'ms'
  if ((PRECISIONS as readonly string[]).includes(text)) return text as Precision
  throw new UsageError(`--precision must be s, ms, us or ns, got ${JSON.stringify(text)}`)
}
