import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CorruptDataError } from '../../src/codec/errors.js'
import {
  blockKeyRange,
  blockNumberOf,
  blockStartMs,
  decodeRowKey,
  encodeRowKey,
  MAX_BLOCK,
  MAX_TIMESTAMP_MS,
  MIN_BLOCK,
  MIN_TIMESTAMP_MS,
  RUN_MS,
  runStartBlock,
  seriesKeyRange,
  timeKeyRange,
} from '../../src/codec/row-key.js'
import { BLOCK_MS, BLOCK_NUMBER_BIAS, ROW_KEY_BYTES, RUN_BLOCKS } from '../../src/codec/schema.js'
import { prng } from '../../src/model/prng.js'

function id(...bytes: number[]): Buffer {
  return Buffer.from(bytes.length === 8 ? bytes : [0, 0, 0, 0, 0, 0, 0, bytes[0] ?? 0])
}

function compareTuples(a: [Buffer, number], b: [Buffer, number]): number {
  return Buffer.compare(a[0], b[0]) || a[1] - b[1]
}

describe('time grid', () => {
  it('maps timestamps to 30-second blocks, flooring negatives', () => {
    assert.equal(blockNumberOf(0), 0)
    assert.equal(blockNumberOf(29_999), 0)
    assert.equal(blockNumberOf(30_000), 1)
    assert.equal(blockNumberOf(-1), -1)
    assert.equal(blockNumberOf(-30_000), -1)
    assert.equal(blockNumberOf(-30_001), -2)
    assert.ok(Object.is(blockNumberOf(-0), 0))
    assert.equal(blockNumberOf(1_700_000_000_000), 56_666_666)
    assert.equal(blockStartMs(-2), -60_000)
    assert.equal(blockStartMs(blockNumberOf(1_700_000_012_345)), 1_700_000_010_000)
  })

  it('floors blocks to run starts, negatives included', () => {
    assert.equal(runStartBlock(0), 0)
    assert.equal(runStartBlock(119), 0)
    assert.equal(runStartBlock(120), 120)
    assert.equal(runStartBlock(-1), -120)
    assert.equal(runStartBlock(-120), -120)
    assert.equal(runStartBlock(-121), -240)
    assert.ok(Object.is(runStartBlock(-0), 0))
    assert.equal(RUN_MS, RUN_BLOCKS * BLOCK_MS)
  })

  it('has limits whose runs and exclusive bounds are all encodable', () => {
    assert.equal(blockNumberOf(MIN_TIMESTAMP_MS), MIN_BLOCK)
    assert.equal(blockNumberOf(MAX_TIMESTAMP_MS), MAX_BLOCK)
    assert.equal(blockNumberOf(MAX_TIMESTAMP_MS + 1), MAX_BLOCK + 1)
    assert.equal(runStartBlock(MIN_BLOCK), MIN_BLOCK)
    assert.equal(runStartBlock(MAX_BLOCK) + RUN_BLOCKS - 1, MAX_BLOCK)
    assert.ok(MIN_BLOCK + BLOCK_NUMBER_BIAS >= 0)
    assert.ok(MAX_BLOCK + 1 + BLOCK_NUMBER_BIAS < 0xffff_ffff)
    assert.ok(Number.isSafeInteger(MIN_TIMESTAMP_MS) && Number.isSafeInteger(MAX_TIMESTAMP_MS))
    // 72 BC to AD 4011: every date a client can mean.
    assert.equal(new Date(MIN_TIMESTAMP_MS).toISOString(), '-000072-06-20T23:00:00.000Z')
    assert.equal(new Date(MAX_TIMESTAMP_MS).toISOString(), '4011-07-14T00:59:59.999Z')
  })
})

describe('row key', () => {
  it('round-trips series id and block, negatives and limits included', () => {
    const series = Buffer.from('0102030405060708', 'hex')
    for (const block of [0, 1, -1, 56_666_666, -56_666_666, MIN_BLOCK, MAX_BLOCK]) {
      const key = encodeRowKey(series, block)
      assert.equal(key.length, ROW_KEY_BYTES)
      assert.deepEqual(key.subarray(0, 8), series)
      const decoded = decodeRowKey(key)
      assert.equal(decoded.block, block)
      assert.deepEqual(decoded.seriesId, series)
      // The id is a copy: reusing the key buffer must not change it.
      key.fill(0)
      assert.deepEqual(decoded.seriesId, series)
    }
    assert.equal(encodeRowKey(series, 0).readUInt32BE(8), BLOCK_NUMBER_BIAS)
    assert.equal(encodeRowKey(series, -1).readUInt32BE(8), BLOCK_NUMBER_BIAS - 1)
  })

  it('sorts bytewise like (series id, block)', () => {
    const rand = prng(1)
    const tuples: [Buffer, number][] = []
    for (let i = 0; i < 3000; i++) {
      // Few distinct ids, so many keys share a series and order by block alone.
      const series = Buffer.alloc(8)
      series[7] = Math.floor(rand() * 4)
      series[0] = rand() < 0.5 ? 0 : 0xff
      const pick = rand()
      const block =
        pick < 0.1
          ? MIN_BLOCK + Math.floor(rand() * 3)
          : pick < 0.2
            ? MAX_BLOCK - Math.floor(rand() * 3)
            : Math.floor((rand() - 0.5) * 2000)
      tuples.push([series, block])
    }
    const byKey = tuples
      .map((t) => ({ t, key: encodeRowKey(t[0], t[1]) }))
      .sort((a, b) => Buffer.compare(a.key, b.key))
      .map((x) => x.t)
    const byTuple = [...tuples].sort(compareTuples)
    for (let i = 0; i < byKey.length; i++) assert.equal(compareTuples(byKey[i]!, byTuple[i]!), 0)
  })

  it('rejects blocks outside the range and malformed ids', () => {
    const series = id(1)
    assert.throws(() => encodeRowKey(series, MIN_BLOCK - 1), RangeError)
    assert.throws(() => encodeRowKey(series, MAX_BLOCK + 1), RangeError)
    assert.throws(() => encodeRowKey(series, 1.5), RangeError)
    assert.throws(() => encodeRowKey(series, Number.NaN), RangeError)
    assert.throws(() => encodeRowKey(Buffer.alloc(7), 0), RangeError)
    assert.throws(() => encodeRowKey(Buffer.alloc(9), 0), RangeError)
  })

  it('throws CorruptDataError for keys that are not row keys', () => {
    assert.throws(() => decodeRowKey(Buffer.alloc(11)), CorruptDataError)
    assert.throws(() => decodeRowKey(Buffer.alloc(13)), CorruptDataError)
    // Biased block 0 is -2^31, below MIN_BLOCK; 0xffffffff is the series end marker.
    assert.throws(() => decodeRowKey(Buffer.alloc(12)), /cannot decode row key: block -2147483648 out of range/)
    assert.throws(() => decodeRowKey(Buffer.concat([id(1), Buffer.from('ffffffff', 'hex')])), CorruptDataError)
  })
})

describe('key ranges', () => {
  const series = Buffer.from('00000000000000ff', 'hex')
  const before = Buffer.from('00000000000000fe', 'hex')
  const after = Buffer.from('0000000000000100', 'hex')

  function inRange(key: Buffer, range: { gte: Buffer; lt: Buffer }): boolean {
    return Buffer.compare(key, range.gte) >= 0 && Buffer.compare(key, range.lt) < 0
  }

  it('holds exactly the blocks [from, to) of one series', () => {
    const range = blockKeyRange(series, -3, 5)
    for (let b = -10; b < 10; b++) assert.equal(inRange(encodeRowKey(series, b), range), b >= -3 && b < 5, `block ${b}`)
    assert.ok(!inRange(encodeRowKey(before, 0), range))
    assert.ok(!inRange(encodeRowKey(after, 0), range))
    const top = blockKeyRange(series, MAX_BLOCK, MAX_BLOCK + 1)
    assert.ok(inRange(encodeRowKey(series, MAX_BLOCK), top))
    assert.throws(() => blockKeyRange(series, 0, MAX_BLOCK + 2), RangeError)
    const empty = blockKeyRange(series, 5, 2)
    assert.deepEqual(empty.gte, empty.lt)
  })

  it('covers the blocks of a time range, clamped, and is null when empty', () => {
    const range = timeKeyRange(series, -30_001, 30_000)
    assert.ok(range)
    assert.deepEqual(range.gte, encodeRowKey(series, -2))
    assert.deepEqual(range.lt, encodeRowKey(series, 1))
    const all = timeKeyRange(series, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY)
    assert.ok(all)
    assert.ok(inRange(encodeRowKey(series, MIN_BLOCK), all))
    assert.ok(inRange(encodeRowKey(series, MAX_BLOCK), all))
    assert.equal(timeKeyRange(series, 10, 10), null)
    assert.equal(timeKeyRange(series, MAX_TIMESTAMP_MS + 1, MAX_TIMESTAMP_MS + 100), null)
  })

  it('covers every block of a series and nothing of its neighbours', () => {
    const range = seriesKeyRange(series)
    for (const b of [MIN_BLOCK, -1, 0, 1, MAX_BLOCK]) {
      assert.ok(inRange(encodeRowKey(series, b), range))
      assert.ok(!inRange(encodeRowKey(before, b), range))
      assert.ok(!inRange(encodeRowKey(after, b), range))
    }
    // The highest id needs no carry into a ninth byte.
    const last = Buffer.alloc(8, 0xff)
    assert.ok(inRange(encodeRowKey(last, MAX_BLOCK), seriesKeyRange(last)))
  })
})
