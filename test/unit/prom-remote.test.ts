// Prometheus remote write and read on the wire: snappy blocks and the prometheus.* messages, decoded
// and encoded by hand, with the refusals a hostile or broken sender meets.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { compressSync, uncompressSync } from 'snappy'
import { ValidationError } from '../../src/model/errors.js'
import { remoteSelector } from '../../src/server/http-ingest.js'
import {
  BodyError,
  decodeReadRequest,
  encodeReadResponse,
  hashBytes,
  LabelSetCache,
  snappyDecode,
} from '../../src/server/prom-remote.js'
import {
  decodeWrite,
  encodeWriteRequest,
  type RemoteSeries,
  type Sample,
  STALE_BITS,
} from '../fixtures/prom-remote-bodies.js'

const MAX = 64 * 1024 * 1024

/** A write request with a metadata entry beside its series, which the decoder must skip. */
const encodeWrite = (series: readonly RemoteSeries[]): Uint8Array => encodeWriteRequest(series, true)

function bitsOf(values: ArrayLike<number>, i: number): bigint {
  assert.ok(values instanceof Float64Array)
  return new DataView(values.buffer, values.byteOffset).getBigUint64(i * 8, true)
}

function validation(fn: () => unknown, field: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ValidationError, String(err))
    assert.equal(err.violations[0]?.field, field)
    assert.match(err.message, pattern)
    return true
  })
}

function bodyError(fn: () => unknown, status: number, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BodyError, String(err))
    assert.equal(err.status, status)
    assert.match(err.message, pattern)
    return true
  })
}

test('a write request: __name__ is the metric, other labels tags, empty labels dropped, NaN bits kept', () => {
  const body = compressSync(
    encodeWrite([
      {
        labels: [
          ['__name__', 'http_requests_total'],
          ['job', 'api'],
          ['empty', ''],
          ['instance', 'h:9090'],
        ],
        samples: [
          [1.5, 1_700_000_000_000],
          ['stale', 1_700_000_015_000],
          [Number.NaN, 1_700_000_030_000],
          [Number.POSITIVE_INFINITY, 1_700_000_045_000],
        ],
        exemplar: true,
      },
      { labels: [['__name__', 'up']], samples: [[1, -5]] },
      { labels: [['__name__', 'no_samples']], samples: [] },
    ]),
  )
  const decoded = decodeWrite(snappyDecode(body, MAX))
  assert.equal(decoded.samples, 5)
  assert.equal(decoded.series.length, 2)
  const [first, second] = decoded.series
  assert.ok(first && second)
  assert.equal(first.metric, 'http_requests_total')
  assert.deepEqual(first.tags, [
    { key: 'job', value: 'api' },
    { key: 'instance', value: 'h:9090' },
  ])
  assert.deepEqual(
    Array.from(first.timestamps),
    [1_700_000_000_000, 1_700_000_015_000, 1_700_000_030_000, 1_700_000_045_000],
  )
  assert.equal(first.values[0], 1.5)
  assert.equal(bitsOf(first.values, 1), STALE_BITS)
  assert.ok(Number.isNaN(first.values[2]))
  assert.equal(first.values[3], Number.POSITIVE_INFINITY)
  assert.equal(second.metric, 'up')
  assert.deepEqual(Array.from(second.timestamps), [-5])
})

test('a series without __name__, a bad or repeated label name, or a native histogram is refused', () => {
  const decode = (s: RemoteSeries) => () =>
    decodeWrite(Buffer.from(encodeWrite([{ labels: [['__name__', 'ok']], samples: [[1, 1]] }, s])))
  validation(decode({ labels: [['job', 'x']], samples: [[1, 1]] }), 'timeseries[1].labels', /no __name__ label/)
  validation(decode({ labels: [['__name__', '']], samples: [[1, 1]] }), 'timeseries[1].labels', /no __name__ label/)
  validation(
    decode({
      labels: [
        ['__name__', 'm'],
        ['bad-name', 'x'],
      ],
      samples: [[1, 1]],
    }),
    'timeseries[1].labels[1].name',
    /must match \[a-zA-Z_\]\[a-zA-Z0-9_\]\*, got "bad-name"/,
  )
  validation(
    decode({
      labels: [
        ['__name__', 'm'],
        ['1x', 'x'],
      ],
      samples: [[1, 1]],
    }),
    'timeseries[1].labels[1].name',
    /"1x"/,
  )
  validation(
    decode({
      labels: [
        ['__name__', 'm'],
        ['', 'x'],
      ],
      samples: [[1, 1]],
    }),
    'timeseries[1].labels[1].name',
    /got ""/,
  )
  validation(
    decode({
      labels: [
        ['__name__', 'm'],
        ['a', 'x'],
        ['a', 'y'],
      ],
      samples: [[1, 1]],
    }),
    'timeseries[1].labels[2].name',
    /label "a" appears twice/,
  )
  validation(
    decode({ labels: [['__name__', 'm']], samples: [[1, 1]], histogram: true }),
    'timeseries[1].histograms',
    /native histograms cannot be stored/,
  )
})

test('bytes that are not a WriteRequest answer 400 with where decoding stopped', () => {
  const good = Buffer.from(encodeWrite([{ labels: [['__name__', 'm']], samples: [[1, 1]] }]))
  bodyError(() => decodeWrite(good.subarray(0, good.length - 6)), 400, /cannot decode the protobuf message/)
  bodyError(() => decodeWrite(Buffer.from([0x0a, 0x7f, 0x01])), 400, /length beyond the end of its message/)
  bodyError(() => decodeWrite(Buffer.from([0x0f])), 400, /unsupported wire type 7/)
  bodyError(() => decodeWrite(Buffer.from([0x08, 0xff, 0xff])), 400, /truncated varint/)
  bodyError(() => decodeWrite(Buffer.from(Array(11).fill(0xff))), 400, /varint longer than 10 bytes/)
})

test('snappy: a bad frame answers 400, a huge declared length 413 before anything is allocated', () => {
  bodyError(() => snappyDecode(Buffer.from('not snappy at all'), MAX), 400, /cannot decompress the snappy block/)
  bodyError(() => snappyDecode(Buffer.from([0x05, 0x10, 1, 2]), MAX), 400, /cannot decompress the snappy block/)
  bodyError(() => snappyDecode(Buffer.alloc(0), MAX), 400, /bad length header/)
  bodyError(() => snappyDecode(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), MAX), 400, /bad length header/)
  // Declares 4 GiB - 1 in five bytes: refused by the header alone.
  bodyError(
    () => snappyDecode(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]), MAX),
    413,
    /declares 4294967295 bytes/,
  )
  const block = compressSync(Buffer.alloc(2000, 7))
  bodyError(() => snappyDecode(block, 1000), 413, /declares 2000 bytes, more than the limit of 1000/)
  assert.equal(snappyDecode(block, 2000).length, 2000)
})

test('a read request: queries, every matcher type, response types packed or not', () => {
  const w = new BinaryWriter()
  w.tag(1, WireType.LengthDelimited).fork()
  w.tag(1, WireType.Varint).int64(1000).tag(2, WireType.Varint).int64(2000)
  const matchers: [number, string, string][] = [
    [0, '__name__', 'up'],
    [1, 'job', 'x'],
    [2, 'instance', 'h.*'],
    [3, 'zone', 'eu-.*'],
  ]
  for (const [type, name, value] of matchers) {
    w.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int32(type)
    w.tag(2, WireType.LengthDelimited).string(name).tag(3, WireType.LengthDelimited).string(value).join()
  }
  w.tag(4, WireType.LengthDelimited)
    .bytes(new Uint8Array([0x08, 0x01]))
    .join()
  w.tag(2, WireType.LengthDelimited).bytes(new Uint8Array([1, 0]))
  const decoded = decodeReadRequest(Buffer.from(w.finish()))
  assert.deepEqual(decoded.acceptedResponseTypes, [1, 0])
  assert.deepEqual(decoded.queries, [
    {
      startMs: 1000,
      endMs: 2000,
      matchers: [
        { key: '__name__', value: 'up', op: 'eq' },
        { key: 'job', value: 'x', op: 'neq' },
        { key: 'instance', value: 'h.*', op: 'regex' },
        { key: 'zone', value: 'eu-.*', op: 'not_regex' },
      ],
    },
  ])
  assert.deepEqual(remoteSelector(decoded.queries[0]!.matchers), {
    metric: 'up',
    matchers: decoded.queries[0]!.matchers.slice(1),
  })
  const byRegex = [{ key: '__name__', value: 'up|down', op: 'regex' as const }]
  assert.deepEqual(remoteSelector(byRegex), { metric: '', matchers: byRegex })
  validation(
    () => decodeReadRequest(Buffer.from([0x0a, 0x04, 0x1a, 0x02, 0x08, 0x07])),
    'queries[0].matchers[0].type',
    /unknown matcher type 7/,
  )
})

test('a read response: __name__ first, labels sorted, the staleness marker bit for bit', () => {
  const values = new Float64Array(2)
  values[0] = 3.25
  new DataView(values.buffer).setBigUint64(8, STALE_BITS, true)
  const bytes = encodeReadResponse([
    [
      {
        metric: 'up',
        tags: [
          { key: 'job', value: 'x' },
          { key: 'env', value: 'prod' },
        ],
        timestamps: new Float64Array([10, 20]),
        values,
      },
    ],
    [],
  ])
  // Round trip through snappy as the server sends it, then read it back with the generic reader.
  const r = new BinaryReader(uncompressSync(compressSync(bytes), { asBuffer: true }) as Buffer)
  const results: { labels: string[]; samples: [bigint, number][] }[][] = []
  while (r.pos < r.len) {
    const [field] = r.tag()
    assert.equal(field, 1)
    const result = new BinaryReader(r.bytes())
    const series: { labels: string[]; samples: [bigint, number][] }[] = []
    while (result.pos < result.len) {
      result.tag()
      const ts = new BinaryReader(result.bytes())
      const out = { labels: [] as string[], samples: [] as [bigint, number][] }
      while (ts.pos < ts.len) {
        const [f] = ts.tag()
        const inner = new BinaryReader(ts.bytes())
        if (f === 1) {
          inner.tag()
          const name = inner.string()
          inner.tag()
          out.labels.push(`${name}=${inner.string()}`)
        } else {
          inner.tag()
          const bits = BigInt(inner.fixed64())
          inner.tag()
          out.samples.push([bits, Number(inner.int64())])
        }
      }
      series.push(out)
    }
    results.push(series)
  }
  assert.equal(results.length, 2)
  assert.deepEqual(results[1], [])
  assert.deepEqual(results[0]?.[0]?.labels, ['__name__=up', 'env=prod', 'job=x'])
  assert.deepEqual(results[0]?.[0]?.samples, [
    [new DataView(new Float64Array([3.25]).buffer).getBigUint64(0, true), 10],
    [STALE_BITS, 20],
  ])
})

test('a series seen before is found by its label bytes: same frozen tags, labels after samples still read', () => {
  const headers = new LabelSetCache()
  const request = Buffer.from(
    encodeWrite([
      {
        labels: [
          ['__name__', 'cached'],
          ['job', 'a'],
          ['empty', ''],
        ],
        samples: [[1, 10]],
      },
    ]),
  )
  const first = decodeWrite(request, headers).series[0]
  const second = decodeWrite(request, headers).series[0]
  assert.ok(first && second)
  assert.equal(second.tags, first.tags)
  assert.ok(Object.isFrozen(second.tags))
  assert.equal(second.metric, 'cached')
  assert.deepEqual(second.tags, [{ key: 'job', value: 'a' }])
  // The same leading labels, then one more after the samples: not the cached series.
  const w = new BinaryWriter()
  w.tag(1, WireType.LengthDelimited).fork()
  for (const [name, value] of [
    ['__name__', 'cached'],
    ['job', 'a'],
    ['empty', ''],
  ]) {
    w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(name!)
    w.tag(2, WireType.LengthDelimited).string(value!).join()
  }
  w.tag(2, WireType.LengthDelimited).fork().tag(1, WireType.Bit64).double(2).tag(2, WireType.Varint).int64(20).join()
  w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string('late')
  w.tag(2, WireType.LengthDelimited).string('x').join()
  w.join()
  const late = decodeWrite(Buffer.from(w.finish()), headers).series[0]
  assert.deepEqual(late?.tags, [
    { key: 'job', value: 'a' },
    { key: 'late', value: 'x' },
  ])
  assert.deepEqual(Array.from(late?.values ?? []), [2])
})

test('a series whose labels are split by another field is not cached under its leading labels', () => {
  const headers = new LabelSetCache()
  /** One TimeSeries: its fields in the order given (a label, a sample, or an unknown varint field 5). */
  const series = (...fields: Array<[string, string] | number | 'unknown'>): Buffer => {
    const w = new BinaryWriter()
    w.tag(1, WireType.LengthDelimited).fork()
    for (const f of fields) {
      if (f === 'unknown') w.tag(5, WireType.Varint).uint32(1)
      else if (typeof f === 'number') {
        w.tag(2, WireType.LengthDelimited).fork().tag(1, WireType.Bit64).double(f).tag(2, WireType.Varint).int64(f)
        w.join()
      } else {
        w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(f[0])
        w.tag(2, WireType.LengthDelimited).string(f[1]).join()
      }
    }
    w.join()
    return Buffer.from(w.finish())
  }
  const job: [string, string] = ['job', 'x']
  for (const split of [1, 'unknown'] as const) {
    const name: [string, string] = ['__name__', `poison_${split}`]
    // The first request names poison{job="x"} with its labels on both sides of the split ...
    const first = decodeWrite(series(name, split, job, ...(split === 1 ? [] : [1])), headers).series[0]
    assert.deepEqual(first?.tags, [{ key: 'job', value: 'x' }])
    // ... the second a different series, poison{}, whose labels are the first one's leading bytes.
    const second = decodeWrite(series(name, 2), headers).series[0]
    assert.equal(second?.metric, `poison_${split}`)
    assert.deepEqual(second?.tags, [], `split by ${split}: poison{} is not poison{job="x"}`)
    assert.deepEqual(Array.from(second?.values ?? []), [2])
    // And poison{} itself is cached and found again.
    assert.equal(decodeWrite(series(name, 3), headers).series[0]?.tags, second?.tags)
  }
})

test('a nested length cannot run on into the next series', () => {
  // Series 1 holds a label whose declared length (5) passes its own end (3 bytes of series) and
  // would reach into series 2 if only the whole message bounded it.
  const bytes = Buffer.from([0x0a, 0x03, 0x0a, 0x05, 0x0a, 0x0a, 0x02, 0x0a, 0x00])
  bodyError(() => decodeWrite(bytes, new LabelSetCache()), 400, /length beyond the end of its message/)
  bodyError(() => decodeWrite(bytes), 400, /length beyond the end of its message/)
})

test('label sets are found by their whole bytes: sets that differ in one byte, or in length, stay apart, also after the cache empties', () => {
  const sets: RemoteSeries[] = []
  // Lengths that are and are not multiples of four, and sets that differ only in their last byte.
  for (let h = 0; h < 30; h++) {
    const host: [string, string][] = [
      ['__name__', 'cpu'],
      ['host', `h${h}`],
    ]
    for (const [k, rack] of [[], [['rack', 'ab']], [['rack', 'ac']]].entries()) {
      sets.push({ labels: [...host, ...(rack as [string, string][])], samples: [[h, 1_000 * (k + 1) + h]] })
    }
  }
  const body = Buffer.from(encodeWrite(sets))
  const expected = sets.map((s) => ({
    metric: 'cpu',
    tags: s.labels.slice(1).map(([key, value]) => ({ key, value })),
    timestamps: [s.samples[0]![1]],
  }))
  for (const cache of [new LabelSetCache(), new LabelSetCache(7)]) {
    for (let pass = 0; pass < 3; pass++) {
      const got = decodeWrite(body, cache).series.map((s) => ({
        metric: s.metric,
        tags: s.tags.map((t) => ({ ...t })),
        timestamps: Array.from(s.timestamps as ArrayLike<number>),
      }))
      assert.deepEqual(got, expected)
    }
  }
})

test('a series is first guessed from the order its sender used before; a guess that differs, or only begins the labels, is not taken', () => {
  const headers = new LabelSetCache()
  const set = (...labels: [string, string][]): RemoteSeries['labels'] => [['__name__', 'cpu'], ...labels]
  const a = set(['host', 'a'])
  const withRack = set(['host', 'a'], ['rack', 'r1'])
  const c = set(['host', 'c'])
  const decode = (sets: RemoteSeries['labels'][]) =>
    decodeWrite(Buffer.from(encodeWrite(sets.map((labels, i) => ({ labels, samples: [[i, 1_000 + i]] })))), headers)
      .series
  const tagsOf = (labels: RemoteSeries['labels']) => labels.slice(1).map(([key, value]) => ({ key, value }))
  // The cache learns each set, and that `a` came after `c`.
  const [, , firstRack] = decode([c, a, withRack])
  const learnt = firstRack?.tags
  // After `c` the guess is `a`, whose bytes begin these labels, but a rack label follows them.
  const second = decode([c, withRack])
  assert.deepEqual(second[1]?.tags, tagsOf(withRack))
  assert.equal(second[1]?.tags, learnt, 'found in the cache, not decoded again')
  // Now the guess after `c` is the longer set, which `a` does not hold.
  const third = decode([c, a, c, a])
  assert.deepEqual(
    third.map((s) => s.tags),
    [c, a, c, a].map(tagsOf),
  )
  assert.deepEqual(
    third.map((s) => Array.from(s.values as ArrayLike<number>)),
    [[0], [1], [2], [3]],
  )
  for (const s of third) assert.ok(Object.isFrozen(s.tags))
})

test('label sets filed under the same hash are told apart by every byte, the last ones too', () => {
  const cache = new LabelSetCache()
  const stored = Buffer.from('0123456789abcdefghi') // 19 bytes: four words and a tail of three
  const view = (b: Buffer): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength)
  cache.add(stored, 0, stored.length, 1, 'cpu', [{ key: 'host', value: 'a' }])
  // Within a larger buffer, at an offset, as a decoder meets it: found.
  const framed = Buffer.concat([Buffer.from('xx'), stored, Buffer.from('yy')])
  assert.equal(cache.find(view(framed), 2, 2 + stored.length, 1)?.metric, 'cpu')
  // A different byte in the first word, in the upper half of the second, in the tail, or one byte
  // fewer: not this set.
  for (const other of ['X123456789abcdefghi', '0123456789abXdefghi', '0123456789abcdefghX', '0123456789abcdefgh']) {
    const b = Buffer.from(other)
    assert.equal(cache.find(view(b), 0, b.length, 1), undefined, other)
  }
  // Under another hash it is not looked at.
  assert.equal(cache.find(view(stored), 0, stored.length, 2), undefined)
  assert.equal(hashBytes(view(framed), 2, 2 + stored.length), hashBytes(view(stored), 0, stored.length))
})

test('label bytes that read as the same number are still told apart: +0 and -0, NaNs of other payloads', () => {
  // The cache compares eight bytes at a time as doubles; these are the words where equal numbers do
  // not mean equal bytes, or equal bytes do not make equal numbers.
  const view = (b: Buffer): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength)
  const word = (bits: bigint): Buffer => {
    const b = Buffer.alloc(8)
    b.writeBigUInt64LE(bits)
    return b
  }
  const plusZero = word(0n)
  const minusZero = word(0x8000_0000_0000_0000n)
  const nan = word(0x7ff8_0000_0000_0001n)
  const otherNan = word(0x7ff8_0000_0000_0002n)
  const cache = new LabelSetCache()
  for (const [i, stored] of [plusZero, nan].entries()) {
    cache.add(stored, 0, 8, 7, `m${i}`, [{ key: 'k', value: String(i) }])
  }
  assert.equal(cache.find(view(Buffer.from(plusZero)), 0, 8, 7)?.metric, 'm0')
  assert.equal(cache.find(view(Buffer.from(nan)), 0, 8, 7)?.metric, 'm1')
  assert.equal(cache.find(view(minusZero), 0, 8, 7), undefined)
  assert.equal(cache.find(view(otherNan), 0, 8, 7), undefined)
})

test('a request of more entries and samples than the columns first hold decodes whole, every NaN with its bits', () => {
  // 1,500 series of 1 to 3 samples each, about 3,000 in all: past the first 1,024 entries and
  // samples, and past 2,048 samples, so the columns grow twice while stale markers are in them.
  const series: RemoteSeries[] = Array.from({ length: 1500 }, (_, i) => ({
    labels: [
      ['__name__', `m${i % 7}`],
      ['host', `h${i}`],
    ],
    samples: Array.from(
      { length: 1 + (i % 3) },
      (_, k): Sample => [i % 5 === k ? 'stale' : i + k / 10, 1_000 * (k + 1)],
    ),
  }))
  const cache = new LabelSetCache()
  for (const headers of [undefined, cache, cache]) {
    const decoded = decodeWrite(Buffer.from(encodeWrite(series)), headers)
    assert.equal(decoded.series.length, series.length)
    assert.equal(
      decoded.samples,
      series.reduce((n, s) => n + s.samples.length, 0),
    )
    decoded.series.forEach((got, i) => {
      const sent = series[i]!
      assert.equal(got.metric, sent.labels[0]![1])
      assert.deepEqual(got.tags, [{ key: 'host', value: sent.labels[1]![1] }])
      assert.deepEqual(
        Array.from(got.timestamps),
        sent.samples.map(([, ts]) => ts),
      )
      sent.samples.forEach(([value], k) => {
        if (value === 'stale') assert.equal(bitsOf(got.values, k), STALE_BITS, `series ${i}, sample ${k}`)
        else assert.equal(got.values[k], value)
      })
    })
  }
})
