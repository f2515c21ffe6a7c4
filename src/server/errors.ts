/**
 * The one place where errors become gRPC statuses. Domain errors map by their stable code; anything
 * else is a bug or an unexpected failure and becomes INTERNAL with a generic message, its cause
 * logged and never sent (it may hold paths or data of other requests). grpc-js would turn an
 * unmapped throw into UNKNOWN, so every handler sends what toStatus returns.
 */

import { BinaryWriter } from '@bufbuild/protobuf/wire'
import { Metadata, type StatusObject, status } from '@grpc/grpc-js'
import { type ErrorCode, type FieldViolation, V3Error, ValidationError } from '../model/errors.js'

/** What the server logs with; the engine's logger and console both fit. */
export interface ServerLogger {
  info(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

const STATUS_BY_CODE: Readonly<Record<ErrorCode, status>> = {
  invalid_argument: status.INVALID_ARGUMENT,
  limit_exceeded: status.RESOURCE_EXHAUSTED,
  not_found: status.NOT_FOUND,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
}

/** The trailer that carries a serialized google.rpc.Status, as gRPC's richer error model defines. */
export const STATUS_DETAILS_KEY = 'grpc-status-details-bin'
export const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest'

/** Violations listed in the status message; the rest are counted, and all are in the details. */
const MAX_LISTED_VIOLATIONS = 5

/**
 * Encodes google.rpc.Status { code = 1; message = 2; repeated Any details = 3 } holding one
 * google.rpc.BadRequest { repeated FieldViolation field_violations = 1 } with FieldViolation
 * { field = 1; description = 2 }. Hand-encoded because these two messages are all we need from
 * googleapis, and vendoring its protos would add them to our linted contract.
 */
export function encodeBadRequestStatus(code: number, message: string, violations: readonly FieldViolation[]): Buffer {
  const badRequest = new BinaryWriter()
  for (const v of violations) {
    badRequest.uint32(0x0a).fork().uint32(0x0a).string(v.field).uint32(0x12).string(v.description).join()
  }
  const any = new BinaryWriter().uint32(0x0a).string(BAD_REQUEST_TYPE_URL).uint32(0x12).bytes(badRequest.finish())
  const statusBytes = new BinaryWriter()
    .uint32(0x08)
    .int32(code)
    .uint32(0x12)
    .string(message)
    .uint32(0x1a)
    .bytes(any.finish())
    .finish()
  return Buffer.from(statusBytes)
}

function validationMessage(err: ValidationError): string {
  if (err.violations.length === 0) return err.message
  const listed = err.violations.slice(0, MAX_LISTED_VIOLATIONS).map((v) => `${v.field}: ${v.description}`)
  const more = err.violations.length - listed.length
  return more > 0 ? `${listed.join('; ')} (and ${more} more)` : listed.join('; ')
}

/**
 * Maps any error to the status to send. `method` names the RPC in the log line of an unexpected error.
 */
export function toStatus(err: unknown, logger: ServerLogger, method: string): StatusObject {
  if (err instanceof ValidationError) {
    const details = validationMessage(err)
    const metadata = new Metadata()
    metadata.set(STATUS_DETAILS_KEY, encodeBadRequestStatus(status.INVALID_ARGUMENT, details, err.violations))
    return { code: status.INVALID_ARGUMENT, details, metadata }
  }
  if (err instanceof V3Error) {
    return { code: STATUS_BY_CODE[err.code], details: err.message, metadata: new Metadata() }
  }
  logger.error({ err, method }, `${method} failed with an unexpected error`)
  return { code: status.INTERNAL, details: 'internal error; the server logged the cause', metadata: new Metadata() }
}
