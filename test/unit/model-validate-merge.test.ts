// validateWriteBatch's merge of repeated entries, against a plain reference: whether the entries of
// a series come in order (remote write's shape, one sample per entry) or overlap, repeat and
// arrive out of order, with and without write versions, the result is every series sorted with
// the last (or highest-versioned, then last) point of each timestamp.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { prng } from '../../src/model/prng.js'
import type { SeriesWrite, Tag } from '../../src/model/types.js'
import { type NormalizedSeries, ValidatedSeriesCache, validateWriteBatch } from '../../src/model/validate.js'
import { bitsOf, doubles, STALE_NAN } from '../fixtures/nan-values.js'

interface Expected {
  readonly metric: string
  readonly timestamps: number[]
  readonly values: number[]
  readonly versions: number[] | undefined
}

/** What the merge must give, computed the obvious way: a stable sort of every point, then a pick. */
function reference(entries: readonly SeriesWrite[], keyOf: (e: SeriesWrite) => string): Expected[] {
  const bySeries = new Map<string, { metric: string; points: [number, number, number][]; versioned: boolean }>()
  for (const e of entries) {
    const key = keyOf(e)
    let s = bySeries.get(key)
    if (s === undefined) {
      s = { metric: e.metric, points: [], versioned: false }
      bySeries.set(key, s)
    }
    const version = e.version ?? 0
    if (version > 0) s.versioned = true
    for (let j = 0; j < e.timestamps.length; j++) s.points.push([Number(e.timestamps[j]), e.values[j]!, version])
  }
  return [...bySeries.values()].map((s) => {
    const sorted = s.points.map((p, at) => ({ p, at })).sort((a, b) => a.p[0] - b.p[0] || a.at - b.at)
    const kept: [number, number, number][] = []
    for (const { p } of sorted) {
      const last = kept[kept.length - 1]
      if (last !== undefined && last[0] === p[0]) {
        if (p[2] >= last[2]) kept[kept.length - 1] = p
      } else kept.push(p)
    }
    return {
      metric: s.metric,
      timestamps: kept.map((p) => p[0]),
      values: kept.map((p) => p[1]),
      versions: s.versioned ? kept.map((p) => p[2]) : undefined,
    }
  })
}

/** Random entries of a few series: each of `shape`'s kind, sometimes with versions. */
function randomEntries(seed: number, shape: 'in-order' | 'any', versions: boolean): SeriesWrite[] {
  const random = prng(seed)
  const tags: (readonly Tag[])[] = Array.from({ length: 5 }, (_, h) => Object.freeze([{ key: 'host', value: `h${h}` }]))
  const next = new Array<number>(tags.length).fill(1000)
  const entries: SeriesWrite[] = []
  const count = 1 + Math.floor(random() * 40)
  for (let i = 0; i < count; i++) {
    const h = Math.floor(random() * tags.length)
    const n = 1 + Math.floor(random() * (random() < 0.7 ? 2 : 6))
    const timestamps: number[] = []
    for (let j = 0; j < n; j++) {
      if (shape === 'in-order') {
        next[h]! += 1 + Math.floor(random() * 3)
        timestamps.push(next[h]!)
      } else timestamps.push(1000 + Math.floor(random() * 12))
    }
    const values = timestamps.map(() => Math.round(random() * 1000) / 10)
    const version = versions && random() < 0.8 ? 1 + Math.floor(random() * 3) : undefined
    entries.push({
      metric: random() < 0.9 ? 'cpu' : 'mem',
      tags: tags[h]!,
      timestamps,
      values,
      ...(version === undefined ? {} : { version }),
    })
  }
  return entries
}

/** Each point's write version, whether the series gives one per point or one for all; undefined for none. */
function pointVersions(s: NormalizedSeries): number[] | undefined {
  if (s.versions !== undefined) return [...s.versions]
  return s.version === undefined ? undefined : Array.from(s.timestamps, () => s.version as number)
}

function check(entries: SeriesWrite[], label: string, cache?: ValidatedSeriesCache): void {
  const out = validateWriteBatch({ series: entries }, undefined, cache)
  const expected = reference(entries, (e) => `${e.metric}/${e.tags[0]!.value}`)
  assert.equal(out.series.length, expected.length, label)
  expected.forEach((want, k) => {
    const got = out.series[k]!
    assert.equal(got.metric, want.metric, `${label}: series ${k}`)
    assert.deepEqual([...got.timestamps], want.timestamps, `${label}: series ${k} timestamps`)
    assert.deepEqual([...got.values], want.values, `${label}: series ${k} values`)
    assert.deepEqual(pointVersions(got), want.versions, `${label}: series ${k} versions`)
  })
  assert.equal(
    out.points,
    expected.reduce((sum, s) => sum + s.timestamps.length, 0),
    label,
  )
}

describe('validateWriteBatch: merging entries of one series', () => {
  test('entries in order, one or a few points each, come out joined in order', () => {
    for (let seed = 1; seed <= 300; seed++) check(randomEntries(seed, 'in-order', false), `seed ${seed}`)
  })

  test('overlapping, repeated and unordered entries come out sorted, the last write winning', () => {
    for (let seed = 1; seed <= 300; seed++) check(randomEntries(seed, 'any', false), `seed ${seed}`)
  })

  test('with write versions, the highest version wins, then the last', () => {
    for (let seed = 1; seed <= 300; seed++) {
      check(randomEntries(seed, 'in-order', true), `in order, seed ${seed}`)
      check(randomEntries(seed, 'any', true), `any order, seed ${seed}`)
    }
  })

  test('a series seen before (the validated cache) merges alike, request after request', () => {
    const cache = new ValidatedSeriesCache()
    for (let seed = 1; seed <= 100; seed++)
      check(randomEntries(seed, seed % 2 ? 'in-order' : 'any', false), `seed ${seed}`, cache)
  })

  test('an entry that repeats the timestamp the one before ends with is not taken as in order', () => {
    const tags = Object.freeze([{ key: 'host', value: 'a' }])
    const out = validateWriteBatch({
      series: [
        { metric: 'cpu', tags, timestamps: [1, 2], values: [1, 2] },
        { metric: 'cpu', tags, timestamps: [2, 3], values: [20, 30] },
      ],
    })
    assert.deepEqual([...out.series[0]!.timestamps], [1, 2, 3])
    assert.deepEqual([...out.series[0]!.values], [1, 20, 30])
  })

  test('the staleness marker keeps its bits when one-sample entries are joined', () => {
    const tags = Object.freeze([{ key: 'host', value: 'a' }])
    const bits = [0x3ff0000000000000n, STALE_NAN, 0x4000000000000000n]
    const out = validateWriteBatch({
      acceptNaN: true,
      series: bits.map((b, i) => ({ metric: 'up', tags, timestamps: [1000 * (i + 1)], values: doubles([b]) })),
    })
    assert.equal(out.series.length, 1)
    assert.deepEqual(bitsOf(out.series[0]!.values), bits)
  })
})

describe('validateWriteBatch: batches that say they are normalized (a peer write)', () => {
  const tagsOf = (host: string): readonly Tag[] => Object.freeze([Object.freeze({ key: 'host', value: host })])
  const hosts = ['a', 'b', 'c'].map(tagsOf)
  const normal = (): SeriesWrite[] =>
    hosts.map((tags, h) => ({
      metric: 'cpu',
      tags,
      timestamps: Float64Array.from({ length: 5 }, (_, i) => 1_000 * (i + 1)),
      values: Float64Array.from({ length: 5 }, (_, i) => h * 10 + i),
      // A version of its own for each series: they share one allocation, which must not mix them.
      version: 7 + h,
    }))
  /** Validation of the same entries without the hint, with a cache of its own. */
  const full = (entries: SeriesWrite[]) =>
    validateWriteBatch({ series: entries, acceptNaN: true }, undefined, new ValidatedSeriesCache())
  const plain = (out: ReturnType<typeof full>) =>
    out.series.map((s) => ({
      key: s.key,
      tags: s.tags,
      timestamps: [...s.timestamps],
      values: [...s.values],
      versions: pointVersions(s),
    }))

  test('series in normal form that the cache knows are taken as they are, arrays and all', () => {
    const cache = new ValidatedSeriesCache()
    validateWriteBatch({ series: normal(), acceptNaN: true, normalized: true }, undefined, cache)
    const entries = normal()
    const out = validateWriteBatch({ series: entries, acceptNaN: true, normalized: true }, undefined, cache)
    assert.deepEqual(plain(out), plain(full(normal())))
    assert.deepEqual(
      out.series.map((s) => pointVersions(s)),
      [7, 8, 9].map((v) => [v, v, v, v, v]),
    )
    // One version for each series' points, not an array of them.
    assert.deepEqual(
      out.series.map((s) => [s.version, s.versions]),
      [7, 8, 9].map((v) => [v, undefined]),
    )
    assert.equal(out.points, 15)
    out.series.forEach((s, i) => {
      assert.equal(s.timestamps, entries[i]!.timestamps, 'the same array, not a copy')
      assert.equal(s.values, entries[i]!.values, 'the same array, not a copy')
    })
  })

  test('anything not in normal form is validated in full, with the same answer or error', () => {
    const breakers: [string, (e: SeriesWrite[]) => SeriesWrite[]][] = [
      ['unordered', (e) => [{ ...e[0]!, timestamps: Float64Array.of(2000, 1000, 3000, 4000, 5000) }, ...e.slice(1)]],
      ['a repeated timestamp', (e) => [{ ...e[0]!, timestamps: Float64Array.of(1000, 1000, 3000, 4000, 5000) }]],
      ['a series twice', (e) => [...e, { ...e[0]!, timestamps: Float64Array.of(6000), values: Float64Array.of(1) }]],
      ['-0', (e) => [{ ...e[0]!, timestamps: Float64Array.of(-0, 1000, 2000, 3000, 4000) }]],
      ['a fraction', (e) => [{ ...e[0]!, timestamps: Float64Array.of(1000.5, 2000, 3000, 4000, 5000) }]],
      ['out of range', (e) => [{ ...e[0]!, timestamps: Float64Array.of(1000, 2000, 3000, 4000, 2 ** 52) }]],
      ['fewer values', (e) => [{ ...e[0]!, values: Float64Array.of(1, 2) }]],
      ['an unknown series', (e) => [{ ...e[0]!, tags: tagsOf('new') }]],
      ['plain arrays', (e) => [{ ...e[0]!, timestamps: [3000, 1000, 2000, 4000, 5000], values: [1, 2, 3, 4, 5] }]],
    ]
    for (const [what, breakIt] of breakers) {
      const cache = new ValidatedSeriesCache()
      validateWriteBatch({ series: normal(), acceptNaN: true, normalized: true }, undefined, cache)
      const attempt = () =>
        validateWriteBatch({ series: breakIt(normal()), acceptNaN: true, normalized: true }, undefined, cache)
      let expected: ReturnType<typeof full> | Error
      try {
        expected = full(breakIt(normal()))
      } catch (err) {
        expected = err as Error
      }
      if (expected instanceof Error) assert.throws(attempt, { message: expected.message }, what)
      else assert.deepEqual(plain(attempt()), plain(expected), what)
    }
  })

  test('a series under two tags arrays the cache knows, its tags in another order, is merged as in full', () => {
    // Two decoders (or one label set sent in two orders) hand two frozen arrays for one series: the
    // cache knows both, and a batch holding both is not in normal form.
    const tag = (key: string, value: string): Tag => Object.freeze({ key, value })
    const first = Object.freeze([tag('host', 'a'), tag('dc', 'x')])
    const second = Object.freeze([tag('dc', 'x'), tag('host', 'a')])
    const entries = (): SeriesWrite[] => [
      { metric: 'cpu', tags: first, timestamps: Float64Array.of(1000, 2000), values: Float64Array.of(1, 2) },
      { metric: 'cpu', tags: second, timestamps: Float64Array.of(3000), values: Float64Array.of(3) },
    ]
    const cache = new ValidatedSeriesCache()
    validateWriteBatch({ series: entries(), acceptNaN: true }, undefined, cache)
    const out = validateWriteBatch({ series: entries(), acceptNaN: true, normalized: true }, undefined, cache)
    assert.deepEqual(plain(out), plain(full(entries())))
    assert.deepEqual(
      out.series.map((s) => [...s.timestamps]),
      [[1000, 2000, 3000]],
    )
  })

  test('a cache that filled up starts empty, and what it forgot is validated in full again', () => {
    const cache = new ValidatedSeriesCache(2)
    const batch = (hostsOf: readonly (readonly Tag[])[]) => ({
      series: hostsOf.map((tags) => ({ ...normal()[0]!, tags })),
      acceptNaN: true,
      normalized: true,
    })
    validateWriteBatch(batch(hosts.slice(0, 2)), undefined, cache)
    assert.ok(cache.get('cpu', hosts[0]!) !== undefined)
    // A third series fills it past its bound: it empties, then learns the third.
    validateWriteBatch(batch(hosts.slice(2)), undefined, cache)
    assert.equal(cache.get('cpu', hosts[0]!), undefined)
    assert.equal(cache.get('cpu', hosts[2]!)?.key, full([{ ...normal()[0]!, tags: hosts[2]! }]).series[0]!.key)
    // A batch of all three still validates, taking the series it forgot through the full path.
    const out = validateWriteBatch(batch(hosts), undefined, cache)
    assert.deepEqual(plain(out), plain(full(batch(hosts).series)))
  })
})
