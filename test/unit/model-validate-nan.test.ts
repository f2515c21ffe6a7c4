// validateWriteBatch with acceptNaN, and the bit patterns of NaN values through its sorting,
// deduplication and merging of entries: Prometheus' staleness marker must stay what it is.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { DEFAULT_WRITE_LIMITS } from '../../src/model/limits.js'
import type { WriteBatch } from '../../src/model/types.js'
import { validateWriteBatch } from '../../src/model/validate.js'
import { bitsOf, doubles, NORMAL_NAN, OTHER_NAN, STALE_NAN } from '../fixtures/nan-values.js'

const ONE = 0x3ff0000000000000n
const INF = 0x7ff0000000000000n

function batch(timestamps: number[], bits: bigint[], acceptNaN?: boolean): WriteBatch {
  return {
    ...(acceptNaN === undefined ? {} : { acceptNaN }),
    series: [{ metric: 'm', tags: [], timestamps, values: doubles(bits) }],
  }
}

function violations(run: () => unknown): string[] {
  try {
    run()
  } catch (err) {
    assert.ok(err instanceof ValidationError)
    return err.violations.map((v) => `${v.field}: ${v.description}`)
  }
  assert.fail('expected a ValidationError')
}

describe('validateWriteBatch: acceptNaN', () => {
  test('NaN and ±Infinity pass with it, whatever allowNaN says', () => {
    const values = [STALE_NAN, INF, 0xfff0000000000000n, ONE]
    const out = validateWriteBatch(batch([1, 2, 3, 4], values, true), DEFAULT_WRITE_LIMITS)
    assert.deepEqual(bitsOf(out.series[0]!.values), values)
  })

  test('without it, the limit decides: NaN with allowNaN, ±Infinity never', () => {
    assert.deepEqual(
      violations(() => validateWriteBatch(batch([1, 2], [ONE, NORMAL_NAN], false))),
      ['series[0].values[1]: is NaN, and NaN values are not allowed'],
    )
    const lenient = { ...DEFAULT_WRITE_LIMITS, allowNaN: true }
    assert.deepEqual(bitsOf(validateWriteBatch(batch([1], [STALE_NAN]), lenient).series[0]!.values), [STALE_NAN])
    assert.deepEqual(
      violations(() => validateWriteBatch(batch([1], [INF]), lenient)),
      ['series[0].values[0]: must be finite, got Infinity'],
    )
  })
})

describe('validateWriteBatch: NaN bit patterns', () => {
  test('survive sorting and last-write-wins deduplication', () => {
    // Unordered with a repeat: the sort path. The later STALE_NAN at 2 replaces NORMAL_NAN.
    const unordered = validateWriteBatch(batch([3, 2, 1, 2], [OTHER_NAN, NORMAL_NAN, ONE, STALE_NAN], true))
    assert.deepEqual([...unordered.series[0]!.timestamps], [1, 2, 3])
    assert.deepEqual(bitsOf(unordered.series[0]!.values), [ONE, STALE_NAN, OTHER_NAN])
    // Ascending with repeats side by side: deduplicated in place.
    const repeated = validateWriteBatch(batch([1, 1, 2], [NORMAL_NAN, STALE_NAN, OTHER_NAN], true))
    assert.deepEqual(bitsOf(repeated.series[0]!.values), [STALE_NAN, OTHER_NAN])
  })

  test('survive merging entries of one series, with write versions too', () => {
    for (const version of [undefined, 7]) {
      const entry = (timestamps: number[], bits: bigint[]) => ({
        metric: 'm',
        tags: [],
        timestamps,
        values: doubles(bits),
        ...(version === undefined ? {} : { version }),
      })
      const out = validateWriteBatch({
        acceptNaN: true,
        series: [entry([2, 1], [STALE_NAN, NORMAL_NAN]), entry([3, 2], [OTHER_NAN, STALE_NAN])],
      })
      assert.deepEqual(bitsOf(out.series[0]!.values), [NORMAL_NAN, STALE_NAN, OTHER_NAN], `version ${version}`)
    }
  })
})
