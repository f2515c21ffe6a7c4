// The HTTP listener's ingest workers: a body decoded in a worker gives the engine what the main
// thread's decoders give it (the same series and points, NaN bits intact, the same frozen tags for a
// series seen again) and fails with the same errors; a worker that dies fails its bodies with 503
// and is replaced; close() stops every worker.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { gzipSync } from 'node:zlib'
import type { SeriesWrite } from '../../src/model/types.js'
import { type BodyChunks, EntryMerger, IngestDecoder, SeriesDirectory } from '../../src/server/ingest-decode.js'
import { IngestPool, InPlaceDecoder } from '../../src/server/ingest-pool.js'
import { parseLineProtocol } from '../../src/server/line-protocol.js'
import { BodyError, snappyDecode } from '../../src/server/prom-remote.js'
import { decodeWrite, STALE_BITS, writeRequest } from '../fixtures/prom-remote-bodies.js'

const T0 = Date.UTC(2024, 0, 1)

/** A body as the listener hands it over: in chunks that each own their memory, as a socket's do. */
function chunked(bytes: Uint8Array, pieces = 3): BodyChunks {
  const step = Math.max(1, Math.ceil(bytes.length / pieces))
  const chunks: Uint8Array[] = []
  for (let at = 0; at < bytes.length; at += step) chunks.push(Uint8Array.from(bytes.subarray(at, at + step)))
  return { chunks, size: bytes.length }
}
const MAX = 1 << 20

/** The bit patterns of values: a typed array keeps a NaN's payload, which reading it as a number may not. */
function bits(values: ArrayLike<number>): bigint[] {
  const typed = values instanceof Float64Array ? values : Float64Array.from(values)
  const view = new DataView(typed.buffer, typed.byteOffset, typed.byteLength)
  return Array.from({ length: typed.length }, (_, i) => view.getBigUint64(i * 8, true))
}

function plain(series: readonly SeriesWrite[]) {
  return series.map((s) => ({
    metric: s.metric,
    tags: s.tags.map((t) => ({ ...t })),
    timestamps: Array.from(s.timestamps as ArrayLike<number>),
    values: bits(s.values),
  }))
}

function remoteBody(round: number): Buffer {
  return writeRequest(
    Array.from({ length: 200 }, (_, i) => ({
      labels: [
        ['__name__', `m${i % 7}`],
        ['instance', `host-${i}`],
        ['job', 'node'],
      ] as [string, string][],
      samples: [
        [i === 3 ? 'stale' : i * 0.5 + round, T0 + round * 1000],
        [i === 5 ? Number.POSITIVE_INFINITY : -i, T0 + round * 1000 + 500],
      ] as [number | 'stale', number][],
    })),
  )
}

function lineBody(round: number): string {
  const lines: string[] = []
  for (let i = 0; i < 300; i++) {
    lines.push(
      `cpu,host=h${i % 20},region=eu\\ west usage=${i + round * 0.25},idle=${i}i ${T0 + round * 1000 + i}000000`,
    )
  }
  return lines.join('\n')
}

test('a body decoded in a worker gives the series, points and NaN bits of the main-thread decoders', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  for (let round = 0; round < 2; round++) {
    const rw = remoteBody(round)
    const fromWorker = await pool.decode({ kind: 'remote', body: chunked(Buffer.from(rw)), maxBytes: MAX })
    const inPlace = decodeWrite(snappyDecode(rw, MAX))
    assert.deepEqual(plain(fromWorker.series), plain(inPlace.series))
    assert.equal(fromWorker.points, inPlace.samples)
    assert.equal(bits(fromWorker.series[3]!.values)[0], STALE_BITS)

    const text = lineBody(round)
    const fromText = await pool.decode({
      kind: 'line',
      body: chunked(Buffer.from(text)),
      gzip: false,
      maxBytes: MAX,
      precision: 'ns',
      nowMs: T0,
    })
    const gzipped = await pool.decode({
      kind: 'line',
      body: chunked(gzipSync(text)),
      gzip: true,
      maxBytes: MAX,
      precision: 'ns',
      nowMs: T0,
    })
    const parsed = parseLineProtocol(text, 'ns', T0)
    assert.deepEqual(plain(fromText.series), plain(parsed.series))
    assert.deepEqual(plain(gzipped.series), plain(parsed.series))
    assert.deepEqual(Array.from(fromText.firstLines ?? []), parsed.firstLines)
    assert.equal(fromText.points, parsed.points)
  }
})

test('remote write entries of one series are merged in the worker, sorted, the last of a timestamp kept, bits intact', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const labels = (i: number): [string, string][] => [
    ['__name__', 'm'],
    ['instance', `host-${i}`],
  ]
  // Three rounds of one entry per series, as Prometheus sends samples: the second goes back in
  // time, the third repeats the first's timestamp; one entry holds two samples out of order.
  const entries: { labels: [string, string][]; samples: [number | 'stale', number][] }[] = []
  for (const [round, at] of [
    [0, T0 + 2000],
    [1, T0],
    [2, T0 + 2000],
  ] as const) {
    for (let i = 0; i < 100; i++) {
      const value = round === 2 && i === 5 ? 'stale' : i + round / 10
      entries.push({
        labels: labels(i),
        samples:
          i === 9 && round === 1
            ? [
                [-1, T0 + 1000],
                [value, at],
              ]
            : [[value, at]],
      })
    }
  }
  const decoded = await pool.decode({ kind: 'remote', body: chunked(writeRequest(entries)), maxBytes: MAX })
  assert.equal(decoded.normalized, true)
  assert.equal(decoded.points, 301)
  assert.equal(decoded.series.length, 100)
  assert.deepEqual(
    Array.from(decoded.firstEntries ?? []),
    Array.from({ length: 100 }, (_, i) => i),
  )
  const host = (i: number) => decoded.series[i]!
  assert.deepEqual(host(0).tags, [{ key: 'instance', value: 'host-0' }])
  assert.deepEqual(Array.from(host(0).timestamps as ArrayLike<number>), [T0, T0 + 2000])
  assert.deepEqual(Array.from(host(0).values), [0.1, 0.2])
  assert.deepEqual(Array.from(host(9).timestamps as ArrayLike<number>), [T0, T0 + 1000, T0 + 2000])
  assert.deepEqual(Array.from(host(9).values), [9.1, -1, 9.2])
  assert.deepEqual(bits(host(5).values), [bits([5.1])[0], STALE_BITS])

  // A series only once, in order: as sent, and still in normal form.
  const once = await pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX })
  assert.equal(once.normalized, true)
  assert.equal(once.firstEntries, undefined)
  // A timestamp the engine cannot store: left as sent, for validation to name.
  const unstorable = writeRequest([...entries.slice(0, 150), { labels: labels(0), samples: [[1, 2 ** 53 - 1]] }])
  const left = await pool.decode({ kind: 'remote', body: chunked(unstorable), maxBytes: MAX })
  assert.equal(left.normalized, undefined)
  assert.deepEqual(plain(left.series), plain(decodeWrite(snappyDecode(unstorable, MAX)).series))
})

test('a body of more points than the merge takes is left as sent, for validation to apply its limits first', () => {
  const entry = (id: number, t: number) => ({ id, t })
  const entries = [entry(0, 2), entry(1, 1), entry(0, 1)]
  const packed = {
    ids: Int32Array.from(entries, (e) => e.id),
    offsets: Int32Array.from([0, 1, 2, 3]),
    timestamps: Float64Array.from(entries, (e) => T0 + e.t),
    values: Float64Array.from([1, 2, 3]),
    points: 3,
  }
  assert.equal(new EntryMerger(2).merge(packed), packed)
  const merged = new EntryMerger(3).merge(packed)
  assert.equal(merged.normalized, true)
  assert.deepEqual(Array.from(merged.ids), [0, 1])
  assert.deepEqual(Array.from(merged.timestamps), [T0 + 1, T0 + 2, T0 + 1])
  assert.deepEqual(Array.from(merged.values), [3, 1, 2])
})

test('merged series in order before and after one out of order are kept as sent, that one sorted', () => {
  // Series 0 and 2 arrive in time order over two entries each, series 1 does not.
  const entries = [
    { id: 0, t: 1 },
    { id: 1, t: 2 },
    { id: 2, t: 1 },
    { id: 0, t: 2 },
    { id: 1, t: 1 },
    { id: 2, t: 3 },
  ]
  const merged = new EntryMerger().merge({
    ids: Int32Array.from(entries, (e) => e.id),
    offsets: Int32Array.from(entries.map((_, i) => i).concat(entries.length)),
    timestamps: Float64Array.from(entries, (e) => T0 + e.t),
    values: Float64Array.from(entries, (_, i) => i),
    points: entries.length,
  })
  assert.equal(merged.normalized, true)
  assert.deepEqual(Array.from(merged.ids), [0, 1, 2])
  assert.deepEqual(Array.from(merged.offsets), [0, 2, 4, 6])
  assert.deepEqual(Array.from(merged.timestamps), [T0 + 1, T0 + 2, T0 + 1, T0 + 2, T0 + 1, T0 + 3])
  assert.deepEqual(Array.from(merged.values), [0, 3, 4, 1, 2, 5])
})

test('a chunk that is a view of a larger buffer is copied to the worker, and the buffer stays usable', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const text = lineBody(0)
  const shared = Buffer.alloc(text.length + 100)
  shared.write(text, 50)
  const view = shared.subarray(50, 50 + text.length)
  const decoded = await pool.decode({
    kind: 'line',
    body: { chunks: [view], size: view.length },
    gzip: false,
    maxBytes: MAX,
    precision: 'ns',
    nowMs: T0,
  })
  assert.deepEqual(plain(decoded.series), plain(parseLineProtocol(text, 'ns', T0).series))
  assert.equal(shared.buffer.byteLength, text.length + 100)
  assert.equal(view.toString('latin1'), text)
})

test('a series decoded again in the worker gets the same frozen tags array', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const first = await pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX })
  const second = await pool.decode({ kind: 'remote', body: chunked(remoteBody(1)), maxBytes: MAX })
  assert.ok(Object.isFrozen(first.series[0]!.tags))
  assert.ok(Object.isFrozen(first.series[0]!.tags[0]))
  for (let i = 0; i < first.series.length; i++) assert.equal(second.series[i]!.tags, first.series[i]!.tags)
  const line = { kind: 'line', gzip: false, maxBytes: MAX, precision: 'ns', nowMs: T0 } as const
  const a = await pool.decode({ ...line, body: chunked(Buffer.from(lineBody(0))) })
  const b = await pool.decode({ ...line, body: chunked(Buffer.from(lineBody(1))) })
  assert.equal(b.series[0]!.tags, a.series[0]!.tags)
  // Two fields of one line share their tags, as the main-thread parser shares them.
  assert.equal(a.series[1]!.tags, a.series[0]!.tags)
})

/** The error a main-thread decode throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected the decode to throw')
}

test('a body the worker refuses fails with the error the main thread throws', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const badLines = 'cpu,host=a usage=1 1\ncpu,host=a usage=1 2\ncpu,host=a usage="x" 3\n'
  const badLabel = writeRequest([
    {
      labels: [
        ['__name__', 'm'],
        ['bad-name', 'x'],
      ],
      samples: [[1, T0]],
    },
  ])
  const noName = writeRequest([{ labels: [['job', 'x']], samples: [[1, T0]] }])
  const cases: Array<{ request: Parameters<IngestPool['decode']>[0]; inPlace: () => unknown }> = [
    {
      request: {
        kind: 'line',
        body: chunked(Buffer.from(badLines)),
        gzip: false,
        maxBytes: MAX,
        precision: 'ns',
        nowMs: T0,
      },
      inPlace: () => parseLineProtocol(badLines, 'ns', T0),
    },
    {
      request: { kind: 'remote', body: chunked(badLabel), maxBytes: MAX },
      inPlace: () => decodeWrite(snappyDecode(badLabel, MAX)),
    },
    {
      request: { kind: 'remote', body: chunked(noName), maxBytes: MAX },
      inPlace: () => decodeWrite(snappyDecode(noName, MAX)),
    },
    {
      request: { kind: 'remote', body: chunked(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f, 1])), maxBytes: MAX },
      inPlace: () => snappyDecode(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f, 1]), MAX),
    },
    {
      request: { kind: 'remote', body: chunked(Buffer.from([0x10, 1, 2, 3])), maxBytes: MAX },
      inPlace: () => decodeWrite(snappyDecode(Buffer.from([0x10, 1, 2, 3]), MAX)),
    },
  ]
  for (const c of cases) {
    const expected = thrown(c.inPlace)
    await assert.rejects(pool.decode(c.request), (err: Error) => {
      assert.equal(err.constructor, expected.constructor)
      assert.equal(err.message, expected.message)
      if (expected instanceof BodyError) assert.equal((err as BodyError).status, expected.status)
      return true
    })
  }
  const gzipCases: Array<[Buffer, number, string]> = [
    [Buffer.from('not gzip at all'), 400, 'cannot inflate the gzip body: incorrect header check'],
    [gzipSync(Buffer.alloc(4096, 'a')), 1000, 'the body inflates to more than the limit of 1000 bytes'],
  ]
  for (const [body, maxBytes, message] of gzipCases) {
    await assert.rejects(
      pool.decode({ kind: 'line', body: chunked(body), gzip: true, maxBytes, precision: 'ns', nowMs: T0 }),
      (err: Error) =>
        err instanceof BodyError && err.message === message && err.status === (maxBytes === 1000 ? 413 : 400),
    )
  }
  // The worker goes on decoding after refusals, with the series the refused bodies defined.
  const after = await pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX })
  assert.equal(after.series.length, 200)
})

test('a worker that dies fails its bodies with 503 and is replaced', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  await pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX })
  const [first] = pool.threads
  assert.ok(first !== undefined)
  const big = Buffer.from(Array.from({ length: 40 }, (_, r) => lineBody(r)).join('\n'))
  const inFlight = pool.decode({
    kind: 'line',
    body: chunked(big),
    gzip: false,
    maxBytes: 1 << 26,
    precision: 'ns',
    nowMs: T0,
  })
  await first.terminate()
  await assert.rejects(inFlight, (err: Error) => err instanceof BodyError && err.status === 503)
  const [second] = pool.threads
  assert.ok(second !== undefined && second !== first)
  // The new worker starts a new series table: its series decode whole again.
  const again = await pool.decode({ kind: 'remote', body: chunked(remoteBody(1)), maxBytes: MAX })
  assert.deepEqual(plain(again.series), plain(decodeWrite(snappyDecode(remoteBody(1), MAX)).series))
})

test('workers start when bodies need them, one for each body in flight up to the size', async () => {
  const pool = new IngestPool(2)
  try {
    assert.equal(pool.threads.length, 0, 'no worker before the first body')
    await pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX })
    await pool.decode({ kind: 'remote', body: chunked(remoteBody(1)), maxBytes: MAX })
    assert.equal(pool.threads.length, 1, 'one body at a time needs one worker')
    const bodies = [2, 3, 4, 5].map((i) => pool.decode({ kind: 'remote', body: chunked(remoteBody(i)), maxBytes: MAX }))
    assert.equal(pool.threads.length, 2)
    for (const [i, body] of (await Promise.all(bodies)).entries()) {
      assert.deepEqual(plain(body.series), plain(decodeWrite(snappyDecode(remoteBody(i + 2), MAX)).series))
    }
  } finally {
    await pool.close()
  }
})

test('close stops every worker, and a body after it answers 503', async () => {
  const pool = new IngestPool(2)
  await Promise.all([0, 1].map((i) => pool.decode({ kind: 'remote', body: chunked(remoteBody(i)), maxBytes: MAX })))
  const exits = pool.threads.map((w) => once(w, 'exit'))
  assert.equal(exits.length, 2)
  await pool.close()
  await Promise.all(exits)
  assert.equal(pool.threads.length, 0)
  await assert.rejects(
    pool.decode({ kind: 'remote', body: chunked(remoteBody(0)), maxBytes: MAX }),
    (err: Error) => err instanceof BodyError && err.status === 503,
  )
})

test('more bodies than the workers take at once wait their turn and all decode', async (t) => {
  const pool = new IngestPool(1, { maxInFlight: 1 })
  t.after(() => pool.close())
  const answers = await Promise.all(
    Array.from({ length: 6 }, (_, r) => pool.decode({ kind: 'remote', body: chunked(remoteBody(r)), maxBytes: MAX })),
  )
  for (let r = 0; r < answers.length; r++) {
    assert.equal(answers[r]!.series[0]!.timestamps[0], T0 + r * 1000)
  }
})

test('a line body with UTF-8 tag values decodes them as UTF-8 in the worker, beside ASCII bodies', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const line = { kind: 'line', gzip: false, maxBytes: MAX, precision: 'ns', nowMs: T0 } as const
  const ascii = await pool.decode({ ...line, body: chunked(Buffer.from(`cpu,city=zurich usage=1 ${T0}000000`)) })
  assert.deepEqual(ascii.series[0]!.tags, [{ key: 'city', value: 'zurich' }])
  const text = `cpu,city=Zürich usage=1 ${T0}000000\ncpu,city=東京\\ 都 usage=2 ${T0}000000`
  const decoded = await pool.decode({ ...line, body: chunked(Buffer.from(text, 'utf8')) })
  assert.deepEqual(
    decoded.series.map((s) => s.tags[0]!.value),
    ['Zürich', '東京 都'],
  )
  assert.deepEqual(plain(decoded.series), plain(parseLineProtocol(text, 'ns', T0).series))
})

test('bodies of growing and shrinking sizes, in many chunks, decode alike in one worker', async (t) => {
  // The worker joins a body's chunks into memory it keeps for the next body: a body shorter than the
  // one before must not read the rest of it, and one larger must not be cut.
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const line = { kind: 'line', gzip: false, maxBytes: MAX, precision: 'ns', nowMs: T0 } as const
  for (const lines of [50, 3000, 20, 1500, 1]) {
    const text = Array.from({ length: lines }, (_, i) => `net,host=h${i % 13} rx=${i + lines}i ${T0 + i}000000`).join(
      '\n',
    )
    const decoded = await pool.decode({ ...line, body: chunked(Buffer.from(text), 7) })
    assert.deepEqual(plain(decoded.series), plain(parseLineProtocol(text, 'ns', T0).series))
    assert.equal(decoded.points, lines)
  }
})

test('a body decoded in place (InPlaceDecoder) gives what the worker gives: merged series, first entries, the same refusals', async (t) => {
  const pool = new IngestPool(1)
  t.after(() => pool.close())
  const inPlace = new InPlaceDecoder()
  const entries = [0, 1, 2].flatMap((round) =>
    Array.from({ length: 50 }, (_, i) => ({
      labels: [
        ['__name__', 'm'],
        ['instance', `host-${i}`],
      ] as [string, string][],
      samples: [[round === 2 && i === 4 ? 'stale' : i + round, T0 + (round === 1 ? 0 : 1000 + round)]] as [
        number | 'stale',
        number,
      ][],
    })),
  )
  // A refused body between others: both decoders refuse it alike and go on with the same series.
  const refused = writeRequest([...entries.slice(0, 60), { labels: [['job', 'no name']], samples: [[1, T0]] }])
  let refusals = 0
  for (const body of [writeRequest(entries), remoteBody(0), refused, remoteBody(1), writeRequest(entries)]) {
    // Each its own chunks: the worker's are transferred to it.
    const worker = await pool.decode({ kind: 'remote', body: chunked(body), maxBytes: MAX }).catch((err: Error) => err)
    let decoded: Awaited<ReturnType<IngestPool['decode']>>
    try {
      decoded = inPlace.decode({ kind: 'remote', body: chunked(body), maxBytes: MAX })
    } catch (err) {
      assert.ok(worker instanceof Error, `refused in place only: ${err}`)
      assert.equal((err as Error).constructor, worker.constructor)
      assert.equal((err as Error).message, worker.message)
      refusals++
      continue
    }
    assert.ok(!(worker instanceof Error), `refused in the worker only: ${worker}`)
    assert.deepEqual(plain(decoded.series), plain(worker.series))
    assert.equal(decoded.normalized, worker.normalized)
    assert.deepEqual(Array.from(decoded.firstEntries ?? []), Array.from(worker.firstEntries ?? []))
    assert.equal(decoded.points, worker.points)
  }
  assert.equal(refusals, 1, 'the body without a metric name is refused on both paths')
  const merged = inPlace.decode({ kind: 'remote', body: chunked(writeRequest(entries)), maxBytes: MAX })
  assert.equal(merged.series.length, 50)
  assert.deepEqual(bits(merged.series[4]!.values).at(-1), STALE_BITS)
  // Entries of a series in ascending order, as Prometheus sends a series' samples: joined as sent.
  const ascending = writeRequest([...entries.slice(0, 50), ...entries.slice(100)])
  const joined = inPlace.decode({ kind: 'remote', body: chunked(ascending), maxBytes: MAX })
  assert.equal(joined.normalized, true)
  assert.deepEqual(
    Array.from(joined.firstEntries ?? []),
    Array.from({ length: 50 }, (_, i) => i),
  )
  assert.deepEqual(Array.from(joined.series[7]!.timestamps as ArrayLike<number>), [T0 + 1000, T0 + 1002])
  assert.deepEqual(Array.from(joined.series[7]!.values), [7, 9])
  assert.deepEqual(bits(joined.series[4]!.values), [bits([4])[0], STALE_BITS])
})

test('a series the table of ids forgot gets a new id, also when its label set is cached', () => {
  // The table holds two series, so it empties before each body below: a label set cached with the
  // id its series had before must not keep that id, which another series now has.
  const decoder = new IngestDecoder(2)
  const directory = new SeriesDirectory()
  const metrics = (names: string[]): string[] => {
    const body = writeRequest(names.map((name, i) => ({ labels: [['__name__', name]], samples: [[i, T0]] })))
    const decoded = decoder.decode({ id: 0, kind: 'remote', body: chunked(body, 1), maxBytes: MAX })
    directory.learn(decoded.defined)
    if (!('packed' in decoded)) throw decoded.error
    return directory.series(decoded.packed).map((s) => s.metric)
  }
  assert.deepEqual(metrics(['a', 'b']), ['a', 'b'])
  assert.deepEqual(metrics(['c', 'a']), ['c', 'a'])
  assert.deepEqual(metrics(['b', 'a', 'c']), ['b', 'a', 'c'])
  assert.deepEqual(metrics(['a', 'c']), ['a', 'c'])
})
