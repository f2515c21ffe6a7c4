/**
 * The envelope of IngestRequest { uint64 sequence = 1; WriteRequest write = 2; }. The WriteRequest
 * inside goes through series-codec.ts like every other message that carries points; only the
 * envelope is handled here, so that the points are never copied into an intermediate object.
 */
import { ValidationError } from '../model/errors.js'
import { varintSize, writeVarint } from '../model/varint.js'
import { type EncodedHeaderCache, encodeWriteRequestBehind, type WireSeriesInput } from './series-codec.js'

/** An IngestRequest with its WriteRequest still encoded, a view into the received bytes. */
export interface IngestEnvelope {
  readonly sequence: number
  readonly write: Uint8Array
}

function varint(buf: Uint8Array, at: number, field: string): [value: number, next: number] {
  let value = 0
  let scale = 1
  for (let pos = at; pos < buf.length && pos < at + 10; pos++) {
    const b = buf[pos]!
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) {
      if (!Number.isSafeInteger(value)) throw ValidationError.field(field, 'is larger than 2^53')
      return [value, pos + 1]
    }
    scale *= 128
  }
  throw ValidationError.field(field, 'malformed varint')
}

/** Decodes the envelope; throws ValidationError naming the field when it is malformed. */
export function decodeIngestEnvelope(bytes: Uint8Array): IngestEnvelope {
  let sequence = 0
  let write: Uint8Array = new Uint8Array(0)
  let pos = 0
  while (pos < bytes.length) {
    const [tag, afterTag] = varint(bytes, pos, 'request')
    pos = afterTag
    const wireType = tag & 7
    if (tag === 0x08) {
      ;[sequence, pos] = varint(bytes, pos, 'sequence')
    } else if (wireType === 2) {
      const [len, start] = varint(bytes, pos, tag === 0x12 ? 'write' : 'request')
      if (start + len > bytes.length)
        throw ValidationError.field(tag === 0x12 ? 'write' : 'request', 'message truncated')
      if (tag === 0x12) write = bytes.subarray(start, start + len)
      pos = start + len
    } else if (wireType === 0) {
      pos = varint(bytes, pos, 'request')[1]
    } else if (wireType === 1 || wireType === 5) {
      pos += wireType === 1 ? 8 : 4
      if (pos > bytes.length) throw ValidationError.field('request', 'message truncated')
    } else {
      throw ValidationError.field('request', `unsupported wire type ${wireType}`)
    }
  }
  return { sequence, write }
}

/** Bytes of the envelope's fields before the WriteRequest: the sequence and the write's tag and length. */
function envelopeBytes(sequence: number, writeBytes: number): number {
  return 2 + varintSize(sequence) + varintSize(writeBytes)
}

/** Writes the envelope's fields at the start of out; returns where the WriteRequest goes. */
function writeEnvelope(out: Buffer, sequence: number, writeBytes: number): number {
  out[0] = 0x08
  let at = writeVarint(out, 1, sequence)
  out[at++] = 0x12
  return writeVarint(out, at, writeBytes)
}

/** Encodes an IngestRequest around an already encoded WriteRequest (see encodeWriteRequest). */
export function encodeIngestRequest(sequence: number, write: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(envelopeBytes(sequence, write.length) + write.length)
  out.set(write, writeEnvelope(out, sequence, write.length))
  return out
}

/**
 * Encodes an IngestRequest and the WriteRequest inside it in one buffer, without encoding the write
 * first and copying it in (see encodeWriteRequestBehind); what the batching writer sends.
 */
export function encodeIngestWrite(
  sequence: number,
  series: readonly WireSeriesInput[],
  precision: number,
  consistency: number,
  headers?: EncodedHeaderCache,
): Buffer {
  let writeBytes = 0
  const out = encodeWriteRequestBehind(series, precision, consistency, headers, (n) => {
    writeBytes = n
    return envelopeBytes(sequence, n)
  })
  writeEnvelope(out, sequence, writeBytes)
  return out
}
