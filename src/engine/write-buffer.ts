import { endianness } from 'node:os'
import { ENCODING_BUFFER_V1, ENCODING_BUFFER_V2, SERIES_ID_BYTES } from '../codec/schema.js'

/** One series' points in a buffer record, as decoded. */
export interface BufferedSeries {
  readonly id: Buffer
  readonly ts: Float64Array
  readonly vals: Float64Array
  /** The points' write versions; absent when they have none. */
  readonly vers?: Float64Array
}

/** The points of one series handed to a record: a normalized series of a write is one. */
export interface RecordPoints {
  readonly timestamps: Float64Array
  readonly values: Float64Array
  /** The points' write versions; absent when they have none. */
  readonly versions?: Float64Array
  /** The write version of every point, when they share one: instead of versions. */
  readonly version?: number
}

/** The series of a record's points: an index entry is one. */
export interface RecordSeries {
  readonly id: Buffer
}

/** How a V2 record gives a series' versions: none, one for every point, or one per point. */
const VERSIONS_NONE = 0
const VERSIONS_ONE = 1
const VERSIONS_EACH = 2

/** The versions byte of a series, and the bytes its versions take. */
function versionsLayout(p: RecordPoints): { kind: number; bytes: number } {
  if (p.version !== undefined) return { kind: VERSIONS_ONE, bytes: 8 }
  const vers = p.versions
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
 * what was acknowledged but not yet sealed. `points[i]` are the points of `series[i]`. Layout
 * (docs/format/buffer.md):
 * │ encoding 1 │ series count u32le │ then per series: │ id 8 │ n u32le │ ts f64le×n │ values f64le×n │
 * Writes with versions (a cluster node's) take the V2 layout, which adds the versions per series;
 * writes without keep V1, byte for byte, so a single node's write path does no more than before.
 */
export function encodeBufferRecord(
  series: readonly RecordSeries[],
  points: readonly RecordPoints[],
  scratch?: RecordScratch,
): Buffer {
  let size = 5
  for (let i = 0; i < points.length; i++) {
    const p = points[i]!
    if (p.versions !== undefined || p.version !== undefined) return encodeVersioned(series, points, scratch)
    size += SERIES_ID_BYTES + 4 + p.timestamps.length * 16
  }
  const out = scratch?.take(size) ?? Buffer.allocUnsafe(size)
  out[0] = ENCODING_BUFFER_V1
  const bytes = new RecordWriter(out)
  bytes.uint32(points.length, 1)
  let off = 5
  for (let i = 0; i < points.length; i++) {
    const p = points[i]!
    off = copyId(out, off, series[i]!.id)
    off = bytes.copy(p.values, bytes.copy(p.timestamps, bytes.uint32(p.timestamps.length, off)))
  }
  return out
}

/** The largest record a RecordScratch keeps its memory for; larger ones get a buffer of their own. */
const SCRATCH_MAX_BYTES = 16 * 2 ** 20

/**
 * One buffer that successive records are encoded into, for a caller that hands each record to a
 * RocksDB batch before it encodes the next: the batch copies the record at put(). A record is a
 * write's points, hundreds of KiB under load; a fresh buffer for each is a native allocation that
 * counts towards the external memory whose growth starts V8's full garbage collections.
 */
export class RecordScratch {
  private buffer = Buffer.alloc(0)

  /** `size` bytes, valid until the next take(). */
  take(size: number): Buffer {
    if (size > SCRATCH_MAX_BYTES) return Buffer.allocUnsafe(size)
    if (this.buffer.length < size) {
      this.buffer = Buffer.allocUnsafe(Math.min(SCRATCH_MAX_BYTES, Math.max(size, 2 * this.buffer.length)))
    }
    return this.buffer.subarray(0, size)
  }
}

/**
 * Arrays of up to this many points are copied number by number, written with a DataView: remote
 * write sends series of one or two points, and each of a typed array's buffer, byteOffset and
 * byteLength costs about as much as copying 16 bytes (18 ns each, measured on Node 20, where
 * length and element reads are inlined). A record of a thousand such series took 290 µs copied
 * word by word through views of the arrays' buffers, and 40 µs copied by number (scratch
 * microbenchmark). Up to about 32 points the loop is cheaper than a view for Buffer.set.
 */
const NUMBER_LOOP_MAX = 16

/**
 * Writes float64 arrays into a record, with their raw bytes. Small arrays are copied as numbers. A
 * NaN may lose its payload on its way through a number (ECMAScript lets setFloat64 write any NaN
 * encoding for a NaN; V8 on x64 happens to keep it, so no test here can tell), so an array holding
 * one is copied as bytes, as larger arrays are, and every NaN keeps its bit pattern (Prometheus'
 * staleness marker is one). Every other double has one bit pattern, which the number keeps.
 */
class RecordWriter {
  private readonly view: DataView

  constructor(private readonly out: Buffer) {
    this.view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  }

  /** Writes `value` as a uint32le at `off`; returns the offset after it. */
  uint32(value: number, off: number): number {
    this.view.setUint32(off, value, true)
    return off + 4
  }

  /** Copies `a` to `off`; returns the offset after it. */
  copy(a: Float64Array, off: number): number {
    const count = a.length
    if (count > NUMBER_LOOP_MAX) return this.copyBytes(a, off)
    const view = this.view
    let at = off
    for (let j = 0; j < count; j++, at += 8) {
      const v = a[j]!
      if (Number.isNaN(v)) return this.copyBytes(a, off)
      view.setFloat64(at, v, true)
    }
    return at
  }

  /** Copies the bytes of `a` to `off` as they are; returns the offset after them. */
  private copyBytes(a: Float64Array, off: number): number {
    const n = a.length * 8
    this.out.set(new Uint8Array(a.buffer, a.byteOffset, n), off)
    return off + n
  }
}

/** Copies an 8-byte series id to `off`: a loop, cheaper than Buffer.copy's native call for 8 bytes. */
function copyId(out: Buffer, off: number, id: Buffer): number {
  for (let k = 0; k < SERIES_ID_BYTES; k++) out[off + k] = id[k]!
  return off + SERIES_ID_BYTES
}

/**
 * The V2 layout: per series │ id 8 │ n u32le │ versions kind 1 │ versions │ ts f64le×n │ values f64le×n │,
 * versions being nothing (kind 0), one f64le for every point (kind 1) or f64le×n (kind 2).
 */
function encodeVersioned(
  series: readonly RecordSeries[],
  points: readonly RecordPoints[],
  scratch: RecordScratch | undefined,
): Buffer {
  const layouts = points.map(versionsLayout)
  let size = 5
  points.forEach((p, i) => {
    size += SERIES_ID_BYTES + 5 + layouts[i]!.bytes + p.timestamps.length * 16
  })
  const out = scratch?.take(size) ?? Buffer.allocUnsafe(size)
  out[0] = ENCODING_BUFFER_V2
  const bytes = new RecordWriter(out)
  bytes.uint32(points.length, 1)
  let off = 5
  points.forEach((p, i) => {
    const layout = layouts[i]!
    off = bytes.uint32(p.timestamps.length, copyId(out, off, series[i]!.id))
    out[off++] = layout.kind
    if (layout.kind === VERSIONS_ONE) {
      out.writeDoubleLE(p.version ?? p.versions![0]!, off)
      off += 8
    } else if (layout.kind === VERSIONS_EACH) off = bytes.copy(p.versions!, off)
    off = bytes.copy(p.values, bytes.copy(p.timestamps, off))
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
