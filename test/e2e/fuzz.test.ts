// A seeded fuzz of a real `v3 serve`: random bytes, mutated requests and hostile values on every RPC
// of every service. After each block the server must be alive, SERVING, and hold its baseline data
// unchanged; every answer must be a status a client can act on, never INTERNAL or UNKNOWN.
// V3_FUZZ_SEED=<n> replays a run; the seed is in the test names.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Client } from '@grpc/grpc-js'
import { DeleteSeriesRequest } from '../../gen/v3storage/v1/admin_service.js'
import { LocateRequest } from '../../gen/v3storage/v1/cluster_service.js'
import {
  LatestRequest,
  ListSeriesRequest,
  QueryRequest,
  QueryStreamRequest,
} from '../../gen/v3storage/v1/query_service.js'
import { SubscribeRequest } from '../../gen/v3storage/v1/stream_service.js'
import { status } from '../../src/client/index.js'
import type { SeriesPoints } from '../../src/model/types.js'
import {
  encodeDelete,
  encodeIngest,
  encodeLocate,
  encodeQuery,
  encodeSelectorRequest,
  encodeSubscribe,
  encodeWrite,
  healthServing,
  MatchOp,
  type RawCallOptions,
  type RawQuery,
  type RawSelector,
  type RawSeries,
  Rng,
  type RpcKind,
  rawCall,
  rawClient,
  type Str,
} from './fuzz-kit.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const SEED = process.env.V3_FUZZ_SEED === undefined ? 0x5eed_2026 : Number(process.env.V3_FUZZ_SEED) >>> 0
// The server inherits this environment, and v3 serve refuses a V3_ variable that is not an option.
delete process.env.V3_FUZZ_SEED
/** Requests of each kind (random, mutated, hostile) per RPC in one block. */
const PER_RPC = 24
/** Calls in flight at once. */
const CONCURRENCY = 8

const NOW = Date.now()
const BASE_T0 = NOW - 30 * 60_000
const TARGET = 'fuzz_target'
const BASELINE = 'fuzz_baseline'

/** The statuses a well-behaved server may answer a hostile request with. */
const ACCEPTABLE = new Set<status>([status.OK, status.INVALID_ARGUMENT, status.RESOURCE_EXHAUSTED, status.NOT_FOUND])

interface Rpc {
  readonly path: string
  readonly kind: RpcKind
  /** Valid requests to mutate. */
  readonly bases: readonly Buffer[]
  /** Requests with hostile values, drawn afresh each time. */
  readonly hostile: (rng: Rng) => Buffer[]
  /** The generated decoder: a request answered OK must be one that decodes. */
  readonly decode?: (bytes: Buffer) => unknown
  readonly options?: RawCallOptions
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER)
const INT64_MAX = (1n << 63n) - 1n
const INT64_MIN = -(1n << 63n)
const EXTREMES: readonly (bigint | number)[] = [
  0,
  1,
  -1,
  1e15,
  -1e15,
  NOW,
  SAFE,
  -SAFE,
  SAFE + 1n,
  -SAFE - 1n,
  SAFE + 2n,
  INT64_MAX,
  INT64_MIN,
]
const STEPS: readonly (bigint | number)[] = [0, 1, -1, 1000, 3_600_000, SAFE, SAFE + 1n, INT64_MAX, INT64_MIN]
const INVALID_UTF8: readonly Uint8Array[] = [
  Uint8Array.from([0xff]),
  Uint8Array.from([0x61, 0xc3]),
  Uint8Array.from([0xed, 0xa0, 0x80]),
  Uint8Array.from([0xc0, 0xaf]),
  Uint8Array.from([0x68, 0x30, 0xf8, 0x88, 0x80, 0x80, 0x80]),
]

function hostileString(rng: Rng): Str {
  switch (rng.int(8)) {
    case 0:
      return ''
    case 1:
      return rng.pick(INVALID_UTF8)
    case 2:
      return 'x'.repeat(rng.pick([256, 4096, 70_000]))
    case 3:
      return rng.pick(['.*', '(a+)+$', '(', '[', '\\', 'a{1000}{1000}', '(?<=a)b', '\\1', 'h0[12]'])
    case 4:
      return '\u0000\ud7ff\uffff'
    case 5:
      return rng.pick(['host', 'region', '__name__', 'v'])
    default:
      return `h${rng.int(4)}`
  }
}

function hostileSelector(rng: Rng): RawSelector {
  const matchers = Array.from({ length: rng.pick([0, 1, 2, 5, 300]) }, () => ({
    key: hostileString(rng),
    value: hostileString(rng),
    op: rng.pick([0, 1, 2, 3, 4, 5, -1]),
  }))
  const metric: Str = rng.pick<Str>([
    '',
    TARGET,
    'no_such_metric',
    'bad name',
    'y'.repeat(5000),
    rng.pick(INVALID_UTF8),
  ])
  return { metric, matchers }
}

function hostileQuery(rng: Rng): Buffer {
  const query: RawQuery = {
    ...(rng.int(8) === 0 ? {} : { selector: hostileSelector(rng) }),
    startMs: rng.pick(EXTREMES),
    endMs: rng.pick(EXTREMES),
    ...(rng.int(2) === 0
      ? {}
      : {
          aggregation: {
            func: rng.int(14),
            stepMs: rng.pick(STEPS),
            groupBy: Array.from({ length: rng.pick([0, 1, 3, 100]) }, () => hostileString(rng)),
            mergeSeries: rng.int(2) === 0,
          },
        }),
    ...(rng.int(3) === 0
      ? { valueFilter: { op: rng.int(8), value: rng.pick([Number.NaN, Infinity, -0, 1e308]) } }
      : {}),
    ...(rng.int(4) === 0
      ? { additionalSelectors: Array.from({ length: rng.pick([1, 100, 101, 150]) }, () => hostileSelector(rng)) }
      : {}),
  }
  return encodeQuery(query)
}

function hostileSeries(rng: Rng): RawSeries {
  const n = rng.pick([0, 1, 3, 1000])
  return {
    metric: rng.pick<Str>(['', `fuzz_w${rng.int(4)}`, 'bad name', 'm'.repeat(10_000), rng.pick(INVALID_UTF8)]),
    tags: Array.from({ length: rng.pick([0, 1, 2, 100]) }, () => ({
      key: rng.pick<Str>(['host', '', 'bad key', rng.pick(INVALID_UTF8)]),
      value: rng.pick<Str>(['a', '', 'v'.repeat(rng.pick([100, 100_000])), rng.pick(INVALID_UTF8)]),
    })),
    timestamps: Array.from({ length: n }, () => rng.pick(EXTREMES)),
    values: Array.from({ length: rng.int(3) === 0 ? n + 1 : n }, () =>
      rng.pick([0, Number.NaN, Infinity, -Infinity, 1e308, -0]),
    ),
  }
}

function hostileWrite(rng: Rng): Buffer {
  return encodeWrite(
    Array.from({ length: rng.pick([0, 1, 2]) }, () => hostileSeries(rng)),
    rng.pick([0, 1, 2, 3, 4, 9]),
  )
}

const targetSelector: RawSelector = { metric: TARGET, matchers: [{ key: 'host', value: 'h.*', op: MatchOp.REGEX }] }
const baseWrite = encodeWrite([
  { metric: TARGET, tags: [{ key: 'host', value: 'h1' }], timestamps: [NOW - 1000, NOW], values: [1, 2] },
])
const baseQuery = encodeQuery({
  selector: targetSelector,
  startMs: NOW - 3_600_000,
  endMs: NOW + 1000,
  aggregation: { func: 2, stepMs: 60_000, groupBy: ['host'] },
})

const RPCS: readonly Rpc[] = [
  { path: '/v3storage.v1.WriteService/Write', kind: 'unary', bases: [baseWrite], hostile: (r) => [hostileWrite(r)] },
  {
    path: '/v3storage.v1.WriteService/WriteStream',
    kind: 'client',
    bases: [baseWrite],
    hostile: (r) => [hostileWrite(r), hostileWrite(r)],
  },
  {
    path: '/v3storage.v1.QueryService/Query',
    kind: 'unary',
    bases: [baseQuery, encodeQuery({ selector: targetSelector, startMs: 0, endMs: NOW + 1 })],
    hostile: (r) => [hostileQuery(r)],
    decode: (b) => QueryRequest.decode(b),
  },
  {
    path: '/v3storage.v1.QueryService/QueryStream',
    kind: 'server',
    bases: [baseQuery],
    hostile: (r) => [hostileQuery(r)],
    decode: (b) => QueryStreamRequest.decode(b),
  },
  {
    path: '/v3storage.v1.QueryService/Latest',
    kind: 'unary',
    bases: [encodeSelectorRequest(targetSelector)],
    hostile: (r) => [encodeSelectorRequest(hostileSelector(r))],
    decode: (b) => LatestRequest.decode(b),
  },
  {
    path: '/v3storage.v1.QueryService/ListSeries',
    kind: 'unary',
    bases: [encodeSelectorRequest(targetSelector)],
    hostile: (r) => [encodeSelectorRequest(hostileSelector(r))],
    decode: (b) => ListSeriesRequest.decode(b),
  },
  {
    path: '/v3storage.v1.StreamService/Ingest',
    kind: 'bidi',
    bases: [encodeIngest(1, baseWrite)],
    hostile: (r) => [encodeIngest(1, hostileWrite(r)), encodeIngest(r.int(4), hostileWrite(r))],
  },
  {
    path: '/v3storage.v1.StreamService/Subscribe',
    kind: 'server',
    bases: [encodeSubscribe(targetSelector, NOW - 60_000)],
    hostile: (r) => [encodeSubscribe(hostileSelector(r), r.pick(EXTREMES))],
    decode: (b) => SubscribeRequest.decode(b),
    options: { cancelAfterFirst: true },
  },
  {
    path: '/v3storage.v1.ClusterService/ListNodes',
    kind: 'unary',
    bases: [Buffer.alloc(0)],
    hostile: (r) => [r.bytes(r.int(16))],
  },
  {
    path: '/v3storage.v1.ClusterService/Locate',
    kind: 'unary',
    bases: [encodeLocate(TARGET, [{ key: 'host', value: 'h1' }])],
    hostile: (r) => [encodeLocate(hostileString(r), [{ key: hostileString(r), value: hostileString(r) }])],
    decode: (b) => LocateRequest.decode(b),
  },
  {
    path: '/v3storage.v1.AdminService/GetStats',
    kind: 'unary',
    bases: [Buffer.alloc(0)],
    hostile: (r) => [r.bytes(r.int(16))],
  },
  {
    path: '/v3storage.v1.AdminService/Compact',
    kind: 'unary',
    bases: [Buffer.alloc(0)],
    hostile: (r) => [r.bytes(r.int(16))],
  },
  {
    path: '/v3storage.v1.AdminService/DeleteSeries',
    kind: 'unary',
    bases: [
      encodeDelete({ metric: TARGET, matchers: [{ key: 'host', value: 'h9', op: MatchOp.EQ }] }, NOW - 1000, NOW),
    ],
    // Never the baseline's metric: hostileSelector draws from names the baseline does not use.
    hostile: (r) => [encodeDelete(hostileSelector(r), r.pick(EXTREMES), r.pick(EXTREMES))],
    decode: (b) => DeleteSeriesRequest.decode(b),
  },
  {
    path: '/grpc.health.v1.Health/Check',
    kind: 'unary',
    bases: [Buffer.from([0x0a, 0x00])],
    hostile: (r) => [Buffer.from([0x0a, 0x01, r.int(256)])],
  },
]

/** Random bytes: pure noise, or a run of plausible tags and values, which reaches deeper. */
function randomBytes(rng: Rng): Buffer {
  if (rng.int(2) === 0) return rng.bytes(rng.pick([0, 1, 2, 5, 17, 64, 512]))
  const parts: number[] = []
  const fields = rng.int(6) + 1
  for (let i = 0; i < fields; i++) {
    const field = rng.int(8) + 1
    const wireType = rng.pick([0, 1, 2, 2, 2, 3, 4, 5, 6, 7])
    parts.push((field << 3) | wireType)
    if (wireType === 2) {
      const len = rng.int(12)
      parts.push(rng.int(4) === 0 ? len + rng.int(5) : len)
      for (let j = 0; j < len; j++) parts.push(rng.int(256))
    } else {
      const n = rng.pick([1, 4, 8, 10, 11])
      for (let j = 0; j < n; j++) parts.push(rng.int(256))
    }
  }
  return Buffer.from(parts)
}

/** A valid request with a few bytes flipped, inserted, deleted, or cut off. */
function mutate(rng: Rng, base: Buffer): Buffer {
  let b = Buffer.from(base)
  const edits = rng.int(4) + 1
  for (let i = 0; i < edits; i++) {
    const at = rng.int(b.length + 1)
    switch (rng.int(6)) {
      case 0:
        if (b.length > 0) b[Math.min(at, b.length - 1)] = rng.int(256)
        break
      case 1:
        if (b.length > 0) b[Math.min(at, b.length - 1)] = rng.pick([0x00, 0x7f, 0x80, 0xff])
        break
      case 2:
        b = Buffer.concat([b.subarray(0, at), rng.bytes(rng.int(8) + 1), b.subarray(at)])
        break
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + rng.int(8) + 1))])
        break
      case 4:
        b = b.subarray(0, at)
        break
      default:
        b = Buffer.concat([b, b.subarray(at)])
    }
  }
  return b
}

type Kind = 'random' | 'mutated' | 'hostile'

interface Outcome {
  readonly rpc: Rpc
  readonly kind: Kind
  readonly bytes: readonly Buffer[]
  readonly code: status
  readonly details: string
}

/** Runs tasks with a bounded number in flight. */
async function pool<T>(tasks: readonly (() => Promise<T>)[], concurrency: number): Promise<T[]> {
  const results: T[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const task = tasks[next++]
      if (task) results.push(await task())
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return results
}

function describeOutcome(o: Outcome): string {
  const hex = o.bytes.map((b) =>
    b.length > 64 ? `${b.subarray(0, 64).toString('hex')}…(${b.length} B)` : b.toString('hex'),
  )
  return `${o.rpc.path} ${o.kind} [${hex.join(', ')}] -> ${status[o.code]} ${o.details} (seed ${SEED})`
}

describe(`fuzz of a real server, seed ${SEED}`, () => {
  let server: ServerProcess
  let raw: Client
  let baseline: SeriesPoints[]
  const rng = new Rng(SEED)

  const queryBaseline = () =>
    server.client.query({ selector: { metric: BASELINE }, startMs: BASE_T0 - 60_000, endMs: BASE_T0 + 3_600_000 })

  before(async () => {
    server = await startServerProcess()
    raw = rawClient(server.address)
    const timestamps = Array.from({ length: 120 }, (_, i) => BASE_T0 + i * 10_000)
    await server.client.write(
      ['h0', 'h1', 'h2'].map((host, h) => ({
        metric: BASELINE,
        tags: { host },
        timestamps,
        values: timestamps.map((_, i) => i * (h + 1) + 0.5),
      })),
    )
    // Cold data makes the aggregation paths walk runs, as in issue 14.
    await server.client.write([{ metric: 'fuzz_cold', timestamps: [Date.UTC(2026, 0, 1)], values: [1] }])
    await server.client.compact()
    baseline = await queryBaseline()
    assert.equal(baseline.length, 3)
  })

  after(async () => {
    raw?.close()
    if (server) {
      const { code } = await server.stop()
      const stderr = server.stderr()
      assert.equal(code, 0, stderr)
      // An unexpected error is logged by the server as it answers INTERNAL: there must be none.
      assert.doesNotMatch(stderr, /unexpected error|FATAL|Aborted/, stderr)
      await removeDataDir(server.dataDir)
    }
  })

  async function assertHealthy(label: string): Promise<void> {
    assert.equal(server.child.exitCode, null, `the server exited after ${label}: ${server.stderr()}`)
    assert.equal(await healthServing(raw), true, `health is not SERVING after ${label} (seed ${SEED})`)
    assert.deepEqual(await queryBaseline(), baseline, `the baseline changed after ${label} (seed ${SEED})`)
  }

  async function runBlock(kind: Kind, make: (rpc: Rpc) => Buffer[]): Promise<void> {
    const tasks = RPCS.flatMap((rpc) =>
      Array.from({ length: PER_RPC }, () => {
        const bytes = make(rpc)
        return async (): Promise<Outcome> => {
          const r = await rawCall(raw, rpc.path, rpc.kind, bytes, rpc.options)
          return { rpc, kind, bytes, code: r.code, details: r.details }
        }
      }),
    )
    const outcomes = await pool(tasks, CONCURRENCY)
    for (const o of outcomes) {
      assert.ok(ACCEPTABLE.has(o.code), describeOutcome(o))
      if (o.code === status.INVALID_ARGUMENT) assert.match(o.details, /\S+: /, describeOutcome(o))
      // Honest about luck: random bytes may be a valid request, but then they must decode as one.
      const [only] = o.bytes
      if (o.code === status.OK && o.kind !== 'hostile' && o.rpc.decode && only) {
        assert.doesNotThrow(() => o.rpc.decode?.(only), describeOutcome(o))
      }
    }
    const counts = new Map<string, number>()
    for (const o of outcomes) counts.set(status[o.code], (counts.get(status[o.code]) ?? 0) + 1)
    console.log(`${kind}: ${outcomes.length} calls, ${JSON.stringify(Object.fromEntries(counts))}`)
    await assertHealthy(`the ${kind} block`)
  }

  test(`random bytes on every RPC (seed ${SEED})`, { timeout: 60_000 }, async () => {
    await runBlock('random', (rpc) =>
      rpc.kind === 'unary' || rpc.kind === 'server' ? [randomBytes(rng)] : [randomBytes(rng), randomBytes(rng)],
    )
  })

  test(`mutated requests on every RPC (seed ${SEED})`, { timeout: 60_000 }, async () => {
    await runBlock('mutated', (rpc) => [mutate(rng, rng.pick(rpc.bases))])
  })

  test(`hostile values on every RPC (seed ${SEED})`, { timeout: 60_000 }, async () => {
    await runBlock('hostile', (rpc) => rpc.hostile(rng))
  })
})
