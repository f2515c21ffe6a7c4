import { ValidationError } from './errors.js'

/** Bounds on what one write request may carry. */
export interface WriteLimits {
  /** Series entries in one request, counted before entries of the same series are merged. */
  readonly maxSeriesPerRequest: number
  /** Timestamps in one request, summed over its series entries. */
  readonly maxPointsPerRequest: number
  readonly maxTagsPerSeries: number
  /** UTF-8 bytes of one tag value. */
  readonly maxTagValueBytes: number
  /** UTF-8 bytes of a metric name or a tag key. */
  readonly maxNameBytes: number
  /** Whether NaN values (staleness or gap markers) are stored; ±Infinity is refused either way. */
  readonly allowNaN: boolean
}

export const DEFAULT_WRITE_LIMITS: WriteLimits = Object.freeze({
  maxSeriesPerRequest: 10_000,
  maxPointsPerRequest: 1_000_000,
  maxTagsPerSeries: 64,
  maxTagValueBytes: 1024,
  maxNameBytes: 256,
  allowNaN: false,
})

/** Write limits as a configuration states them: each one absent takes its default. */
export type WriteLimitsOptions = Partial<WriteLimits>

const COUNT_LIMITS = [
  'maxSeriesPerRequest',
  'maxPointsPerRequest',
  'maxTagsPerSeries',
  'maxTagValueBytes',
  'maxNameBytes',
] as const

/**
 * Fills in the defaults and checks the result: every count a positive safe integer. Throws a
 * ValidationError naming each bad option as `limits.<name>`.
 */
export function resolveWriteLimits(options: WriteLimitsOptions = {}): WriteLimits {
  const limits: WriteLimits = { ...DEFAULT_WRITE_LIMITS, ...withoutUndefined(options) }
  const violations = []
  for (const name of COUNT_LIMITS) {
    const value = limits[name]
    if (!Number.isSafeInteger(value) || value < 1) {
      violations.push({ field: `limits.${name}`, description: `must be a positive integer, got ${value}` })
    }
  }
  if (typeof limits.allowNaN !== 'boolean') {
    violations.push({ field: 'limits.allowNaN', description: `must be true or false, got ${String(limits.allowNaN)}` })
  }
  if (violations.length > 0) throw new ValidationError(violations)
  return Object.freeze(limits)
}

/** Spreading `{ maxTagsPerSeries: undefined }` would erase the default; absent and undefined mean the same. */
function withoutUndefined(options: WriteLimitsOptions): WriteLimitsOptions {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined))
}

/** Selectors besides the first that one query may carry; the proto comment states it. */
export const MAX_ADDITIONAL_SELECTORS = 100
