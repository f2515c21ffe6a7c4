// The hand-written codec against the generated one: whatever one encodes the other decodes to the
// same series, including the encodings a generic protobuf writer may choose (unpacked, split).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import { QueryResponse } from '../../gen/v3storage/v1/query_service.js'
import { IngestRequest } from '../../gen/v3storage/v1/stream_service.js'
import { WriteRequest, WriteStreamRequest } from '../../gen/v3storage/v1/write_service.js'
import { ValidationError } from '../../src/model/errors.js'
import type { SeriesPoints } from '../../src/model/types.js'
import { chunkSeries } from '../../src/server/chunking.js'
import { encodeIngestRequest, encodeIngestWrite } from '../../src/wire/ingest-codec.js'
import {
  decodeSeriesList,
  decodeWriteRequest,
  EncodedHeaderCache,
  encodeSeriesList,
  encodeWriteRequest,
  type WireSeries,
} from '../../src/wire/series-codec.js'

const EDGE_TIMESTAMPS = [
  0,
  1,
  127,
  128,
  16_383,
  16_384,
  2 ** 31,
  2 ** 32,
  // Where a varint grows from five to six bytes and from six to seven: the codec's fast paths.
  2 ** 35 - 1,
  2 ** 35,
  2 ** 42 - 1,
  2 ** 42,
  2 ** 49 - 1,
  2 ** 49,
  1_704_067_200_000,
  -1,
  -1_000,
]
const EDGE_VALUES = [
  0,
  -0,
  1.5,
  -2.25,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  5e-324,
  Number.NaN,
  Number.POSITIVE_INFINITY,
]

function plain(s: WireSeries) {
  return { metric: s.metric, tags: s.tags, timestamps: Array.from(s.timestamps), values: Array.from(s.values) }
}

/** A pseudo-random generator with a fixed seed, so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
}

test('ts-proto encodes, the codec decodes the same series', () => {
  const series = [
    {
      metric: 'cpu',
      tags: [{ key: 'host', value: 'ä-1' }],
      timestamps: EDGE_TIMESTAMPS,
      values: EDGE_TIMESTAMPS.map((_, i) => i / 3),
    },
    { metric: 'm', tags: [], timestamps: [], values: [] },
  ]
  const bytes = WriteRequest.encode({ series, precision: 3, consistency: 2 }).finish()
  const decoded = decodeWriteRequest(bytes)
  assert.equal(decoded.precision, 3)
  assert.equal(decoded.consistency, 2)
  assert.deepEqual(decoded.series.map(plain), series)
})

test('a leading U+FEFF is text, kept by the codec both ways: "\\uFEFFabc" and "abc" are two tag values', () => {
  const series = [
    { metric: 'bom', tags: [{ key: '\uFEFFk', value: '\uFEFFabc' }], timestamps: [1], values: [1] },
    { metric: 'bom', tags: [{ key: 'k', value: 'abc' }], timestamps: [1], values: [2] },
  ]
  const decoded = decodeWriteRequest(WriteRequest.encode({ series, precision: 0, consistency: 0 }).finish())
  assert.deepEqual(decoded.series.map(plain), series)
  const back = WriteRequest.decode(encodeWriteRequest(series, 0))
  assert.deepEqual(
    back.series.map((s) => s.tags[0]),
    series.map((s) => s.tags[0]),
  )
})

test('precision and consistency round-trip between the codec and ts-proto, both ways', () => {
  const series = [{ metric: 'c', tags: [], timestamps: [1, 2], values: [0.5, 1.5] }]
  // 0 is absent on the wire; 1 to 3 are the levels; 7 is no level, and the codec hands it on as it
  // came for the server to refuse (convert.ts), as ts-proto does.
  for (const consistency of [0, 1, 2, 3, 7]) {
    for (const precision of [0, 4]) {
      const ours = encodeWriteRequest(series, precision, consistency)
      assert.deepEqual(WriteRequest.decode(ours), { series, precision, consistency })
      assert.deepEqual(WriteStreamRequest.decode(ours), { series, precision, consistency })
      const theirs = WriteRequest.encode({ series, precision, consistency }).finish()
      assert.deepEqual(Buffer.from(theirs), ours, `precision ${precision}, consistency ${consistency}`)
      const decoded = decodeWriteRequest(theirs)
      assert.equal(decoded.consistency, consistency)
      assert.equal(decoded.precision, precision)
      assert.deepEqual(decoded.series.map(plain), series)
    }
  }
  // Before the series, as a generic writer may put it, and unset: 0.
  const first = new BinaryWriter()
    .uint32(0x18)
    .int32(3)
    .uint32(0x0a)
    .bytes(encodeSeriesList(series).subarray(2))
    .finish()
  assert.equal(decodeWriteRequest(first).consistency, 3)
  assert.equal(decodeWriteRequest(first).series.length, 1)
  assert.equal(decodeWriteRequest(encodeWriteRequest(series, 0)).consistency, 0)
})

test('the codec encodes, ts-proto decodes the same series', () => {
  const random = rng(42)
  for (let round = 0; round < 50; round++) {
    const n = Math.floor(random() * 300)
    const timestamps = Array.from({ length: n }, () => Math.floor((random() - 0.2) * 2 ** 45))
    const values = Array.from({ length: n }, () => (random() - 0.5) * 10 ** Math.floor(random() * 20))
    // Odd rounds carry multi-byte UTF-8 (2, 3 and 4 bytes per character), even rounds plain ASCII.
    const value = round % 2 === 1 ? `ü€𝄞${round}` : `v${round}`
    const series = [{ metric: `m${round}`, tags: [{ key: 'k', value }], timestamps, values }]
    const viaArrays = encodeWriteRequest(series, 0)
    const viaTyped = encodeWriteRequest([{ ...series[0]!, values: Float64Array.from(values) }], 0)
    assert.deepEqual(viaTyped, viaArrays)
    assert.deepEqual(WriteRequest.decode(viaArrays), { series, precision: 0, consistency: 0 })
    assert.deepEqual(decodeWriteRequest(viaArrays).series.map(plain), series)
  }
})

test('edge timestamps encoded by the codec decode the same with ts-proto and with the codec', () => {
  // A run of millisecond timestamps (six-byte varints) around the edges, as a raw answer holds them.
  const run = Array.from({ length: 64 }, (_, i) => 1_767_225_600_000 + i * 10_000)
  const timestamps = [...EDGE_TIMESTAMPS, ...run]
  const values = timestamps.map((_, i) => i / 7)
  const bytes = encodeSeriesList([{ metric: 'e', tags: [], timestamps: Float64Array.from(timestamps), values }])
  assert.deepEqual(QueryResponse.decode(bytes).series[0]?.timestamps, timestamps)
  assert.deepEqual(Array.from(decodeSeriesList(bytes)[0]?.timestamps ?? []), timestamps)
})

test('edge values survive bit for bit', () => {
  const timestamps = EDGE_VALUES.map((_, i) => i)
  const [decoded] = decodeSeriesList(encodeSeriesList([{ metric: 'e', tags: [], timestamps, values: EDGE_VALUES }]))
  assert.ok(decoded)
  assert.ok(Object.is(decoded.values[1], -0))
  assert.ok(Number.isNaN(decoded.values[7]))
  assert.deepEqual(Array.from(decoded.values), EDGE_VALUES)
})

test('nanosecond timestamps beyond 2^53 stay bigint and exact; negative ones round-trip', () => {
  const ns = 1_704_067_200_123_456_789n
  const bytes = encodeWriteRequest([{ metric: 'n', tags: [], timestamps: [ns, -5n, 7], values: [1, 2, 3] }], 4)
  const [s] = decodeWriteRequest(bytes).series
  assert.deepEqual(s?.timestamps, [ns, -5, 7])
  // ts-proto agrees on the wire, though it cannot hold ns itself.
  assert.throws(() => WriteRequest.decode(bytes), /MAX_SAFE_INTEGER/)
})

test('a timestamp number beyond 2^53 is refused before sending, with the way to send it', () => {
  const encode = (t: number | bigint) =>
    encodeWriteRequest([{ metric: 'n', tags: [], timestamps: [t], values: [1] }], 4)
  for (const t of [2 ** 53, Date.now() * 1e6]) {
    assert.throws(
      () => encode(t),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.message.includes(
          `series[0].timestamps[0]: ${t} is beyond ±2^53 and not exact as a number; pass it as a bigint`,
        ),
    )
  }
  assert.throws(() => encode(1.5), /series\[0\]\.timestamps\[0\]: must be an integer, got 1\.5/)
  assert.throws(() => encode(2n ** 63n), /does not fit a signed 64-bit integer/)
})

test('unpacked and split repeated fields are accepted, unknown fields skipped', () => {
  const series = new BinaryWriter()
  series.uint32(0x0a).string('u')
  series.uint32(0x18).int64(10).uint32(0x18).int64(20)
  series.uint32(0x21).double(1.5).uint32(0x21).double(2.5)
  series.uint32(0x1a).fork().int64(30).join()
  series.uint32(0x22).fork().double(3.5).join()
  series.uint32(0x7a).string('a future field')
  const request = new BinaryWriter().uint32(0x0a).bytes(series.finish()).uint32(0x98).int32(7).finish()
  const [s] = decodeWriteRequest(request).series
  assert.deepEqual(s && plain(s), { metric: 'u', tags: [], timestamps: [10, 20, 30], values: [1.5, 2.5, 3.5] })
})

test('malformed input is a ValidationError naming the field', () => {
  const good = encodeWriteRequest([{ metric: 'x', tags: [{ key: 'k', value: 'v' }], timestamps: [1], values: [1] }], 0)
  assert.throws(
    () => decodeWriteRequest(good.subarray(0, good.length - 3)),
    (err: unknown) => err instanceof ValidationError && /series\[0\]/.test(err.message),
  )
  const badUtf8 = new BinaryWriter()
    .uint32(0x0a)
    .fork()
    .uint32(0x12)
    .fork()
    .uint32(0x0a)
    .string('k')
    .uint32(0x12)
    .bytes(Uint8Array.of(0xc3, 0x28))
    .join()
    .join()
    .finish()
  assert.throws(
    () => decodeWriteRequest(badUtf8),
    (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'series[0].tags[0].value',
  )
  // A known field with a wire type it cannot have is named, not skipped as unknown: timestamps as
  // fixed64, a tag key as a varint, the series as a varint.
  const fixed64Timestamps = new BinaryWriter()
    .uint32(0x0a)
    .fork()
    .uint32(0x0a)
    .string('x')
    .uint32((3 << 3) | 1)
    .fixed64(1n)
    .uint32(0x21)
    .double(1)
    .join()
    .finish()
  const varintKey = new BinaryWriter()
    .uint32(0x0a)
    .fork()
    .uint32(0x12)
    .fork()
    .uint32(0x08)
    .uint32(1)
    .join()
    .join()
    .finish()
  const varintSeries = new BinaryWriter().uint32(0x08).uint32(1).finish()
  for (const [bytes, field] of [
    [fixed64Timestamps, 'series[0].timestamps'],
    [varintKey, 'series[0].tags[0].key'],
    [varintSeries, 'series'],
  ] as const) {
    assert.throws(
      () => decodeWriteRequest(bytes),
      (err: unknown) =>
        err instanceof ValidationError &&
        err.violations[0]?.field === field &&
        /wire type/.test(err.violations[0]?.description ?? ''),
      field,
    )
  }
  // Unknown field numbers are still skipped.
  const unknown = new BinaryWriter()
    .uint32((9 << 3) | 1)
    .fixed64(7n)
    .finish()
  assert.deepEqual(decodeWriteRequest(unknown).series, [])
})

test('enum fields are int32: a negative precision or consistency reads back negative', () => {
  const bytes = new BinaryWriter().uint32(0x10).int32(-1).uint32(0x18).int32(-7).finish()
  const decoded = decodeWriteRequest(bytes)
  assert.deepEqual([decoded.precision, decoded.consistency], [-1, -7])
})

test('the encoder refuses what int64 cannot carry, naming the field', () => {
  assert.throws(
    () => encodeWriteRequest([{ metric: 'x', tags: [], timestamps: [1, 2.5], values: [1, 2] }], 0),
    (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'series[0].timestamps[1]',
  )
  assert.throws(
    () => encodeWriteRequest([{ metric: 'x', tags: [], timestamps: [1], values: [1, 2] }], 0),
    (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'series[0].values',
  )
})

test('chunks stay under the budget, keep every point in order, and decode with ts-proto', () => {
  const random = rng(7)
  const series: SeriesPoints[] = Array.from({ length: 30 }, (_, i) => {
    const n = Math.floor(random() * 3000)
    return {
      metric: 'chunked',
      tags: [{ key: 'series', value: `s${i}`.repeat(1 + (i % 5)) }],
      timestamps: Float64Array.from({ length: n }, (_, j) => 1_700_000_000_000 + j * 10_000),
      values: Float64Array.from({ length: n }, () => random()),
    }
  })
  for (const budget of [4096, 10_000, 65_536]) {
    const chunks = chunkSeries(series, budget)
    const seen = new Map<string, number[]>()
    for (const chunk of chunks) {
      const bytes = encodeSeriesList(chunk)
      assert.ok(bytes.length <= budget, `${bytes.length} > ${budget}`)
      for (const s of QueryResponse.decode(bytes).series) {
        const key = s.tags[0]?.value ?? ''
        seen.set(key, [...(seen.get(key) ?? []), ...s.timestamps])
      }
    }
    for (const s of series) {
      if (s.timestamps.length === 0) continue
      assert.deepEqual(seen.get(s.tags[0]?.value ?? ''), Array.from(s.timestamps))
    }
  }
})

test('encodeIngestWrite gives the IngestRequest that the generated codec reads, with or without cached headers', () => {
  const headers = new EncodedHeaderCache()
  const tags = [
    { key: 'host', value: 'h-1' },
    { key: 'région', value: 'eu' },
  ]
  const series = [
    { metric: 'cpu', tags, timestamps: [1, 2 ** 35, 2 ** 42 + 3], values: [0.5, -1, Number.MAX_VALUE] },
    { metric: 'mem', tags, timestamps: [7], values: [3] },
    { metric: 'disk', tags: [], timestamps: [], values: [] },
  ]
  for (const [sequence, precision, consistency] of [
    [1, 0, 0],
    [300, 1, 2],
    [2 ** 40, 3, 0],
  ] as const) {
    // Twice with the same cache: the second call copies the headers the first encoded.
    for (const cache of [undefined, headers, headers]) {
      const bytes = encodeIngestWrite(sequence, series, precision, consistency, cache)
      assert.deepEqual(bytes, encodeIngestRequest(sequence, encodeWriteRequest(series, precision, consistency)))
      const decoded = IngestRequest.decode(bytes)
      assert.equal(decoded.sequence, sequence)
      assert.equal(decoded.write?.precision, precision)
      assert.equal(decoded.write?.consistency, consistency)
      assert.deepEqual(
        decoded.write?.series.map((s) => [s.metric, s.tags.map((t) => `${t.key}=${t.value}`), s.values]),
        series.map((s) => [s.metric, s.tags.map((t) => `${t.key}=${t.value}`), s.values]),
      )
    }
  }
})
