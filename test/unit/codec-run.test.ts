import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CorruptDataError } from '../../src/codec/errors.js'
import { RUN_MS } from '../../src/codec/row-key.js'
import { decodeRun, decodeRunInto, encodeRun, readRunHeader, runCount } from '../../src/codec/run-codec.js'
import { ENCODING_RUN_GORILLA, ENCODING_RUN_GORILLA_PACKED, ENCODING_RUN_SCALED } from '../../src/codec/schema.js'
import { prng } from '../../src/model/prng.js'

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

const RUN_START = 1_699_999_200_000

/** Points every intervalMs from the run start, plus up to jitterMs either way. */
function times(count: number, intervalMs: number, rand: () => number = () => 0.5, jitterMs = 0): Float64Array {
  const ts = new Float64Array(count)
  let prev = -1
  for (let i = 0; i < count; i++) {
    const jitter = Math.round((rand() * 2 - 1) * jitterMs)
    prev = Math.max(prev + 1, i * intervalMs + jitter)
    ts[i] = RUN_START + prev
  }
  return ts
}

/** A random walk clamped to [0, 100] with steps in [-5, 5], rounded to decimals (null: full precision). */
function walk(rand: () => number, count: number, decimals: number | null): Float64Array {
  const out = new Float64Array(count)
  let v = rand() * 100
  for (let i = 0; i < count; i++) {
    v = Math.min(100, Math.max(0, v + rand() * 10 - 5))
    out[i] = decimals === null ? v : Math.round(v * 10 ** decimals) / 10 ** decimals
  }
  return out
}

/** Whether a run holds Gorilla XOR values, with its timestamps packed (0x22) or not (0x20). */
function isGorilla(enc: Buffer): boolean {
  return enc[0] === ENCODING_RUN_GORILLA || enc[0] === ENCODING_RUN_GORILLA_PACKED
}

/** Whether a scaled run's mode byte, after the header's three varints, says packed timestamps. */
function packedTimestamps(enc: Buffer): boolean {
  assert.equal(enc[0], ENCODING_RUN_SCALED)
  let at = 1
  for (let varints = 0; varints < 3; at++) if (enc[at]! < 128) varints++
  return (enc[at]! & 0x20) !== 0
}

function roundTrip(ts: Float64Array, vs: Float64Array, start = RUN_START): Buffer {
  const enc = encodeRun(ts, vs, ts.length, start)
  assert.equal(runCount(enc), ts.length)
  const header = readRunHeader(enc, start)
  assert.equal(header.firstMs, ts[0])
  assert.equal(header.lastMs, ts.at(-1))
  const dec = decodeRun(enc, start)
  assertSameBits(dec.timestamps, ts)
  assertSameBits(dec.values, vs)
  return enc
}

describe('run codec', () => {
  it('chooses SCALED for 2-decimal data and round-trips it', () => {
    const rand = prng(1)
    const ts = times(360, 10_000)
    const vs = walk(rand, 360, 2)
    const enc = roundTrip(ts, vs)
    assert.equal(enc[0], ENCODING_RUN_SCALED)
    assert.equal(readRunHeader(enc, RUN_START).encoding, ENCODING_RUN_SCALED)
    assert.ok(enc.length / 360 < 1.5, `${enc.length / 360} bytes a point`)
  })

  it('chooses GORILLA for full-precision data, with packed timestamps when they are regular, and round-trips it', () => {
    const rand = prng(2)
    const ts = times(360, 10_000)
    const vs = walk(rand, 360, null)
    const enc = roundTrip(ts, vs)
    assert.equal(enc[0], ENCODING_RUN_GORILLA_PACKED)
    assert.ok(enc.length / 360 < 8, `${enc.length / 360} bytes a point`)
    // Three points keep their codes: a base delta costs more than they do.
    assert.equal(encodeRun(times(3, 1000), vs, 3, RUN_START)[0], ENCODING_RUN_GORILLA)
    const jittered = roundTrip(times(360, 10_000, rand, 20), vs)
    assert.equal(jittered[0], ENCODING_RUN_GORILLA_PACKED)
    // A constant: a bit a point for the values, 6 bits a group for the timestamps.
    const constant = roundTrip(times(360, 10_000), new Float64Array(360).fill(Math.PI))
    assert.equal(constant[0], ENCODING_RUN_GORILLA_PACKED)
    assert.ok(constant.length <= 72, `${constant.length} bytes`)
  })

  it('decodes a Gorilla run written before timestamps were packed', () => {
    // 40 points every 10 s from 5 s into the run, full-precision values, as the encoder of schema 1 wrote them.
    const old = Buffer.from(
      '20288827f88d180000000000000000f538780000000018bdffc1c9515325c4becd3d9df2b42fdd170f7ffe8ccaacaa2dff667a96d8110caa477e369018466fff3d9a7ef0474866f30c9ec6ad792fbef87fffe9a0f135905a13002aa39f82e05a66c00401fbbe214f602bbebd343436b5b6e6970fdffe8dcab3ec2f8bedce2e01e4468514eccb9080b408695ddf840bc9fb09570ecd31a507306a35ff0ffffe58326537114c600220e7f1d8a28c380080283f46f0a0d51fd5a6dcda5b4f3a60e1fbff926cd2a65d0e5db9d4e7fac8d94ebd996be0d34d265bfc6fd9d94ea333f3b32e9156ca5bec5e70b64a29657270ffffd7c24431afd28e004dd6c8b9b7c57d83d803a48f71b749d0ebd269985e7f4c93f0fbffe22603119c52ddb9c18e68980d49fd9a7747e711d3af7dd2f3d510a188d20c67ca6726cfe1fbffcab11e3ef4111800ee7e95706a2ebc0040198b474020ecb6c00427ee8aee3d1fc0',
      'hex',
    )
    const ts = Float64Array.from({ length: 40 }, (_, i) => RUN_START + 5000 + i * 10_000)
    const vs = Float64Array.from({ length: 40 }, (_, i) => Math.sin(i / 3) * Math.PI)
    const dec = decodeRun(old, RUN_START)
    assertSameBits(dec.timestamps, ts)
    assertSameBits(dec.values, vs)
    const now = encodeRun(ts, vs, 40, RUN_START)
    assert.equal(now[0], ENCODING_RUN_GORILLA_PACKED, 'now written packed')
    assert.ok(now.length < old.length, `${now.length} bytes against ${old.length}`)
  })

  it('falls back to GORILLA for -0, NaN and infinities, keeping their bits', () => {
    const ts = times(5, 1000)
    for (const odd of [0x8000_0000_0000_0000n, 0x7ff8_0000_0000_0001n, 0xfff0_0000_0000_0000n]) {
      const vs = fromBits(...bitsOf(Float64Array.of(1.25, 2.5)), odd, ...bitsOf(Float64Array.of(3.75, 0)))
      const enc = roundTrip(ts, vs)
      assert.equal(enc[0], ENCODING_RUN_GORILLA)
    }
  })

  it('scales by the smallest power of ten up to 10^9, and no further', () => {
    const ts = times(4, 1000)
    for (let d = 0; d <= 9; d++) {
      // Built by division, as a decimal literal parses: 2 + 10 ** -d need not be that double.
      const p = 10 ** d
      const vs = Float64Array.of(1, (2 * p + 1) / p, 3, -1 / p)
      const enc = roundTrip(ts, vs)
      // The mode byte follows the header: encoding, count, first offset (0), last offset (3000, two bytes).
      assert.equal(enc[0], ENCODING_RUN_SCALED, `d=${d}`)
      assert.equal(enc[5]! & 0x0f, d)
    }
    assert.equal(roundTrip(ts, Float64Array.of(1, 2, 3, 1e-10))[0], ENCODING_RUN_GORILLA)
    assert.equal(roundTrip(ts, Float64Array.of(1, 2, 3, 5e-324))[0], ENCODING_RUN_GORILLA)
  })

  it('keeps scaled integers below 2^50 and falls back above', () => {
    const ts = times(3, 1000)
    const near = 2 ** 50 - 1
    const ramp = (top: number) => Float64Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? top - i : -top + i))
    assert.equal(roundTrip(times(20, 1000), ramp(near))[0], ENCODING_RUN_SCALED)
    assert.ok(isGorilla(roundTrip(times(20, 1000), ramp(2 ** 50))))
    assert.equal(roundTrip(ts, Float64Array.of(Number.MAX_VALUE, 1, 2))[0], ENCODING_RUN_GORILLA)
  })

  it('packs counters as deltas of deltas and constants in almost nothing', () => {
    const ts = times(360, 10_000)
    const counter = Float64Array.from({ length: 360 }, (_, i) => 1_000_000 + i * 1234)
    const enc = roundTrip(ts, counter)
    assert.equal(enc[0], ENCODING_RUN_SCALED)
    assert.ok(enc.length < 120, `${enc.length} bytes`)
    const constant = new Float64Array(360).fill(0.5)
    assert.ok(roundTrip(ts, constant).length < 120)
  })

  it('keeps GORILLA when XOR beats the scaled residuals', () => {
    // Two distant levels: the scaled deltas are wide, the XORs repeat one pattern.
    const ts = times(360, 10_000)
    const vs = Float64Array.from({ length: 360 }, (_, i) => (i % 2 === 0 ? 0 : 1e12))
    assert.ok(isGorilla(roundTrip(ts, vs)))
  })

  it('round-trips a single point and the ends of the run', () => {
    for (const offset of [0, RUN_MS - 1]) {
      roundTrip(Float64Array.of(RUN_START + offset), Float64Array.of(1.5))
      roundTrip(Float64Array.of(RUN_START + offset), fromBits(0x7ff0_0000_0000_0abcn))
    }
    roundTrip(Float64Array.of(RUN_START, RUN_START + RUN_MS - 1), Float64Array.of(1, 2))
  })

  it('round-trips runs before the epoch', () => {
    const start = -3 * RUN_MS
    const ts = Float64Array.of(start, start + 1, start + 3_599_999)
    roundTrip(ts, Float64Array.of(-1.5, -2.25, 0), start)
  })

  it('round-trips a run of one point every millisecond', () => {
    const rand = prng(5)
    const ts = Float64Array.from({ length: RUN_MS }, (_, i) => RUN_START + i)
    const enc = roundTrip(ts, walk(rand, RUN_MS, 1))
    assert.equal(enc[0], ENCODING_RUN_SCALED)
  })

  it('decodes into caller arrays at an offset', () => {
    const a = encodeRun(times(3, 1000), Float64Array.of(1.5, 2.5, 3.5), 3, RUN_START)
    const b = encodeRun(times(2, 1000), Float64Array.of(Math.PI, -0), 2, RUN_START)
    const ts = new Float64Array(new ArrayBuffer(8 * 10), 8, 7).fill(-1)
    const vs = new Float64Array(new ArrayBuffer(8 * 10), 16, 7).fill(-1)
    let at = 1
    at += decodeRunInto(a, RUN_START, ts, vs, at)
    at += decodeRunInto(b, RUN_START, ts, vs, at)
    assert.equal(at, 6)
    assert.deepEqual(bitsOf(vs), bitsOf(Float64Array.of(-1, 1.5, 2.5, 3.5, Math.PI, -0, -1)))
    assert.deepEqual(
      [...ts.subarray(1, 6)],
      [RUN_START, RUN_START + 1000, RUN_START + 2000, RUN_START, RUN_START + 1000],
    )
    assert.throws(() => decodeRunInto(a, RUN_START, ts, vs, 5), RangeError)
  })

  it('refuses input that would not round-trip', () => {
    const vs = Float64Array.of(1, 2)
    assert.throws(() => encodeRun(Float64Array.of(RUN_START, RUN_START), vs, 2, RUN_START), /^Error: BUG: /)
    assert.throws(() => encodeRun(Float64Array.of(RUN_START, RUN_START + RUN_MS), vs, 2, RUN_START), /^Error: BUG: /)
    assert.throws(() => encodeRun(Float64Array.of(RUN_START, RUN_START + 1), vs, 2, RUN_START + 1), /^Error: BUG: /)
  })

  it('packs regular timestamps in a few bits a group, and jittered ones in fewer than their delta-of-delta codes', () => {
    const rand = prng(21)
    // Constant values leave only the timestamps: 360 regular ones took 45 bytes as delta-of-delta codes.
    const constant = roundTrip(times(360, 10_000), new Float64Array(360).fill(0.5))
    assert.ok(packedTimestamps(constant))
    assert.ok(constant.length <= 30, `${constant.length} bytes`)
    // A 2-decimal random walk: values about 10 bits a point, timestamps nearly nothing.
    const walkRun = roundTrip(times(360, 10_000), walk(rand, 360, 2))
    assert.ok(walkRun.length / 360 < 1.36, `${walkRun.length / 360} bytes a point`)
    // Scrape jitter of up to 20 ms either way: about 7 bits a point against 9 or more as codes.
    const jittered = times(360, 10_000, rand, 20)
    const jitterRun = roundTrip(jittered, new Float64Array(360).fill(0.5))
    assert.ok(packedTimestamps(jitterRun))
    assert.ok(jitterRun.length < 360, `${jitterRun.length} bytes`)
    // Three points: a base delta of two bytes costs more than two codes of 16 and 1 bits.
    assert.ok(!packedTimestamps(roundTrip(times(3, 1000), Float64Array.of(1, 2, 3))))
  })

  it('writes a gap or a change of interval as codes in its own groups and keeps the rest packed', () => {
    const regular = roundTrip(times(359, 10_000), new Float64Array(359).fill(1)).length
    // One missed scrape: only its group is written as codes.
    const missed = Float64Array.from({ length: 359 }, (_, i) => RUN_START + (i < 100 ? i : i + 1) * 10_000)
    const gap = roundTrip(missed, new Float64Array(359).fill(1))
    assert.ok(packedTimestamps(gap))
    assert.ok(gap.length <= regular + 10, `${gap.length} bytes against ${regular} without the gap`)
    // One point more, 5 s after a scrape: the base stays the usual interval.
    const extra = Float64Array.from(
      { length: 360 },
      (_, i) => RUN_START + (i <= 100 ? i * 10_000 : i === 101 ? 1_005_000 : (i - 1) * 10_000),
    )
    const early = roundTrip(extra, new Float64Array(360).fill(1))
    assert.ok(early.length <= regular + 10, `${early.length} bytes against ${regular} without the extra point`)
    // Every 10 s, then every second: the groups past the change are codes.
    const changed = Float64Array.from(
      { length: 360 },
      (_, i) => RUN_START + (i < 200 ? i * 10_000 : 2_000_000 + (i - 200) * 1000),
    )
    assert.ok(packedTimestamps(roundTrip(changed, new Float64Array(360).fill(1))))
    // Escaped groups at the start and the end of the run, and a run of one group.
    const rand = prng(22)
    for (const count of [2, 31, 32, 33, 65]) {
      const odd = Float64Array.from({ length: count }, (_, i) => RUN_START + i * 10_000 + (i % 7 === 3 ? 5_000 : 0))
      roundTrip(odd, walk(rand, count, 2))
    }
  })

  it('decodes a scaled run written before timestamps were packed', () => {
    // 40 points every 10 s from 5 s into the run, 2-decimal values, as the encoder of schema 1 wrote them.
    const old = Buffer.from(
      '21288827f88d1812904ef53878000000000551c2390e5b9ae6c98e4f8c60f85836150661b86a16440078048a2489766d9ae609322c8261b0ec58119dbd9d58f0642a',
      'hex',
    )
    assert.ok(!packedTimestamps(old))
    const ts = Float64Array.from({ length: 40 }, (_, i) => RUN_START + 5000 + i * 10_000)
    const vs = Float64Array.from({ length: 40 }, (_, i) => Math.round((50 + 10 * Math.sin(i / 3)) * 100) / 100)
    const dec = decodeRun(old, RUN_START)
    assertSameBits(dec.timestamps, ts)
    assertSameBits(dec.values, vs)
    assert.notEqual(encodeRun(ts, vs, 40, RUN_START).toString('hex'), old.toString('hex'), 'now written packed')
  })

  it('round-trips thousands of random runs', () => {
    const rand = prng(11)
    let scaled = 0
    for (let c = 0; c < 3000; c++) {
      const count = 1 + Math.floor(rand() ** 2 * 1500)
      const interval = Math.max(1, Math.floor(RUN_MS / count / (1 + rand() * 3)))
      const ts = times(count, interval, rand, Math.floor(rand() * 3) * 50)
      const kind = Math.floor(rand() * 5)
      let vs: Float64Array
      if (kind === 0) vs = walk(rand, count, null)
      else if (kind === 1) vs = walk(rand, count, Math.floor(rand() * 10))
      else if (kind === 2)
        vs = Float64Array.from({ length: count }, (_, i) => Math.floor(i * rand() * 1e6) * (rand() < 0.5 ? 1 : -1))
      else if (kind === 3) {
        vs = walk(rand, count, 3)
        vs[Math.floor(rand() * count)] = rand() < 0.5 ? -0 : Number.NaN
      } else {
        vs = new Float64Array(count)
        const u32 = new Uint32Array(vs.buffer)
        for (let i = 0; i < u32.length; i++) u32[i] = (rand() * 4_294_967_296) >>> 0
      }
      if (roundTrip(ts, vs)[0] === ENCODING_RUN_SCALED) scaled++
    }
    assert.ok(scaled > 800, `${scaled} scaled`)
  })
})

describe('run codec on damaged input', () => {
  const rand = prng(8)
  const samples: Buffer[] = []
  for (let i = 0; i < 60; i++) {
    const count = 1 + Math.floor(rand() * 100)
    const vs = walk(rand, count, i % 2 === 0 ? 2 : null)
    // Regular, jittered, and jittered with a jump halfway, whose group is written as codes.
    const ts = times(count, 20_000, rand, i % 3 === 0 ? 0 : 30)
    if (i % 3 === 2) for (let k = count >> 1; k < count; k++) ts[k]! += 9_000
    samples.push(encodeRun(ts, vs, count, RUN_START))
  }

  it('has every encoding among the samples, and scaled runs with and without packed timestamps', () => {
    const scaled = samples.filter((s) => s[0] === ENCODING_RUN_SCALED)
    assert.ok(scaled.some(packedTimestamps))
    assert.ok(scaled.some((s) => !packedTimestamps(s)))
    assert.ok(samples.some((s) => s[0] === ENCODING_RUN_GORILLA))
    assert.ok(samples.some((s) => s[0] === ENCODING_RUN_GORILLA_PACKED))
  })

  it('throws CorruptDataError for every truncation and for trailing bytes', () => {
    for (const enc of samples) {
      for (let n = 0; n < enc.length; n++) {
        assert.throws(() => decodeRun(enc.subarray(0, n), RUN_START), CorruptDataError, `length ${n} of ${enc.length}`)
      }
      assert.throws(
        () => decodeRun(Buffer.concat([enc, Buffer.of(0)]), RUN_START),
        /cannot decode run: 1 trailing bytes/,
      )
    }
  })

  it('throws CorruptDataError for headers that cannot be', () => {
    assert.throws(() => runCount(Buffer.of(0x10, 1, 0, 0)), /cannot decode run: encoding byte 0x10 is not 0x20/)
    // Count 2 between offsets 5 and 5.
    assert.throws(() => runCount(Buffer.of(0x20, 2, 5, 5)), /2 points cannot span offsets 5 to 5/)
    // Mode byte with unknown bits, and d = 10.
    assert.throws(() => decodeRun(Buffer.of(0x21, 1, 0, 0, 0x40, 0), RUN_START), /mode byte 64/)
    assert.throws(() => decodeRun(Buffer.of(0x21, 1, 0, 0, 0x0a, 0), RUN_START), /mode byte 10/)
    // Packed timestamps (mode 0x22: d = 2) of two points 10 ms apart: a base delta of 0, and a group code past the widest.
    assert.throws(() => decodeRun(Buffer.of(0x21, 2, 0, 10, 0x22, 0, 0, 0, 0), RUN_START), /base delta 0 at byte 6/)
    assert.throws(
      () => decodeRun(Buffer.of(0x21, 2, 0, 10, 0x22, 0, 10, 0b1010_0000, 0), RUN_START),
      /timestamp group code 40 at byte 7/,
    )
    assert.deepEqual(
      [...decodeRun(Buffer.of(0x21, 2, 0, 10, 0x22, 0, 10, 0, 0), RUN_START).timestamps],
      [RUN_START, RUN_START + 10],
      'the same bytes with a group of width 0 decode',
    )
    // A header whose last offset disagrees with the stream.
    const enc = Buffer.from(encodeRun(Float64Array.of(RUN_START, RUN_START + 7), Float64Array.of(1, 2), 2, RUN_START))
    enc[3] = 8
    assert.throws(() => decodeRun(enc, RUN_START), /last timestamp offset 8 in the header does not match/)
  })

  it('throws CorruptDataError or decodes, and never hangs, whatever the bytes', () => {
    const noise = prng(100)
    let detected = 0
    for (let c = 0; c < 20_000; c++) {
      const enc = Buffer.from(samples[c % samples.length]!)
      const flips = 1 + Math.floor(noise() * 3)
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(noise() * enc.length)
        enc[at] = enc[at]! ^ (1 << Math.floor(noise() * 8))
      }
      try {
        const dec = decodeRun(enc, RUN_START)
        for (let i = 1; i < dec.timestamps.length; i++) assert.ok(dec.timestamps[i]! > dec.timestamps[i - 1]!)
      } catch (err) {
        if (!(err instanceof CorruptDataError)) throw err
        detected++
      }
    }
    assert.ok(detected > 5000, `${detected} detected`)
    for (let c = 0; c < 5000; c++) {
      const bytes = Buffer.from(Array.from({ length: Math.floor(noise() * 300) }, () => Math.floor(noise() * 256)))
      if (noise() < 0.8) {
        const pick = noise()
        bytes[0] = pick < 0.4 ? ENCODING_RUN_SCALED : pick < 0.7 ? ENCODING_RUN_GORILLA : ENCODING_RUN_GORILLA_PACKED
      }
      try {
        decodeRun(bytes, RUN_START)
      } catch (err) {
        if (!(err instanceof CorruptDataError)) throw err
      }
    }
  })
})
