import { endianness } from 'node:os'
import { ENCODING_BUFFER_V1, SERIES_ID_BYTES } from '../codec/schema.js'

/** One series' points in a buffer record. */
export interface BufferedSeries {
  readonly id: Buffer
  readonly ts: Float64Array
  readonly vals: Float64Array
}

// Timestamps and values are copied as raw float64 bytes, which is the fastest encoding there is; the
// layout is declared little-endian, so a big-endian host would need a byte swap here.
if (endianness() !== 'LE') throw new Error('BUG: the write buffer format assumes a little-endian host')

/**
 * A write-buffer record: all the points one write request added, so that a restart can put back
 * what was acknowledged but not yet sealed. Layout (docs/format/buffer.md):
 * │ encoding 1 │ series count u32le │ then per series: │ id 8 │ n u32le │ ts f64le×n │ values f64le×n │
 */
export function encodeBufferRecord(series: readonly BufferedSeries[]): Buffer {
  let size = 5
  for (const s of series) size += SERIES_ID_BYTES + 4 + s.ts.length * 16
  const out = Buffer.allocUnsafe(size)
  out[0] = ENCODING_BUFFER_V1
  out.writeUInt32LE(series.length, 1)
  let off = 5
  for (const s of series) {
    s.id.copy(out, off)
    off += SERIES_ID_BYTES
    out.writeUInt32LE(s.ts.length, off)
    off += 4
    out.set(new Uint8Array(s.ts.buffer, s.ts.byteOffset, s.ts.byteLength), off)
    off += s.ts.byteLength
    out.set(new Uint8Array(s.vals.buffer, s.vals.byteOffset, s.vals.byteLength), off)
    off += s.vals.byteLength
  }
  return out
}

export function decodeBufferRecord(buf: Buffer, seq: number): BufferedSeries[] {
  if (buf[0] !== ENCODING_BUFFER_V1)
    throw new Error(`cannot decode write-buffer record ${seq}: unknown encoding ${buf[0]}`)
  const count = buf.readUInt32LE(1)
  const out: BufferedSeries[] = []
  let off = 5
  for (let i = 0; i < count; i++) {
    if (off + SERIES_ID_BYTES + 4 > buf.length)
      throw new Error(`cannot decode write-buffer record ${seq}: truncated at byte ${off}`)
    const id = Buffer.from(buf.subarray(off, off + SERIES_ID_BYTES))
    off += SERIES_ID_BYTES
    const n = buf.readUInt32LE(off)
    off += 4
    if (off + n * 16 > buf.length) throw new Error(`cannot decode write-buffer record ${seq}: truncated at byte ${off}`)
    const ts = new Float64Array(n)
    new Uint8Array(ts.buffer).set(buf.subarray(off, off + n * 8))
    off += n * 8
    const vals = new Float64Array(n)
    new Uint8Array(vals.buffer).set(buf.subarray(off, off + n * 8))
    off += n * 8
    out.push({ id, ts, vals })
  }
  return out
}

/** Buffer keys are the sequence as a big-endian uint64, so they sort by sequence. */
export function bufferKey(seq: number): Buffer {
  const key = Buffer.allocUnsafe(8)
  key.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0)
  key.writeUInt32BE(seq >>> 0, 4)
  return key
}

export function bufferSeq(key: Buffer): number {
  return key.readUInt32BE(0) * 0x1_0000_0000 + key.readUInt32BE(4)
}
