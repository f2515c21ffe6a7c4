import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { queryKey, ResultCache } from '../../src/engine/caches.js'
import type { QueryRequest, SeriesPoints } from '../../src/model/types.js'

const REQUEST: QueryRequest = { selector: { metric: 'cpu', matchers: [] }, startMs: 0, endMs: 1_000 }

function series(timestamps: Float64Array, values: Float64Array): SeriesPoints {
  return { metric: 'cpu', tags: [], timestamps, values }
}

/** Stores `result` for REQUEST in a cache of `maxPoints` and says whether the cache kept it. */
function kept(maxPoints: number, result: SeriesPoints[]): boolean {
  const cache = new ResultCache(maxPoints)
  const key = queryKey(REQUEST)
  cache.set(key, cache.begin(), REQUEST, result, [0])
  return cache.get(key, 0) === result
}

describe('result cache', () => {
  test('keeps a result within a quarter of its budget, counting the points and the objects around them', () => {
    // 100 points of 16 bytes, plus about 24 points for the key, the entry and the series.
    const points = (n: number) => series(new Float64Array(n), new Float64Array(n))
    assert.equal(kept(4 * 130, [points(100)]), true)
    assert.equal(kept(4 * 110, [points(100)]), false)
    // Many small series each cost their objects as well as their points.
    const small = Array.from({ length: 50 }, () => points(2))
    assert.equal(kept(4 * 130, small), false)
  })

  test('counts the whole buffer a result is a view of, which stays in memory with it', () => {
    const decoded = new Float64Array(100_000)
    const view = series(decoded.subarray(0, 10), decoded.subarray(10, 20))
    assert.equal(kept(4_000, [view]), false)
    assert.equal(kept(4_000, [series(decoded.slice(0, 10), decoded.slice(10, 20))]), true)
  })
})
