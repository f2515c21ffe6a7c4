// End to end: `v3 serve` as a real process on a free loopback port, driven through the client and
// through plain generated clients where a test needs to send what the typed client never would.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { BinaryWriter } from '@bufbuild/protobuf/wire'
import { type Client, credentials, makeGenericClientConstructor, type ServiceError, status } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { service as healthService } from 'grpc-health-check'
import { AggFunc, Consistency, MatchOp } from '../../gen/v3storage/v1/common.js'
import { type QueryRequest, type QueryResponse, QueryServiceClient } from '../../gen/v3storage/v1/query_service.js'
import { IngestResponse } from '../../gen/v3storage/v1/stream_service.js'
import {
  BatchingWriter,
  type ConsistencyLevel,
  mergeChunks,
  type V3Client,
  V3ClientError,
} from '../../src/client/index.js'
import type { SeriesPoints } from '../../src/model/types.js'
import {
  encodeIngest,
  encodeQuery,
  encodeSelectorRequest,
  encodeWrite,
  type RpcKind,
  rawCall,
  rawClient,
} from './fuzz-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2024, 0, 1)

async function rejectsWith(promise: Promise<unknown>, code: status): Promise<V3ClientError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof V3ClientError, `expected V3ClientError, got ${String(err)}`)
    assert.equal(err.codeName, status[code], err.message)
    return err
  }
  assert.fail(`expected ${status[code]}, the call succeeded`)
}

function callError(run: (cb: (err: ServiceError | null) => void) => void): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    run((err) => (err ? resolve(err) : reject(new Error('the call succeeded'))))
  })
}

describe('v3 serve', () => {
  let server: ServerProcess
  let client: V3Client
  const raw: Client[] = []

  before(async () => {
    server = await startServerProcess()
    client = server.client
  })

  after(async () => {
    for (const c of raw) c.close()
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    await removeDataDir(server.dataDir)
  })

  test('write then query returns the points, raw and aggregated', async () => {
    const timestamps = [T0 + 20_000, T0, T0 + 10_000, T0 + 40_000]
    const result = await client.write([
      { metric: 'rt_cpu', tags: { host: 'a', region: 'eu' }, timestamps, values: [3, 1, 2, 4] },
      { metric: 'rt_cpu', tags: [{ key: 'host', value: 'b' }], timestamps: [T0], values: [10] },
    ])
    assert.deepEqual(result, { pointsWritten: 5, seriesWritten: 2 })

    const raw = await client.query({
      selector: { metric: 'rt_cpu', matchers: [{ key: 'host', value: 'a', op: 'eq' }] },
      startMs: T0,
      endMs: T0 + 60_000,
    })
    assert.equal(raw.length, 1)
    assert.deepEqual(raw[0]?.tags, [
      { key: 'host', value: 'a' },
      { key: 'region', value: 'eu' },
    ])
    assert.deepEqual([...(raw[0]?.timestamps ?? [])], [T0, T0 + 10_000, T0 + 20_000, T0 + 40_000])
    assert.deepEqual([...(raw[0]?.values ?? [])], [1, 2, 3, 4])

    const sums = await client.query({
      selector: { metric: 'rt_cpu' },
      startMs: T0,
      endMs: T0 + 60_000,
      aggregation: { func: 'sum', stepMs: 30_000, mergeSeries: true },
    })
    assert.equal(sums.length, 1)
    assert.deepEqual([...(sums[0]?.timestamps ?? [])], [T0, T0 + 30_000])
    assert.deepEqual([...(sums[0]?.values ?? [])], [16, 4])

    const latest = await client.latest({ metric: 'rt_cpu', matchers: [{ key: 'host', value: 'a', op: 'eq' }] })
    assert.deepEqual([...(latest[0]?.timestamps ?? [])], [T0 + 40_000])

    const refs = await client.listSeries({ metric: 'rt_cpu' })
    assert.equal(refs.length, 2)
  })

  test('one Query and one QueryStream answer several metrics through additional selectors', async () => {
    await client.write([
      { metric: 'rt_user', tags: { host: 'a' }, timestamps: [T0, T0 + 70_000], values: [1, 2] },
      { metric: 'rt_system', tags: { host: 'a' }, timestamps: [T0, T0 + 10_000], values: [5, 3] },
      { metric: 'rt_system', tags: { host: 'b' }, timestamps: [T0], values: [9] },
    ])
    const request = {
      selector: { metric: 'rt_user' },
      additionalSelectors: [{ metric: 'rt_system', matchers: [{ key: 'host', value: 'a', op: 'eq' as const }] }],
      startMs: T0,
      endMs: T0 + 120_000,
      aggregation: { func: 'max' as const, stepMs: 60_000 },
    }
    const shape = (series: SeriesPoints[]) =>
      series.map((s) => [s.metric, s.tags.map((t) => t.value).join(), [...s.timestamps], [...s.values]])
    const want = [
      ['rt_user', 'a', [T0, T0 + 60_000], [1, 2]],
      ['rt_system', 'a', [T0], [5]],
    ]
    assert.deepEqual(shape(await client.query(request)), want)
    const streamed: SeriesPoints[] = []
    for await (const chunk of client.queryStream(request)) streamed.push(...chunk)
    assert.deepEqual(shape(streamed), want)
  })

  test('nanosecond timestamps beyond 2^53 keep their value', async () => {
    const ns = BigInt(T0) * 1_000_000n + 999_999n
    await client.write([{ metric: 'rt_ns', timestamps: [ns], values: [7] }], { precision: 'ns' })
    const got = await client.query({ selector: { metric: 'rt_ns' }, startMs: T0, endMs: T0 + 1 })
    assert.deepEqual([...(got[0]?.timestamps ?? [])], [T0])
  })

  test('INVALID_ARGUMENT names the series and field, and the rejected request stores nothing', async () => {
    const err = await rejectsWith(
      client.write([
        { metric: 'rt_rejected', tags: { host: 'ok' }, timestamps: [T0], values: [1] },
        { metric: 'rt_rejected', tags: [{ key: '9bad', value: 'x' }], timestamps: [T0], values: [1] },
      ]),
      status.INVALID_ARGUMENT,
    )
    assert.match(err.details, /series\[1\]\.tags\[0\]\.key/)
    assert.ok(err.violations.some((v) => v.field === 'series[1].tags[0].key'))
    assert.deepEqual(await client.listSeries({ metric: 'rt_rejected' }), [])
  })

  test('INVALID_ARGUMENT for unequal counts names the field', async () => {
    const err = await rejectsWith(
      client.write([{ metric: 'rt_bad', timestamps: [T0, T0 + 1], values: [1] }]),
      status.INVALID_ARGUMENT,
    )
    assert.match(err.details, /series\[0\]\.values/)
  })

  test('INVALID_ARGUMENT for an empty metric, an unset op, an unset function and an empty range', async () => {
    const err1 = await rejectsWith(
      client.query({ selector: { metric: '' }, startMs: 0, endMs: 1 }),
      status.INVALID_ARGUMENT,
    )
    assert.ok(err1.violations.some((v) => v.field === 'selector.metric'))

    const err2 = await rejectsWith(
      client.query({ selector: { metric: 'x' }, startMs: 5, endMs: 5 }),
      status.INVALID_ARGUMENT,
    )
    assert.ok(err2.violations.some((v) => v.field === 'end_ms'))

    // The typed client cannot send an unset enum; the generated client can.
    const query = new QueryServiceClient(server.address, credentials.createInsecure())
    raw.push(query)
    const ask = (req: Omit<QueryRequest, 'consistency'>) =>
      callError((cb) =>
        query.query(
          { ...req, consistency: Consistency.CONSISTENCY_UNSPECIFIED },
          (err: ServiceError | null, _res: QueryResponse) => cb(err),
        ),
      )
    const err3 = await ask({
      selector: {
        metric: 'x',
        matchers: [
          { key: 'a', value: 'b', op: MatchOp.MATCH_OP_EQ },
          { key: 'c', value: 'd', op: MatchOp.MATCH_OP_UNSPECIFIED },
        ],
      },
      additionalSelectors: [],
      startMs: 0,
      endMs: 1,
    })
    assert.equal(err3.code, status.INVALID_ARGUMENT)
    assert.match(err3.details, /selector\.matchers\[1\]\.op/)
    const err4 = await ask({
      selector: { metric: 'x', matchers: [] },
      additionalSelectors: [],
      startMs: 0,
      endMs: 1,
      aggregation: { func: AggFunc.AGG_FUNC_UNSPECIFIED, stepMs: 0, groupBy: [], mergeSeries: false },
    })
    assert.equal(err4.code, status.INVALID_ARGUMENT)
    assert.match(err4.details, /aggregation\.func/)

    // Each additional selector is checked as the selector is, and named by its index.
    const sel = (metric: string) => ({ metric, matchers: [] })
    const err5 = await ask({
      selector: sel('x'),
      additionalSelectors: [
        sel('y'),
        { metric: 'z', matchers: [{ key: 'k', value: 'v', op: MatchOp.MATCH_OP_UNSPECIFIED }] },
      ],
      startMs: 0,
      endMs: 1,
    })
    assert.equal(err5.code, status.INVALID_ARGUMENT)
    assert.match(err5.details, /additional_selectors\[1\]\.matchers\[0\]\.op/)
    const err6 = await rejectsWith(
      client.query({
        selector: { metric: 'x' },
        additionalSelectors: [{ metric: 'y', matchers: [{ key: 'k', value: '(', op: 'regex' }] }],
        startMs: 0,
        endMs: 1,
      }),
      status.INVALID_ARGUMENT,
    )
    assert.deepEqual(
      err6.violations.map((v) => v.field),
      ['additional_selectors[0].matchers[0].value'],
    )
    const err7 = await rejectsWith(
      client.query({
        selector: sel('x'),
        additionalSelectors: Array.from({ length: 101 }, () => sel('y')),
        startMs: 0,
        endMs: 1,
      }),
      status.RESOURCE_EXHAUSTED,
    )
    assert.match(err7.message, /max_additional_selectors = 100/)
  })

  test('a single node accepts every consistency level, on every write and read, and answers the same', async () => {
    const levels: readonly (ConsistencyLevel | undefined)[] = [undefined, 'one', 'quorum', 'all']
    const point = (host: string, i: number) => [
      { metric: 'cl_cpu', tags: { host }, timestamps: [T0 + i * 1000], values: [i] },
    ]
    for (const [i, consistency] of levels.entries()) {
      assert.deepEqual(await client.write(point(`w${i}`, i), { consistency }), { pointsWritten: 1, seriesWritten: 1 })
      const stream = client.writeStream({ consistency })
      await stream.write(point(`s${i}`, i))
      assert.deepEqual(await stream.end(), { pointsWritten: 1, seriesWritten: 1 })
      const writer = new BatchingWriter(server.address, { consistency })
      writer.write('cl_cpu', { host: `b${i}` }, T0 + i * 1000, i)
      await writer.close()
    }
    const selector = { metric: 'cl_cpu' }
    const query = { selector, startMs: T0, endMs: T0 + 60_000 }
    const plain = (series: SeriesPoints[]) =>
      series.map((s) => ({ tags: s.tags, timestamps: [...s.timestamps], values: [...s.values] }))
    const answers = async (consistency: ConsistencyLevel | undefined) => ({
      query: plain(await client.query(query, { consistency })),
      queryStream: plain(await mergeChunks(client.queryStream(query, { consistency }))),
      latest: plain(await client.latest(selector, { consistency })),
      listSeries: await client.listSeries(selector, { consistency }),
    })
    const unspecified = await answers(undefined)
    // Every write above was stored: three ways to write at four levels.
    assert.equal(unspecified.listSeries.length, 12)
    assert.deepEqual(
      unspecified.query.map((s) => `${s.tags[0]?.value}=${s.values[0]}@${s.timestamps[0]}`).sort(),
      ['b', 's', 'w'].flatMap((way) => levels.map((_, i) => `${way}${i}=${i}@${T0 + i * 1000}`)).sort(),
    )
    for (const consistency of levels) assert.deepEqual(await answers(consistency), unspecified, String(consistency))
  })

  test('an unknown consistency is INVALID_ARGUMENT naming consistency, on every call, and stores nothing', async () => {
    const conn = rawClient(server.address)
    raw.push(conn)
    /** The field `number` as a varint enum; -1 takes ten bytes, as int32 does on the wire. */
    const field = (number: number, value: number) =>
      Buffer.from(
        new BinaryWriter()
          .uint32(number << 3)
          .int32(value)
          .finish(),
      )
    const series = [{ metric: 'cl_bad', timestamps: [T0], values: [1] }]
    const query = encodeQuery({ selector: { metric: 'cl_cpu' }, startMs: T0, endMs: T0 + 60_000 })
    const selector = encodeSelectorRequest({ metric: 'cl_cpu' })
    for (const value of [4, 7, -1]) {
      const write = Buffer.concat([encodeWrite(series), field(3, value)])
      const cases: [string, RpcKind, Buffer][] = [
        ['/v3storage.v1.WriteService/Write', 'unary', write],
        ['/v3storage.v1.WriteService/WriteStream', 'client', write],
        ['/v3storage.v1.QueryService/Query', 'unary', Buffer.concat([query, field(7, value)])],
        ['/v3storage.v1.QueryService/QueryStream', 'server', Buffer.concat([query, field(7, value)])],
        ['/v3storage.v1.QueryService/Latest', 'unary', Buffer.concat([selector, field(2, value)])],
        ['/v3storage.v1.QueryService/ListSeries', 'unary', Buffer.concat([selector, field(2, value)])],
      ]
      for (const [path, kind, bytes] of cases) {
        const r = await rawCall(conn, path, kind, [bytes], { timeoutMs: 10_000 })
        assert.equal(status[r.code], 'INVALID_ARGUMENT', `${path} with ${value}: ${r.details}`)
        assert.match(r.details, /(^|\.)consistency: unknown consistency/, `${path} with ${value}`)
        assert.equal(r.responses.length, 0, path)
      }
      // Ingest rejects the message by its sequence and goes on.
      const ingest = await rawCall(conn, '/v3storage.v1.StreamService/Ingest', 'bidi', [encodeIngest(1, write)])
      assert.equal(status[ingest.code], 'OK', ingest.details)
      const acks = ingest.responses.map((b) => IngestResponse.decode(b))
      assert.equal(acks[0]?.rejectedSequence, 1)
      assert.equal(acks[0]?.error?.code, status.INVALID_ARGUMENT)
      assert.equal(acks[0]?.error?.field, 'consistency')
    }
    assert.deepEqual(await client.listSeries({ metric: 'cl_bad' }), [])
  })

  test('health reports SERVING for the server and each service', async () => {
    const Health = makeGenericClientConstructor(healthService, 'Health')
    const health = new Health(server.address, credentials.createInsecure()) as unknown as Client & {
      check(req: { service: string }, cb: (err: ServiceError | null, res: { status: string }) => void): void
    }
    raw.push(health)
    for (const name of ['', 'v3storage.v1.WriteService', 'v3storage.v1.QueryService', 'v3storage.v1.AdminService']) {
      const res = await new Promise<{ status: string }>((resolve, reject) => {
        health.check({ service: name }, (err, r) => (err ? reject(err) : resolve(r)))
      })
      assert.equal(res.status, 'SERVING', name)
    }
  })

  for (const version of ['v1', 'v1alpha'] as const) {
    test(`reflection ${version} lists the services`, async () => {
      const protoDir = new URL('../../node_modules/@grpc/reflection/build/proto', import.meta.url).pathname
      const pkg = loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [protoDir], keepCase: true })
      const definition = pkg[`grpc.reflection.${version}.ServerReflection`]
      assert.ok(definition !== undefined && 'ServerReflectionInfo' in definition)
      const Reflection = makeGenericClientConstructor(
        definition as Parameters<typeof makeGenericClientConstructor>[0],
        'ServerReflection',
      )
      const reflection = new Reflection(server.address, credentials.createInsecure()) as unknown as Client & {
        ServerReflectionInfo(): NodeJS.ReadWriteStream & { write(req: object): boolean }
      }
      raw.push(reflection)
      const call = reflection.ServerReflectionInfo()
      const response = new Promise<{ list_services_response?: { service: { name: string }[] } }>((resolve, reject) => {
        call.on('data', resolve)
        call.on('error', reject)
      })
      call.write({ list_services: '' })
      const names = (await response).list_services_response?.service.map((s) => s.name) ?? []
      call.end()
      for (const name of ['WriteService', 'QueryService', 'StreamService', 'ClusterService', 'AdminService']) {
        assert.ok(names.includes(`v3storage.v1.${name}`), `${name} missing from ${names.join(', ')}`)
      }
    })
  }

  test('ListNodes and Locate describe this one node', async () => {
    const nodes = await client.listNodes()
    assert.equal(nodes.length, 1)
    assert.equal(nodes[0]?.address, server.address)
    assert.equal(nodes[0]?.state, 'healthy')
    assert.equal(nodes[0]?.leader, true)
    assert.deepEqual(await client.locate('cpu', { host: 'a' }), nodes)
    await rejectsWith(client.locate(''), status.INVALID_ARGUMENT)
  })

  test('stats, compact and delete', async () => {
    await client.write([{ metric: 'rt_del', tags: { k: 'v' }, timestamps: [T0, T0 + 1000], values: [1, 2] }])
    const stats = await client.stats()
    assert.ok(stats.series >= 1 && stats.pointsWritten >= 2)
    await client.compact()
    const deleted = await client.deleteSeries({ selector: { metric: 'rt_del' }, startMs: T0, endMs: T0 + 1 })
    assert.equal(deleted.seriesMatched, 1)
    const left = await client.query({ selector: { metric: 'rt_del' }, startMs: T0, endMs: T0 + 60_000 })
    assert.deepEqual([...(left[0]?.timestamps ?? [])], [T0 + 1000])
    await client.deleteSeries({ selector: { metric: 'rt_del' } })
    assert.deepEqual(await client.listSeries({ metric: 'rt_del' }), [])
    await rejectsWith(
      client.deleteSeries({ selector: { metric: 'rt_del' }, startMs: 5, endMs: 1 }),
      status.INVALID_ARGUMENT,
    )
  })

  test('a deadline already passed fails with DEADLINE_EXCEEDED', async () => {
    await rejectsWith(
      client.query({ selector: { metric: 'rt_cpu' }, startMs: T0, endMs: T0 + 1 }, { timeoutMs: 0 }),
      status.DEADLINE_EXCEEDED,
    )
  })

  test('a cancelled call fails with CANCELLED', async () => {
    const controller = new AbortController()
    controller.abort()
    await rejectsWith(client.stats({ signal: controller.signal }), status.CANCELLED)
  })
})

describe('v3 serve with a 64 KiB message limit', () => {
  let server: ServerProcess
  before(async () => {
    server = await startServerProcess({
      args: ['--max-message-bytes', '64KiB'],
      client: { maxReceiveMessageBytes: 64 * 1024 },
    })
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  test('QueryStream cuts a large result into messages under the limit', async () => {
    const client = server.client
    const n = 12_000
    for (let start = 0; start < n; start += 2000) {
      const timestamps = Array.from({ length: 2000 }, (_, i) => T0 + (start + i) * 1000)
      const values = timestamps.map((_, i) => Math.sin(start + i))
      await client.write([{ metric: 'big', tags: { host: 'a' }, timestamps, values }])
    }
    await client.write([{ metric: 'big', tags: { host: 'b' }, timestamps: [T0], values: [42] }])
    const query = { selector: { metric: 'big' }, startMs: T0, endMs: T0 + n * 1000 }

    // The whole answer does not fit one message.
    await rejectsWith(client.query(query), status.RESOURCE_EXHAUSTED)

    let messages = 0
    async function* counted() {
      for await (const chunk of client.queryStream(query)) {
        messages++
        yield chunk
      }
    }
    const series = await mergeChunks(counted())
    assert.ok(messages > 1, `expected several messages, got ${messages}`)
    const a = series.find((s) => s.tags[0]?.value === 'a')
    assert.equal(a?.timestamps.length, n)
    assert.equal(a?.timestamps[n - 1], T0 + (n - 1) * 1000)
    assert.equal(a?.values[7], Math.sin(7))
    assert.equal(series.find((s) => s.tags[0]?.value === 'b')?.values[0], 42)
  })

  test('a request over the limit is RESOURCE_EXHAUSTED', async () => {
    const timestamps = Array.from({ length: 8000 }, (_, i) => T0 + i)
    const err = await rejectsWith(
      server.client.write([{ metric: 'too_big', timestamps, values: timestamps.map(() => 1.5) }]),
      status.RESOURCE_EXHAUSTED,
    )
    assert.match(err.details, /larger than max/)
  })
})

describe('v3 serve with small write and query limits', () => {
  let server: ServerProcess
  before(async () => {
    server = await startServerProcess({ args: ['--max-points-per-write', '100', '--max-points-per-query', '50'] })
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  test('limits answer RESOURCE_EXHAUSTED naming the limit and its value', async () => {
    const client = server.client
    const many = Array.from({ length: 101 }, (_, i) => T0 + i)
    const err = await rejectsWith(
      client.write([{ metric: 'lim', timestamps: many, values: many.map(() => 1) }]),
      status.RESOURCE_EXHAUSTED,
    )
    assert.match(err.details, /100/)
    assert.deepEqual(await client.listSeries({ metric: 'lim' }), [])

    const some = many.slice(0, 60)
    await client.write([{ metric: 'lim', timestamps: some, values: some.map(() => 1) }])
    const q = await rejectsWith(
      client.query({ selector: { metric: 'lim' }, startMs: T0, endMs: T0 + 1000 }),
      status.RESOURCE_EXHAUSTED,
    )
    assert.match(q.details, /50/)
  })
})

describe('v3 serve in a Kubernetes pod', () => {
  test('starts despite the V3_ variables of a Service named v3, with one warning for each', async () => {
    const server = await startServerProcess({
      env: { V3_PORT: 'tcp://10.0.0.1:50051', V3_SERVICE_HOST: '10.0.0.1' },
    })
    try {
      const result = await server.client.write([{ metric: 'k8s', timestamps: [T0], values: [1] }])
      assert.equal(result.pointsWritten, 1)
      const warnings = server
        .stderr()
        .split('\n')
        .filter((line) => line.includes('unknown environment variable'))
      assert.equal(warnings.length, 2, server.stderr())
      assert.match(warnings[0] ?? '', /V3_PORT; the nearest option is V3_LISTEN/)
      assert.match(warnings[1] ?? '', /V3_SERVICE_HOST; the nearest option is V3_LISTEN/)
    } finally {
      assert.equal((await server.stop()).code, 0)
      await removeDataDir(server.dataDir)
    }
  })
})

describe('v3 serve shutdown', () => {
  test('SIGTERM exits 0 and a restart finds every acknowledged point', async () => {
    const first = await startServerProcess()
    try {
      const timestamps = Array.from({ length: 100 }, (_, i) => T0 + i * 10_000)
      await first.client.write([
        { metric: 'durable', tags: { k: 'v' }, timestamps, values: timestamps.map((_, i) => i) },
      ])
      const { code } = await first.stop()
      assert.equal(code, 0, first.stderr())

      const second = await startServerProcess({ dataDir: first.dataDir })
      try {
        const got = await second.client.query({ selector: { metric: 'durable' }, startMs: T0, endMs: T0 + 1_000_000 })
        assert.equal(got[0]?.timestamps.length, 100)
        assert.equal(got[0]?.values[99], 99)
      } finally {
        assert.equal((await second.stop()).code, 0)
      }
    } finally {
      await first.kill()
      await removeDataDir(first.dataDir)
    }
  })
})
