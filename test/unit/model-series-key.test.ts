import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, test } from 'node:test'
import {
  canonicalSeriesKey,
  decodeSeriesDef,
  encodeSeriesDef,
  isValidName,
  nameViolation,
  seriesIdFromKey,
  sortTags,
} from '../../src/model/series-key.js'
import type { Tag } from '../../src/model/types.js'

describe('names', () => {
  test('follow [a-zA-Z_][a-zA-Z0-9_.:-]*', () => {
    for (const name of ['cpu', '_x', 'http.requests:rate-5m', 'A9', 'a_b_c']) assert.ok(isValidName(name), name)
    for (const name of ['', '9cpu', '.x', '-x', ':x', 'cpu usage', 'cpu/x', 'tempé', 'a\u0000b']) {
      assert.ok(!isValidName(name), name)
    }
  })

  test('nameViolation says what is wrong', () => {
    assert.equal(nameViolation('cpu'), undefined)
    assert.equal(nameViolation(''), 'is required')
    assert.equal(nameViolation(undefined), 'is required')
    assert.match(nameViolation('9x') ?? '', /must match/)
    assert.match(nameViolation('x'.repeat(11), 10) ?? '', /11 bytes long, more than the limit of 10/)
    assert.equal(nameViolation('x'.repeat(10), 10), undefined)
  })
})

describe('sortTags', () => {
  test('sorts by key in code-unit order and leaves the input alone', () => {
    const tags: Tag[] = [
      { key: 'b', value: '1' },
      { key: 'a', value: '2' },
      { key: 'B', value: '3' },
      { key: '_', value: '4' },
    ]
    const sorted = sortTags(tags)
    assert.deepEqual(
      sorted.map((t) => t.key),
      ['B', '_', 'a', 'b'],
    )
    assert.deepEqual(
      tags.map((t) => t.key),
      ['b', 'a', 'B', '_'],
    )
  })
})

describe('canonicalSeriesKey', () => {
  test('joins metric, keys and values with NUL', () => {
    const tags = sortTags([
      { key: 'region', value: 'eu' },
      { key: 'host', value: 'a' },
    ])
    assert.equal(canonicalSeriesKey('cpu', tags), 'cpu\u0000host\u0000a\u0000region\u0000eu')
    assert.equal(canonicalSeriesKey('cpu', []), 'cpu')
  })

  test('keeps apart series that plain concatenation would merge', () => {
    const a = canonicalSeriesKey('cpu', [{ key: 'ab', value: 'c' }])
    const b = canonicalSeriesKey('cpu', [{ key: 'a', value: 'bc' }])
    const c = canonicalSeriesKey('cpua', [{ key: 'b', value: 'c' }])
    assert.equal(new Set([a, b, c]).size, 3)
  })
})

describe('seriesIdFromKey', () => {
  test('is the first 8 bytes of the SHA-256 of the key', () => {
    const key = 'cpu\u0000host\u0000a'
    const id = seriesIdFromKey(key)
    assert.equal(id.length, 8)
    assert.deepEqual(id, createHash('sha256').update(key).digest().subarray(0, 8))
    assert.deepEqual(seriesIdFromKey(key, 0), id)
  })

  test('gives a new candidate per attempt, the same on every call', () => {
    const key = 'cpu\u0000host\u0000a'
    const ids = [0, 1, 2, 3].map((attempt) => seriesIdFromKey(key, attempt).toString('hex'))
    assert.equal(new Set(ids).size, 4)
    assert.equal(seriesIdFromKey(key, 2).toString('hex'), ids[2])
    assert.deepEqual(seriesIdFromKey(key, 1), createHash('sha256').update(`${key}\u00001`).digest().subarray(0, 8))
  })

  test('refuses a negative or fractional attempt', () => {
    assert.throws(() => seriesIdFromKey('cpu', -1), /^Error: BUG:/)
    assert.throws(() => seriesIdFromKey('cpu', 1.5), /^Error: BUG:/)
  })
})

describe('series definitions', () => {
  test('round-trip, with multi-byte text and lengths past one varint byte', () => {
    const cases: { metric: string; tags: Tag[] }[] = [
      { metric: 'cpu', tags: [] },
      {
        metric: 'temperature',
        tags: [
          { key: 'city', value: 'Zürich' },
          { key: 'emoji', value: '🌡️' },
        ],
      },
      { metric: 'm'.repeat(300), tags: [{ key: 'k', value: 'é'.repeat(1000) }] },
    ]
    for (const def of cases) {
      const buf = encodeSeriesDef(def.metric, def.tags)
      assert.deepEqual(decodeSeriesDef(buf), def)
    }
  })

  test('is compact: one length byte per short string', () => {
    const buf = encodeSeriesDef('cpu', [{ key: 'host', value: 'a' }])
    assert.deepEqual([...buf], [3, ...Buffer.from('cpu'), 1, 4, ...Buffer.from('host'), 1, ...Buffer.from('a')])
  })

  test('decodes from a view inside a larger buffer', () => {
    const def = encodeSeriesDef('cpu', [{ key: 'host', value: 'a' }])
    const stored = Buffer.concat([Buffer.from([0x01]), def])
    assert.deepEqual(decodeSeriesDef(stored.subarray(1)), { metric: 'cpu', tags: [{ key: 'host', value: 'a' }] })
  })

  test('refuses truncated, overlong and trailing input', () => {
    const buf = encodeSeriesDef('cpu', [{ key: 'host', value: 'a' }])
    for (let n = 0; n < buf.length; n++) {
      assert.throws(() => decodeSeriesDef(buf.subarray(0, n)), /^Error: cannot decode series definition/)
    }
    assert.throws(() => decodeSeriesDef(Buffer.concat([buf, Buffer.from([0])])), /trailing bytes/)
    assert.throws(() => decodeSeriesDef(Buffer.from([3, 0x61, 0x62, 0x63, 100])), /tag count 100 too large/)
    assert.throws(() => decodeSeriesDef(Buffer.alloc(12, 0xff)), /varint too long/)
  })
})
