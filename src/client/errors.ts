import { BinaryReader } from '@bufbuild/protobuf/wire'
import { type Metadata, type ServiceError, status } from '@grpc/grpc-js'
import { type FieldViolation, ValidationError } from '../model/errors.js'

const STATUS_DETAILS_KEY = 'grpc-status-details-bin'
const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest'

/** A failed call: its gRPC status code, the server's message, and the offending fields for bad input. */
export class V3ClientError extends Error {
  /** The gRPC status code, e.g. status.INVALID_ARGUMENT (3). */
  readonly code: status
  /** The status message as the server sent it. */
  readonly details: string
  /** For INVALID_ARGUMENT: every offending field, from the google.rpc.BadRequest in the status details. */
  readonly violations: readonly FieldViolation[]
  readonly metadata: Metadata | undefined

  constructor(
    code: status,
    details: string,
    violations: readonly FieldViolation[] = [],
    metadata?: Metadata,
    options?: ErrorOptions,
  ) {
    super(`${status[code] ?? code}: ${details}`, options)
    this.name = 'V3ClientError'
    this.code = code
    this.details = details
    this.violations = violations
    this.metadata = metadata
  }

  /** The status code's name, e.g. INVALID_ARGUMENT. */
  get codeName(): string {
    return status[this.code] ?? String(this.code)
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'details' in err
}

function readBadRequest(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = []
  const r = new BinaryReader(bytes)
  while (r.pos < r.len) {
    const [field, wireType] = r.tag()
    if (field !== 1) {
      r.skip(wireType)
      continue
    }
    const v = new BinaryReader(r.bytes())
    let name = ''
    let description = ''
    while (v.pos < v.len) {
      const [f, wt] = v.tag()
      if (f === 1) name = v.string()
      else if (f === 2) description = v.string()
      else v.skip(wt)
    }
    violations.push({ field: name, description })
  }
  return violations
}

/** The field violations in a google.rpc.Status trailer, if it holds a google.rpc.BadRequest. */
function violationsFrom(metadata: Metadata | undefined): FieldViolation[] {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0]
  if (!(raw instanceof Uint8Array)) return []
  try {
    const violations: FieldViolation[] = []
    const r = new BinaryReader(raw)
    while (r.pos < r.len) {
      const [field, wireType] = r.tag()
      if (field !== 3) {
        r.skip(wireType)
        continue
      }
      const any = new BinaryReader(r.bytes())
      let typeUrl = ''
      let value: Uint8Array = new Uint8Array()
      while (any.pos < any.len) {
        const [f, wt] = any.tag()
        if (f === 1) typeUrl = any.string()
        else if (f === 2) value = any.bytes()
        else any.skip(wt)
      }
      if (typeUrl === BAD_REQUEST_TYPE_URL) violations.push(...readBadRequest(value))
    }
    return violations
  } catch {
    // Details are a courtesy: a trailer we cannot parse leaves the code and message intact.
    return []
  }
}

/** The label grpc-js leaves at the end of a failed connection's details when it has no note. */
const EMPTY_RESOLUTION_NOTE = / Resolution note: *$/

/**
 * The error of a call made on a client or writer after its close(): CANCELLED, as the caller ended
 * it, and at once (grpc-js would throw a plain Error for a call, and let waitForReady run to its
 * deadline).
 */
export function closedError(what: string): V3ClientError {
  return new V3ClientError(status.CANCELLED, `${what} is closed`, [])
}

/** Turns whatever a call failed with into a V3ClientError. */
export function toClientError(err: unknown): V3ClientError {
  if (err instanceof V3ClientError) return err
  if (isServiceError(err)) {
    // grpc-js ends a failed connection's details with "Resolution note: " and nothing after it when
    // name resolution had nothing to say; the message reads better without the empty label.
    const details = err.details.replace(EMPTY_RESOLUTION_NOTE, '')
    return new V3ClientError(err.code, details, violationsFrom(err.metadata), err.metadata, { cause: err })
  }
  if (err instanceof ValidationError) {
    // Raised before sending, by the encoder: the same shape as the server's INVALID_ARGUMENT.
    const details = err.violations.map((v) => `${v.field}: ${v.description}`).join('; ')
    return new V3ClientError(status.INVALID_ARGUMENT, details, err.violations, undefined, { cause: err })
  }
  const message = err instanceof Error ? err.message : String(err)
  return new V3ClientError(status.UNKNOWN, message, [], undefined, { cause: err })
}
