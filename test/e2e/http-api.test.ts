// The HTTP listener's data endpoints against a real `v3 serve` process: Prometheus remote write and
// read, InfluxDB line protocol, and the listener's rules (tokens and roles, TLS, the exposure
// refusal, bounded bodies, methods).
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createConnection, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { compressSync, uncompressSync } from 'snappy'
import { startHttpEndpoint } from '../../src/server/http-endpoint.js'
import { WORKER_MIN_BODY_BYTES } from '../../src/server/http-ingest.js'
import { createServerMetrics } from '../../src/server/metrics.js'
import { MemoryEngine } from '../fixtures/memory-engine.js'
import { type Sample, STALE_BITS, writeRequest } from '../fixtures/prom-remote-bodies.js'
import { waitFor } from '../fixtures/wait.js'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2024, 0, 1)

/** A prometheus.ReadRequest with one query. */
function readRequest(
  startMs: number,
  endMs: number,
  matchers: readonly [number, string, string][],
  types: number[] = [0],
  /** How many times the request holds the query. */
  repeat = 1,
): Buffer {
  const w = new BinaryWriter()
  for (let q = 0; q < repeat; q++) {
    w.tag(1, WireType.LengthDelimited).fork()
    w.tag(1, WireType.Varint).int64(startMs).tag(2, WireType.Varint).int64(endMs)
    for (const [type, name, value] of matchers) {
      w.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int32(type)
      w.tag(2, WireType.LengthDelimited).string(name).tag(3, WireType.LengthDelimited).string(value).join()
    }
    w.join()
  }
  for (const t of types) w.tag(2, WireType.Varint).int32(t)
  return compressSync(w.finish())
}

interface ReadSeries {
  labels: string[]
  samples: [bits: bigint, timestampMs: number][]
}

/** The series of the first result of a snappy prometheus.ReadResponse. */
function readResponse(body: Buffer): ReadSeries[] {
  const r = new BinaryReader(uncompressSync(body, { asBuffer: true }) as Buffer)
  const out: ReadSeries[] = []
  r.tag()
  const result = new BinaryReader(r.bytes())
  while (result.pos < result.len) {
    result.tag()
    const ts = new BinaryReader(result.bytes())
    const series: ReadSeries = { labels: [], samples: [] }
    while (ts.pos < ts.len) {
      const [field] = ts.tag()
      const inner = new BinaryReader(ts.bytes())
      inner.tag()
      if (field === 1) {
        const name = inner.string()
        inner.tag()
        series.labels.push(`${name}=${inner.string()}`)
      } else {
        const bits = BigInt(inner.fixed64())
        inner.tag()
        series.samples.push([bits, Number(inner.int64())])
      }
    }
    out.push(series)
  }
  return out
}

function bitsOf(value: number): bigint {
  return new DataView(new Float64Array([value]).buffer).getBigUint64(0, true)
}

async function post(url: string, body: Buffer | string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', body, headers })
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

function baseOf(server: ServerProcess): string {
  assert.ok(server.metricsUrl !== undefined)
  return server.metricsUrl.replace(/\/metrics$/, '')
}

/**
 * Remote-write bodies through the HTTP listener, below WORKER_MIN_BODY_BYTES (decoded on the main
 * thread) or above it (in the ingest worker): the same answers either way. `count` series per body:
 * 60 keeps a body under the threshold, 1000 takes it over.
 */
async function remoteWriteChecks(base: string, server: ServerProcess, name: string, inWorker: boolean): Promise<void> {
  const count = inWorker ? 1000 : 60
  const perRound = inWorker ? 400 : 40
  const series = Array.from({ length: count }, (_, i) => ({
    labels: [
      ['__name__', `${name}_big`],
      ['instance', `host-${i}`],
    ] as [string, string][],
    samples: [[i, T0] as Sample, [i === 7 ? 'stale' : i + 0.5, T0 + 1000] as Sample],
  }))
  const rw = writeRequest(series)
  assert.equal(rw.length >= WORKER_MIN_BODY_BYTES, inWorker)
  const written = await post(`${base}/api/v1/write`, rw)
  assert.equal(written.status, 204, written.body.toString())
  const read = await post(
    `${base}/api/v1/read`,
    readRequest(T0, T0 + 1000, [
      [0, '__name__', `${name}_big`],
      [0, 'instance', 'host-7'],
    ]),
  )
  assert.equal(read.status, 200)
  assert.deepEqual(readResponse(read.body), [
    {
      labels: [`__name__=${name}_big`, 'instance=host-7'],
      samples: [
        [bitsOf(7), T0],
        [STALE_BITS, T0 + 1000],
      ],
    },
  ])
  // Each sample an entry of its own, as Prometheus sends them, going back in time and repeating a
  // timestamp: stored sorted, the last write of a timestamp winning, the staleness bits kept.
  const rounds: [number, number][] = [
    [T0 + 2000, 0],
    [T0, 1],
    [T0 + 2000, 2],
  ]
  const perSample = rounds.flatMap(([at, round]) =>
    Array.from({ length: perRound }, (_, i) => ({
      labels: [
        ['__name__', `${name}_merge`],
        ['instance', `host-${i}`],
      ] as [string, string][],
      samples: [[round === 2 && i === 5 ? 'stale' : i + round / 10, at] as Sample],
    })),
  )
  const merged = writeRequest(perSample)
  assert.equal(merged.length >= WORKER_MIN_BODY_BYTES, inWorker)
  const mergedRes = await post(`${base}/api/v1/write`, merged)
  assert.equal(mergedRes.status, 204, mergedRes.body.toString())
  for (const [host, last] of [
    [5, STALE_BITS],
    [9, bitsOf(9.2)],
  ] as const) {
    const r = await post(
      `${base}/api/v1/read`,
      readRequest(T0, T0 + 2000, [
        [0, '__name__', `${name}_merge`],
        [0, 'instance', `host-${host}`],
      ]),
    )
    assert.deepEqual(readResponse(r.body)[0]?.samples, [
      [bitsOf(host + 0.1), T0],
      [last, T0 + 2000],
    ])
  }
  // A series the engine refuses is named by its first entry in the body, merged or not: here an
  // entry of the second round, a series of its own after the perRound others.
  const refusedAt = perRound + perRound / 2 + 10
  const tooLong = 'x'.repeat(2000)
  const refusedMerge = writeRequest(
    perSample.map((e, k) =>
      k === refusedAt ? { ...e, labels: [e.labels[0]!, ['instance', tooLong] as [string, string]] } : e,
    ),
  )
  const mergeRefused = await post(`${base}/api/v1/write`, refusedMerge)
  assert.equal(mergeRefused.status, 400)
  assert.ok(
    mergeRefused.body.toString().startsWith(`invalid series[${refusedAt}].tags[0].value: is 2000 bytes long`),
    mergeRefused.body.toString(),
  )
  assert.deepEqual(
    await server.client.listSeries({
      metric: `${name}_merge`,
      matchers: [{ key: 'instance', op: 'eq', value: tooLong }],
    }),
    [],
  )
  const bad = writeRequest([...series.slice(0, count - 1), { labels: [['job', 'no name']], samples: [[1, T0]] }])
  const badRes = await post(`${base}/api/v1/write`, bad)
  assert.equal(badRes.status, 400)
  assert.equal(
    badRes.body.toString(),
    `invalid timeseries[${count - 1}].labels: has no __name__ label: every series needs a metric name\n`,
  )
}

describe('remote write, remote read and line protocol on one node', () => {
  let server: ServerProcess
  let base: string
  before(async () => {
    server = await startServerProcess({ args: ['--http-max-body-bytes', '1MiB'] })
    base = baseOf(server)
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  test('remote write stores __name__ as the metric, labels as tags, NaN and the staleness marker; gRPC reads it', async () => {
    const res = await post(
      `${base}/api/v1/write`,
      writeRequest([
        {
          labels: [
            ['__name__', 'rw_requests_total'],
            ['job', 'api'],
            ['empty', ''],
          ],
          samples: [
            [1, T0],
            [Number.NaN, T0 + 1000],
            ['stale', T0 + 2000],
          ],
        },
        { labels: [['__name__', 'rw_up']], samples: [[1, T0]] },
      ]),
      { 'content-encoding': 'snappy', 'content-type': 'application/x-protobuf' },
    )
    assert.equal(res.status, 204, res.body.toString())
    const [series] = await server.client.query({
      selector: { metric: 'rw_requests_total' },
      startMs: T0,
      endMs: T0 + 3000,
    })
    assert.ok(series)
    assert.deepEqual(series.tags, [{ key: 'job', value: 'api' }])
    assert.deepEqual(Array.from(series.timestamps), [T0, T0 + 1000, T0 + 2000])
    assert.equal(series.values[0], 1)
    assert.ok(Number.isNaN(series.values[1]) && Number.isNaN(series.values[2]))
    const metrics = await (await fetch(`${base}/metrics`)).text()
    assert.match(metrics, /^v3_http_samples_ingested_total\{protocol="prometheus_remote_write"\} 4$/m)
    assert.match(metrics, /^v3_http_requests_total\{path="\/api\/v1\/write",code="204"\} 1$/m)
  })

  test('malformed remote writes answer 400 with the reason and store nothing', async () => {
    const good = { labels: [['__name__', 'rw_bad_case']] as [string, string][], samples: [[5, T0]] as Sample[] }
    const cases: [Buffer, RegExp][] = [
      [Buffer.from('this is not snappy'), /cannot decompress the snappy block/],
      [compressSync(Buffer.from([0x0a, 0x7f, 0x01, 0x02])), /cannot decode the protobuf message/],
      [
        writeRequest([
          good,
          {
            labels: [
              ['__name__', 'x'],
              ['bad-label', 'v'],
            ],
            samples: [[1, T0]],
          },
        ]),
        /bad-label/,
      ],
      [writeRequest([good, { labels: [['job', 'no name']], samples: [[1, T0]] }]), /no __name__ label/],
      [
        writeRequest([
          good,
          {
            labels: [
              ['__name__', 'x'],
              ['a', '1'],
              ['a', '2'],
            ],
            samples: [[1, T0]],
          },
        ]),
        /appears twice/,
      ],
      // The engine's own validation: a metric name Prometheus allows but V3 does not.
      [writeRequest([good, { labels: [['__name__', '9starts_with_digit']], samples: [[1, T0]] }]), /timeseries|series/],
    ]
    for (const [body, reason] of cases) {
      const res = await post(`${base}/api/v1/write`, body)
      assert.equal(res.status, 400, `${reason}: ${res.body.toString()}`)
      assert.match(res.body.toString(), reason)
    }
    assert.deepEqual(await server.client.listSeries({ metric: 'rw_bad_case' }), [])
  })

  test('a Remote-Write 2.0 message or another Content-Type answers 415, so the sender falls back; nothing is stored', async () => {
    const body = writeRequest([{ labels: [['__name__', 'rw_v2_case']], samples: [[5, T0]] }])
    for (const type of ['application/x-protobuf;proto=io.prometheus.write.v2.Request', 'application/json']) {
      const res = await post(`${base}/api/v1/write`, body, { 'content-encoding': 'snappy', 'content-type': type })
      assert.equal(res.status, 415, res.body.toString())
      assert.match(res.body.toString(), /send application\/x-protobuf \(proto=prometheus\.WriteRequest\)/)
    }
    assert.deepEqual(await server.client.listSeries({ metric: 'rw_v2_case' }), [])
    // The 1.0 message named explicitly is accepted, as is a type without the parameter.
    for (const type of ['application/x-protobuf; proto=prometheus.WriteRequest', 'application/x-protobuf']) {
      const res = await post(`${base}/api/v1/write`, body, { 'content-encoding': 'snappy', 'content-type': type })
      assert.equal(res.status, 204, res.body.toString())
    }
    assert.equal((await server.client.listSeries({ metric: 'rw_v2_case' })).length, 1)
  })

  test('a snappy block declaring more than --http-max-body-bytes answers 413', async () => {
    const res = await post(`${base}/api/v1/write`, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]))
    assert.equal(res.status, 413)
    assert.match(res.body.toString(), /declares 4294967295 bytes/)
    // A body refused by its length is read to its end first: the client gets the 413, not a reset
    // of a connection closed while it was still sending (about half the tries before).
    for (let i = 0; i < 20; i++) {
      const big = await post(`${base}/api/v1/write`, Buffer.alloc(2 * 1024 * 1024))
      assert.equal(big.status, 413)
      assert.match(big.body.toString(), /the body is 2097152 bytes, more than the limit of 1048576/)
    }
    // The same without a Content-Length (chunked): refused once past the limit, answered at its end.
    for (let i = 0; i < 5; i++) {
      const chunk = Buffer.alloc(256 * 1024)
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let k = 0; k < 8; k++) controller.enqueue(chunk)
          controller.close()
        },
      })
      const res = await fetch(`${base}/api/v1/write`, { method: 'POST', body, duplex: 'half' } as RequestInit)
      assert.equal(res.status, 413)
      assert.match(await res.text(), /more than the limit of 1048576 bytes/)
    }
  })

  test('remote read answers SAMPLES for an inclusive range, __name__ first, bits intact', async () => {
    await server.client.write([
      {
        metric: 'rr_temp',
        tags: { room: 'a', floor: '1' },
        timestamps: [T0, T0 + 1000, T0 + 2000],
        values: [20, 21, 22],
      },
      { metric: 'rr_temp', tags: { room: 'b', floor: '1' }, timestamps: [T0], values: [30] },
      { metric: 'rr_other', tags: { room: 'a' }, timestamps: [T0], values: [1] },
    ])
    await post(`${base}/api/v1/write`, writeRequest([{ labels: [['__name__', 'rr_stale']], samples: [['stale', T0]] }]))
    const res = await post(
      `${base}/api/v1/read`,
      readRequest(T0, T0 + 1000, [
        [0, '__name__', 'rr_temp'],
        [0, 'room', 'a'],
      ]),
    )
    assert.equal(res.status, 200, res.body.toString())
    assert.equal(res.headers.get('content-type'), 'application/x-protobuf')
    assert.equal(res.headers.get('content-encoding'), 'snappy')
    assert.deepEqual(readResponse(res.body), [
      {
        labels: ['__name__=rr_temp', 'floor=1', 'room=a'],
        samples: [
          [bitsOf(20), T0],
          [bitsOf(21), T0 + 1000],
        ],
      },
    ])
    // Without an equality on __name__: a regex over metric names.
    const byRegex = await post(`${base}/api/v1/read`, readRequest(T0, T0, [[2, '__name__', 'rr_(other|stale)']]))
    assert.equal(byRegex.status, 200, byRegex.body.toString())
    const found = readResponse(byRegex.body).sort((a, b) => a.labels[0]!.localeCompare(b.labels[0]!))
    assert.deepEqual(found, [
      { labels: ['__name__=rr_other', 'room=a'], samples: [[bitsOf(1), T0]] },
      { labels: ['__name__=rr_stale'], samples: [[STALE_BITS, T0]] },
    ])
    const backwards = await post(`${base}/api/v1/read`, readRequest(T0 + 5, T0, [[0, '__name__', 'rr_temp']]))
    assert.equal(backwards.status, 400)
    assert.match(
      backwards.body.toString(),
      new RegExp(`queries\\[0\\]\\.end_timestamp_ms: must not be before start_timestamp_ms \\(${T0 + 5}\\), got ${T0}`),
    )
    const chunksOnly = await post(`${base}/api/v1/read`, readRequest(T0, T0, [[0, '__name__', 'rr_temp']], [1]))
    assert.equal(chunksOnly.status, 400)
    assert.match(chunksOnly.body.toString(), /STREAMED_XOR_CHUNKS/)
  })

  test('remote read: the queries of one request share one budget of max_points_per_query points, and a request holds at most 1000 queries', async () => {
    // 60,000 points: a query of them is well within the default 5,000,000, a hundred of them are not.
    const n = 60_000
    await server.client.write([
      {
        metric: 'rr_many',
        tags: {},
        timestamps: Array.from({ length: n }, (_, i) => T0 + i),
        values: Array.from({ length: n }, (_, i) => i),
      },
    ])
    const query = (repeat: number) => readRequest(T0, T0 + n, [[0, '__name__', 'rr_many']], [0], repeat)
    const twice = await post(`${base}/api/v1/read`, query(2))
    assert.equal(twice.status, 200, twice.body.toString())
    assert.equal(readResponse(twice.body)[0]?.samples.length, n)
    const many = await post(`${base}/api/v1/read`, query(100))
    assert.equal(many.status, 400)
    assert.match(many.body.toString(), /cannot return more than 5000000 points to one read request/)
    assert.match(many.body.toString(), /max_points_per_query = 5000000/)
    const tooMany = await post(`${base}/api/v1/read`, readRequest(T0, T0, [[0, '__name__', 'rr_none']], [0], 1001))
    assert.equal(tooMany.status, 400)
    assert.match(tooMany.body.toString(), /at most 1000 queries, this one holds 1001/)
    // The server still answers.
    assert.equal((await post(`${base}/api/v1/read`, query(1))).status, 200)
  })

  test('line protocol round trip: v1 and v2 paths, precisions, gzip', async () => {
    const v1 = await post(
      `${base}/write?db=telegraf&precision=s`,
      'lp_cpu,host=a usage_user=1.5,count=3i,up=true 1704067200\n',
    )
    assert.equal(v1.status, 204, v1.body.toString())
    // Idle connections stay open past Prometheus' and Telegraf's send intervals.
    assert.equal(v1.headers.get('keep-alive'), 'timeout=65')
    const body = gzipSync('lp_cpu,host=a usage_user=2.5 1704067201000\r\nlp_cpu,host=b usage_user=7u 1704067201000\r\n')
    const v2 = await post(`${base}/api/v2/write?org=o&bucket=b&precision=ms`, body, { 'content-encoding': 'gzip' })
    assert.equal(v2.status, 204, v2.body.toString())
    const user = await server.client.query({
      selector: { metric: 'lp_cpu_usage_user' },
      startMs: T0,
      endMs: T0 + 10_000,
    })
    assert.deepEqual(
      user.map((s) => [
        s.tags.map((t) => `${t.key}=${t.value}`).join(','),
        Array.from(s.timestamps),
        Array.from(s.values),
      ]),
      [
        ['host=a', [T0, T0 + 1000], [1.5, 2.5]],
        ['host=b', [T0 + 1000], [7]],
      ],
    )
    const [count] = await server.client.query({ selector: { metric: 'lp_cpu_count' }, startMs: T0, endMs: T0 + 1 })
    assert.deepEqual(Array.from(count?.values ?? []), [3])
    const [up] = await server.client.query({ selector: { metric: 'lp_cpu_up' }, startMs: T0, endMs: T0 + 1 })
    assert.deepEqual(Array.from(up?.values ?? []), [1])
    const metrics = await (await fetch(`${base}/metrics`)).text()
    assert.match(metrics, /^v3_http_samples_ingested_total\{protocol="influx_line_protocol"\} 5$/m)
  })

  test('a bad line answers 400 naming the line, and nothing of its request is stored', async () => {
    const string = await post(
      `${base}/write`,
      'lp_bad,host=a v=1 1704067200000000000\nlp_bad,host=a msg="hello" 1704067200000000000\n',
    )
    assert.equal(string.status, 400)
    assert.match(JSON.parse(string.body.toString()).error, /line 2: field "msg" is a string/)
    // A line the parser takes but the engine refuses (the metric name) is named by its line too.
    const engine = await post(`${base}/write`, 'lp_bad,host=a v=1 1704067200000000000\nlp-bad!,host=a v=1\n')
    assert.equal(engine.status, 400)
    assert.match(JSON.parse(engine.body.toString()).message, /line 2: metric must match/)
    const precision = await post(`${base}/api/v2/write?precision=m`, 'lp_bad v=1 1\n')
    assert.equal(precision.status, 400)
    assert.match(precision.body.toString(), /precision must be one of ns, us, ms, s/)
    assert.deepEqual(await server.client.listSeries({ metric: 'lp_bad_v' }), [])
  })

  test('bodies large enough for the ingest worker: stored whole, staleness bits kept, bad lines named alike', async () => {
    const lines = (metric: string, n: number) =>
      Array.from({ length: n }, (_, i) => `${metric},host=h${i % 50} v=${i * 1.25},n=${i}i ${T0 + i}000000`)
    const good = lines('lpw_big', 400)
    assert.ok(Buffer.byteLength(good.join('\n')) > WORKER_MIN_BODY_BYTES)
    const plain = await post(`${base}/write`, good.join('\n'))
    assert.equal(plain.status, 204, plain.body.toString())
    const zipped = gzipSync(lines('lpw_zip', 3000).join('\n'))
    assert.ok(zipped.length > WORKER_MIN_BODY_BYTES)
    const gz = await post(`${base}/api/v2/write`, zipped, { 'content-encoding': 'gzip' })
    assert.equal(gz.status, 204, gz.body.toString())
    const stored = await server.client.query({ selector: { metric: 'lpw_big_v' }, startMs: T0, endMs: T0 + 1000 })
    assert.equal(stored.length, 50)
    assert.equal(
      stored.reduce((n, s) => n + s.timestamps.length, 0),
      400,
    )
    const host7 = stored.find((s) => s.tags[0]?.value === 'h7')
    assert.deepEqual(Array.from(host7?.values ?? []).slice(0, 2), [7 * 1.25, 57 * 1.25])
    const zipCount = await server.client.query({ selector: { metric: 'lpw_zip_n' }, startMs: T0, endMs: T0 + 3000 })
    assert.equal(
      zipCount.reduce((n, s) => n + s.timestamps.length, 0),
      3000,
    )

    // The same refusals as for a small body: the parser's and the engine's, named by their line.
    const parserBad = [...lines('lpw_bad', 400)]
    parserBad[249] = 'lpw_bad,host=a msg="hello"'
    const refused = await post(`${base}/write`, parserBad.join('\n'))
    assert.equal(refused.status, 400)
    assert.match(JSON.parse(refused.body.toString()).error, /^invalid line 250: field "msg" is a string/)
    const engineBad = [...lines('lpw_bad', 400)]
    engineBad[299] = 'lpw-bad!,host=a v=1'
    const engineRefused = await post(`${base}/write`, engineBad.join('\n'))
    assert.equal(engineRefused.status, 400)
    assert.match(JSON.parse(engineRefused.body.toString()).message, /line 300: metric must match/)
    assert.deepEqual(await server.client.listSeries({ metric: 'lpw_bad_v' }), [])
  })

  for (const inWorker of [false, true]) {
    test(`remote-write bodies decoded ${inWorker ? 'in the ingest worker' : 'in place'}: merged, sorted, last write winning, staleness bits kept, refusals named by the body's entry`, async () => {
      await remoteWriteChecks(base, server, inWorker ? 'rwbig' : 'rwsmall', inWorker)
    })
  }

  test('the query API: GET and POST with a form body, JSON, Prometheus errors, buildinfo', async () => {
    await server.client.write([
      { metric: 'qa_load', tags: { host: 'a' }, timestamps: [T0, T0 + 60_000], values: [1, 2] },
    ])
    const at = (T0 + 60_000) / 1000
    const get = await fetch(`${base}/api/v1/query?query=${encodeURIComponent('qa_load{host="a"}')}&time=${at}`)
    assert.equal(get.status, 200)
    assert.equal(get.headers.get('content-type'), 'application/json')
    assert.deepEqual(await get.json(), {
      status: 'success',
      data: { resultType: 'vector', result: [{ metric: { __name__: 'qa_load', host: 'a' }, value: [at, '2'] }] },
    })
    // A form body merged with the query string, as Grafana sends it.
    const form = await post(`${base}/api/v1/query_range?step=60`, `query=qa_load&start=${T0 / 1000}&end=${at}`, {
      'content-type': 'application/x-www-form-urlencoded',
    })
    assert.equal(form.status, 200, form.body.toString())
    const range = JSON.parse(form.body.toString())
    assert.deepEqual(range.data.result[0].values, [
      [T0 / 1000, '1'],
      [at, '2'],
    ])
    // A parameter in both the body and the query string: the body's counts, as in Prometheus.
    const both = await post(`${base}/api/v1/query?query=qa_load`, `query=${encodeURIComponent('sum(')}`, {
      'content-type': 'application/x-www-form-urlencoded',
    })
    assert.equal(both.status, 400, both.body.toString())
    const bad = await fetch(`${base}/api/v1/query?query=${encodeURIComponent('sum(')}`)
    assert.equal(bad.status, 400)
    assert.equal(((await bad.json()) as { errorType: string }).errorType, 'bad_data')
    const build = await fetch(`${base}/api/v1/status/buildinfo`)
    assert.equal(build.status, 200)
    assert.match(((await build.json()) as { data: { version: string } }).data.version, /^\d+\.\d+\.\d+/)
    const unknown = await fetch(`${base}/api/v1/nothing_here`)
    assert.equal(unknown.status, 404)
    assert.equal(((await unknown.json()) as { errorType: string }).errorType, 'not_found')
    await fetch(`${base}/api/v1/label/job/values`)
    const metrics = await (await fetch(`${base}/metrics`)).text()
    assert.match(metrics, /^v3_http_requests_total\{path="\/api\/v1\/query",code="400"\} 2$/m)
    assert.match(metrics, /^v3_http_requests_total\{path="\/api\/v1\/label\/:name\/values",code="200"\} 1$/m)
    assert.doesNotMatch(metrics, /nothing_here/)
    const del = await fetch(`${base}/api/v1/query`, { method: 'DELETE' })
    assert.equal(del.status, 405)
    assert.equal(del.headers.get('allow'), 'GET, POST')
  })

  test("tag keys with '.', '-' or ':' are selected and grouped with Prometheus 3's quoted names", async () => {
    const lines = [
      'qn_mem,docker.image=nginx,k8s-pod=web-1 used=10 1704067200',
      'qn_mem,docker.image=nginx,k8s-pod=web-2 used=20 1704067200',
      'qn_mem,docker.image=redis,k8s-pod=cache-1 used=40 1704067200',
    ]
    const wrote = await post(`${base}/write?precision=s`, `${lines.join('\n')}\n`)
    assert.equal(wrote.status, 204, wrote.body.toString())
    const at = T0 / 1000 + 1
    const ask = async (query: string) => {
      const r = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(query)}&time=${at}`)
      const body = (await r.json()) as {
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> }
      }
      assert.equal(r.status, 200, JSON.stringify(body))
      return body.data.result.map((x) => [x.metric, x.value[1]])
    }
    assert.deepEqual(await ask('{"qn_mem_used", "docker.image"="nginx", "k8s-pod"=~"web-2"}'), [
      [{ __name__: 'qn_mem_used', 'docker.image': 'nginx', 'k8s-pod': 'web-2' }, '20'],
    ])
    assert.deepEqual(await ask('sum by ("docker.image") (qn_mem_used)'), [
      [{ 'docker.image': 'nginx' }, '30'],
      [{ 'docker.image': 'redis' }, '40'],
    ])
    // With Prometheus' own first and last times for "all time", as its clients send them.
    const all = 'start=-292273086-05-16T16:47:06Z&end=292277025-08-18T07:12:54.999999999Z'
    const series = await fetch(`${base}/api/v1/series?match[]=${encodeURIComponent('{"docker.image"="redis"}')}&${all}`)
    const listed = (await series.json()) as { data: unknown }
    assert.equal(series.status, 200, JSON.stringify(listed))
    assert.deepEqual(listed.data, [{ __name__: 'qn_mem_used', 'docker.image': 'redis', 'k8s-pod': 'cache-1' }])
  })

  test('a line protocol body that inflates past the limit answers 413; a wrong method 405 with Allow', async () => {
    const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20))
    const res = await post(`${base}/write`, bomb, { 'content-encoding': 'gzip' })
    assert.equal(res.status, 413)
    assert.match(res.body.toString(), /inflates to more than the limit of 1048576 bytes/)
    const get = await fetch(`${base}/api/v1/write`)
    assert.equal(get.status, 405)
    assert.equal(get.headers.get('allow'), 'POST')
    const postMetrics = await post(`${base}/metrics`, '')
    assert.equal(postMetrics.status, 405)
    assert.equal(postMetrics.headers.get('allow'), 'GET, HEAD')
    const br = await post(`${base}/write`, 'x', { 'content-encoding': 'br' })
    assert.equal(br.status, 415)
  })
})

describe('writes wait their turn behind --http-max-concurrent-writes', () => {
  let server: ServerProcess
  let base: string
  before(async () => {
    server = await startServerProcess({
      args: ['--http-max-concurrent-writes', '1', '--http-write-queue-timeout', '3s'],
    })
    base = baseOf(server)
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  /** The value of a gauge on the server's /metrics. */
  async function gauge(name: string): Promise<number> {
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${base}/metrics`)).text())
    return Number(m?.[1])
  }

  /**
   * A line-protocol write that sends half its body and holds its slot until finish() sends the
   * rest; `answer` is its status and body.
   */
  function halfSent(line: string): { finish: () => void; answer: Promise<{ status: number; body: string }> } {
    const body = Buffer.from(line)
    const req = httpRequest(`${base}/write?precision=ms`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'content-length': String(body.length) },
    })
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.once('response', (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
      })
      req.once('error', reject)
    })
    req.write(body.subarray(0, 10))
    return { finish: () => req.end(body.subarray(10)), answer }
  }

  async function points(metric: string): Promise<number> {
    const series = await server.client.query({ selector: { metric }, startMs: T0, endMs: T0 + 60_000 })
    return series.reduce((n, x) => n + x.timestamps.length, 0)
  }

  test('a write waits while the slot is taken and goes in when it frees; past the timeout it gets 503 and stores nothing', async () => {
    const first = halfSent(`gate_a,host=h v=1 ${T0}\n`)
    await waitFor('the first write to take the slot', async () => (await gauge('v3_http_writes_in_progress')) === 1)
    // A second write waits for the slot, and is served once the first finishes.
    const second = post(`${base}/write?precision=ms`, `gate_b,host=h v=2 ${T0}\n`)
    await waitFor('the second write to wait', async () => (await gauge('v3_http_writes_waiting')) === 1)
    first.finish()
    assert.equal((await first.answer).status, 204)
    assert.equal((await second).status, 204)
    assert.deepEqual([await points('gate_a_v'), await points('gate_b_v')], [1, 1])

    // A write that waits longer than --http-write-queue-timeout is refused, and retried it goes in.
    const holder = halfSent(`gate_a,host=h v=3 ${T0 + 1000}\n`)
    await waitFor('the slot to be taken again', async () => (await gauge('v3_http_writes_in_progress')) === 1)
    const refused = await post(`${base}/write?precision=ms`, `gate_c,host=h v=4 ${T0}\n`)
    assert.equal(refused.status, 503)
    assert.equal(refused.headers.get('retry-after'), '1')
    assert.match(
      refused.body.toString(),
      /the server is busy: all 1 write slots \(--http-max-concurrent-writes\) stayed taken while this write waited 3000 ms/,
    )
    assert.equal(await points('gate_c_v'), 0, 'the refused write stored nothing')
    assert.equal(await gauge('v3_http_writes_waiting'), 0)
    holder.finish()
    assert.equal((await holder.answer).status, 204)
    assert.equal((await post(`${base}/write?precision=ms`, `gate_c,host=h v=4 ${T0}\n`)).status, 204)
    assert.deepEqual([await points('gate_a_v'), await points('gate_c_v')], [2, 1])
    const metrics = await (await fetch(`${base}/metrics`)).text()
    assert.match(metrics, /^v3_http_requests_total\{path="\/write",code="503"\} 1$/m)
    assert.equal(await gauge('v3_http_writes_in_progress'), 0)
  })

  test('a waiting write whose client goes away leaves the queue', async () => {
    const holder = halfSent(`gate_d,host=h v=1 ${T0}\n`)
    await waitFor('the slot to be taken', async () => (await gauge('v3_http_writes_in_progress')) === 1)
    const client = new AbortController()
    const gone = fetch(`${base}/write?precision=ms`, {
      method: 'POST',
      body: `gate_e,host=h v=1 ${T0}\n`,
      signal: client.signal,
    })
    await waitFor('the second write to wait', async () => (await gauge('v3_http_writes_waiting')) === 1)
    client.abort()
    await assert.rejects(gone)
    await waitFor('the queue to be empty', async () => (await gauge('v3_http_writes_waiting')) === 0)
    holder.finish()
    assert.equal((await holder.answer).status, 204)
    assert.deepEqual([await points('gate_d_v'), await points('gate_e_v')], [1, 0])
  })
})

describe('tokens, TLS and exposure on the HTTP listener', () => {
  const TOKENS = { read: 'r3ad-http-1', write: 'wr1te-http-2' }
  let scratch: string
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'v3-http-'))
  })
  after(async () => {
    await rm(scratch, { recursive: true, force: true })
  })

  test('write endpoints need write, read endpoints read; 401 with a challenge, 403 for a weak role', async () => {
    const file = join(scratch, 'tokens')
    await writeFile(file, `read:${TOKENS.read}\nwrite:${TOKENS.write}\n`, { mode: 0o600 })
    const server = await startServerProcess({ args: ['--tokens-file', file], client: { token: TOKENS.read } })
    try {
      const base = baseOf(server)
      const lp = 'auth_m,host=a v=1 1704067200000000000\n'
      const none = await post(`${base}/write`, lp)
      assert.equal(none.status, 401)
      assert.equal(JSON.parse(none.body.toString()).code, 'unauthorized')
      assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/)
      const unknown = await post(`${base}/write`, lp, { authorization: 'Bearer nope' })
      assert.equal(unknown.status, 401)
      const weak = await post(`${base}/write`, lp, { authorization: `Bearer ${TOKENS.read}` })
      assert.equal(weak.status, 403)
      assert.equal(JSON.parse(weak.body.toString()).code, 'forbidden')
      assert.match(JSON.parse(weak.body.toString()).message, /needs the write role; this token has read/)
      const rwWeak = await post(`${base}/api/v1/write`, writeRequest([]), { authorization: `Bearer ${TOKENS.read}` })
      assert.equal(rwWeak.status, 403)
      // InfluxDB v2 clients send "Token <t>".
      const v2 = await post(`${base}/api/v2/write`, lp, { authorization: `Token ${TOKENS.write}` })
      assert.equal(v2.status, 204, v2.body.toString())
      const readNone = await post(`${base}/api/v1/read`, readRequest(T0, T0, [[0, '__name__', 'auth_m_v']]))
      assert.equal(readNone.status, 401)
      // write outranks read, as on gRPC.
      const read = await post(`${base}/api/v1/read`, readRequest(T0, T0, [[0, '__name__', 'auth_m_v']]), {
        authorization: `Bearer ${TOKENS.write}`,
      })
      assert.equal(read.status, 200)
      assert.equal(readResponse(read.body).length, 1)
      const queryNone = await fetch(`${base}/api/v1/labels`)
      assert.equal(queryNone.status, 401)
      assert.equal(((await queryNone.json()) as { status: string }).status, 'error')
      const query = await fetch(`${base}/api/v1/labels`, { headers: { authorization: `Bearer ${TOKENS.read}` } })
      assert.equal(query.status, 200)
      // Monitoring stays open.
      assert.equal((await fetch(`${base}/metrics`)).status, 200)
      assert.equal((await fetch(`${base}/readyz`)).status, 200)
    } finally {
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  const skipTls = opensslMissing()
  test('with --tls-cert the listener serves HTTPS with the same certificate', { skip: skipTls }, async () => {
    const certs: TestCertificates = await makeTestCertificates()
    const server = await startServerProcess({
      args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
      client: { tls: { caFile: certs.caFile } },
    })
    try {
      assert.match(server.metricsUrl ?? '', /^https:\/\/127\.0\.0\.1:\d+\/metrics$/)
      const url = new URL(`${baseOf(server)}/write?precision=s`)
      const ca = await readFile(certs.caFile)
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest(url, { method: 'POST', ca }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        req.on('error', reject)
        req.end('tls_m v=1 1704067200\n')
      })
      assert.equal(status, 204)
      assert.equal((await server.client.listSeries({ metric: 'tls_m_v' })).length, 1)
      // Plain HTTP on the TLS port gets no answer of ours.
      await assert.rejects(fetch(`http://${url.host}/metrics`))
    } finally {
      await server.stop()
      await removeDataDir(server.dataDir)
      await certs.remove()
    }
  })

  test('with --tls-client-ca the listener requires a client certificate the CA signed', { skip: skipTls }, async () => {
    const certs: TestCertificates = await makeTestCertificates()
    const server = await startServerProcess({
      args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-client-ca', certs.caFile],
      client: { tls: { caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey } },
    })
    try {
      const url = new URL(`${baseOf(server)}/healthz`)
      const ca = await readFile(certs.caFile)
      const get = (extra: { cert?: Buffer; key?: Buffer }) =>
        new Promise<number>((resolve, reject) => {
          const req = httpsRequest(url, { ca, ...extra }, (res) => {
            res.resume()
            res.on('end', () => resolve(res.statusCode ?? 0))
          })
          req.on('error', reject)
          req.end()
        })
      assert.equal(await get({ cert: await readFile(certs.clientCert), key: await readFile(certs.clientKey) }), 200)
      await assert.rejects(get({}))
      await assert.rejects(get({ cert: await readFile(certs.strangerCert), key: await readFile(certs.strangerKey) }))
    } finally {
      await server.stop()
      await removeDataDir(server.dataDir)
      await certs.remove()
    }
  })

  test('a non-loopback --http-listen without TLS and tokens refuses to start; --insecure serves it with a warning', async () => {
    await assert.rejects(startServerProcess({ args: ['--http-listen', '0.0.0.0:0'] }), (err: Error) => {
      assert.match(
        err.message,
        /refusing to serve 0\.0\.0\.0:0 without TLS \(--tls-cert and --tls-key\) and bearer tokens/,
      )
      assert.match(err.message, /--insecure/)
      return true
    })
    const server = await startServerProcess({ args: ['--http-listen', '0.0.0.0:0', '--insecure'] })
    try {
      assert.match(server.stderr(), /HTTP: serving 0\.0\.0\.0:0 without TLS .* because --insecure was given/)
      const port = new URL(server.metricsUrl ?? '').port
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200)
    } finally {
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })
})

describe('the query API route in process', () => {
  test('a client that disconnects aborts the signal its query was given', { timeout: 30_000 }, async () => {
    const engine = new MemoryEngine()
    await engine.open()
    let sawAbort: () => void = () => {}
    const aborted = new Promise<void>((resolve) => {
      sawAbort = resolve
    })
    let started: () => void = () => {}
    const running = new Promise<void>((resolve) => {
      started = resolve
    })
    const http = await startHttpEndpoint(
      { listen: '127.0.0.1:0', logger: console },
      {
        metrics: createServerMetrics(engine, { processMetrics: false }),
        ready: () => true,
        engine,
        maxReadPoints: 1000,
        queryApi: {
          handle: (path, params, signal) => {
            assert.equal(path, '/api/v1/query')
            assert.equal(params.get('query'), 'up')
            started()
            return new Promise((resolve) => {
              signal.addEventListener('abort', () => {
                sawAbort()
                resolve({ status: 503, body: '{}' })
              })
            })
          },
        },
      },
    )
    try {
      const client = new AbortController()
      const request = fetch(`http://${http.address}/api/v1/query?query=up`, { signal: client.signal })
      await running
      client.abort()
      await assert.rejects(request)
      await aborted
    } finally {
      await http.close()
      await engine.close()
    }
  })
})

describe('write bodies that stall or are cut short, in process', () => {
  test('a body that stops coming is answered 408 and frees its slot; a sender that goes away counts as 499, not as a server error', {
    timeout: 30_000,
  }, async () => {
    const engine = new MemoryEngine()
    await engine.open()
    const errors: string[] = []
    const metrics = createServerMetrics(engine, { processMetrics: false })
    const http = await startHttpEndpoint(
      {
        listen: '127.0.0.1:0',
        logger: { warn: () => {}, error: (_obj, msg) => errors.push(msg ?? '') },
        bodyIdleTimeoutMs: 300,
        maxConcurrentWrites: 1,
      },
      { metrics, ready: () => true, engine, maxReadPoints: 1000 },
    )
    const [host, port] = [http.address.slice(0, http.address.lastIndexOf(':')), Number(http.address.split(':').pop())]
    /** A raw connection that sends the headers of a 1,000-byte line-protocol body and 10 bytes of it. */
    const partial = async (): Promise<Socket> => {
      const socket = createConnection({ host, port })
      await once(socket, 'connect')
      socket.write('POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nm v=1 1000')
      return socket
    }
    const counted = async (code: number): Promise<boolean> =>
      new RegExp(`^v3_http_requests_total\\{path="/write",code="${code}"\\} 1$`, 'm').test(await metrics.render())
    try {
      const stalled = await partial()
      let answer = ''
      stalled.on('data', (chunk: Buffer) => {
        answer += chunk.toString()
      })
      await once(stalled, 'close')
      assert.match(answer, /^HTTP\/1\.1 408 /)
      assert.match(answer, /no byte of the body came for 0\.3 s/)
      // The one write slot is free again: a whole write goes through.
      const whole = await fetch(`http://${http.address}/write`, { method: 'POST', body: 'm v=2 2000' })
      assert.equal(whole.status, 204)
      const gone = await partial()
      await waitFor('the body to be read', async () => /v3_http_writes_in_progress 1$/m.test(await metrics.render()))
      gone.destroy()
      await waitFor('the cut-short request to be counted', () => counted(499))
      assert.ok(await counted(408))
      assert.deepEqual(errors, [], 'neither is logged as an error')
    } finally {
      await http.close()
    }
  })
})
