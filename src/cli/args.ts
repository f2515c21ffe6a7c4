/** Parsers for command-line values: durations, sizes and counts, each error naming its flag. */

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
}

export class UsageError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'UsageError'
  }
}

/** `90s`, `15m`, `2h`, `30d`, `500ms`, or a plain number of milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(text.trim())
  const unit = DURATION_UNITS[match?.[2] ?? 'ms']
  if (!match || unit === undefined) {
    throw new UsageError(`--${flag} must be a duration such as 500ms, 90s, 15m, 2h or 30d, got ${JSON.stringify(text)}`)
  }
  const ms = Math.round(Number(match[1]) * unit)
  if (!Number.isSafeInteger(ms)) throw new UsageError(`--${flag} is too long: ${text} is beyond 2^53 ms`)
  return ms
}

/** `16MiB`, `512KiB`, `1GB`, or a plain number of bytes. */
export function parseSize(flag: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase()]
  if (!match || unit === undefined) {
    throw new UsageError(`--${flag} must be a size such as 65536, 512KiB or 16MiB, got ${JSON.stringify(text)}`)
  }
  return Math.round(Number(match[1]) * unit)
}

/** A non-negative integer, `_` allowed as a digit separator (1_000_000). */
export function parseCount(flag: string, text: string): number {
  const value = Number(text.replaceAll('_', ''))
  if (!/^[\d_]+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new UsageError(`--${flag} must be a whole number, got ${JSON.stringify(text)}`)
  }
  return value
}

/** host:port with a port from 0 to 65535; the host may be a bracketed IPv6 address. */
export function parseListen(text: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(text)
  if (!match || Number(match[2]) > 65535) {
    throw new UsageError(`--listen must be host:port (port 0 picks a free one), got ${JSON.stringify(text)}`)
  }
  return text
}
