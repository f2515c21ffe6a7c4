import { endianness } from 'node:os'
import { ENCODING_BUFFER_V1, ENCODING_BUFFER_V2, SERIES_ID_BYTES } from '../codec/schema.js'

/** One series' points in a buffer record. */
export interface BufferedSeries {
  readonly id: Buffer
  readonly ts: Float64Array
  readonly vals: Float64Array
  /** The points' write versions; absent when they have none. */
  readonly vers?: Float64Array
}

/** How a V2 record gives a series' versions: none, one for every point, or one per point. */
const VERSIONS_NONE = 0
const VERSIONS_ONE = 1
const VERSIONS_EACH = 2

/** The versions byte of a series, and the bytes its versions take. */
function versionsLayout(vers: Float64Array | undefined): { kind: number; bytes: number } {
  if (vers === undefined || vers.length === 0) return { kind: VERSIONS_NONE, bytes: 0 }
  const first = vers[0]!
  for (let i = 1; i < vers.length; i++) if (vers[i] !== first) return { kind: VERSIONS_EACH, bytes: vers.byteLength }
  return { kind: VERSIONS_ONE, bytes: 8 }
}

// Timestamps and values are copied as raw float64 bytes, which is the fastest encoding there is; the
// layout is declared little-endian, so a big-endian host would need a byte swap here.
if (endianness() !== 'LE') throw new Error('BUG: the write buffer format assumes a little-endian host')

/**
 * A write-buffer record: all the points one write request added, so that a restart can put back
 * what was acknowledged but not yet sealed. Layout (docs/format/buffer.md):
 * │ encoding 1 │ series count u32le │ then per series: │ id 8 │ n u32le │ ts f64le×n │ values f64le×n │
 * Writes with versions (a cluster node's) take the V2 layout, which adds the versions per series;
 * writes without keep V1, byte for byte, so a single node's write path does no more than before.
 */
export function encodeBufferRecord(series: readonly BufferedSeries[]): Buffer {
  if (series.some((s) => s.vers !== undefined)) return encodeVersioned(series)
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

/**
 * The V2 layout: per series │ id 8 │ n u32le │ versions kind 1 │ versions │ ts f64le×n │ values f64le×n │,
 * versions being nothing (kind 0), one f64le for every point (kind 1) or f64le×n (kind 2).
 */
function encodeVersioned(series: readonly BufferedSeries[]): Buffer {
  const layouts = series.map((s) => versionsLayout(s.vers))
  let size = 5
  series.forEach((s, i) => {
    size += SERIES_ID_BYTES + 5 + layouts[i]!.bytes + s.ts.length * 16
  })
  const out = Buffer.allocUnsafe(size)
  out[0] = ENCODING_BUFFER_V2
  out.writeUInt32LE(series.length, 1)
  let off = 5
  const copy = (a: Float64Array): void => {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off)
    off += a.byteLength
  }
  series.forEach((s, i) => {
    const layout = layouts[i]!
    s.id.copy(out, off)
    off += SERIES_ID_BYTES
    out.writeUInt32LE(s.ts.length, off)
    out[off + 4] = layout.kind
    off += 5
    if (layout.kind === VERSIONS_ONE) {
      out.writeDoubleLE(s.vers![0]!, off)
      off += 8
    } else if (layout.kind === VERSIONS_EACH) copy(s.vers!)
    copy(s.ts)
    copy(s.vals)
  })
  return out
}

/** Decodes a record of either layout; V1 records, and V2 series of kind 0, have no versions. */
export function decodeBufferRecord(buf: Buffer, seq: number): BufferedSeries[] {
  const versioned = buf[0] === ENCODING_BUFFER_V2
  if (buf[0] !== ENCODING_BUFFER_V1 && !versioned)
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
    let vers: Float64Array | undefined
    if (versioned) {
      const kind = buf[off]
      off += 1
      const bytes = kind === VERSIONS_ONE ? 8 : kind === VERSIONS_EACH ? n * 8 : 0
      if (kind !== VERSIONS_NONE && kind !== VERSIONS_ONE && kind !== VERSIONS_EACH)
        throw new Error(`cannot decode write-buffer record ${seq}: unknown versions kind ${kind} at byte ${off - 1}`)
      if (off + bytes > buf.length)
        throw new Error(`cannot decode write-buffer record ${seq}: truncated at byte ${off}`)
      if (kind === VERSIONS_ONE) vers = new Float64Array(n).fill(buf.readDoubleLE(off))
      else if (kind === VERSIONS_EACH) {
        vers = new Float64Array(n)
        new Uint8Array(vers.buffer).set(buf.subarray(off, off + bytes))
      }
      off += bytes
    }
    if (off + n * 16 > buf.length) throw new Error(`cannot decode write-buffer record ${seq}: truncated at byte ${off}`)
    const ts = new Float64Array(n)
    new Uint8Array(ts.buffer).set(buf.subarray(off, off + n * 8))
    off += n * 8
    const vals = new Float64Array(n)
    new Uint8Array(vals.buffer).set(buf.subarray(off, off + n * 8))
    off += n * 8
    out.push(vers === undefined ? { id, ts, vals } : { id, ts, vals, vers })
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
