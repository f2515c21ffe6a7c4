/**
 * Unsigned LEB128 varints of non-negative integers below 2^53, as protobuf writes them: the one
 * implementation behind the index's series definitions, the versions family, the wire codec and
 * the peer codec.
 */

/** Bytes the varint of `n` takes, by comparisons rather than divisions. */
export function varintSize(n: number): number {
  if (n < 0x80) return 1
  if (n < 0x4000) return 2
  if (n < 0x200000) return 3
  if (n < 0x10000000) return 4
  if (n < 2 ** 35) return 5
  if (n < 2 ** 42) return 6
  if (n < 2 ** 49) return 7
  return 8
}

/**
 * Writes the varint of `n` into `buf` at `at` and returns the offset after it. `n` is split into
 * 32-bit halves so that the loops run on int32 arithmetic.
 */
export function writeVarint(buf: Uint8Array, at: number, n: number): number {
  let lo = n >>> 0
  let hi = (n - lo) / 4294967296
  while (hi > 0) {
    buf[at++] = (lo & 0x7f) | 0x80
    lo = ((lo >>> 7) | (hi << 25)) >>> 0
    hi >>>= 7
  }
  while (lo > 0x7f) {
    buf[at++] = (lo & 0x7f) | 0x80
    lo >>>= 7
  }
  buf[at++] = lo
  return at
}

/**
 * Reads the varint at `cursor.at` and moves the cursor past it. `fail` makes the error thrown for
 * bytes that end inside the varint or run past 49 bits (seven groups cover any length or count we
 * write; more means the bytes are not ours).
 */
export function readVarint(buf: Uint8Array, cursor: { at: number }, fail: (what: string) => Error): number {
  let n = 0
  let scale = 1
  for (;;) {
    if (cursor.at >= buf.length) throw fail('truncated varint')
    const b = buf[cursor.at++]!
    n += (b & 0x7f) * scale
    if (b < 0x80) return n
    scale *= 0x80
    if (scale > 2 ** 49) throw fail('varint too long')
  }
}
