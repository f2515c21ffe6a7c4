import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { DEFAULT_WRITE_LIMITS, resolveWriteLimits } from '../../src/model/limits.js'

describe('write limits', () => {
  test('defaults', () => {
    assert.deepEqual(DEFAULT_WRITE_LIMITS, {
      maxSeriesPerRequest: 10_000,
      maxPointsPerRequest: 1_000_000,
      maxTagsPerSeries: 64,
      maxTagValueBytes: 1024,
      maxNameBytes: 256,
      allowNaN: false,
    })
    assert.ok(Object.isFrozen(DEFAULT_WRITE_LIMITS))
  })

  test('resolveWriteLimits fills in defaults, ignoring undefined', () => {
    assert.deepEqual(resolveWriteLimits(), DEFAULT_WRITE_LIMITS)
    const limits = resolveWriteLimits({ maxTagsPerSeries: 8, allowNaN: true, maxNameBytes: undefined })
    assert.equal(limits.maxTagsPerSeries, 8)
    assert.equal(limits.allowNaN, true)
    assert.equal(limits.maxNameBytes, 256)
    assert.ok(Object.isFrozen(limits))
  })

  test('resolveWriteLimits names every bad option', () => {
    assert.throws(
      () => resolveWriteLimits({ maxSeriesPerRequest: 0, maxPointsPerRequest: 1.5, maxTagValueBytes: -1 }),
      (err: unknown) => {
        assert.ok(err instanceof ValidationError)
        assert.deepEqual(
          err.violations.map((v) => v.field),
          ['limits.maxSeriesPerRequest', 'limits.maxPointsPerRequest', 'limits.maxTagValueBytes'],
        )
        return true
      },
    )
  })
})
