/**
 * The error types of the Prometheus HTTP API and the HTTP status each answers with, as Prometheus
 * 2.42 maps them (web/api/v1): bad input 400, a query that fails while it runs 422, a query
 * cancelled or past its deadline 503, the storage unable to serve 503, anything else 500.
 */
export type PromErrorType = 'bad_data' | 'execution' | 'canceled' | 'timeout' | 'unavailable' | 'internal'

const STATUS: Record<PromErrorType, number> = {
  bad_data: 400,
  execution: 422,
  canceled: 503,
  timeout: 503,
  unavailable: 503,
  internal: 500,
}

/** An error the query API answers in Prometheus' format: `{"status":"error","errorType":…,"error":…}`. */
export class PromQLError extends Error {
  readonly type: PromErrorType

  constructor(type: PromErrorType, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PromQLError'
    this.type = type
  }

  get status(): number {
    return STATUS[this.type]
  }
}

/** A query that cannot be evaluated as written: bad syntax, a wrong type, or a construct outside the supported subset. */
export function badData(message: string): PromQLError {
  return new PromQLError('bad_data', message)
}

/** A query that failed while it was evaluated. */
export function execution(message: string): PromQLError {
  return new PromQLError('execution', message)
}
