/**
 * Bit-level writer and reader for the block and run codecs. Bits are written most significant
 * first, so a stream read byte by byte is big-endian. Both work on plain numbers with 32-bit
 * operations: BigInt in the per-point path would cost more than the rest of the codec together.
 */
import { CorruptDataError, type CorruptDataKind } from './errors.js'

const TWO_POW_32 = 4_294_967_296
/** Buffers grown past this size for one large value are dropped afterwards rather than kept. */
const KEEP_BYTES = 1 << 20
/** Values up to this many bytes are copied by a loop rather than a native call. */
const SHORT_COPY = 64
/**
 * Spare bytes after a value in the reader's buffer: more than the widest read that can start at
 * or before its end, which is a group of 32 scaled residuals of 53 bits (213 bytes) plus the five
 * bytes of a peek.
 */
const PAD_BYTES = 256

/**
 * Accumulates bits in a 32-bit word and stores whole words, so most writes are a shift and an or.
 * The caller states the most bytes the value can take up front; the writer never checks capacity
 * per write, which keeps the per-point cost to a handful of instructions.
 */
export class BitWriter {
  private buf = new Uint8Array(4096)
  /** Byte index where the next whole word goes. */
  private pos = 0
  /** Pending bits, left-aligned. */
  private acc = 0
  /** Free bits left in acc, 1..32. */
  private free = 32

  /** Starts a new value that takes at most maxBytes. */
  reset(maxBytes: number): void {
    // Four spare bytes: the last word is stored whole even when only part of it is used.
    const need = maxBytes + 4
    if (this.buf.length < need) this.buf = new Uint8Array(Math.max(need, this.buf.length * 2))
    this.pos = 0
    this.acc = 0
    this.free = 32
  }

  /** Writes the n low bits of v, 1 <= n <= 32; bits of v above n must be zero. */
  writeBits(v: number, n: number): void {
    const free = this.free
    if (n < free) {
      this.free = free - n
      this.acc |= v << (free - n)
      return
    }
    const spill = n - free
    const word = this.acc | (v >>> spill)
    const b = this.buf
    const p = this.pos
    b[p] = word >>> 24
    b[p + 1] = word >>> 16
    b[p + 2] = word >>> 8
    b[p + 3] = word
    this.pos = p + 4
    this.free = 32 - spill
    // A shift by 32 is a shift by 0 in JavaScript, so an empty remainder needs its own branch.
    this.acc = spill === 0 ? 0 : v << (32 - spill)
  }

  /** Writes an unsigned integer below 2^53 as LEB128 (7 bits a byte, low group first). */
  writeUvarint(v: number): void {
    while (v >= 128) {
      this.writeBits((v % 128) | 128, 8)
      v = Math.floor(v / 128)
    }
    this.writeBits(v, 8)
  }

  /** Writes a signed integer of magnitude below 2^52 as a zigzag LEB128 varint. */
  writeZigzagVarint(v: number): void {
    this.writeUvarint(v >= 0 ? v * 2 : -v * 2 - 1)
  }

  /** Writes an unsigned integer below 2^53 in n bits, 1 <= n <= 53. */
  writeWide(v: number, n: number): void {
    if (n <= 32) {
      this.writeBits(v, n)
      return
    }
    this.writeBits(Math.floor(v / TWO_POW_32), n - 32)
    this.writeBits(v >>> 0, 32)
  }

  /** Bits written so far. */
  bitLength(): number {
    return this.pos * 8 + 32 - this.free
  }

  /** Pads the last byte with zero bits and returns a copy of the value. */
  finish(): Buffer {
    const used = 32 - this.free
    const b = this.buf
    const p = this.pos
    const acc = this.acc
    b[p] = acc >>> 24
    b[p + 1] = acc >>> 16
    b[p + 2] = acc >>> 8
    b[p + 3] = acc
    const length = p + ((used + 7) >>> 3)
    const out = Buffer.allocUnsafe(length)
    // A loop beats set(subarray) for the short values of small blocks: no view to allocate.
    if (length <= SHORT_COPY) for (let i = 0; i < length; i++) out[i] = b[i]!
    else out.set(b.subarray(0, length))
    if (b.length > KEEP_BYTES) this.buf = new Uint8Array(4096)
    return out
  }
}

/**
 * The 32 bits of a stream that start at bit pos, as an int32 (the first bit is the sign), from a
 * DataView whose buffer extends at least five bytes past pos / 8. Decoder loops call this with a
 * local bit position: a position kept in a register instead of an object field, and one unaligned
 * big-endian load, make decoding about twice as fast as byte-wise reads.
 */
export function peek32(data: DataView, pos: number): number {
  const i = pos >>> 3
  const s = pos & 7
  const w = data.getInt32(i)
  return s === 0 ? w : (w << s) | (data.getUint8(i + 4) >>> (8 - s))
}

/**
 * Reads what BitWriter wrote. The value is copied into a buffer with PAD_BYTES to spare, so reads
 * may run past its end without a bounds check per read: decoder loops check the position against
 * limitBits once a point (once a group for scaled residuals), and the header has a bounded size,
 * so no read leaves the buffer. A truncated value decodes past its end into the padding and finish()
 * reports it. The decoders run a bounded number of steps, so corrupt input cannot make them loop.
 */
export class BitReader {
  private buf = new Uint8Array(4096)
  /** A view of buf for peek32. */
  data = new DataView(this.buf.buffer)
  /** Bit position of the next read. */
  pos = 0
  /** Bits in the value being read. */
  limitBits = 0
  private kind: CorruptDataKind = 'block'

  /** Starts reading src; errors name kind. */
  reset(src: Uint8Array, kind: CorruptDataKind): void {
    const n = src.length
    const size = this.buf.length
    if (size < n + PAD_BYTES || (size > KEEP_BYTES && n + PAD_BYTES <= KEEP_BYTES)) {
      this.buf = new Uint8Array(size < n + PAD_BYTES ? Math.max(n + PAD_BYTES, size * 2) : KEEP_BYTES)
      this.data = new DataView(this.buf.buffer)
    }
    const b = this.buf
    if (n <= SHORT_COPY) for (let i = 0; i < n; i++) b[i] = src[i]!
    else b.set(src)
    // Zeros after the end make what a truncated value decodes to deterministic; correctness does
    // not depend on them, since finish() rejects any read past the end.
    for (let i = n; i < n + 8; i++) b[i] = 0
    this.pos = 0
    this.limitBits = n * 8
    this.kind = kind
  }

  /** Reads n bits as an unsigned integer, 1 <= n <= 32. */
  readBits(n: number): number {
    const p = this.pos
    this.pos = p + n
    return peek32(this.data, p) >>> (32 - n)
  }

  /** Reads a LEB128 varint below 2^53. */
  readUvarint(): number {
    const start = this.pos
    let v = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const byte = this.readBits(8)
      v += (byte & 127) * scale
      if (byte < 128) {
        if (v > Number.MAX_SAFE_INTEGER) break
        return v
      }
      scale *= 128
    }
    throw this.corrupt('varint too long', start)
  }

  /** Reads a zigzag varint. */
  readZigzagVarint(): number {
    const z = this.readUvarint()
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2
  }

  /** Bits left before the end of the value (negative after reading past it). */
  remainingBits(): number {
    return this.limitBits - this.pos
  }

  /** Checks that the value ended where its last field did: not truncated, no trailing bytes. */
  finish(): void {
    const usedBytes = (this.pos + 7) >>> 3
    const bytes = this.limitBits >>> 3
    if (this.pos > this.limitBits) throw this.truncated()
    if (usedBytes !== bytes) {
      throw new CorruptDataError(this.kind, `${bytes - usedBytes} trailing bytes at byte ${usedBytes}`, usedBytes)
    }
  }

  /**
   * The error for a field that does not make sense at bit position bitPos. When decoding has run
   * past the end, the real cause is truncation and the field is padding, so that is what it says.
   */
  corrupt(detail: string, bitPos: number = this.pos): CorruptDataError {
    if (this.pos > this.limitBits) return this.truncated()
    const byte = bitPos >>> 3
    return new CorruptDataError(this.kind, `${detail} at byte ${byte}`, byte)
  }

  private truncated(): CorruptDataError {
    const byte = this.limitBits >>> 3
    return new CorruptDataError(this.kind, `truncated at byte ${byte}`, byte)
  }
}
