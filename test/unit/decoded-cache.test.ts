import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { RunSummaryWithSpan } from '../../src/codec/cold-value.js'
import { encodeRowKey } from '../../src/codec/row-key.js'
import { DecodedBlockCache } from '../../src/engine/caches.js'

const ID = Buffer.from('0011223344556677', 'hex')
const HEX = ID.toString('hex')
const RUN = 1_000_000

function summary(x: number): RunSummaryWithSpan {
  return { sum: x, min: x, max: x, first: x, last: x, count: 1, firstMs: 0, lastMs: 0 }
}

function run(points: number): { ts: Float64Array; vals: Float64Array } {
  return { ts: new Float64Array(points), vals: new Float64Array(points) }
}

describe('decoded block cache', () => {
  test('keeps runs and summaries by series and block, and forgets what a rewrite invalidates', () => {
    const cache = new DecodedBlockCache(10_000)
    cache.set('c', HEX, RUN, run(3), 0)
    cache.setSummary(HEX, RUN, summary(7), 0)
    assert.equal(cache.get('c', HEX, RUN)?.ts.length, 3)
    assert.equal(cache.get('h', HEX, RUN), undefined, 'hot blocks apart from cold runs')
    assert.equal(cache.get('c', HEX, RUN + 6), undefined)
    assert.equal(cache.getSummary(HEX, RUN)?.max, 7)
    cache.invalidateRuns([encodeRowKey(ID, RUN)])
    assert.equal(cache.get('c', HEX, RUN), undefined)
    assert.equal(cache.getSummary(HEX, RUN), undefined)
    cache.setSummary(HEX, RUN, summary(8), 0)
    assert.equal(cache.getSummary(HEX, RUN), undefined, 'a read begun before the rewrite stores nothing')
    cache.putSummary(encodeRowKey(ID, RUN), summary(9))
    assert.equal(cache.getSummary(HEX, RUN)?.max, 9, 'the summary of the run just written')
  })

  test('stays within its points and evicts the least recently used, keeping an entry hit all along', () => {
    // 100 summaries of 4 points each fit in 400 points.
    const cache = new DecodedBlockCache(400)
    for (let i = 0; i < 100; i++) cache.setSummary(HEX, i, summary(i), 0)
    for (let i = 100; i < 1000; i++) {
      assert.equal(cache.getSummary(HEX, 0)?.max, 0, `the entry hit all along, after ${i} stores`)
      cache.setSummary(HEX, i, summary(i), 0)
    }
    let kept = 0
    for (let i = 1; i < 1000; i++) if (cache.getSummary(HEX, i)) kept++
    assert.ok(kept <= 99, `${kept} kept besides the one hit`)
    for (let i = 950; i < 1000; i++) assert.equal(cache.getSummary(HEX, i)?.max, i, `recent ${i}`)
    for (let i = 1; i < 850; i++) assert.equal(cache.getSummary(HEX, i), undefined, `old ${i}`)
  })
})
