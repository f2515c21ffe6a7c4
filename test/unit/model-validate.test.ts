import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type FieldViolation, LimitError, ValidationError } from '../../src/model/errors.js'
import { DEFAULT_WRITE_LIMITS, type WriteLimits } from '../../src/model/limits.js'
import { MAX_TIMESTAMP_MS } from '../../src/model/timestamps.js'
import type { SeriesWrite, WriteBatch } from '../../src/model/types.js'
import { MAX_VIOLATIONS, validateWriteBatch } from '../../src/model/validate.js'

function series(overrides: Partial<SeriesWrite> = {}): SeriesWrite {
  return {
    metric: 'cpu',
    tags: [{ key: 'host', value: 'a' }],
    timestamps: [1000, 2000],
    values: [1, 2],
    ...overrides,
  }
}

function violationsOf(batch: WriteBatch, limits: WriteLimits = DEFAULT_WRITE_LIMITS): FieldViolation[] {
  let caught: unknown
  try {
    validateWriteBatch(batch, limits)
  } catch (err) {
    caught = err
  }
  assert.ok(caught instanceof ValidationError, `expected a ValidationError, got ${String(caught)}`)
  return [...caught.violations]
}

/** The fields of the violations of a batch whose only bad series is the one given, at index 1. */
function fieldsOfBad(bad: Partial<SeriesWrite>, limits?: WriteLimits): string[] {
  return violationsOf({ series: [series(), series(bad), series({ metric: 'mem' })] }, limits).map((v) => v.field)
}

function limitErrorOf(batch: WriteBatch, limits: WriteLimits): LimitError {
  let caught: unknown
  try {
    validateWriteBatch(batch, limits)
  } catch (err) {
    caught = err
  }
  assert.ok(caught instanceof LimitError, `expected a LimitError, got ${String(caught)}`)
  return caught
}

describe('validateWriteBatch: a good batch', () => {
  test('is normalized: sorted tags, canonical key, millisecond timestamps', () => {
    const result = validateWriteBatch({
      precision: 's',
      series: [
        series({
          tags: [
            { key: 'region', value: 'eu' },
            { key: 'host', value: 'a' },
          ],
          timestamps: [1, 2, 3],
          values: [0.5, -1, 3e300],
        }),
      ],
    })
    assert.equal(result.points, 3)
    assert.equal(result.series.length, 1)
    const s = result.series[0]!
    assert.equal(s.metric, 'cpu')
    assert.deepEqual(s.tags, [
      { key: 'host', value: 'a' },
      { key: 'region', value: 'eu' },
    ])
    assert.equal(s.key, 'cpu\u0000host\u0000a\u0000region\u0000eu')
    assert.deepEqual(s.timestamps, new Float64Array([1000, 2000, 3000]))
    assert.deepEqual(s.values, new Float64Array([0.5, -1, 3e300]))
  })

  test('takes milliseconds when no precision is given, and typed arrays as input', () => {
    const result = validateWriteBatch({
      series: [series({ timestamps: new Float64Array([5, 6]), values: new Float64Array([1, 2]) })],
    })
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([5, 6]))
  })

  test('takes bigint nanoseconds', () => {
    const result = validateWriteBatch({
      precision: 'ns',
      series: [series({ timestamps: [1_700_000_000_123_456_789n, -1n], values: [1, 2] })],
    })
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([-1, 1_700_000_000_123]))
    assert.deepEqual(result.series[0]!.values, new Float64Array([2, 1]))
  })

  test('does not keep a reference to the caller’s arrays', () => {
    const values = new Float64Array([1, 2])
    const result = validateWriteBatch({ series: [series({ timestamps: [1, 2], values })] })
    values[0] = 99
    assert.equal(result.series[0]!.values[0], 1)
  })

  test('stores a series without tags', () => {
    const result = validateWriteBatch({ series: [series({ tags: [] })] })
    assert.equal(result.series[0]!.key, 'cpu')
  })

  test('accepts values at the limits and NaN when allowed', () => {
    const limits: WriteLimits = { ...DEFAULT_WRITE_LIMITS, allowNaN: true, maxTagValueBytes: 4, maxNameBytes: 3 }
    const result = validateWriteBatch(
      { series: [series({ tags: [{ key: 'abc', value: 'éé' }], values: [Number.NaN, Number.MAX_VALUE] })] },
      limits,
    )
    assert.ok(Number.isNaN(result.series[0]!.values[0]!))
  })
})

describe('validateWriteBatch: last write wins', () => {
  test('repeated timestamps keep the last value', () => {
    const result = validateWriteBatch({
      series: [series({ timestamps: [1, 2, 2, 3, 3, 3], values: [10, 20, 21, 30, 31, 32] })],
    })
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([1, 2, 3]))
    assert.deepEqual(result.series[0]!.values, new Float64Array([10, 21, 32]))
    assert.equal(result.points, 3)
  })

  test('unordered points are sorted and the later of equal timestamps wins', () => {
    const result = validateWriteBatch({
      series: [series({ timestamps: [3, 1, 2, 1, 3, 0], values: [30, 10, 20, 11, 31, 0] })],
    })
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([0, 1, 2, 3]))
    assert.deepEqual(result.series[0]!.values, new Float64Array([0, 11, 20, 31]))
  })

  test('timestamps that normalize to the same millisecond collide too', () => {
    const result = validateWriteBatch({
      precision: 'us',
      series: [series({ timestamps: [1000, 1999, 2000], values: [1, 2, 3] })],
    })
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([1, 2]))
    assert.deepEqual(result.series[0]!.values, new Float64Array([2, 3]))
  })

  test('entries of the same series merge, later entries winning, whatever the tag order', () => {
    const result = validateWriteBatch({
      series: [
        series({ timestamps: [1, 2], values: [1, 2] }),
        series({ metric: 'mem', timestamps: [1], values: [7] }),
        series({
          tags: [{ key: 'host', value: 'a' }],
          timestamps: [2, 3],
          values: [20, 30],
        }),
        series({ timestamps: [0, 3], values: [0, 300] }),
      ],
    })
    assert.deepEqual(
      result.series.map((s) => s.metric),
      ['cpu', 'mem'],
    )
    assert.deepEqual(result.series[0]!.timestamps, new Float64Array([0, 1, 2, 3]))
    assert.deepEqual(result.series[0]!.values, new Float64Array([0, 1, 20, 300]))
    assert.equal(result.points, 5)
  })

  test('tag order does not make a different series', () => {
    const a = [
      { key: 'x', value: '1' },
      { key: 'y', value: '2' },
    ]
    const result = validateWriteBatch({
      series: [
        series({ tags: a, timestamps: [1], values: [1] }),
        series({ tags: [...a].reverse(), timestamps: [1], values: [2] }),
      ],
    })
    assert.equal(result.series.length, 1)
    assert.deepEqual(result.series[0]!.values, new Float64Array([2]))
  })
})

describe('validateWriteBatch: limits', () => {
  test('too many series', () => {
    const err = limitErrorOf(
      { series: [series(), series(), series()] },
      { ...DEFAULT_WRITE_LIMITS, maxSeriesPerRequest: 2 },
    )
    assert.equal(err.limit, 'max_series_per_request')
    assert.equal(err.value, 2)
    assert.match(err.message, /3 series/)
  })

  test('too many points, counted over all series', () => {
    const err = limitErrorOf(
      { series: [series({ timestamps: [1, 2, 3], values: [1, 2, 3] }), series()] },
      { ...DEFAULT_WRITE_LIMITS, maxPointsPerRequest: 4 },
    )
    assert.equal(err.limit, 'max_points_per_request')
    assert.equal(err.value, 4)
    assert.match(err.message, /5 points/)
  })

  test('limits are checked before anything else', () => {
    const limits = { ...DEFAULT_WRITE_LIMITS, maxPointsPerRequest: 1 }
    const err = limitErrorOf({ series: [series({ metric: '9bad', values: [Number.NaN, 1] })] }, limits)
    assert.equal(err.limit, 'max_points_per_request')
  })

  test('a values array longer than the timestamps counts towards the limit', () => {
    const limits = { ...DEFAULT_WRITE_LIMITS, maxPointsPerRequest: 2 }
    limitErrorOf({ series: [series({ timestamps: [1], values: [1, 2, 3] })] }, limits)
  })

  test('exactly at the limits passes', () => {
    const limits = { ...DEFAULT_WRITE_LIMITS, maxSeriesPerRequest: 2, maxPointsPerRequest: 4 }
    assert.equal(validateWriteBatch({ series: [series(), series({ metric: 'mem' })] }, limits).points, 4)
  })
})

describe('validateWriteBatch: every rule names its field', () => {
  test('an empty batch', () => {
    const violations = violationsOf({ series: [] })
    assert.deepEqual(violations, [{ field: 'series', description: 'must contain at least one series' }])
  })

  test('metric missing, malformed or too long', () => {
    assert.deepEqual(fieldsOfBad({ metric: '' }), ['series[1].metric'])
    assert.deepEqual(fieldsOfBad({ metric: 'cpu usage' }), ['series[1].metric'])
    assert.deepEqual(fieldsOfBad({ metric: '1cpu' }), ['series[1].metric'])
    assert.deepEqual(fieldsOfBad({ metric: 'c'.repeat(257) }), ['series[1].metric'])
    assert.equal(validateWriteBatch({ series: [series({ metric: 'c'.repeat(256) })] }).points, 2)
  })

  test('tag key malformed or too long', () => {
    const tags = [
      { key: 'ok', value: 'v' },
      { key: 'bad key', value: 'v' },
      { key: 'k'.repeat(300), value: 'v' },
    ]
    assert.deepEqual(fieldsOfBad({ tags }), ['series[1].tags[1].key', 'series[1].tags[2].key'])
    assert.deepEqual(fieldsOfBad({ tags: [{ key: '', value: 'v' }] }), ['series[1].tags[0].key'])
  })

  test('__name__ as a tag key: the key of the metric in selectors and the Prometheus API', () => {
    const violations = violationsOf({ series: [series({ tags: [{ key: '__name__', value: 'x' }] })] })
    assert.deepEqual(violations, [
      {
        field: 'series[0].tags[0].key',
        description: '"__name__" is reserved for the metric name; set the metric instead',
      },
    ])
    // Other names with underscores stay tags.
    assert.equal(validateWriteBatch({ series: [series({ tags: [{ key: '__name', value: 'x' }] })] }).points, 2)
  })

  test('a tag key twice', () => {
    const tags = [
      { key: 'host', value: 'a' },
      { key: 'dc', value: 'x' },
      { key: 'host', value: 'b' },
    ]
    const violations = violationsOf({ series: [series({ tags })] })
    assert.deepEqual(violations, [
      { field: 'series[0].tags[2].key', description: 'repeats the key "host" of series[0].tags[0]' },
    ])
  })

  test('tag value empty, not UTF-8, with NUL, or too long', () => {
    const at = (value: string, limits?: WriteLimits) =>
      violationsOf({ series: [series({ tags: [{ key: 'k', value }] })] }, limits)
    assert.deepEqual(at(''), [{ field: 'series[0].tags[0].value', description: 'must not be empty' }])
    assert.match(at('a\ud800b')[0]!.description, /not valid UTF-8/)
    assert.match(at('a\udc00')[0]!.description, /not valid UTF-8/)
    assert.match(at('\ud83d')[0]!.description, /not valid UTF-8/)
    assert.match(at('a\u0000b')[0]!.description, /NUL/)
    const long = at('é'.repeat(513))[0]!
    assert.equal(long.field, 'series[0].tags[0].value')
    assert.equal(long.description, 'is 1026 bytes long, more than the limit of 1024')
    // A paired surrogate is a valid code point of 4 bytes.
    const limits = { ...DEFAULT_WRITE_LIMITS, maxTagValueBytes: 4 }
    assert.equal(validateWriteBatch({ series: [series({ tags: [{ key: 'k', value: '😀' }] })] }, limits).points, 2)
    assert.deepEqual(
      at('😀a', limits).map((v) => v.description),
      ['is 5 bytes long, more than the limit of 4'],
    )
  })

  test('too many tags', () => {
    const tags = Array.from({ length: 65 }, (_, i) => ({ key: `k${i}`, value: 'v' }))
    const violations = violationsOf({ series: [series({ tags })] })
    assert.deepEqual(violations, [{ field: 'series[0].tags', description: 'has 65 tags, more than the limit of 64' }])
    assert.equal(validateWriteBatch({ series: [series({ tags: tags.slice(0, 64) })] }).points, 2)
  })

  test('a series without points', () => {
    assert.deepEqual(fieldsOfBad({ timestamps: [], values: [] }), ['series[1].timestamps'])
  })

  test('counts of timestamps and values differ', () => {
    const violations = violationsOf({ series: [series({ timestamps: [1, 2, 3, 4, 5, 6], values: [1, 2, 3, 4, 5] })] })
    assert.deepEqual(violations, [{ field: 'series[0].values', description: 'has 5 values for 6 timestamps' }])
    assert.deepEqual(fieldsOfBad({ timestamps: [], values: [1] }), ['series[1].values'])
  })

  test('timestamps not integers', () => {
    const fields = fieldsOfBad({ timestamps: [1, 1.5, Number.NaN, 2 ** 60], values: [1, 2, 3, 4] })
    assert.deepEqual(fields, ['series[1].timestamps[1]', 'series[1].timestamps[2]', 'series[1].timestamps[3]'])
    const [fraction, nan, huge] = violationsOf({
      series: [series({ timestamps: [1.5, Number.NaN, 2 ** 60], values: [1, 2, 3] })],
    })
    assert.match(fraction!.description, /must be an integer, got 1.5/)
    assert.match(nan!.description, /must be an integer, got NaN/)
    assert.match(huge!.description, /beyond ±2\^53/)
  })

  test('timestamps out of range after normalization', () => {
    const violations = violationsOf({
      precision: 's',
      series: [series({ timestamps: [1, Math.ceil(MAX_TIMESTAMP_MS / 1000) + 1], values: [1, 2] })],
    })
    assert.equal(violations.length, 1)
    assert.equal(violations[0]!.field, 'series[0].timestamps[1]')
    assert.match(violations[0]!.description, /outside the storable range/)
    const ns = violationsOf({ precision: 'ns', series: [series({ timestamps: [1n, 10n ** 25n], values: [1, 2] })] })
    assert.deepEqual(
      ns.map((v) => v.field),
      ['series[0].timestamps[1]'],
    )
  })

  test('values not finite', () => {
    const violations = violationsOf({
      series: [series({ timestamps: [1, 2, 3, 4], values: [1, Number.NaN, Number.POSITIVE_INFINITY, -Infinity] })],
    })
    assert.deepEqual(violations, [
      { field: 'series[0].values[1]', description: 'is NaN, and NaN values are not allowed' },
      { field: 'series[0].values[2]', description: 'must be finite, got Infinity' },
      { field: 'series[0].values[3]', description: 'must be finite, got -Infinity' },
    ])
  })

  test('infinity stays refused when NaN is allowed', () => {
    const limits = { ...DEFAULT_WRITE_LIMITS, allowNaN: true }
    const violations = violationsOf(
      { series: [series({ timestamps: [1, 2], values: [Number.NaN, Number.POSITIVE_INFINITY] })] },
      limits,
    )
    assert.deepEqual(
      violations.map((v) => v.field),
      ['series[0].values[1]'],
    )
  })

  test('every violation of the request is listed, across series', () => {
    const violations = violationsOf({
      series: [
        series(),
        series({ metric: '', tags: [{ key: 'h', value: '' }], timestamps: [1.5], values: [Number.NaN, 1] }),
        series(),
        series({ metric: 'ok', timestamps: [1], values: [Number.POSITIVE_INFINITY] }),
      ],
    })
    assert.deepEqual(
      violations.map((v) => v.field),
      [
        'series[1].metric',
        'series[1].tags[0].value',
        'series[1].timestamps[0]',
        'series[1].values[0]',
        'series[1].values',
        'series[3].values[0]',
      ],
    )
  })

  test('the error message names the first field', () => {
    assert.throws(
      () => validateWriteBatch({ series: [series({ metric: '' }), series({ metric: '' })] }),
      /^ValidationError: invalid series\[0\]\.metric: is required \(and 1 more\)$/,
    )
  })

  test('the list stops at MAX_VIOLATIONS', () => {
    const n = 1000
    const violations = violationsOf({
      series: [series({ timestamps: new Float64Array(n).fill(0.5), values: new Float64Array(n) })],
    })
    assert.equal(violations.length, MAX_VIOLATIONS)
    assert.equal(violations.at(-1)!.field, `series[0].timestamps[${MAX_VIOLATIONS - 1}]`)
    const many = Array.from({ length: 500 }, () => series({ metric: '' }))
    assert.equal(violationsOf({ series: many }).length, MAX_VIOLATIONS)
  })
})
