// The gRPC server in this process over a scripted engine: what a real engine cannot be made to do on
// cue (block until cancelled, throw each kind of error) to test deadlines, error mapping and shutdown.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, createServer as createHttp2Server, type Http2Session, type ServerHttp2Session } from 'node:http2'
import { type AddressInfo, createServer as createNetServer } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { Client, credentials, type ServiceError } from '@grpc/grpc-js'
import { AggFunc, type CompareOp, type MatchOp } from '../../gen/v3storage/v1/common.js'
import { QueryServiceService } from '../../gen/v3storage/v1/query_service.js'
import {
  BatchingWriter,
  type ConsistencyLevel,
  type DeleteInput,
  mergeChunks,
  type QueryInput,
  type SelectorInput,
  type SeriesInput,
  status,
  V3Client,
  V3ClientError,
  type V3ClientOptions,
} from '../../src/client/index.js'
import type { CallContext, EngineStats, StorageEngine } from '../../src/engine/storage-engine.js'
import { DeadlineError, LimitError, NotFoundError, UnavailableError, ValidationError } from '../../src/model/errors.js'
import type { SeriesPoints } from '../../src/model/types.js'
import type { ServerLogger } from '../../src/server/errors.js'
import { type RunningServer, startServer } from '../../src/server/server.js'

const STATS: EngineStats = {
  series: 0,
  pointsWritten: 0,
  bufferedPoints: 0,
  hotBlocks: 0,
  coldRuns: 0,
  coldBlocks: 0,
  bytesOnDisk: 0,
  writes: { count: 0, p50Ms: 0, p99Ms: 0 },
  queries: { count: 0, p50Ms: 0, p99Ms: 0 },
}

/** An engine whose query runs the scripted behaviour of the current test. */
class ScriptedEngine implements StorageEngine {
  onQuery: (ctx: CallContext | undefined) => Promise<SeriesPoints[]> = async () => []
  /** The consistency level in the context of every write and read that reached the engine. */
  readonly levels: [method: string, level: ConsistencyLevel | undefined][] = []
  async open() {}
  async close() {}
  async write(_batch: unknown, ctx?: CallContext) {
    this.levels.push(['write', ctx?.consistency])
    return { pointsWritten: 0, seriesWritten: 0 }
  }
  query(_request: unknown, ctx?: CallContext) {
    this.levels.push(['query', ctx?.consistency])
    return this.onQuery(ctx)
  }
  async latest(_selector: unknown, ctx?: CallContext) {
    this.levels.push(['latest', ctx?.consistency])
    return []
  }
  async listSeries(_selector: unknown, ctx?: CallContext) {
    this.levels.push(['listSeries', ctx?.consistency])
    return []
  }
  async deleteSeries() {
    this.levels.push(['deleteSeries', undefined])
    return { seriesMatched: 0 }
  }
  async compact() {
    return { blocksSealed: 0, blocksMoved: 0, seriesExpired: 0 }
  }
  async stats() {
    return STATS
  }
  subscribe() {
    this.levels.push(['subscribe', undefined])
    return { close: () => {} }
  }
}

/** Resolves when the signal aborts, with its reason. */
function aborted(signal: AbortSignal | undefined): Promise<unknown> {
  assert.ok(signal, 'the engine got no signal')
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }))
}

async function callFails(promise: Promise<unknown>): Promise<V3ClientError> {
  const err = await promise.then(
    () => assert.fail('the call succeeded'),
    (e: unknown) => e,
  )
  assert.ok(err instanceof V3ClientError)
  return err
}

const QUERY = { selector: { metric: 'm' }, startMs: 0, endMs: 1 }

/** The error of a call on a closed V3Client. */
function closedCall(err: V3ClientError): void {
  assert.equal(err.code, status.CANCELLED)
  assert.match(err.message, /the client is closed/)
}

describe('server over a scripted engine', () => {
  const engine = new ScriptedEngine()
  const logged: { obj: object; msg: string | undefined }[] = []
  const logger: ServerLogger = {
    info: () => {},
    error: (obj, msg) => logged.push({ obj, msg }),
  }
  let server: RunningServer
  let client: V3Client

  before(async () => {
    server = await startServer({ engine, listen: '127.0.0.1:0', logger, shutdownTimeoutMs: 2000 })
    client = new V3Client(server.address)
  })
  after(async () => {
    client.close()
    await server.close()
  })

  test('a deadline aborts the engine call and the client gets DEADLINE_EXCEEDED', async () => {
    let reason: Promise<unknown> = Promise.resolve()
    engine.onQuery = async (ctx) => {
      reason = aborted(ctx?.signal)
      await reason
      throw new DeadlineError('stopped')
    }
    const err = await callFails(client.query(QUERY, { timeoutMs: 200 }))
    assert.equal(err.code, status.DEADLINE_EXCEEDED)
    const why = await reason
    assert.ok(why instanceof DeadlineError)
    assert.match(why.message, /deadline/)
  })

  test('a client cancellation aborts the engine call', async () => {
    const controller = new AbortController()
    let reason: Promise<unknown> = Promise.resolve()
    let started: () => void = () => {}
    const running = new Promise<void>((resolve) => {
      started = resolve
    })
    engine.onQuery = async (ctx) => {
      reason = aborted(ctx?.signal)
      started()
      await reason
      return []
    }
    // A deadline far off: only a cancellation close to it counts as the deadline passing.
    const call = callFails(client.query(QUERY, { signal: controller.signal, timeoutMs: 60_000 }))
    await running
    controller.abort()
    assert.equal((await call).code, status.CANCELLED)
    const why = await reason
    assert.ok(why instanceof DeadlineError)
    assert.match(why.message, /cancelled/)
  })

  const mapped = [
    [ValidationError.field('selector.metric', 'is required'), status.INVALID_ARGUMENT, /selector\.metric: is required/],
    [
      new LimitError('max_points_per_query', 5, 'too many points'),
      status.RESOURCE_EXHAUSTED,
      /max_points_per_query = 5/,
    ],
    [new NotFoundError('no such series'), status.NOT_FOUND, /no such series/],
    [new UnavailableError('the engine is closed'), status.UNAVAILABLE, /closed/],
    [new DeadlineError('too slow'), status.DEADLINE_EXCEEDED, /too slow/],
  ] as const
  for (const [error, code, message] of mapped) {
    test(`${error.name} maps to ${status[code]}`, async () => {
      engine.onQuery = async () => {
        throw error
      }
      const err = await callFails(client.query(QUERY))
      assert.equal(err.code, code)
      assert.match(err.details, message)
    })
  }

  test('INVALID_ARGUMENT carries every violation in google.rpc.BadRequest', async () => {
    const violations = Array.from({ length: 7 }, (_, i) => ({ field: `series[${i}].metric`, description: 'bad' }))
    engine.onQuery = async () => {
      throw new ValidationError(violations)
    }
    const err = await callFails(client.query(QUERY))
    assert.deepEqual(err.violations, violations)
    assert.match(err.details, /and 2 more/)
  })

  test('an unexpected error is INTERNAL, its cause logged and not sent', async () => {
    logged.length = 0
    engine.onQuery = async () => {
      throw new Error('cannot open /secret/path')
    }
    const err = await callFails(client.query(QUERY))
    assert.equal(err.code, status.INTERNAL)
    assert.doesNotMatch(err.details, /secret/)
    assert.equal(logged.length, 1)
    assert.match(JSON.stringify(logged[0]?.msg), /QueryService\.Query/)
  })

  test('the consistency level of every write and read reaches the engine in the call context', async () => {
    engine.onQuery = async () => []
    const series = [{ metric: 'm', timestamps: [1], values: [1] }]
    for (const level of [undefined, 'one', 'quorum', 'all'] as const) {
      engine.levels.length = 0
      await client.write(series, { consistency: level })
      const stream = client.writeStream({ consistency: level })
      await stream.write(series)
      await stream.write(series)
      await stream.end()
      const writer = new BatchingWriter(server.address, { consistency: level })
      writer.write('m', {}, 1, 1)
      await writer.close()
      await client.query(QUERY, { consistency: level })
      await mergeChunks(client.queryStream(QUERY, { consistency: level }))
      await client.latest({ metric: 'm' }, { consistency: level })
      await client.listSeries({ metric: 'm' }, { consistency: level })
      assert.deepEqual(
        engine.levels,
        ['write', 'write', 'write', 'write', 'query', 'query', 'latest', 'listSeries'].map((m) => [m, level]),
        String(level),
      )
    }
    // A level the client does not know fails before a call, as the server would answer it.
    engine.levels.length = 0
    const bad = 'maybe' as ConsistencyLevel
    for (const call of [
      () => client.write(series, { consistency: bad }),
      () => client.query(QUERY, { consistency: bad }),
      () => client.latest({ metric: 'm' }, { consistency: bad }),
      () => client.listSeries({ metric: 'm' }, { consistency: bad }),
    ]) {
      const err = await callFails(call())
      assert.equal(err.code, status.INVALID_ARGUMENT)
      assert.equal(err.violations[0]?.field, 'consistency')
    }
    assert.deepEqual(engine.levels, [])
  })

  test('a malformed WriteRequest is INVALID_ARGUMENT naming the field, not INTERNAL', async () => {
    const raw = new Client(server.address, credentials.createInsecure())
    try {
      // series[0] says it is 10 bytes long and holds 2.
      const bytes = Buffer.from([0x0a, 0x0a, 0x0a, 0x00])
      const err = await new Promise<ServiceError>((resolve, reject) => {
        raw.makeUnaryRequest(
          '/v3storage.v1.WriteService/Write',
          (b: Buffer) => b,
          (b: Buffer) => b,
          bytes,
          (e) => (e ? resolve(e) : reject(new Error('the call succeeded'))),
        )
      })
      assert.equal(err.code, status.INVALID_ARGUMENT)
      assert.match(err.details, /series\[0\]/)
    } finally {
      raw.close()
    }
  })

  test('the client refuses what it cannot send as given, naming the field, before any call', async () => {
    const writes = [
      // A value the encoder would have coerced: null to 0, true to 1, '1.5' to 1.5.
      [{ metric: 'm', tags: {}, timestamps: [1], values: [null as unknown as number] }, 'series[0].values[0]'],
      [{ metric: 'm', tags: {}, timestamps: [1, 2], values: [1, '1.5' as unknown as number] }, 'series[0].values[1]'],
      [{ metric: 7 as unknown as string, tags: {}, timestamps: [1], values: [1] }, 'series[0].metric'],
      [
        { metric: 'm', tags: { host: 7 as unknown as string }, timestamps: [1], values: [1] },
        'series[0].tags[0].value',
      ],
      // Shapes a caller without TypeScript may get wrong: each failed as a TypeError (UNKNOWN), and
      // tags given as a string were sent as one tag per character.
      [
        { metric: 'm', tags: {}, points: [{ timestampMs: 1, value: 1 }] } as unknown as SeriesInput,
        'series[0].timestamps',
      ],
      [{ metric: 'm', tags: {}, timestamps: [1], value: [1] } as unknown as SeriesInput, 'series[0].values'],
      [{ metric: 'm', tags: 'host=a', timestamps: [1], values: [1] } as unknown as SeriesInput, 'series[0].tags'],
      [{ metric: 'm', tags: [null], timestamps: [1], values: [1] } as unknown as SeriesInput, 'series[0].tags[0]'],
      [null as unknown as SeriesInput, 'series[0]'],
    ] as const
    for (const [series, field] of writes) {
      const err = await callFails(client.write([series]))
      assert.equal(err.code, status.INVALID_ARGUMENT, field)
      assert.equal(err.violations[0]?.field, field)
    }
    const notAList = await callFails(client.write({ metric: 'm' } as unknown as SeriesInput[]))
    assert.equal(notAList.violations[0]?.field, 'series')
    assert.match(notAList.message, /^INVALID_ARGUMENT: series: must be a list of series, got an object$/)
    const precision = await callFails(client.write([], { precision: 'seconds' as unknown as 'ms' }))
    assert.equal(precision.violations[0]?.field, 'precision')
    // A timeout gRPC cannot arm threw from a later tick, past the caller's catch, and ended the process.
    for (const timeoutMs of [Number.NaN, 1e15, Number.NEGATIVE_INFINITY, '1000' as unknown as number]) {
      const err = await Promise.resolve()
        .then(() => client.stats({ timeoutMs }))
        .then(
          () => assert.fail('the call succeeded'),
          (e: unknown) => e,
        )
      assert.ok(err instanceof V3ClientError && err.violations[0]?.field === 'timeoutMs', String(err))
    }
    // A stream's write() after its end() is refused; it said sent, and nothing was stored.
    const stream = client.writeStream()
    await stream.write([{ metric: 'm', tags: {}, timestamps: [1], values: [1] }])
    await stream.end()
    const late = await callFails(stream.write([{ metric: 'm', tags: {}, timestamps: [2], values: [2] }]))
    assert.equal(late.code, status.FAILED_PRECONDITION)
  })

  test('the client refuses a read it cannot send as given, naming the field as the server does, before any call', async () => {
    // Each of these failed as INTERNAL ("invalid int32: undefined", "cannot be converted to a
    // BigInt"), a TypeError, or was sent coerced.
    const bad = <T>(value: unknown): T => value as T
    const selectors: [SelectorInput, string][] = [
      [{ metric: 'm', matchers: [{ key: 'k', value: 'v', op: bad('like') }] }, 'selector.matchers[0].op'],
      [{ metric: 'm', matchers: [{ key: 'k', value: 'v', op: bad('toString') }] }, 'selector.matchers[0].op'],
      [{ metric: bad(7) }, 'selector.metric'],
      [{ metric: 'm', matchers: [{ key: bad(7), value: 'v', op: 'eq' }] }, 'selector.matchers[0].key'],
      [{ metric: 'm', matchers: [{ key: 'k', value: bad(null), op: 'eq' }] }, 'selector.matchers[0].value'],
      [{ metric: 'm', matchers: [bad(null)] }, 'selector.matchers[0]'],
      [{ metric: 'm', matchers: bad('host=a') }, 'selector.matchers'],
      [bad(undefined), 'selector'],
    ]
    const queries: [QueryInput, string][] = [
      ...selectors.map(([selector, field]): [QueryInput, string] => [{ ...QUERY, selector }, field]),
      [{ ...QUERY, aggregation: { func: bad('median2') } }, 'aggregation.func'],
      [{ ...QUERY, aggregation: { func: 'sum', stepMs: 0.5 } }, 'aggregation.step_ms'],
      [{ ...QUERY, aggregation: { func: 'sum', stepMs: Number.NaN } }, 'aggregation.step_ms'],
      [{ ...QUERY, aggregation: { func: 'sum', groupBy: [bad(1)] } }, 'aggregation.group_by[0]'],
      [{ ...QUERY, valueFilter: { op: bad('over'), value: 1 } }, 'value_filter.op'],
      [{ ...QUERY, valueFilter: { op: 'gt', value: bad('90') } }, 'value_filter.value'],
      [{ ...QUERY, startMs: 1.5 }, 'start_ms'],
      [{ ...QUERY, startMs: Number.NaN }, 'start_ms'],
      [{ ...QUERY, endMs: Number.NaN }, 'end_ms'],
      [{ ...QUERY, endMs: 2 ** 63 }, 'end_ms'],
      [{ selector: { metric: 'm' }, startMs: 0, endMs: bad(undefined) }, 'end_ms'],
      [{ ...QUERY, startMs: bad(10n) }, 'start_ms'],
      [bad({ startMs: 0, endMs: 1 }), 'selector'],
      [bad(undefined), 'selector'],
      [
        { ...QUERY, additionalSelectors: [{ metric: 'n', matchers: [{ key: 'k', value: 'v', op: bad('like') }] }] },
        'additional_selectors[0].matchers[0].op',
      ],
    ]
    const refused = (err: unknown, field: string): void => {
      assert.ok(err instanceof V3ClientError, `${field}: ${String(err)}`)
      assert.equal(err.code, status.INVALID_ARGUMENT, `${field}: ${err.message}`)
      assert.equal(err.violations[0]?.field, field, err.message)
      assert.match(err.details, new RegExp(`^${field.replace(/[[\].]/g, '\\$&')}: `), err.message)
      // A server's refusal comes with trailers; one made before any call has none.
      assert.equal(err.metadata, undefined, `${field}: the call was made`)
    }
    engine.levels.length = 0
    for (const [request, field] of queries) {
      refused(await callFails(client.query(request)), field)
      refused(await callFails(client.queryStream(request).next()), field)
    }
    for (const [selector, field] of selectors) {
      refused(await callFails(client.latest(selector)), field)
      refused(await callFails(client.listSeries(selector)), field)
      refused(await callFails(client.deleteSeries({ selector })), field)
    }
    const deletes: [DeleteInput, string][] = [
      [{ selector: { metric: 'm' }, startMs: 1.5, endMs: 10 }, 'start_ms'],
      [{ selector: { metric: 'm' }, startMs: 0, endMs: Number.NaN }, 'end_ms'],
      [bad({ startMs: 0, endMs: 10 }), 'selector'],
    ]
    for (const [request, field] of deletes) refused(await callFails(client.deleteSeries(request)), field)
    // subscribe throws at once, as it does on a closed client; the for-await that calls it gets the error.
    const subscriptions: [SelectorInput, number | undefined, string][] = [
      ...selectors.map(([selector, field]): [SelectorInput, undefined, string] => [selector, undefined, field]),
      [{ metric: 'm' }, 1.5, 'since_ms'],
      [{ metric: 'm' }, Number.NaN, 'since_ms'],
      [{ metric: 'm' }, -1, 'since_ms'],
    ]
    for (const [selector, sinceMs, field] of subscriptions) {
      const err = await (async () => {
        for await (const _ of client.subscribe(selector, sinceMs === undefined ? {} : { sinceMs })) {
          assert.fail('the subscription delivered')
        }
      })().then(
        () => assert.fail('the subscription ended without an error'),
        (e: unknown) => e,
      )
      refused(err, field)
    }
    assert.deepEqual(engine.levels, [], 'a refused read reached the engine')

    // The server names the same fields for the same mistakes sent raw (an enum number it does not know).
    const raw = new Client(server.address, credentials.createInsecure())
    try {
      const base = { selector: { metric: 'm', matchers: [] }, startMs: 0, endMs: 1, additionalSelectors: [] }
      const sent: [object, string][] = [
        [
          { ...base, selector: { metric: 'm', matchers: [{ key: 'k', value: 'v', op: 99 as MatchOp }] } },
          'selector.matchers[0].op',
        ],
        [
          { ...base, aggregation: { func: 99 as AggFunc, stepMs: 0, groupBy: [], mergeSeries: false } },
          'aggregation.func',
        ],
        [
          { ...base, aggregation: { func: AggFunc.AGG_FUNC_SUM, stepMs: -1, groupBy: [], mergeSeries: false } },
          'aggregation.step_ms',
        ],
        [{ ...base, valueFilter: { op: 99 as CompareOp, value: 1 } }, 'value_filter.op'],
        [{ ...base, selector: undefined }, 'selector'],
      ]
      const def = QueryServiceService.query
      for (const [request, field] of sent) {
        const err = await new Promise<ServiceError>((resolve, reject) => {
          raw.makeUnaryRequest(
            def.path,
            def.requestSerialize,
            (b: Buffer) => b,
            { consistency: 0, ...base, ...request },
            (e) => (e ? resolve(e) : reject(new Error('the call succeeded'))),
          )
        })
        assert.equal(err.code, status.INVALID_ARGUMENT, field)
        assert.match(err.details, new RegExp(`^${field.replace(/[[\].]/g, '\\$&')}: `), err.details)
      }
    } finally {
      raw.close()
    }
    engine.levels.length = 0
  })

  test('QueryStream stops when the client stops reading', async () => {
    // Far more than the transport buffers: the server has to wait for the reader.
    const n = 4_000_000
    const timestamps = Float64Array.from({ length: n }, (_, i) => i)
    let signal: AbortSignal | undefined
    engine.onQuery = async (ctx) => {
      signal = ctx?.signal
      return [{ metric: 'm', tags: [], timestamps, values: new Float64Array(n) }]
    }
    let messages = 0
    for await (const chunk of client.queryStream(QUERY)) {
      assert.ok(chunk.length > 0)
      messages++
      if (messages === 2) break
    }
    // The server sees the cancellation: the call's signal aborts, so it stops sending.
    for (let i = 0; i < 250 && !signal?.aborted; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(signal?.aborted, true)
    // The next call works: the abandoned stream left nothing behind.
    engine.onQuery = async () => []
    assert.deepEqual(await client.query(QUERY), [])
  })

  test('waitForReady resolves once a new client is connected, and fails with DEADLINE_EXCEEDED where nothing listens', async () => {
    const fresh = new V3Client(server.address)
    try {
      await fresh.waitForReady(5000)
      // Connected before any call: the first call needs no connection of its own.
      assert.deepEqual(await fresh.listSeries({ metric: 'm' }), [])
    } finally {
      fresh.close()
    }
    // A port that was free a moment ago: nothing answers on it.
    const probe = createNetServer().listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const { port } = probe.address() as AddressInfo
    await new Promise((resolve) => probe.close(resolve))
    const nowhere = new V3Client(`127.0.0.1:${port}`)
    try {
      const started = Date.now()
      const err = await callFails(nowhere.waitForReady(300))
      assert.equal(err.code, status.DEADLINE_EXCEEDED)
      assert.ok(Date.now() - started < 5000, 'the wait ends at its timeout')
    } finally {
      nowhere.close()
    }
  })

  test('a closed client fails every call at once with CANCELLED, and close() ends a waitForReady under way', async () => {
    const probe = createNetServer().listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const { port } = probe.address() as AddressInfo
    await new Promise((resolve) => probe.close(resolve))
    const nowhere = new V3Client(`127.0.0.1:${port}`)
    const started = Date.now()
    const waiting = callFails(nowhere.waitForReady(30_000))
    nowhere.close()
    const ended = await waiting
    assert.equal(ended.code, status.CANCELLED)
    assert.ok(Date.now() - started < 5000, 'close() ends the wait, not its 30 s timeout')

    const client = new V3Client(server.address)
    await client.waitForReady(5000)
    assert.equal((await client.stats()).series, 0)
    client.close()
    closedCall(await callFails(client.stats()))
    closedCall(await callFails(client.query(QUERY)))
    closedCall(await callFails(client.write([{ metric: 'm', tags: {}, timestamps: [1], values: [1] }])))
    const waitedFrom = Date.now()
    closedCall(await callFails(client.waitForReady(30_000)))
    assert.ok(Date.now() - waitedFrom < 5000, 'a closed client does not wait for its timeout')
    closedCall(await callFails(client.queryStream(QUERY).next()))
    assert.throws(
      () => client.writeStream(),
      (err: unknown) => err instanceof V3ClientError && err.code === status.CANCELLED,
    )
    assert.throws(
      () => client.subscribe({ metric: 'm' }),
      (err: unknown) => err instanceof V3ClientError && err.code === status.CANCELLED,
    )

    const writer = new BatchingWriter(server.address)
    await writer.close()
    assert.throws(
      () => writer.write('m', {}, 1, 1),
      (err: unknown) =>
        err instanceof V3ClientError && err.code === status.CANCELLED && /the writer is closed/.test(err.message),
    )
  })
})

describe('server shutdown', () => {
  test('a call in flight when its client closes still gets its answer', async () => {
    const engine = new ScriptedEngine()
    let release: () => void = () => {}
    const running = new Promise<void>((started) => {
      engine.onQuery = () =>
        new Promise((resolve) => {
          started()
          release = () =>
            resolve([{ metric: 'm', tags: [], timestamps: Float64Array.of(1), values: Float64Array.of(7) }])
        })
    })
    const server = await startServer({ engine, listen: '127.0.0.1:0', shutdownTimeoutMs: 5000 })
    const client = new V3Client(server.address)
    try {
      const inFlight = client.query(QUERY, { timeoutMs: 10_000 })
      await running
      client.close()
      closedCall(await callFails(client.stats()))
      release()
      const result = await inFlight
      assert.deepEqual([...(result[0]?.values ?? [])], [7])
    } finally {
      await server.close()
    }
  })

  test('close lets an in-flight call finish and refuses new ones', async () => {
    const engine = new ScriptedEngine()
    let release: () => void = () => {}
    let started: () => void = () => {}
    const running = new Promise<void>((resolve) => {
      started = resolve
    })
    engine.onQuery = () =>
      new Promise((resolve) => {
        started()
        release = () => resolve([{ metric: 'm', tags: [], timestamps: Float64Array.of(1), values: Float64Array.of(2) }])
      })
    const server = await startServer({ engine, listen: '127.0.0.1:0', shutdownTimeoutMs: 5000 })
    const client = new V3Client(server.address)
    try {
      const inFlight = client.query(QUERY)
      await running
      const closed = server.close()
      const late = new V3Client(server.address)
      const refused = await callFails(late.stats({ timeoutMs: 2000 }))
      late.close()
      assert.ok(refused.code === status.UNAVAILABLE || refused.code === status.DEADLINE_EXCEEDED, refused.message)
      release()
      const result = await inFlight
      assert.deepEqual([...(result[0]?.values ?? [])], [2])
      await closed
    } finally {
      client.close()
      await server.close()
    }
  })

  test('close cancels calls that outlast the shutdown timeout', async () => {
    const engine = new ScriptedEngine()
    let started: () => void = () => {}
    const running = new Promise<void>((resolve) => {
      started = resolve
    })
    engine.onQuery = (ctx) => {
      started()
      return aborted(ctx?.signal).then(() => [])
    }
    const quiet: ServerLogger = { info: () => {}, error: () => {} }
    const server = await startServer({ engine, listen: '127.0.0.1:0', shutdownTimeoutMs: 100, logger: quiet })
    const client = new V3Client(server.address)
    try {
      const stuck = callFails(client.query(QUERY))
      await running
      await server.close()
      const err = await stuck
      assert.ok(err.code === status.CANCELLED || err.code === status.UNAVAILABLE, err.message)
    } finally {
      client.close()
    }
  })
})

describe('HTTP/2 flow control', () => {
  /**
   * The windows the peer of `session` gives it once its SETTINGS are in (`settings`): per call and for
   * the connection. The connection's WINDOW_UPDATE follows the SETTINGS; it is waited for rather than a time.
   */
  async function peerWindows(
    session: Http2Session,
    settings: Promise<unknown>,
  ): Promise<{ call: number; connection: number }> {
    await settings
    const deadline = Date.now() + 5000
    while (session.state.remoteWindowSize === 65_535 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    return { call: session.remoteSettings.initialWindowSize ?? 0, connection: session.state.remoteWindowSize ?? 0 }
  }

  /** The windows the server gives a raw HTTP/2 client. */
  async function windowsOf(server: RunningServer): Promise<{ call: number; connection: number }> {
    const session = connect(`http://${server.address}`)
    try {
      return await peerWindows(session, once(session, 'remoteSettings'))
    } finally {
      session.close()
    }
  }

  test('the server lets a client send 8 MiB ahead by default, and --receive-window sets it', async () => {
    const engine = new ScriptedEngine()
    const byDefault = await startServer({ engine, listen: '127.0.0.1:0' })
    try {
      assert.deepEqual(await windowsOf(byDefault), { call: 8 * 1024 * 1024, connection: 8 * 1024 * 1024 })
    } finally {
      await byDefault.close()
    }
    const set = await startServer({ engine, listen: '127.0.0.1:0', receiveWindowBytes: 1024 * 1024 })
    try {
      assert.deepEqual(await windowsOf(set), { call: 1024 * 1024, connection: 1024 * 1024 })
    } finally {
      await set.close()
    }
  })

  /** The windows a V3Client made with `options` gives a raw HTTP/2 server. */
  async function clientWindowsOf(options: V3ClientOptions): Promise<{ call: number; connection: number }> {
    const server = createHttp2Server()
    const seen = new Promise<{ session: ServerHttp2Session; settings: Promise<unknown> }>((resolve) =>
      server.once('session', (session) => resolve({ session, settings: once(session, 'remoteSettings') })),
    )
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const client = new V3Client(`127.0.0.1:${(server.address() as AddressInfo).port}`, options)
    try {
      await client.waitForReady(5000)
      const { session, settings } = await seen
      return await peerWindows(session, settings)
    } finally {
      client.close()
      server.close()
    }
  }

  test('V3Client lets the server send 8 MiB of an answer ahead by default, and receiveWindowBytes sets it', async () => {
    assert.deepEqual(await clientWindowsOf({}), { call: 8 * 1024 * 1024, connection: 8 * 1024 * 1024 })
    assert.deepEqual(await clientWindowsOf({ receiveWindowBytes: 1024 * 1024 }), {
      call: 1024 * 1024,
      connection: 1024 * 1024,
    })
    for (const receiveWindowBytes of [1000, 2 ** 31, 100_000.5]) {
      assert.throws(() => new V3Client('127.0.0.1:1', { receiveWindowBytes }), /receiveWindowBytes/)
    }
  })

  test('a window HTTP/2 cannot have is refused before the server starts', async () => {
    for (const receiveWindowBytes of [1000, 2 ** 31]) {
      await assert.rejects(startServer({ engine: new ScriptedEngine(), receiveWindowBytes }), /receiveWindowBytes/)
    }
  })
})
