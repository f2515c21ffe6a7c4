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
    cache.set('c', HEX, RUN, run(30), 0)
    cache.setSummary(HEX, RUN, summary(7), 0)
    assert.equal(cache.get('c', HEX, RUN)?.ts.length, 30)
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
    // 100 summaries, at 48 points each (their weight on the heap, in 16-byte points), fit in 4,800.
    const cache = new DecodedBlockCache(4_800)
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

  test('counts what an entry weighs beside its points, so small runs cannot overrun the budget', () => {
    // A decoded run holds about 1 KB of heap besides its points: 64 points of 16 bytes.
    const cache = new DecodedBlockCache(8_000)
    for (let i = 0; i < 1000; i++) cache.set('c', HEX, i, run(16), 0)
    let kept = 0
    for (let i = 0; i < 1000; i++) if (cache.get('c', HEX, i)) kept++
    assert.equal(kept, 100)
    // A run of 8 points or fewer decodes faster than keeping it costs: it is not kept.
    cache.set('c', HEX, 4_000, run(8), 0)
    assert.equal(cache.get('c', HEX, 4_000), undefined)
    cache.set('c', HEX, 4_001, run(9), 0)
    assert.equal(cache.get('c', HEX, 4_001)?.ts.length, 9)
    // A run longer than an eighth of the budget is not kept at all.
    cache.set('c', HEX, 5_000, run(937), 0)
    assert.equal(cache.get('c', HEX, 5_000), undefined)
    cache.set('c', HEX, 5_000, run(936), 0)
    assert.equal(cache.get('c', HEX, 5_000)?.ts.length, 936)
  })

  test('forgets every entry of an invalidated series, and only its, whatever was evicted between', () => {
    const other = Buffer.from('8899aabbccddeeff', 'hex').toString('hex')
    const cache = new DecodedBlockCache(48 * 300)
    // Interleaved, with evictions and moves to the end, so each series' list is unlinked in the middle.
    for (let i = 0; i < 1000; i++) {
      cache.setSummary(HEX, i, summary(i), 0)
      cache.setSummary(other, i, summary(-i), 0)
      if (i % 7 === 0) cache.getSummary(HEX, i - 100)
    }
    const held = (hex: string): number => {
      let n = 0
      for (let i = 0; i < 1000; i++) if (cache.getSummary(hex, i)) n++
      return n
    }
    assert.ok(held(HEX) > 100 && held(other) > 100, `${held(HEX)} and ${held(other)} held`)
    // The newest of a series' entries goes first, then the rest of the series with it.
    cache.invalidateRuns([encodeRowKey(ID, 999)])
    assert.equal(cache.getSummary(HEX, 999), undefined)
    assert.equal(cache.getSummary(HEX, 998)?.max, 998)
    const otherHeld = held(other)
    cache.invalidate(HEX)
    assert.equal(held(HEX), 0)
    assert.equal(held(other), otherHeld)
    // A new generation: reads begun before the invalidation store nothing, those begun after do.
    cache.setSummary(HEX, 1, summary(1), 0)
    assert.equal(cache.getSummary(HEX, 1), undefined)
    cache.setSummary(HEX, 1, summary(1), cache.generation(HEX))
    assert.equal(cache.getSummary(HEX, 1)?.max, 1)
  })
})
