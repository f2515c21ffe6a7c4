import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Head, sortDedupLastWins } from '../../src/engine/head.js'

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 0x1_0000_0000
  }
}

/** The obvious implementation: a map from timestamp to the last value written for it. */
function reference(ts: number[], vals: number[]): { ts: number[]; vals: number[] } {
  const last = new Map<number, number>()
  ts.forEach((t, i) => {
    last.set(t, vals[i] as number)
  })
  const keys = [...last.keys()].sort((a, b) => a - b)
  return { ts: keys, vals: keys.map((k) => last.get(k) as number) }
}

describe('write buffer', () => {
  it('sorts and deduplicates, the last write of a timestamp winning, for any arrival order', () => {
    const rand = rng(3)
    for (let c = 0; c < 500; c++) {
      const n = Math.floor(rand() * 200)
      const shape = c % 3
      const ts: number[] = []
      for (let i = 0; i < n; i++) {
        // Ascending runs, random order, or heavy duplication.
        if (shape === 0) ts.push(Math.floor(i / 2) * 10 + (i % 7 === 0 ? -100 : 0))
        else if (shape === 1) ts.push(Math.floor(rand() * 1000))
        else ts.push(Math.floor(rand() * 5))
      }
      const vals = ts.map(() => rand())
      const got = sortDedupLastWins(ts, vals)
      const want = reference(ts, vals)
      assert.deepEqual(Array.from(got.ts), want.ts)
      assert.deepEqual(Array.from(got.vals), want.vals)
    }
  })

  it('takes only ended blocks, keeps the rest, and tracks the oldest sequence still needed', () => {
    const head = new Head()
    head.append(1, Float64Array.of(0, 1000, 40_000), Float64Array.of(1, 2, 3), 5)
    head.append(1, Float64Array.of(1000), Float64Array.of(9), 6)
    assert.equal(head.bufferedPoints, 4)
    // At 45 s with 2 s idle, block [0, 30 s) is due and block [30 s, 60 s) is still open.
    const taken = head.takeDue(45_000, 2000, false)
    assert.equal(taken.length, 1)
    assert.deepEqual(Array.from(taken[0]?.ts ?? []), [0, 1000])
    assert.deepEqual(Array.from(taken[0]?.vals ?? []), [1, 9])
    assert.equal(head.minSeq(), 5)
    assert.deepEqual(Array.from(head.read(1, 0, 100_000)?.vals ?? []), [1, 9, 3])
    head.finishSeal(taken)
    assert.equal(head.bufferedPoints, 1)
    assert.equal(head.minSeq(), 5)
    assert.deepEqual(head.last(1), { ts: 40_000, val: 3 })
    const rest = head.takeDue(0, 0, true)
    head.abortSeal(rest)
    assert.equal(head.bufferedPoints, 1)
    head.drop(1, 0, 50_000)
    assert.equal(head.bufferedPoints, 0)
    assert.equal(head.minSeq(), undefined)
  })
})
