import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ValidationError } from '../../src/model/errors.js'
import { ValidatedSeriesCache, validateWriteBatch } from '../../src/model/validate.js'
import {
  decodeSeriesList,
  decodeWriteRequest,
  EncodedHeaderCache,
  encodeSeriesList,
  encodeWriteRequest,
  SeriesHeaderCache,
} from '../../src/wire/series-codec.js'

const tags = [
  { key: 'host', value: 'a' },
  { key: 'dc', value: 'x' },
]

describe('series identity caches', () => {
  it('decodes a repeated series header once and hands out the same frozen tags', () => {
    const headers = new SeriesHeaderCache()
    const bytes = encodeWriteRequest([{ metric: 'm', tags, timestamps: [1, 2], values: [3, 4] }], 0)
    const first = decodeWriteRequest(bytes, headers).series[0]
    const second = decodeWriteRequest(bytes, headers).series[0]
    assert.deepEqual(first?.tags, tags)
    assert.equal(second?.tags, first?.tags)
    assert.ok(Object.isFrozen(second?.tags))
    assert.deepEqual(Array.from(second?.values ?? []), [3, 4])
    // Without a cache every decode builds its own tags.
    assert.notEqual(decodeWriteRequest(bytes).series[0]?.tags, first?.tags)
  })

  it('encodes a series from its cached header to the very same bytes', () => {
    const encoded = new EncodedHeaderCache()
    const series = [
      { metric: 'm', tags, timestamps: Float64Array.of(1, 1e12), values: Float64Array.of(3, -0) },
      { metric: 'n', tags: [], timestamps: Float64Array.of(5), values: Float64Array.of(Number.NaN) },
      { metric: 'm', tags, timestamps: new Float64Array(0), values: new Float64Array(0) },
    ]
    const plain = encodeSeriesList(series)
    assert.deepEqual(encodeSeriesList(series, encoded), plain)
    assert.deepEqual(encodeSeriesList(series, encoded), plain)
    assert.deepEqual(decodeSeriesList(plain, new SeriesHeaderCache())[0]?.tags, tags)
  })

  it('keeps a tag that follows the points, and does not cache such a header', () => {
    const headers = new SeriesHeaderCache()
    const plain = encodeWriteRequest([{ metric: 'm', tags, timestamps: [1], values: [3] }], 0)
    decodeWriteRequest(plain, headers)
    // The same leading header, then one more tag field after the points (field 2, "k"="v").
    const series = plain.subarray(2)
    const extra = Buffer.from([0x12, 6, 0x0a, 1, 0x6b, 0x12, 1, 0x76])
    const body = Buffer.concat([series, extra])
    const request = Buffer.concat([Buffer.from([0x0a, body.length]), body])
    const got = decodeWriteRequest(request, headers).series[0]
    assert.deepEqual(got?.tags, [...tags, { key: 'k', value: 'v' }])
    // The cached entry for the leading bytes is untouched.
    assert.deepEqual(decodeWriteRequest(plain, headers).series[0]?.tags, tags)
  })

  it('validates a frozen identity once, and never remembers a bad one or a mutable array', () => {
    const cache = new ValidatedSeriesCache()
    const frozen = Object.freeze(tags.map((t) => Object.freeze({ ...t })))
    const a = validateWriteBatch(
      { series: [{ metric: 'm', tags: frozen, timestamps: [1], values: [1] }] },
      undefined,
      cache,
    )
    assert.equal(cache.get('m', frozen)?.key, a.series[0]?.key)
    const b = validateWriteBatch(
      { series: [{ metric: 'm', tags: frozen, timestamps: [2], values: [2] }] },
      undefined,
      cache,
    )
    assert.deepEqual(b.series[0]?.tags, a.series[0]?.tags)

    const bad = Object.freeze([Object.freeze({ key: '1bad', value: 'x' })])
    for (let i = 0; i < 2; i++) {
      assert.throws(
        () =>
          validateWriteBatch({ series: [{ metric: 'm', tags: bad, timestamps: [1], values: [1] }] }, undefined, cache),
        ValidationError,
      )
    }
    const mutable = [{ key: 'host', value: 'a' }]
    validateWriteBatch({ series: [{ metric: 'm', tags: mutable, timestamps: [1], values: [1] }] }, undefined, cache)
    assert.equal(cache.get('m', mutable), undefined)
    mutable[0] = { key: '2bad', value: 'a' }
    assert.throws(
      () =>
        validateWriteBatch(
          { series: [{ metric: 'm', tags: mutable, timestamps: [1], values: [1] }] },
          undefined,
          cache,
        ),
      ValidationError,
    )
  })
})
