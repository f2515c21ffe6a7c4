import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { aggregate, bucketStart } from '../../src/engine/aggregate.js'
import { ValidationError } from '../../src/model/errors.js'
import type { AggFunc, Aggregation, SeriesPoints } from '../../src/model/types.js'

function sp(tags: Record<string, string>, timestamps: number[], values: number[], metric = 'cpu'): SeriesPoints {
  return {
    metric,
    tags: Object.entries(tags).map(([key, value]) => ({ key, value })),
    timestamps: new Float64Array(timestamps),
    values: new Float64Array(values),
  }
}

function agg(func: AggFunc, stepMs = 0, groupBy: string[] = [], mergeSeries = false): Aggregation {
  return { func, stepMs, groupBy, mergeSeries }
}

/** Output as plain data: tags as a record, points as [timestamp, value] pairs. */
function plain(result: SeriesPoints[]): { metric: string; tags: Record<string, string>; points: number[][] }[] {
  return result.map((s) => ({
    metric: s.metric,
    tags: Object.fromEntries(s.tags.map((t) => [t.key, t.value])),
    points: [...s.timestamps].map((ts, i) => [ts, s.values[i]!]),
  }))
}

/** The one value of the one bucket of the one output series. */
function single(series: SeriesPoints[], func: AggFunc, startMs = 0, endMs = 100): number {
  const result = aggregate(series, agg(func), startMs, endMs)
  assert.equal(result.length, 1)
  assert.equal(result[0]!.values.length, 1)
  return result[0]!.values[0]!
}

function close(actual: number, expected: number, epsilon = 1e-9): void {
  assert.ok(Math.abs(actual - expected) <= epsilon, `${actual} is not within ${epsilon} of ${expected}`)
}

describe('bucketStart', () => {
  test('aligns to multiples of the step since the epoch, rounding down', () => {
    assert.equal(bucketStart(0, 1000, 0), 0)
    assert.equal(bucketStart(999, 1000, 0), 0)
    assert.equal(bucketStart(1000, 1000, 0), 1000)
    assert.equal(bucketStart(1_700_000_012_345, 60_000, 0), 1_699_999_980_000)
  })

  test('rounds negative timestamps down, not towards zero', () => {
    assert.equal(bucketStart(-1, 1000, 0), -1000)
    assert.equal(bucketStart(-1000, 1000, 0), -1000)
    assert.equal(bucketStart(-1001, 1000, 0), -2000)
    assert.equal(bucketStart(-64_424_509_440_000, 30_000, 0), -64_424_509_440_000)
  })

  test('does not depend on the start of the range', () => {
    assert.equal(bucketStart(1500, 1000, 1234), 1000)
  })

  test('a step of 0 puts everything in the bucket of the start', () => {
    assert.equal(bucketStart(5, 0, 42), 42)
    assert.equal(bucketStart(-5, 0, 42), 42)
  })
})

describe('aggregate: functions', () => {
  // Values out of order in time, so percentiles must sort: 40 10 30 20.
  const x = [sp({ host: 'a' }, [0, 1, 2, 3], [40, 10, 30, 20])]
  const expected: Record<AggFunc, number> = {
    count: 4,
    sum: 100,
    min: 10,
    max: 40,
    avg: 25,
    first: 40,
    last: 20,
    // Deviations from 25 are 15 -15 5 -5; (225 + 225 + 25 + 25) / 4 = 125.
    stddev: Math.sqrt(125),
    // Sorted 10 20 30 40: rank q * 3, interpolated.
    p50: 25,
    p90: 37,
    p95: 38.5,
    p99: 39.7,
  }
  for (const [func, value] of Object.entries(expected) as [AggFunc, number][]) {
    test(`${func} of one bucket`, () => close(single(x, func), value))
  }

  test('per bucket, each with its own state', () => {
    const a = [sp({ host: 'a' }, [0, 1000, 2000, 3000, 4000, 5000], [1, 2, 3, 4, 5, 6])]
    const run = (func: AggFunc) => plain(aggregate(a, agg(func, 3000), 0, 6000))[0]!.points
    assert.deepEqual(run('count'), [
      [0, 3],
      [3000, 3],
    ])
    assert.deepEqual(run('sum'), [
      [0, 6],
      [3000, 15],
    ])
    assert.deepEqual(run('min'), [
      [0, 1],
      [3000, 4],
    ])
    assert.deepEqual(run('max'), [
      [0, 3],
      [3000, 6],
    ])
    assert.deepEqual(run('avg'), [
      [0, 2],
      [3000, 5],
    ])
    assert.deepEqual(run('first'), [
      [0, 1],
      [3000, 4],
    ])
    assert.deepEqual(run('last'), [
      [0, 3],
      [3000, 6],
    ])
    assert.deepEqual(run('p50'), [
      [0, 2],
      [3000, 5],
    ])
    const stddev = run('stddev')
    close(stddev[0]![1]!, Math.sqrt(2 / 3))
    close(stddev[1]![1]!, Math.sqrt(2 / 3))
  })

  test('percentiles of one and two values', () => {
    assert.equal(single([sp({}, [0], [7])], 'p99'), 7)
    assert.equal(single([sp({}, [0, 1], [10, 20])], 'p50'), 15)
    close(single([sp({}, [0, 1], [10, 20])], 'p90'), 19)
  })

  test('stddev is stable for large values close together', () => {
    const values = [1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16]
    // Deviations from the mean 1e9 + 10 are -6 -3 3 6: (36 + 9 + 9 + 36) / 4 = 22.5.
    close(single([sp({}, [0, 1, 2, 3], values)], 'stddev'), Math.sqrt(22.5))
    assert.equal(single([sp({}, [0, 1, 2], [5, 5, 5])], 'stddev'), 0)
  })

  test('sum and avg compensate rounding', () => {
    const series = [sp({}, [0, 1, 2, 3], [1e16, 1, 1, -1e16])]
    assert.equal(single(series, 'sum'), 2)
    assert.equal(single(series, 'avg'), 0.5)
  })

  test('avg survives a sum past the largest double', () => {
    assert.equal(single([sp({}, [0, 1], [Number.MAX_VALUE, Number.MAX_VALUE])], 'avg'), Number.MAX_VALUE)
  })

  test('min and max skip NaN markers unless there is nothing else', () => {
    const series = [sp({}, [0, 1, 2], [Number.NaN, 3, 1])]
    assert.equal(single(series, 'min'), 1)
    assert.equal(single(series, 'max'), 3)
    assert.equal(single(series, 'count'), 3)
    assert.ok(Number.isNaN(single([sp({}, [0], [Number.NaN])], 'min')))
  })
})

describe('aggregate: buckets and range', () => {
  test('step 0 makes one bucket labelled by the start of the range', () => {
    assert.deepEqual(plain(aggregate([sp({}, [10, 20, 30], [1, 2, 3])], agg('sum'), 5, 100)), [
      { metric: 'cpu', tags: {}, points: [[5, 6]] },
    ])
  })

  test('points out of time order each go to their own bucket', () => {
    // A point before the bucket of the point read last, then one back in it.
    const series = [sp({}, [125_000, 10_000, 130_000, 65_000], [1, 2, 4, 8])]
    for (const func of ['sum', 'max'] as const) {
      assert.deepEqual(plain(aggregate(series, agg(func, 60_000), 0, 200_000))[0]!.points, [
        [0, 2],
        [60_000, 8],
        [120_000, func === 'sum' ? 5 : 4],
      ])
    }
  })

  test('the range is [start, end): the end is left out', () => {
    const series = [sp({}, [0, 1000, 2000, 3000], [1, 2, 3, 4])]
    assert.deepEqual(plain(aggregate(series, agg('sum', 1000), 1000, 3000))[0]!.points, [
      [1000, 2],
      [2000, 3],
    ])
  })

  test('buckets align to the epoch, not to the start of the range', () => {
    const series = [sp({}, [0, 1000, 2000, 3000, 4000, 5000], [1, 2, 3, 4, 5, 6])]
    // Range 1000..5000: the first bucket is labelled 0 though the range starts at 1000.
    assert.deepEqual(plain(aggregate(series, agg('sum', 3000), 1000, 5000))[0]!.points, [
      [0, 5],
      [3000, 9],
    ])
  })

  test('negative timestamps fall in the bucket below', () => {
    const series = [sp({}, [-3001, -3000, -1, 0], [1, 2, 3, 4])]
    assert.deepEqual(plain(aggregate(series, agg('count', 3000), -10_000, 10_000))[0]!.points, [
      [-6000, 1],
      [-3000, 2],
      [0, 1],
    ])
  })

  test('empty buckets are left out', () => {
    const series = [sp({}, [0, 10_000], [1, 2])]
    assert.deepEqual(plain(aggregate(series, agg('count', 1000), 0, 20_000))[0]!.points, [
      [0, 1],
      [10_000, 1],
    ])
  })

  test('a series without points in the range is left out', () => {
    const series = [sp({ host: 'a' }, [0], [1]), sp({ host: 'b' }, [500], [2]), sp({ host: 'c' }, [], [])]
    assert.deepEqual(plain(aggregate(series, agg('sum', 100), 100, 1000)), [
      { metric: 'cpu', tags: { host: 'b' }, points: [[500, 2]] },
    ])
    assert.deepEqual(aggregate([], agg('sum'), 0, 1000), [])
  })
})

describe('aggregate: grouping', () => {
  const series = [
    sp({ region: 'us', host: 'c' }, [0], [100]),
    sp({ host: 'd' }, [0], [1000]),
    sp({ host: 'a', region: 'eu' }, [0, 1], [1, 2]),
    sp({ region: 'eu', host: 'b' }, [0], [10]),
  ]

  test('without groupBy each series stays apart with all its tags, sorted by key', () => {
    assert.deepEqual(plain(aggregate(series, agg('sum'), 0, 10)), [
      { metric: 'cpu', tags: { host: 'a', region: 'eu' }, points: [[0, 3]] },
      { metric: 'cpu', tags: { host: 'b', region: 'eu' }, points: [[0, 10]] },
      { metric: 'cpu', tags: { host: 'c', region: 'us' }, points: [[0, 100]] },
      { metric: 'cpu', tags: { host: 'd' }, points: [[0, 1000]] },
    ])
  })

  test('groupBy keeps only its tags; a series lacking one falls in the group without it', () => {
    assert.deepEqual(plain(aggregate(series, agg('sum', 0, ['region']), 0, 10)), [
      { metric: 'cpu', tags: {}, points: [[0, 1000]] },
      { metric: 'cpu', tags: { region: 'eu' }, points: [[0, 13]] },
      { metric: 'cpu', tags: { region: 'us' }, points: [[0, 100]] },
    ])
  })

  test('groupBy with several keys, one of them missing from every series', () => {
    assert.deepEqual(plain(aggregate(series, agg('count', 0, ['region', 'rack', 'region']), 0, 10)), [
      { metric: 'cpu', tags: {}, points: [[0, 1]] },
      { metric: 'cpu', tags: { region: 'eu' }, points: [[0, 3]] },
      { metric: 'cpu', tags: { region: 'us' }, points: [[0, 1]] },
    ])
    assert.deepEqual(plain(aggregate(series, agg('count', 0, ['host', 'region']), 0, 10)).length, 4)
  })

  test('mergeSeries puts everything in one series without tags', () => {
    assert.deepEqual(plain(aggregate(series, agg('sum', 0, [], true), 0, 10)), [
      { metric: 'cpu', tags: {}, points: [[0, 1113]] },
    ])
    assert.deepEqual(plain(aggregate(series, agg('p50', 0, [], true), 0, 10)), [
      { metric: 'cpu', tags: {}, points: [[0, 10]] },
    ])
  })

  test('groupBy wins over mergeSeries', () => {
    assert.equal(aggregate(series, agg('sum', 0, ['region'], true), 0, 10).length, 3)
  })

  test('metrics stay apart', () => {
    const mixed = [sp({}, [0], [1], 'mem'), sp({}, [0], [2], 'cpu')]
    assert.deepEqual(plain(aggregate(mixed, agg('sum', 0, [], true), 0, 10)), [
      { metric: 'cpu', tags: {}, points: [[0, 2]] },
      { metric: 'mem', tags: {}, points: [[0, 1]] },
    ])
  })

  test('first and last across a group take the earliest and latest point of any series', () => {
    const group = [sp({ host: 'a' }, [10, 20], [1, 2]), sp({ host: 'b' }, [5, 30], [3, 4])]
    assert.equal(aggregate(group, agg('first', 0, [], true), 0, 100)[0]!.values[0], 3)
    assert.equal(aggregate(group, agg('last', 0, [], true), 0, 100)[0]!.values[0], 4)
  })

  test('equal timestamps resolve to the series whose key sorts first, whatever the input order', () => {
    const a = sp({ host: 'a' }, [0, 9], [1, 11])
    const b = sp({ host: 'b' }, [0, 9], [2, 22])
    for (const input of [
      [a, b],
      [b, a],
    ]) {
      assert.equal(aggregate(input, agg('first', 0, [], true), 0, 10)[0]!.values[0], 1)
      assert.equal(aggregate(input, agg('last', 0, [], true), 0, 10)[0]!.values[0], 11)
    }
  })

  test('the input is left alone', () => {
    const input = [sp({ region: 'eu', host: 'b' }, [0], [10])]
    aggregate(input, agg('sum', 0, ['region']), 0, 10)
    assert.deepEqual(
      input[0]!.tags.map((t) => t.key),
      ['region', 'host'],
    )
  })
})

describe('aggregate: validation', () => {
  function fieldsOf(aggregation: Aggregation): string[] {
    try {
      aggregate([], aggregation, 0, 10)
    } catch (err) {
      assert.ok(err instanceof ValidationError)
      return err.violations.map((v) => v.field)
    }
    assert.fail('expected a ValidationError')
  }

  test('step must be a non-negative integer', () => {
    assert.deepEqual(fieldsOf(agg('sum', -1)), ['aggregation.step_ms'])
    assert.deepEqual(fieldsOf(agg('sum', 1.5)), ['aggregation.step_ms'])
    assert.deepEqual(fieldsOf(agg('sum', Number.NaN)), ['aggregation.step_ms'])
  })

  test('func must be known', () => {
    assert.deepEqual(fieldsOf(agg('median' as AggFunc)), ['aggregation.func'])
    assert.deepEqual(fieldsOf(agg('toString' as AggFunc)), ['aggregation.func'])
  })

  test('group_by entries must be tag names', () => {
    assert.deepEqual(fieldsOf(agg('sum', 0, ['ok', 'bad key', ''])), [
      'aggregation.group_by[1]',
      'aggregation.group_by[2]',
    ])
  })
})

describe('aggregate: the per-series fast path', () => {
  /** A deterministic generator, so a failure reproduces. */
  function prng(seed: number): () => number {
    let x = seed >>> 0
    return () => {
      x = (x * 1664525 + 1013904223) >>> 0
      return x / 2 ** 32
    }
  }

  test('count, min, max, first and last per series agree with the general fold', () => {
    const r = prng(7)
    for (let round = 0; round < 200; round++) {
      const series: SeriesPoints[] = []
      for (let k = 0; k < 3; k++) {
        const ts: number[] = []
        let t = Math.floor(r() * 50) - 25
        const n = Math.floor(r() * 40)
        for (let i = 0; i < n; i++) {
          t += 1 + Math.floor(r() * 9)
          ts.push(t)
        }
        const values = ts.map(() => (r() < 0.1 ? Number.NaN : Math.round((r() - 0.5) * 200) / 4))
        series.push(sp({ host: `h${k}`, dc: 'x' }, ts, values))
      }
      const stepMs = [0, 1, 7, 10, 60][Math.floor(r() * 5)]!
      const startMs = Math.floor(r() * 60) - 30
      const endMs = startMs + 1 + Math.floor(r() * 200)
      for (const func of ['count', 'min', 'max', 'first', 'last'] as const) {
        const fast = aggregate(series, agg(func, stepMs), startMs, endMs)
        // Grouping by every tag keeps each series apart through the general path.
        const general = aggregate(series, agg(func, stepMs, ['dc', 'host']), startMs, endMs)
        assert.deepEqual(plain(fast), plain(general), `${func} step ${stepMs} [${startMs}, ${endMs}) round ${round}`)
      }
    }
  })

  test('unsorted points and repeated series take the general fold', () => {
    const unsorted = [sp({ h: 'a' }, [5, 1, 3], [1, 9, 4])]
    assert.deepEqual(plain(aggregate(unsorted, agg('max', 10), 0, 10)), [
      { metric: 'cpu', tags: { h: 'a' }, points: [[0, 9]] },
    ])
    assert.deepEqual(plain(aggregate(unsorted, agg('first', 10), 0, 10)), [
      { metric: 'cpu', tags: { h: 'a' }, points: [[0, 9]] },
    ])
    const twice = [sp({ h: 'a' }, [1, 2], [1, 2]), sp({ h: 'a' }, [3], [7])]
    assert.deepEqual(plain(aggregate(twice, agg('count', 10), 0, 10)), [
      { metric: 'cpu', tags: { h: 'a' }, points: [[0, 3]] },
    ])
  })
})
