import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, normalizeTimestamp } from '../../src/model/timestamps.js'

describe('timestamp range', () => {
  test('covers whole hour runs of 30 s blocks inside the biased uint32 block field', () => {
    assert.equal(MIN_TIMESTAMP_MS, -64_424_509_200_000)
    assert.equal(MAX_TIMESTAMP_MS, 64_424_509_199_999)
    assert.equal((MIN_TIMESTAMP_MS / 30_000) % 120, -0)
    assert.ok(MIN_TIMESTAMP_MS / 30_000 >= -(2 ** 31))
    assert.equal(((MAX_TIMESTAMP_MS + 1) / 30_000) % 120, 0)
    assert.ok(Math.floor(MAX_TIMESTAMP_MS / 30_000) <= 2 ** 31 - 1)
  })

  test('accepts both bounds and refuses one beyond', () => {
    assert.equal(normalizeTimestamp(MIN_TIMESTAMP_MS, 'ms'), MIN_TIMESTAMP_MS)
    assert.equal(normalizeTimestamp(MAX_TIMESTAMP_MS, 'ms'), MAX_TIMESTAMP_MS)
    assert.ok(Number.isNaN(normalizeTimestamp(MIN_TIMESTAMP_MS - 1, 'ms')))
    assert.ok(Number.isNaN(normalizeTimestamp(MAX_TIMESTAMP_MS + 1, 'ms')))
    assert.equal(normalizeTimestamp(BigInt(MAX_TIMESTAMP_MS) * 1_000_000n + 999_999n, 'ns'), MAX_TIMESTAMP_MS)
    assert.ok(Number.isNaN(normalizeTimestamp((BigInt(MAX_TIMESTAMP_MS) + 1n) * 1_000_000n, 'ns')))
    assert.equal(normalizeTimestamp(BigInt(MIN_TIMESTAMP_MS) * 1_000_000n, 'ns'), MIN_TIMESTAMP_MS)
    assert.ok(Number.isNaN(normalizeTimestamp(BigInt(MIN_TIMESTAMP_MS) * 1_000_000n - 1n, 'ns')))
    assert.ok(Number.isNaN(normalizeTimestamp(Math.ceil(MAX_TIMESTAMP_MS / 1000) + 1, 's')))
    assert.ok(Number.isNaN(normalizeTimestamp(10n ** 30n, 'ms')))
  })
})

describe('normalizeTimestamp', () => {
  test('milliseconds pass through', () => {
    assert.equal(normalizeTimestamp(1_700_000_000_123, 'ms'), 1_700_000_000_123)
    assert.equal(normalizeTimestamp(-5, 'ms'), -5)
    assert.equal(normalizeTimestamp(1_700_000_000_123n, 'ms'), 1_700_000_000_123)
  })

  test('seconds multiply by 1000', () => {
    assert.equal(normalizeTimestamp(1_700_000_000, 's'), 1_700_000_000_000)
    assert.equal(normalizeTimestamp(-2, 's'), -2000)
    assert.equal(normalizeTimestamp(1_700_000_000n, 's'), 1_700_000_000_000)
    assert.equal(normalizeTimestamp(-2n, 's'), -2000)
  })

  test('microseconds round down, also below zero', () => {
    assert.equal(normalizeTimestamp(1_700_000_000_123_999, 'us'), 1_700_000_000_123)
    assert.equal(normalizeTimestamp(999, 'us'), 0)
    assert.equal(normalizeTimestamp(-1, 'us'), -1)
    assert.equal(normalizeTimestamp(-1000, 'us'), -1)
    assert.equal(normalizeTimestamp(-1001, 'us'), -2)
    assert.equal(normalizeTimestamp(-1n, 'us'), -1)
    assert.equal(normalizeTimestamp(-1000n, 'us'), -1)
    assert.equal(normalizeTimestamp(-1001n, 'us'), -2)
    assert.equal(normalizeTimestamp(1_700_000_000_123_999n, 'us'), 1_700_000_000_123)
  })

  test('microseconds near 2^53 round down exactly', () => {
    assert.equal(normalizeTimestamp(9_007_199_254_739_999, 'us'), 9_007_199_254_739)
    assert.equal(normalizeTimestamp(-9_007_199_254_739_999, 'us'), -9_007_199_254_740)
  })

  test('nanoseconds round down, as numbers and as bigints', () => {
    assert.equal(normalizeTimestamp(1_500_000, 'ns'), 1)
    assert.equal(normalizeTimestamp(-1, 'ns'), -1)
    assert.equal(normalizeTimestamp(-1_000_000, 'ns'), -1)
    assert.equal(normalizeTimestamp(-1_000_001, 'ns'), -2)
    assert.equal(normalizeTimestamp(1_700_000_000_123_456_789n, 'ns'), 1_700_000_000_123)
    assert.equal(normalizeTimestamp(-1n, 'ns'), -1)
    assert.equal(normalizeTimestamp(-1_000_000n, 'ns'), -1)
    assert.equal(normalizeTimestamp(-1_700_000_000_123_456_789n, 'ns'), -1_700_000_000_124)
    assert.equal(normalizeTimestamp(0n, 'ns'), 0)
  })

  test('numbers that are not safe integers give NaN', () => {
    for (const raw of [1.5, -0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53]) {
      for (const precision of ['s', 'ms', 'us', 'ns'] as const) {
        assert.ok(Number.isNaN(normalizeTimestamp(raw, precision)), `${raw} ${precision}`)
      }
    }
    // A nanosecond timestamp of today does not fit a double exactly, so as a number it is refused.
    assert.ok(Number.isNaN(normalizeTimestamp(1_700_000_000_123_456_800, 'ns')))
  })

  test('minus zero becomes zero', () => {
    assert.ok(Object.is(normalizeTimestamp(-0, 'ms'), 0))
    assert.ok(Object.is(normalizeTimestamp(-0, 'us'), 0))
  })

  test('numbers and bigints agree on random safe integers', () => {
    let seed = 42
    const next = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
      return seed
    }
    for (let i = 0; i < 2000; i++) {
      const raw = (next() * 2 ** 22 + next()) * (i % 2 === 0 ? 1 : -1)
      if (!Number.isSafeInteger(raw)) continue
      for (const precision of ['s', 'ms', 'us', 'ns'] as const) {
        const a = normalizeTimestamp(raw, precision)
        const b = normalizeTimestamp(BigInt(raw), precision)
        assert.ok(Object.is(a, b) || (a === 0 && b === 0), `${raw} ${precision}: ${a} vs ${b}`)
      }
    }
  })
})
