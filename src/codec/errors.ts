/**
 * Errors of the codec layer. A stored value that cannot be decoded is not bad input from a client
 * and not a bug in the caller: it is damaged or foreign data, so it gets its own class, and the
 * server maps its code to DATA_LOSS or INTERNAL.
 */

/** What was being decoded, for the message: "cannot decode block: truncated at byte 17". */
export type CorruptDataKind = 'block' | 'run' | 'row key' | 'cold value' | 'versions'

/** A stored value or key that does not decode: truncated, trailing bytes, out-of-range fields. */
export class CorruptDataError extends Error {
  readonly code = 'corrupt_data'
  readonly kind: CorruptDataKind
  /** Byte offset in the value where decoding failed; -1 when no single offset applies. */
  readonly byteOffset: number

  constructor(kind: CorruptDataKind, detail: string, byteOffset: number, options?: ErrorOptions) {
    super(`cannot decode ${kind}: ${detail}`, options)
    this.name = 'CorruptDataError'
    this.kind = kind
    this.byteOffset = byteOffset
  }
}
