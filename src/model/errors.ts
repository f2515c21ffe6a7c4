/**
 * Domain errors. Each has a stable `code`; the server maps codes to gRPC status codes in one
 * place (server/errors.ts), so nothing below the server knows about gRPC.
 */
export type ErrorCode = 'invalid_argument' | 'limit_exceeded' | 'not_found' | 'unavailable' | 'deadline_exceeded'

export abstract class V3Error extends Error {
  abstract readonly code: ErrorCode
}

/** One offending field: a path such as `series[3].tags[0].key` and what is wrong with it. */
export interface FieldViolation {
  readonly field: string
  readonly description: string
}

/** Bad input. Nothing of the request that carried it was stored. */
export class ValidationError extends V3Error {
  readonly code = 'invalid_argument'
  readonly violations: readonly FieldViolation[]

  constructor(violations: readonly FieldViolation[], options?: ErrorOptions) {
    const first = violations[0]
    const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : ''
    super(first ? `invalid ${first.field}: ${first.description}${more}` : 'invalid request', options)
    this.name = 'ValidationError'
    this.violations = violations
  }

  static field(field: string, description: string): ValidationError {
    return new ValidationError([{ field, description }])
  }

  /**
   * The same violations with the field prefix `from` replaced by `to`: a selector checked as
   * `selector` that the request carries as `additional_selectors[2]`, or the series `series[3]` of
   * the second result, `results[1].series[3]`.
   */
  renamed(from: string, to: string): ValidationError {
    const within = (field: string): boolean =>
      field === from || field.startsWith(`${from}.`) || field.startsWith(`${from}[`)
    return new ValidationError(
      this.violations.map((v) => (within(v.field) ? { ...v, field: to + v.field.slice(from.length) } : v)),
      { cause: this },
    )
  }
}

/** A configured limit was exceeded; names the limit and its value. */
export class LimitError extends V3Error {
  readonly code = 'limit_exceeded'
  readonly limit: string
  readonly value: number
  /** What could not be done, without the limit's name and value. */
  readonly reason: string

  constructor(limit: string, value: number, reason: string) {
    super(`${reason} (limit ${limit} = ${value})`)
    this.name = 'LimitError'
    this.limit = limit
    this.value = value
    this.reason = reason
  }
}

export class NotFoundError extends V3Error {
  readonly code = 'not_found'
  constructor(message: string) {
    super(message)
    this.name = 'NotFoundError'
  }
}

/** The engine cannot serve now: closed, closing, or a node or quorum is down. */
export class UnavailableError extends V3Error {
  readonly code = 'unavailable'
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'UnavailableError'
  }
}

/** The caller's deadline passed or it cancelled the call before the work finished. */
export class DeadlineError extends V3Error {
  readonly code = 'deadline_exceeded'
  constructor(message: string) {
    super(message)
    this.name = 'DeadlineError'
  }
}

/** A broken invariant. */
export function bug(message: string): Error {
  return new Error(`BUG: ${message}`)
}
