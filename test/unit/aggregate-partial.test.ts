import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { aggregate } from '../../src/engine/aggregate.js'
import { mergePartials, partialSteps } from '../../src/engine/aggregate-partial.js'
import { runToEnd } from '../../src/engine/slicer.js'
import { prng } from '../../src/model/prng.js'
import type { AggFunc, Aggregation, SeriesPoints } from '../../src/model/types.js'
import { assertSameSeries } from '../fixtures/series-assert.js'

function randomSeries(rand: () => number): SeriesPoints[] {
  const out: SeriesPoints[] = []
  const hosts = ['a', 'b', 'c', 'd', 'e', 'f']
  for (const host of hosts) {
    for (const region of ['eu', 'us']) {
      if (rand() < 0.2) continue
      const ts: number[] = []
      const vs: number[] = []
      let t = Math.floor(rand() * 50) * 10
      while (t < 2_000) {
        ts.push(t)
        // Whole values make sums exact in any order; a few NaNs test MIN/MAX and the percentiles.
        vs.push(rand() < 0.03 ? Number.NaN : Math.floor(rand() * 100) - 50)
        t += 10 * (1 + Math.floor(rand() * 4))
      }
      const tags = [
        { key: 'host', value: host },
        { key: 'region', value: region },
      ]
      if (rand() < 0.5) tags.push({ key: 'rack', value: `r${Math.floor(rand() * 2)}` })
      out.push({ metric: 'cpu', tags, timestamps: Float64Array.from(ts), values: Float64Array.from(vs) })
    }
  }
  return out
}

const FUNCS: AggFunc[] = ['count', 'sum', 'min', 'max', 'avg', 'first', 'last', 'stddev', 'p50', 'p90', 'p95', 'p99']

describe('partial aggregates merged across nodes', () => {
  for (let seed = 1; seed <= 12; seed++) {
    it(`equal the single-node aggregate for every function and grouping (seed ${seed})`, () => {
      const rand = prng(seed)
      const series = randomSeries(rand)
      // Series spread over three "nodes" at random, as a ring would spread them.
      const nodes: SeriesPoints[][] = [[], [], []]
      for (const s of series) nodes[Math.floor(rand() * 3)]!.push(s)
      const groupings: Pick<Aggregation, 'groupBy' | 'mergeSeries'>[] = [
        { groupBy: ['region'], mergeSeries: false },
        { groupBy: ['rack'], mergeSeries: false },
        { groupBy: [], mergeSeries: true },
        { groupBy: [], mergeSeries: false },
      ]
      for (const func of FUNCS) {
        for (const grouping of groupings) {
          for (const stepMs of [0, 100, 700]) {
            const agg: Aggregation = { func, stepMs, ...grouping }
            const expected = aggregate(series, agg, 0, 2_000)
            const parts = nodes.map((n) => runToEnd(partialSteps(n, agg, 0, 2_000)))
            assertSameSeries(mergePartials(parts, agg), expected, `${func} ${JSON.stringify(grouping)} step ${stepMs}`)
          }
        }
      }
    })
  }

  it('resolves equal first and last timestamps to the series whose key sorts first, whatever the node order', () => {
    const a: SeriesPoints = {
      metric: 'm',
      tags: [{ key: 'h', value: 'a' }],
      timestamps: Float64Array.of(5, 9),
      values: Float64Array.of(1, 2),
    }
    const b: SeriesPoints = {
      metric: 'm',
      tags: [{ key: 'h', value: 'b' }],
      timestamps: Float64Array.of(5, 9),
      values: Float64Array.of(3, 4),
    }
    for (const func of ['first', 'last'] as const) {
      const agg: Aggregation = { func, stepMs: 0, groupBy: [], mergeSeries: true }
      const expected = aggregate([a, b], agg, 0, 10)
      const pa = runToEnd(partialSteps([a], agg, 0, 10))
      const pb = runToEnd(partialSteps([b], agg, 0, 10))
      assert.deepEqual(mergePartials([pb, pa], agg), expected)
      assert.deepEqual(mergePartials([pa, pb], agg), expected)
    }
  })
})
