import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { blockCount, decodeBlock, decodeBlockInto, encodeBlock } from '../../src/codec/block-codec.js'
import { CorruptDataError } from '../../src/codec/errors.js'
import { MIN_BLOCK } from '../../src/codec/row-key.js'
import { BLOCK_MS, ENCODING_BLOCK_GORILLA } from '../../src/codec/schema.js'
import { prng } from '../../src/model/prng.js'

/** Doubles from exact bit patterns, so NaN payloads and signs are what the test says. */
function fromBits(...bits: bigint[]): Float64Array {
  const out = new Float64Array(bits.length)
  new BigUint64Array(out.buffer).set(bits)
  return out
}

function bitsOf(arr: Float64Array): bigint[] {
  return [...new BigUint64Array(arr.buffer, arr.byteOffset, arr.length)]
}

/** Bit-exact equality; compares bytes first, since spreading millions of elements is slow. */
function assertSameBits(actual: Float64Array, expected: Float64Array): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength)
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength)
  if (!a.equals(b)) assert.deepEqual(bitsOf(actual), bitsOf(expected))
}

const EDGE_VALUES = fromBits(
  0x0000_0000_0000_0000n, // +0
  0x8000_0000_0000_0000n, // -0
  0x7ff8_0000_0000_0000n, // the canonical NaN
  0x7ff8_0000_0000_0001n, // quiet NaN with a payload
  0x7ff0_0000_0000_0001n, // signalling NaN
  0xfff8_dead_beef_0001n, // negative NaN with a payload
  0x7fff_ffff_ffff_ffffn, // NaN, all payload bits set
  0x7ff0_0000_0000_0000n, // +Infinity
  0xfff0_0000_0000_0000n, // -Infinity
  0x0000_0000_0000_0001n, // Number.MIN_VALUE, the smallest subnormal
  0x000f_ffff_ffff_ffffn, // the largest subnormal
  0x8000_0000_0000_0001n, // -MIN_VALUE
  0x0010_0000_0000_0000n, // the smallest normal
  0x7fef_ffff_ffff_ffffn, // Number.MAX_VALUE
  0xffef_ffff_ffff_ffffn, // -MAX_VALUE
  0x3ff0_0000_0000_0000n, // 1
  0x3ff0_0000_0000_0000n, // 1 again: the '0' control code
  0x3fb9_9999_9999_999an, // 0.1
  0x8000_0000_0000_0000n, // -0 again
)

function block(start: number, offsets: number[], values: Float64Array): { ts: Float64Array; vs: Float64Array } {
  return { ts: Float64Array.from(offsets, (o) => start + o), vs: values }
}

function roundTrip(ts: Float64Array, vs: Float64Array, start: number): Buffer {
  const enc = encodeBlock(ts, vs, ts.length, start)
  assert.equal(enc[0], ENCODING_BLOCK_GORILLA)
  assert.equal(blockCount(enc), ts.length)
  const dec = decodeBlock(enc, start)
  assertSameBits(dec.timestamps, ts)
  assertSameBits(dec.values, vs)
  return enc
}

/** Strictly increasing offsets in [0, BLOCK_MS), with gaps from every timestamp bucket. */
function randomOffsets(rand: () => number, count: number): number[] {
  const offsets = new Set<number>()
  const style = rand()
  if (style < 0.3) {
    // Regular with jitter: mostly dod 0 and small dods.
    const step = 1 + Math.floor(rand() * (BLOCK_MS / count))
    const jitter = Math.floor(rand() * 4)
    let t = Math.floor(rand() * step)
    for (let i = 0; i < count && t < BLOCK_MS; i++) {
      offsets.add(t)
      t += Math.max(1, step + Math.floor(rand() * (2 * jitter + 1)) - jitter)
    }
  } else {
    while (offsets.size < count) offsets.add(Math.floor(rand() * BLOCK_MS))
  }
  return [...offsets].sort((a, b) => a - b)
}

/** Values of the kinds a series holds, mixed: repeats, walks, integers, decimals, raw bit noise, edges. */
function randomValues(rand: () => number, count: number): Float64Array {
  const out = new Float64Array(count)
  const bits = new Uint32Array(out.buffer)
  const style = Math.floor(rand() * 6)
  let v = rand() * 100
  for (let i = 0; i < count; i++) {
    switch (style) {
      case 0:
        out[i] = rand() < 0.8 && i > 0 ? out[i - 1]! : Math.floor(rand() * 10)
        break
      case 1:
        v += rand() * 10 - 5
        out[i] = v
        break
      case 2:
        out[i] = Math.round(v * 100) / 100 + i
        break
      case 3:
        bits[2 * i] = (rand() * 4_294_967_296) >>> 0
        bits[2 * i + 1] = (rand() * 4_294_967_296) >>> 0
        break
      case 4:
        out[i] = EDGE_VALUES[Math.floor(rand() * EDGE_VALUES.length)]!
        bits[2 * i] = i % 3 === 0 ? (rand() * 4_294_967_296) >>> 0 : bits[2 * i]!
        break
      default:
        out[i] = (rand() - 0.5) * 10 ** Math.floor(rand() * 40 - 20)
    }
  }
  return out
}

describe('block codec', () => {
  it('round-trips edge values bit for bit', () => {
    const start = 1_700_000_010_000
    const { ts, vs } = block(
      start,
      Array.from(EDGE_VALUES, (_, i) => i * 1000),
      EDGE_VALUES,
    )
    roundTrip(ts, vs, start)
    // Each edge value after each other one, so every one is also an XOR partner.
    const all = bitsOf(EDGE_VALUES)
    for (let i = 1; i < all.length; i++) roundTrip(ts, fromBits(...all.slice(i), ...all.slice(0, i)), start)
  })

  it('round-trips a single point at either end of the block', () => {
    const start = 30_000
    for (const offset of [0, BLOCK_MS - 1]) {
      for (const value of EDGE_VALUES.subarray(0, 8)) {
        const enc = roundTrip(Float64Array.of(start + offset), Float64Array.of(value), start)
        assert.ok(enc.length <= 1 + 1 + 3 + 8)
      }
    }
    const nan = fromBits(0x7ff4_0000_0000_00ffn)
    roundTrip(Float64Array.of(start), nan, start)
  })

  it('round-trips a full block, one point every millisecond', () => {
    const start = 1_700_000_010_000
    const rand = prng(3)
    const ts = Float64Array.from({ length: BLOCK_MS }, (_, i) => start + i)
    const vs = Float64Array.from({ length: BLOCK_MS }, () => rand() * 100)
    roundTrip(ts, vs, start)
    const constant = new Float64Array(BLOCK_MS).fill(42)
    const enc = roundTrip(ts, constant, start)
    // One bit of timestamp and one of value a point.
    assert.ok(enc.length < BLOCK_MS / 4 + 16, `${enc.length} bytes`)
  })

  it('round-trips gaps from every timestamp bucket', () => {
    const start = 0
    const offsets = [0, 1, 2, 3, 70, 200, 500, 1000, 3000, 6000, 20_000, 20_001, 29_999]
    const vs = Float64Array.from(offsets, (o) => o / 7)
    roundTrip(block(start, offsets, vs).ts, vs, start)
  })

  it('round-trips blocks before the epoch', () => {
    for (const blockNumber of [-1, -2, -56_666_667, MIN_BLOCK]) {
      const start = blockNumber * BLOCK_MS
      const { ts, vs } = block(start, [0, 5, 10_000, 29_999], Float64Array.of(-1.5, 2, -0, 1e300))
      roundTrip(ts, vs, start)
    }
  })

  it('gives every decode arrays of its own, small or large', () => {
    // Small blocks are decoded through shared scratch arrays and copied out; a later decode must
    // not change what an earlier one returned.
    const start = 1_700_000_010_000 - (1_700_000_010_000 % BLOCK_MS)
    const decodedBlocks = [3, 5000, 3, 4096].map((count, k) => {
      const ts = Float64Array.from({ length: count }, (_, i) => start + i * Math.floor(BLOCK_MS / count))
      const vs = Float64Array.from({ length: count }, (_, i) => k * 1000 + i + 0.5)
      return { ts, vs, got: decodeBlock(encodeBlock(ts, vs, count, start), start) }
    })
    for (const { ts, vs, got } of decodedBlocks) {
      assert.deepEqual([...got.timestamps], [...ts])
      assert.deepEqual([...got.values], [...vs])
    }
    assert.notEqual(decodedBlocks[0]!.got.values.buffer, decodedBlocks[2]!.got.values.buffer)
  })

  it('decodes into caller arrays at an offset, leaving the rest alone', () => {
    const start = 60_000
    const a = encodeBlock(Float64Array.of(60_000, 60_010), Float64Array.of(1, 2), 2, start)
    const b = encodeBlock(Float64Array.of(60_001, 60_002, 60_003), fromBits(0x7ff8_0000_0000_0abcn, 0n, 1n), 3, start)
    // The arrays are views at an offset into a larger buffer, as a query's result arrays may be.
    const backing = new Float64Array(20).fill(-7)
    const ts = backing.subarray(2, 10)
    const vs = new Float64Array(new ArrayBuffer(8 * 12), 16, 8).fill(-7)
    let at = 1
    at += decodeBlockInto(a, start, ts, vs, at)
    at += decodeBlockInto(b, start, ts, vs, at)
    assert.equal(at, 6)
    assert.deepEqual([...ts], [-7, 60_000, 60_010, 60_001, 60_002, 60_003, -7, -7])
    assert.deepEqual(
      bitsOf(vs),
      bitsOf(
        fromBits(
          ...bitsOf(Float64Array.of(-7, 1, 2)),
          0x7ff8_0000_0000_0abcn,
          0n,
          1n,
          ...bitsOf(Float64Array.of(-7, -7)),
        ),
      ),
    )
    assert.deepEqual([...backing.subarray(0, 2)], [-7, -7])
    assert.throws(() => decodeBlockInto(b, start, ts, vs, 6), RangeError)
  })

  it('encodes from views at an offset into a shared buffer', () => {
    const start = 0
    const buffer = new ArrayBuffer(8 * 64)
    const all = new Float64Array(buffer)
    for (let i = 0; i < 64; i++) all[i] = i * 1.25
    const ts = Float64Array.of(1, 2, 3, 4)
    for (const offset of [0, 7, 60]) {
      const vs = new Float64Array(buffer, offset * 8, 4)
      const dec = decodeBlock(encodeBlock(ts, vs, 4, start), start)
      assert.deepEqual([...dec.values], [...vs])
    }
  })

  it('encodes only the first count points', () => {
    const ts = Float64Array.of(1, 2, 3, 0)
    const vs = Float64Array.of(1, 2, 3, 4)
    assert.equal(decodeBlock(encodeBlock(ts, vs, 3, 0), 0).values.length, 3)
  })

  it('refuses input that would not round-trip', () => {
    const vs = Float64Array.of(1, 2, 3)
    const bad: [number[], number, number][] = [
      [[1, 1, 2], 3, 0], // duplicate
      [[2, 1, 3], 3, 0], // unsorted
      [[1, 2, 30_000], 3, 0], // past the block
      [[-1, 2, 3], 3, 0], // before the block
      [[1, 2.5, 3], 3, 0], // fractional
      [[1, Number.NaN, 3], 3, 0], // NaN
      [[1, 2, 3], 0, 0], // no points
      [[1, 2, 3], 4, 0], // more points than the arrays hold
      [[1, 2, 3], 3, 5], // start off the grid
    ]
    for (const [offsets, count, start] of bad) {
      assert.throws(
        () => encodeBlock(Float64Array.from(offsets), vs, count, start),
        /^Error: BUG: /,
        `${offsets} ${count}`,
      )
    }
  })

  it('round-trips thousands of random blocks', () => {
    const rand = prng(42)
    for (let c = 0; c < 4000; c++) {
      const count = 1 + Math.floor(rand() ** 3 * 2000)
      const blockNumber = Math.floor((rand() - 0.5) * 200_000_000)
      const start = blockNumber * BLOCK_MS
      const offsets = randomOffsets(rand, count)
      const vs = randomValues(rand, offsets.length)
      roundTrip(block(start, offsets, vs).ts, vs, start)
    }
  })
})

describe('block codec on damaged input', () => {
  const start = 90_000
  const samples: Buffer[] = []
  const rand = prng(7)
  for (let i = 0; i < 60; i++) {
    const offsets = randomOffsets(rand, 1 + Math.floor(rand() * 60))
    const vs = randomValues(rand, offsets.length)
    samples.push(encodeBlock(block(start, offsets, vs).ts, vs, offsets.length, start))
  }

  it('throws CorruptDataError for every truncation', () => {
    for (const enc of samples) {
      for (let n = 0; n < enc.length; n++) {
        assert.throws(() => decodeBlock(enc.subarray(0, n), start), CorruptDataError, `length ${n} of ${enc.length}`)
      }
    }
    assert.throws(() => decodeBlock(Buffer.alloc(0), start), /cannot decode block: truncated at byte 0/)
  })

  it('throws CorruptDataError for trailing bytes', () => {
    for (const enc of samples) {
      assert.throws(
        () => decodeBlock(Buffer.concat([enc, Buffer.of(0)]), start),
        /cannot decode block: 1 trailing bytes/,
      )
    }
  })

  it('throws CorruptDataError for a wrong encoding byte or an impossible count', () => {
    const enc = Buffer.from(samples[0]!)
    enc[0] = 0x20
    assert.throws(() => blockCount(enc), /cannot decode block: encoding byte 0x20 is not 0x10 at byte 0/)
    assert.throws(() => decodeBlock(Buffer.of(0x10, 0), start), /count 0/)
    assert.throws(() => decodeBlock(Buffer.of(0x10, 0xb1, 0xea, 0x01), start), /count 30001/)
    // A count the stream cannot hold is refused before any point is decoded.
    const tooMany = Buffer.of(0x10, 0xb0, 0xea, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert.throws(() => decodeBlock(tooMany, start), /count 30000 exceeds the stream/)
    assert.throws(
      () => decodeBlock(Buffer.of(0x10, 1, 0xb0, 0xea, 0x01, 0, 0, 0, 0, 0, 0, 0, 0), start),
      /first timestamp offset 30000/,
    )
  })

  it('throws CorruptDataError or decodes, and never hangs, whatever the bytes', () => {
    const noise = prng(99)
    let detected = 0
    for (let c = 0; c < 20_000; c++) {
      const enc = Buffer.from(samples[c % samples.length]!)
      const flips = 1 + Math.floor(noise() * 3)
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(noise() * enc.length)
        enc[at] = enc[at]! ^ (1 << Math.floor(noise() * 8))
      }
      try {
        const dec = decodeBlock(enc, start)
        for (let i = 1; i < dec.timestamps.length; i++) assert.ok(dec.timestamps[i]! > dec.timestamps[i - 1]!)
        assert.ok(dec.timestamps[0]! >= start && dec.timestamps.at(-1)! < start + BLOCK_MS)
      } catch (err) {
        if (!(err instanceof CorruptDataError)) throw err
        detected++
      }
    }
    assert.ok(detected > 5000, `${detected} detected`)
    for (let c = 0; c < 5000; c++) {
      const bytes = Buffer.from(Array.from({ length: Math.floor(noise() * 40) }, () => Math.floor(noise() * 256)))
      if (noise() < 0.8) bytes[0] = ENCODING_BLOCK_GORILLA
      try {
        decodeBlock(bytes, start)
      } catch (err) {
        if (!(err instanceof CorruptDataError)) throw err
      }
    }
  })
})
