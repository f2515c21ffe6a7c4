// The peer transports: ZeroMQ over real sockets on 127.0.0.1 (ports picked by the OS), the
// in-memory one with its seeded faults, and the write payload codec. Tests wait on conditions,
// never on fixed sleeps, and close every socket they open.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { curveKeyPair, Dealer } from 'zeromq'
import {
  PeerKind,
  PeerRequest,
  PeerResponse,
  PeerSeries,
  PeerStatus,
  PeerWriteRequest,
} from '../../gen/v3storage/internal/v1/peer.js'
import { PeerLatestResponse, PeerQueryResponse } from '../../gen/v3storage/internal/v1/peer_query.js'
import { PeerRepairReadResponse } from '../../gen/v3storage/internal/v1/peer_repair.js'
import { peerWriteSize } from '../../src/cluster/hint-batch.js'
import { MemoryNetwork } from '../../src/cluster/memory-transport.js'
import {
  AnswerIdentities,
  decodePeerQuerySeries,
  decodePeerRequest,
  decodePeerResponse,
  decodePeerSeries,
  decodePeerSeriesList,
  decodeRequestFrames,
  decodeResponseFrames,
  encodePeerQueryAnswer,
  encodePeerWrite,
  PeerInternalError,
  PeerSeriesHeaders,
  type PeerWriteEntry,
} from '../../src/cluster/peer-codec.js'
import { newPeerKey, parsePeerKey } from '../../src/cluster/peer-key.js'
import {
  encodeRequestFrames,
  encodeResponseFrames,
  type PeerEndpoint,
  type PeerHandler,
  type PeerReply,
  type PeerTransport,
} from '../../src/cluster/peer-transport.js'
import { ZmqPeerTransport, type ZmqPeerTransportOptions } from '../../src/cluster/zmq-peer-transport.js'
import {
  DeadlineError,
  LimitError,
  NotFoundError,
  UnavailableError,
  V3Error,
  ValidationError,
} from '../../src/model/errors.js'
import { prng } from '../../src/model/prng.js'
import type { SeriesPoints } from '../../src/model/types.js'
import { refused, speaksCurve } from '../fixtures/net.js'
import { waitFor } from '../fixtures/wait.js'

const HOST = '127.0.0.1'
const WRITE = PeerKind.PEER_KIND_WRITE

/** A promise with its resolver, for handlers that finish when the test says so. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => {}
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

const echo: PeerHandler = async (_from, _kind, body) => body

/** Transports opened by a test, closed after it whatever happens. */
function transports(t: TestContext): {
  zmq: (options: ZmqPeerTransportOptions) => ZmqPeerTransport
  serve: (
    id: string,
    handler: PeerHandler,
    options?: Partial<ZmqPeerTransportOptions>,
  ) => Promise<{ transport: ZmqPeerTransport; peer: PeerEndpoint }>
} {
  const open: PeerTransport[] = []
  t.after(async () => {
    await Promise.all(open.map((x) => x.close()))
  })
  const zmq = (options: ZmqPeerTransportOptions): ZmqPeerTransport => {
    const transport = new ZmqPeerTransport(options)
    open.push(transport)
    return transport
  }
  return {
    zmq,
    serve: async (id, handler, options = {}) => {
      const transport = zmq({ nodeId: id, listen: `${HOST}:0`, ...options })
      const address = await transport.listen(handler)
      return { transport, peer: { id, address } }
    },
  }
}

/** Values whose bits a careless codec would change: NaN payloads, signed zeros, infinities, subnormals. */
function awkwardSeries(points: number, seed: number): SeriesPoints {
  const random = prng(seed)
  const timestamps = new Float64Array(points)
  const values = new Float64Array(points)
  const bits = new DataView(values.buffer)
  for (let i = 0; i < points; i++) {
    timestamps[i] = 1_700_000_000_000 + i * 10
    switch (i % 7) {
      case 0:
        bits.setUint32(i * 8 + 4, 0x7ff80000 | (random() * 0x7ffff), true)
        bits.setUint32(i * 8, random() * 2 ** 32, true)
        break
      case 1:
        bits.setBigUint64(i * 8, 0xfff0000000000001n, true)
        break
      case 2:
        values[i] = -0
        break
      case 3:
        values[i] = i % 2 === 0 ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY
        break
      case 4:
        values[i] = Number.MIN_VALUE * (i + 1)
        break
      default:
        values[i] = (random() - 0.5) * 1e6
    }
  }
  return { metric: 'cpu.usage', tags: [{ key: 'host', value: 'h-ü-1' }], timestamps, values }
}

function sameBits(a: Float64Array, b: Float64Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** A series as the generated PeerSeries message: what the direct encoders are compared with. */
function encodePeerSeries(series: PeerWriteEntry): PeerSeries {
  return {
    metric: series.metric,
    tags: series.tags.map((t) => ({ key: t.key, value: t.value })),
    timestamps: Buffer.from(series.timestamps.buffer, series.timestamps.byteOffset, series.timestamps.byteLength),
    values: Buffer.from(series.values.buffer, series.values.byteOffset, series.values.byteLength),
    version: series.version ?? 0,
  }
}

describe('peer codec', () => {
  test('the direct write encoder writes exactly the bytes of the generated one', () => {
    const series = [
      awkwardSeries(1000, 1),
      { ...awkwardSeries(3, 2), metric: 'mem', tags: [] },
      { ...awkwardSeries(0, 4), metric: 'empty', tags: [{ key: 'k', value: 'ü€😀'.repeat(40) }] },
      {
        ...awkwardSeries(200, 5),
        metric: 'm'.repeat(300),
        tags: [
          { key: 'a', value: 'b' },
          { key: 'c', value: 'd' },
        ],
      },
    ]
    const mine = Buffer.from(encodePeerWrite(series))
    const generated = Buffer.from(PeerWriteRequest.encode({ series: series.map(encodePeerSeries) }).finish())
    assert.ok(mine.equals(generated), 'byte-for-byte equal')
    const versioned = series.map((s, i) => ({ ...s, version: i === 1 ? 0 : 1_234_567_890_123 + i }))
    const mineVersioned = Buffer.from(encodePeerWrite(versioned))
    const generatedVersioned = Buffer.from(
      PeerWriteRequest.encode({ series: versioned.map(encodePeerSeries) }).finish(),
    )
    assert.ok(mineVersioned.equals(generatedVersioned), 'byte-for-byte equal with versions')
  })

  test('the read and repair answer encoders write exactly the bytes of the generated ones, identities cached or not', () => {
    const tags = Object.freeze([{ key: 'host', value: 'ü€😀' }])
    const series = [
      { ...awkwardSeries(500, 1), metric: 'cpu', tags },
      { ...awkwardSeries(0, 2), metric: 'mem', tags: [] },
      { ...awkwardSeries(1, 3), metric: 'cpu_user', tags },
    ]
    const identities = new AnswerIdentities()
    const generatedLatest = Buffer.from(PeerLatestResponse.encode({ series: series.map(encodePeerSeries) }).finish())
    const generatedRepair = Buffer.from(
      PeerRepairReadResponse.encode({ series: series.map(encodePeerSeries) }).finish(),
    )
    assert.ok(Buffer.from(encodePeerWrite(series)).equals(generatedRepair), 'repair read')
    const results = [series, [], series.slice(1)]
    const generatedQuery = Buffer.from(
      PeerQueryResponse.encode({
        results: results.map((list) => ({ series: list.map(encodePeerSeries), partials: [] })),
      }).finish(),
    )
    // Twice: the second answer takes every identity from the cache the first one filled.
    for (let round = 0; round < 2; round++) {
      assert.ok(Buffer.from(encodePeerWrite(series, 0, identities)).equals(generatedLatest), `latest, round ${round}`)
      assert.ok(Buffer.from(encodePeerQueryAnswer(results, identities)).equals(generatedQuery), `query, round ${round}`)
    }
    assert.deepEqual(
      decodePeerQuerySeries(encodePeerQueryAnswer(results, identities)).map((list) => list.map((s) => s.metric)),
      [['cpu', 'mem', 'cpu_user'], [], ['mem', 'cpu_user']],
    )
  })

  test("a request's frames decode to its envelope and body; a body travels in a frame of its own, uncopied", () => {
    for (const body of [new Uint8Array(0), Uint8Array.of(1, 2, 3), new Uint8Array(300_000).fill(7)]) {
      const frames = encodeRequestFrames(
        { kind: PeerKind.PEER_KIND_WRITE, body, ringVersion: 9, term: 4, timeoutMs: 1000 },
        123_456,
        77,
        'node-é',
        1_800_000_000_000,
      )
      assert.equal(frames.length, body.byteLength === 0 ? 1 : 2)
      if (body.byteLength > 0) assert.equal(frames[1], body, 'the body frame is the body itself')
      assert.equal(PeerRequest.decode(frames[0]!).body.byteLength, 0, 'the envelope holds no body')
      const decoded = decodeRequestFrames(frames)
      assert.equal(decoded.requestId, 123_456)
      assert.equal(decoded.sequence, 77)
      assert.equal(decoded.ringVersion, 9)
      assert.equal(decoded.term, 4)
      assert.equal(decoded.sender, 'node-é')
      assert.equal(decoded.kind, PeerKind.PEER_KIND_WRITE)
      assert.equal(decoded.deadlineMs, 1_800_000_000_000)
      assert.ok(Buffer.from(decoded.body).equals(Buffer.from(body)))
    }
  })

  test("a response's frames keep its status, message, violations, limit and body", () => {
    for (const body of [undefined, new Uint8Array(0), new Uint8Array(200_000).fill(3)]) {
      const frames = encodeResponseFrames(42, 8, {
        status: PeerStatus.PEER_STATUS_INVALID_ARGUMENT,
        message: 'bad',
        violations: [{ field: 'series[0].metric', description: 'is empty' }],
        limit: { limit: 'max_points', value: 10, reason: 'too many' },
        ...(body === undefined ? {} : { body }),
      })
      assert.equal(frames.length, (body?.byteLength ?? 0) === 0 ? 1 : 2)
      const decoded = decodeResponseFrames(frames)
      assert.equal(decoded.requestId, 42)
      assert.equal(decoded.ringVersion, 8)
      assert.equal(decoded.status, PeerStatus.PEER_STATUS_INVALID_ARGUMENT)
      assert.equal(decoded.message, 'bad')
      assert.deepEqual(decoded.violations, [{ field: 'series[0].metric', description: 'is empty' }])
      assert.deepEqual(decoded.limit, { limit: 'max_points', value: 10, reason: 'too many' })
      assert.ok(Buffer.from(decoded.body).equals(Buffer.from(body ?? new Uint8Array(0))))
    }
  })

  test('the envelope decoders give what the generated ones give, with the body a view of the frame', () => {
    const body = new Uint8Array(100_000).fill(5)
    const other = Uint8Array.of(9, 8, 7)
    const request = {
      requestId: 5,
      sequence: 6,
      ringVersion: 7,
      term: 8,
      sender: 'n1',
      kind: PeerKind.PEER_KIND_QUERY,
      body: Buffer.from(body),
      deadlineMs: 1_800_000_000_000,
    }
    // The body appended after the other fields, as an earlier release encoded its envelopes.
    const bodyLast = (head: Uint8Array, field: number): Buffer =>
      Buffer.concat([head, Uint8Array.of((field << 3) | 2, 0xa0, 0x8d, 0x06), body])
    const requestFrames = [
      bodyLast(PeerRequest.encode({ ...request, body: Buffer.alloc(0) }).finish(), 7),
      // The generated encoder's order: the deadline after the body.
      Buffer.from(PeerRequest.encode(request).finish()),
      // Two bodies: the last one wins, as in protobuf.
      Buffer.concat([
        PeerRequest.encode({ ...request, body: Buffer.from(other), deadlineMs: 0 }).finish(),
        PeerRequest.encode({ ...request, requestId: 0, sequence: 0 }).finish(),
      ]),
      // No body, and a field this version does not know (field 15, varint 1).
      Buffer.concat([PeerRequest.encode({ ...request, body: Buffer.alloc(0) }).finish(), Uint8Array.of(120, 1)]),
    ]
    for (const [i, frame] of requestFrames.entries()) {
      const mine = decodePeerRequest(frame)
      const generated = PeerRequest.decode(frame)
      assert.deepEqual({ ...mine, body: [...mine.body] }, { ...generated, body: [...generated.body] }, `frame ${i}`)
      if (mine.body.length > 0) assert.equal(mine.body.buffer, frame.buffer, `frame ${i}: the body is a view`)
    }
    const response = {
      requestId: 3,
      status: PeerStatus.PEER_STATUS_OK,
      message: 'fine',
      violations: [{ field: 'f', description: 'd' }],
      body: Buffer.from(body),
      ringVersion: 4,
      limit: { limit: 'l', value: 1, reason: 'r' },
    }
    const responseFrames = [
      bodyLast(PeerResponse.encode({ ...response, body: Buffer.alloc(0) }).finish(), 5),
      Buffer.from(PeerResponse.encode(response).finish()),
    ]
    for (const [i, frame] of responseFrames.entries()) {
      const mine = decodePeerResponse(frame)
      const generated = PeerResponse.decode(frame)
      assert.deepEqual({ ...mine, body: [...mine.body] }, { ...generated, body: [...generated.body] }, `frame ${i}`)
      assert.equal(mine.body.buffer, frame.buffer, `response frame ${i}: the body is a view`)
    }
    // A body cut short fails as the generated decoder does, with an error rather than a short body.
    const cut = requestFrames[0]!.subarray(0, requestFrames[0]!.length - 10)
    assert.throws(() => PeerRequest.decode(cut))
    assert.throws(() => decodePeerRequest(cut), /premature EOF/)
  })

  test('frames other than an envelope and at most one body frame are refused', () => {
    const envelope = (body: Uint8Array): Uint8Array =>
      PeerRequest.encode({
        requestId: 1,
        sequence: 1,
        ringVersion: 1,
        term: 0,
        sender: 'n1',
        kind: PeerKind.PEER_KIND_WRITE,
        body: Buffer.from(body),
        deadlineMs: 0,
      }).finish()
    assert.throws(() => decodeRequestFrames([]), /0 frames instead of 1 or 2/)
    assert.throws(
      () => decodeRequestFrames([envelope(new Uint8Array(0)), Uint8Array.of(1), Uint8Array.of(2)]),
      /3 frames instead of 1 or 2/,
    )
    assert.throws(
      () => decodeRequestFrames([envelope(Uint8Array.of(1)), Uint8Array.of(2)]),
      /both in the envelope and in a frame of its own/,
    )
    assert.throws(() => decodeResponseFrames([]), /0 frames instead of 1 or 2/)
    // A body inside the envelope, as an earlier release sends it, is read as before.
    assert.deepEqual([...decodeRequestFrames([envelope(Uint8Array.of(4, 5))]).body], [4, 5])
  })

  test('write versions survive the codec and the concatenation of write bodies (hints)', () => {
    const a = { metric: 'cpu', tags: [], timestamps: Float64Array.of(1), values: Float64Array.of(2), version: 7 }
    const b = { ...a, values: Float64Array.of(3), version: 9 }
    const c = { ...a, values: Float64Array.of(4), version: 0 }
    const joined = Buffer.concat([encodePeerWrite([a]), encodePeerWrite([b, c])])
    const decoded = decodePeerSeriesList(joined)
    // 0 is no version, as the contract says.
    assert.deepEqual(
      decoded.map((s) => s.version),
      [7, 9, 0],
    )
    assert.deepEqual(peerWriteSize(joined), { series: 3, points: 3 })
  })

  test('a series received again gets the same frozen tags, so validation is not repeated', () => {
    const headers = new PeerSeriesHeaders()
    const a = {
      metric: 'cpu',
      tags: [{ key: 'host', value: 'a' }],
      timestamps: Float64Array.of(1),
      values: Float64Array.of(2),
    }
    const b = { ...a, tags: [{ key: 'host', value: 'b' }] }
    const first = decodePeerSeriesList(encodePeerWrite([a, b]), headers)
    const again = decodePeerSeriesList(
      encodePeerWrite([{ ...a, timestamps: Float64Array.of(5), values: Float64Array.of(6) }, b]),
      headers,
    )
    assert.equal(again[0]?.tags, first[0]?.tags)
    assert.equal(again[1]?.tags, first[1]?.tags)
    assert.notEqual(first[0]?.tags, first[1]?.tags)
    assert.ok(Object.isFrozen(first[0]?.tags))
    assert.ok(Object.isFrozen(first[0]?.tags[0]))
    assert.deepEqual(again[0]?.tags, a.tags)
    assert.deepEqual([...(again[0]?.values ?? [])], [6])
  })

  test("a peer's query answer decodes per selector, with a series' tags shared between answers", () => {
    const headers = new PeerSeriesHeaders()
    const a = awkwardSeries(5, 1)
    const b = { ...awkwardSeries(2, 2), metric: 'mem', tags: [{ key: 'host', value: 'Zürich' }] }
    const answer = (values: number) =>
      PeerQueryResponse.encode({
        results: [
          { series: [encodePeerSeries(a), encodePeerSeries(b)], partials: [] },
          { series: [], partials: [] },
          {
            series: [encodePeerSeries({ ...b, values: new Float64Array(b.timestamps.length).fill(values) })],
            partials: [],
          },
        ],
      }).finish()
    const first = decodePeerQuerySeries(answer(1), headers)
    assert.deepEqual(
      first.map((r) => r.map((s) => s.metric)),
      [[a.metric, 'mem'], [], ['mem']],
    )
    assert.deepEqual(first[0]?.[1]?.tags, b.tags)
    assert.ok(sameBits(first[0]![0]!.values, a.values) && sameBits(first[0]![0]!.timestamps, a.timestamps))
    assert.deepEqual([...first[2]![0]!.values], [1, 1])
    const again = decodePeerQuerySeries(answer(2), headers)
    assert.equal(again[0]?.[0]?.tags, first[0]?.[0]?.tags)
    assert.equal(again[2]?.[0]?.tags, first[0]?.[1]?.tags)
    assert.deepEqual([...again[2]![0]!.values], [2, 2])
    // A defect names the selector's result and the series in it.
    const bad = PeerQueryResponse.encode({
      results: [
        { series: [encodePeerSeries(a)], partials: [] },
        { series: [{ ...encodePeerSeries(a), metric: '' }], partials: [] },
      ],
    }).finish()
    assert.throws(
      () => decodePeerQuerySeries(bad, headers),
      (err: unknown) =>
        err instanceof ValidationError && /results\[1\]\.series\[0\]\.metric: is empty/.test(err.message),
    )
    assert.throws(
      () => decodePeerQuerySeries(answer(1).subarray(0, 40)),
      (err: unknown) => err instanceof ValidationError && /results\[0\]/.test(err.message),
    )
  })

  test('a write payload round-trips bit-exact into aligned arrays', () => {
    const series = [awkwardSeries(1000, 1), { ...awkwardSeries(3, 2), metric: 'mem', tags: [] }]
    const decoded = decodePeerSeriesList(encodePeerWrite(series))
    assert.equal(decoded.length, 2)
    for (const [i, s] of decoded.entries()) {
      const want = series[i] as SeriesPoints
      assert.equal(s.metric, want.metric)
      assert.deepEqual(s.tags, want.tags)
      assert.ok(sameBits(s.timestamps, want.timestamps) && sameBits(s.values, want.values))
      assert.equal(s.values.byteOffset % 8, 0)
    }
    const viaMessage = decodePeerSeries(
      PeerSeries.decode(PeerSeries.encode(encodePeerSeries(series[0] as SeriesPoints)).finish()),
    )
    assert.ok(sameBits(viaMessage.values, (series[0] as SeriesPoints).values))
  })

  test('a bad write payload is a ValidationError naming the field', () => {
    const bad = (s: Partial<PeerSeries>): Uint8Array =>
      PeerWriteRequest.encode({
        series: [
          { metric: 'm', tags: [], timestamps: Buffer.alloc(8), values: Buffer.alloc(8), version: 0 },
          { metric: 'm', tags: [], timestamps: Buffer.alloc(8), values: Buffer.alloc(8), version: 0, ...s },
        ],
      }).finish()
    const cases: [Uint8Array, RegExp][] = [
      [bad({ timestamps: Buffer.alloc(12), values: Buffer.alloc(12) }), /series\[1\]\.timestamps: 12 bytes/],
      [bad({ values: Buffer.alloc(16) }), /series\[1\]\.values: 2 values for 1 timestamps/],
      [bad({ metric: '' }), /series\[1\]\.metric: is empty/],
      [bad({ tags: [{ key: '', value: 'v' }] }), /series\[1\]\.tags\[0\]\.key: is empty/],
      [bad({ version: 1.5 }), /series\[1\]\.version: must be a non-negative integer/],
    ]
    // Invalid UTF-8 in a metric: the generated encoder cannot write it, so patch the bytes.
    const utf8 = Buffer.from(bad({ metric: 'mé' }))
    utf8[utf8.indexOf(Buffer.from('mé')) + 1] = 0xff
    cases.push([utf8, /series\[1\]\.metric: is not valid UTF-8/])
    cases.push([encodePeerWrite([awkwardSeries(10, 3)]).subarray(0, 50), /series\[0\]: cannot decode the series/])
    for (const [bytes, message] of cases) {
      assert.throws(
        () => decodePeerSeriesList(bytes),
        (err: unknown) => err instanceof ValidationError && message.test(err.message),
      )
    }
  })

  test('random and mutated bytes never throw anything but a ValidationError', () => {
    const random = prng(7)
    const valid = encodePeerWrite([awkwardSeries(20, 4)])
    // The owner decodes with a series cache, which scans the identity bytes before the full decode.
    const headers = new PeerSeriesHeaders()
    for (let i = 0; i < 2000; i++) {
      const bytes =
        i % 2 === 0
          ? Uint8Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256))
          : Uint8Array.from(valid, (b) => (random() < 0.02 ? Math.floor(random() * 256) : b))
      for (const cache of [undefined, headers]) {
        try {
          decodePeerSeriesList(bytes, cache)
        } catch (err) {
          assert.ok(err instanceof ValidationError, `input ${i} threw ${String(err)}`)
        }
      }
    }
  })
})

describe('ZmqPeerTransport', () => {
  test('100,000 points cross and come back bit-exact, with the ring version', async (t) => {
    const { zmq, serve } = transports(t)
    const { peer } = await serve(
      'b',
      async (from, kind, body) => {
        assert.equal(from, 'a')
        assert.equal(kind, WRITE)
        return encodePeerWrite(decodePeerSeriesList(body))
      },
      { ringVersion: () => 7 },
    )
    const client = zmq({ nodeId: 'a' })
    const series = [awkwardSeries(60_000, 5), awkwardSeries(40_000, 6)]
    const reply = await client.request(peer, {
      kind: WRITE,
      body: encodePeerWrite(series),
      ringVersion: 3,
      timeoutMs: 10_000,
    })
    assert.equal(reply.ringVersion, 7)
    const back = decodePeerSeriesList(reply.body)
    assert.equal(back.length, 2)
    for (const [i, s] of back.entries()) {
      assert.ok(sameBits(s.timestamps, (series[i] as SeriesPoints).timestamps))
      assert.ok(sameBits(s.values, (series[i] as SeriesPoints).values))
    }
    assert.equal(Object.is(back[0]?.values[2], -0), true)
  })

  test('with a peer key the port speaks CURVE: a node holding the key is answered; another key, none, or a plain socket is not', async (t) => {
    const { zmq, serve } = transports(t)
    const key = newPeerKey()
    const served: string[] = []
    const warnings: string[] = []
    const logger = { info: () => {}, warn: (_obj: object, msg = '') => warnings.push(msg), error: () => {} }
    const { transport: server, peer } = await serve(
      'b',
      async (from, _kind, body) => {
        served.push(from)
        return body
      },
      { key, logger },
    )
    // Its greeting names CURVE; a port without a key (NULL) hangs up on a CURVE greeting.
    assert.equal(await speaksCurve(peer.address), true)
    const { peer: plainPeer } = await serve('p', echo)
    assert.equal(await speaksCurve(plainPeer.address), false)

    const body = new Uint8Array([1, 2, 3])
    const call = { kind: WRITE, body, ringVersion: 1, timeoutMs: 5000 }
    const reply = await zmq({ nodeId: 'a', key }).request(peer, call)
    assert.deepEqual([...reply.body], [1, 2, 3])
    for (const [id, options] of [
      ['c', { key: newPeerKey() }],
      ['d', {}],
    ] as const) {
      await assert.rejects(
        zmq({ nodeId: id, ...options }).request(peer, { ...call, timeoutMs: 500 }),
        (err: unknown) =>
          err instanceof UnavailableError && err.message === `node b (${peer.address}) did not answer within 500 ms`,
        `node ${id}`,
      )
    }
    // A plain socket, and one that knows the cluster's public key (public keys are not secret) but
    // holds another secret key: the ZAP handler refuses the latter.
    const stranger = curveKeyPair()
    for (const [id, options] of [
      ['e', {}],
      ['f', { curveServerKey: key.publicKey, curvePublicKey: stranger.publicKey, curveSecretKey: stranger.secretKey }],
    ] as const) {
      const raw = new Dealer({ routingId: id, linger: 0, ...options })
      t.after(() => raw.close())
      raw.connect(`tcp://${peer.address}`)
      await raw.send([...encodeRequestFrames({ ...call, timeoutMs: 500 }, 1, 1, id, Date.now() + 500)])
      const answered = await Promise.race([raw.receive().then(() => true), sleep(1000).then(() => false)])
      assert.equal(answered, false, `raw socket ${id} gets no answer`)
    }
    assert.deepEqual(served, ['a'], 'only the node holding the key was served')
    // The stranger got as far as the ZAP handler, which refused it; the node says so, and counts it.
    assert.ok(
      warnings.some((w) => /refused a peer connection: it does not hold this cluster's peer key/.test(w)),
      warnings.join('\n'),
    )
    assert.ok(server.stats().connectionsRefused >= 1, `refused ${server.stats().connectionsRefused}`)
  })

  test('a peer key file holds the Z85 secret key; the public key is derived as ZeroMQ derives it', () => {
    for (let i = 0; i < 20; i++) {
      const pair = curveKeyPair()
      const key = parsePeerKey(`${pair.secretKey}\n`)
      assert.equal(key.secretKey, pair.secretKey)
      assert.equal(key.publicKey, pair.publicKey)
    }
    const fresh = newPeerKey()
    assert.equal(parsePeerKey(fresh.secretKey).publicKey, fresh.publicKey)
    for (const bad of ['', 'short', `${fresh.secretKey}x`, `${fresh.secretKey.slice(0, 39)}"`, '#'.repeat(40)]) {
      assert.throws(
        () => parsePeerKey(bad),
        (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'peer-key',
        JSON.stringify(bad),
      )
    }
  })

  test('domain errors cross intact; anything else names the peer', async (t) => {
    const { zmq, serve } = transports(t)
    const thrown: Record<string, Error> = {
      validation: new ValidationError([
        { field: 'series[0].metric', description: 'is empty' },
        { field: 'series[2].tags[1].key', description: 'must match [a-zA-Z_][a-zA-Z0-9_.:-]*' },
      ]),
      limit: new LimitError('max_points_per_request', 1000, 'cannot write 1001 points'),
      notFound: new NotFoundError('no series cpu{host="x"}'),
      unavailable: new UnavailableError('node c (10.0.0.3:7001) did not answer within 50 ms'),
      deadline: new DeadlineError('the deadline passed'),
      bug: new TypeError('boom'),
    }
    const { peer } = await serve('b', async (_f, _k, body) => {
      throw thrown[Buffer.from(body).toString()]
    })
    const client = zmq({ nodeId: 'a' })
    const call = (name: string) =>
      client.request(peer, { kind: PeerKind.PEER_KIND_QUERY, body: Buffer.from(name), ringVersion: 1, timeoutMs: 5000 })
    for (const [name, err] of Object.entries(thrown)) {
      await assert.rejects(call(name), (got: unknown) => {
        if (err instanceof V3Error) {
          assert.equal((got as Error).constructor, err.constructor)
          assert.equal((got as Error).message, err.message)
        }
        if (err instanceof ValidationError) assert.deepEqual((got as ValidationError).violations, err.violations)
        if (err instanceof LimitError) {
          const limit = got as LimitError
          assert.deepEqual([limit.limit, limit.value, limit.reason], [err.limit, err.value, err.reason])
        }
        if (!(err instanceof V3Error)) {
          assert.ok(got instanceof PeerInternalError)
          assert.equal(got.node, 'b')
          assert.match(got.message, /node b failed: boom/)
        }
        return true
      })
    }
  })

  test('a peer that is not listening fails with UnavailableError naming it, within the timeout', async (t) => {
    const { zmq, serve } = transports(t)
    const { transport: gone, peer } = await serve('ghost', echo)
    await gone.close()
    // ZeroMQ closes the listening socket in its own thread, a moment after close() returns; a
    // connection in that moment is accepted and then dropped, which fails the request at once
    // (as a dropped connection should) instead of at its timeout, which is what this test is about.
    await waitFor('the port to refuse connections', () => refused(peer.address), 10_000, 10)
    const client = zmq({ nodeId: 'a' })
    const start = Date.now()
    await assert.rejects(
      client.request(peer, { kind: WRITE, body: new Uint8Array(10), ringVersion: 1, timeoutMs: 300 }),
      (err: unknown) =>
        err instanceof UnavailableError && err.message === `node ghost (${peer.address}) did not answer within 300 ms`,
    )
    const elapsed = Date.now() - start
    assert.ok(elapsed >= 290 && elapsed < 2000, `took ${elapsed} ms`)
    assert.equal(client.stats().peers[0]?.timeouts, 1)
  })

  test('requests pending on a peer whose connection drops fail at once, and later ones recover when it restarts', async (t) => {
    const { zmq, serve } = transports(t)
    let entered = 0
    const { transport: first, peer } = await serve('b', async (_f, _k, _b, meta) => {
      entered++
      // Never answers: it only ends when the transport closes and aborts it.
      await new Promise((_resolve, reject) => meta.signal.addEventListener('abort', () => reject(meta.signal.reason)))
      return new Uint8Array(0)
    })
    const client = zmq({ nodeId: 'a', reconnectIntervalMs: 20 })
    const pending = [1, 2, 3].map((i) =>
      // A minute: the dropped connection, not the timeout, must end them.
      client.request(peer, { kind: WRITE, body: Buffer.from([i]), ringVersion: 1, timeoutMs: 60_000 }),
    )
    await waitFor('the three requests to reach the handler', () => entered === 3, 10_000, 5)
    const stopped = Date.now()
    await first.close()
    for (const p of pending) {
      await assert.rejects(p, (err: unknown) => {
        assert.ok(err instanceof UnavailableError)
        assert.equal(err.message, `the connection to node b (${peer.address}) dropped before it answered`)
        return true
      })
    }
    assert.ok(Date.now() - stopped < 10_000, `took ${Date.now() - stopped} ms`)
    const lost = client.stats().peers[0]
    assert.deepEqual([lost?.requestsLost, lost?.timeouts, lost?.inFlight], [3, 0, 0])

    const restarted = zmq({ nodeId: 'b', listen: peer.address })
    await waitFor(
      'the port to be free again',
      async () => {
        try {
          await restarted.listen(echo)
          return true
        } catch {
          return false
        }
      },
      10_000,
      5,
    )
    await waitFor(
      'a request to succeed after the restart',
      async () => {
        try {
          const reply = await client.request(peer, {
            kind: WRITE,
            body: Buffer.from('hi'),
            ringVersion: 1,
            timeoutMs: 300,
          })
          return Buffer.from(reply.body).toString() === 'hi'
        } catch (err) {
          assert.ok(err instanceof UnavailableError)
          return false
        }
      },
      10_000,
      5,
    )
    const stats = client.stats().peers[0]
    assert.ok(stats !== undefined && stats.requestsLost >= 3 && stats.inFlight === 0)
  })

  test('malformed frames are counted and answered where they name a request, and serving goes on', async (t) => {
    const { zmq, serve } = transports(t)
    let handled = 0
    const { transport: server, peer } = await serve(
      'b',
      async (_f, _k, body) => {
        handled++
        return body
      },
      { maxMessageBytes: 2 ** 20 },
    )
    const evil = new Dealer({ routingId: 'evil', linger: 0 })
    t.after(() => evil.close())
    evil.connect(`tcp://${peer.address}`)
    const request = (fields: Partial<PeerRequest>): Uint8Array =>
      PeerRequest.encode({
        requestId: 1,
        sequence: 1,
        ringVersion: 1,
        term: 0,
        sender: 'evil',
        kind: WRITE,
        body: Buffer.alloc(0),
        deadlineMs: 0,
        ...fields,
      }).finish()
    const random = prng(11)
    let malformed = 0
    for (let i = 0; i < 30; i++) {
      await evil.send(
        Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256))),
      )
      malformed++
    }
    await evil.send([request({ requestId: 2 }), Buffer.from('body'), Buffer.from('extra')])
    await evil.send([request({ requestId: 8, body: Buffer.from('inside') }), Buffer.from('and outside')])
    await evil.send(Buffer.alloc(0))
    // A body that claims 2 GiB and ends after a few bytes.
    const truncated = Buffer.concat([
      Buffer.from(request({ requestId: 3 })),
      Buffer.from([0x3a, 0x80, 0x80, 0x80, 0x80, 0x08, 1, 2]),
    ])
    await evil.send(truncated)
    await evil.send(request({ requestId: 4, kind: 99 as PeerKind }))
    await evil.send(request({ requestId: 5, sender: 'mallory' }))
    await evil.send(request({ requestId: 6, sequence: 0 }))
    malformed += 7
    // Not malformed: a request whose deadline passed is answered without running.
    await evil.send(request({ requestId: 7, deadlineMs: 1 }))
    const answers = new Map<number, PeerResponse>()
    while (answers.size < 4) {
      const [frame] = await evil.receive()
      const response = PeerResponse.decode(frame as Buffer)
      answers.set(response.requestId, response)
    }
    assert.equal(answers.get(4)?.status, PeerStatus.PEER_STATUS_INVALID_ARGUMENT)
    assert.equal(answers.get(4)?.violations[0]?.field, 'kind')
    assert.equal(answers.get(5)?.violations[0]?.field, 'sender')
    assert.equal(answers.get(6)?.violations[0]?.field, 'sequence')
    assert.equal(answers.get(7)?.status, PeerStatus.PEER_STATUS_DEADLINE_EXCEEDED)
    await waitFor(
      `${malformed} malformed messages counted`,
      () => server.stats().malformedMessages === malformed,
      10_000,
      5,
    )
    // Over maxMessageBytes: ZeroMQ drops the connection before the frame reaches the node.
    await evil.send(Buffer.alloc(2 ** 20 + 10))
    const client = zmq({ nodeId: 'a' })
    for (let i = 0; i < 20; i++) {
      const reply = await client.request(peer, { kind: WRITE, body: Buffer.from([i]), ringVersion: 1, timeoutMs: 5000 })
      assert.deepEqual([...reply.body], [i])
    }
    assert.equal(handled, 20)
    assert.equal(server.stats().malformedMessages, malformed)
  })

  test('a slow peer pushes back: many concurrent requests all complete, within the in-flight bounds', async (t) => {
    const { zmq, serve } = transports(t)
    let running = 0
    let maxRunning = 0
    let maxClientInFlight = 0
    let maxClientQueue = 0
    const random = prng(3)
    const client = zmq({ nodeId: 'a', maxInFlightPerPeer: 8, maxWaitingPerPeer: 1000 })
    const { peer } = await serve(
      'b',
      async (_f, _k, body) => {
        running++
        maxRunning = Math.max(maxRunning, running)
        const stats = client.stats().peers[0]
        maxClientInFlight = Math.max(maxClientInFlight, stats?.inFlight ?? 0)
        maxClientQueue = Math.max(maxClientQueue, stats?.queueDepth ?? 0)
        // Simulated work of a few milliseconds, so requests pile up behind the bounds.
        await new Promise((resolve) => setTimeout(resolve, random() * 3))
        running--
        return body
      },
      { maxServingPerSender: 4 },
    )
    const count = 600
    const results = await Promise.all(
      Array.from({ length: count }, (_, i) => {
        const body = Buffer.alloc(1024, i % 251)
        body.writeUInt32LE(i)
        return client.request(peer, { kind: WRITE, body, ringVersion: 1, timeoutMs: 30_000 }).then((r) => ({ i, r }))
      }),
    )
    for (const { i, r } of results) {
      assert.equal(Buffer.from(r.body).readUInt32LE(0), i)
      assert.equal(r.body[1000], i % 251)
    }
    assert.ok(maxRunning <= 4, `server ran ${maxRunning} at once`)
    assert.ok(maxClientInFlight <= 8, `client had ${maxClientInFlight} in flight`)
    assert.ok(maxClientQueue > 0 && maxClientQueue <= count - 8)
    const stats = client.stats().peers[0]
    assert.deepEqual([stats?.responses, stats?.timeouts, stats?.inFlight, stats?.queueDepth], [count, 0, 0, 0])
  })

  test('responses are matched by request id when they complete out of order', async (t) => {
    const { zmq, serve } = transports(t)
    const waiting: { body: Uint8Array; done: (b: Uint8Array) => void }[] = []
    const { peer } = await serve('b', (_f, _k, body) => new Promise((done) => waiting.push({ body, done })))
    const client = zmq({ nodeId: 'a' })
    const count = 50
    const order: number[] = []
    const calls = Array.from({ length: count }, (_, i) =>
      client
        .request(peer, { kind: WRITE, body: Buffer.from(`req-${i}`), ringVersion: 1, timeoutMs: 10_000 })
        .then((r) => {
          order.push(i)
          assert.equal(Buffer.from(r.body).toString(), `reply-req-${i}`)
        }),
    )
    await waitFor('every request to reach the handler', () => waiting.length === count, 10_000, 5)
    for (const w of [...waiting].reverse()) w.done(Buffer.from(`reply-${Buffer.from(w.body).toString()}`))
    await Promise.all(calls)
    assert.notDeepEqual(
      order,
      [...order].sort((a, b) => a - b),
    )
  })

  test("a full queue on the serving side answers RESOURCE_EXHAUSTED; the client's own queue is bounded too", async (t) => {
    const { zmq, serve } = transports(t)
    const open = gate()
    const { transport: server, peer } = await serve(
      'b',
      async (_f, _k, body) => {
        await open.promise
        return body
      },
      { maxServingPerSender: 1, maxQueuedPerSender: 2 },
    )
    const client = zmq({ nodeId: 'a', maxInFlightPerPeer: 10, maxWaitingPerPeer: 2 })
    const calls = Array.from({ length: 13 }, (_, i) =>
      client.request(peer, { kind: WRITE, body: Buffer.from([i]), ringVersion: 1, timeoutMs: 10_000 }),
    )
    const settled = Promise.allSettled(calls)
    // 10 in flight, 2 waiting, the 13th refused at once by the client.
    await assert.rejects(
      calls[12] as Promise<unknown>,
      (err: unknown) => err instanceof LimitError && err.limit === 'max_waiting_per_peer',
    )
    // Of the 10 sent, the server runs 1, queues 2 and refuses 7; their slots let the 2 waiting in, refused too.
    await waitFor('nine refusals', () => server.stats().requestsRejected === 9, 10_000, 5)
    open.open()
    const outcomes = await settled
    const ok = outcomes.filter((o) => o.status === 'fulfilled').length
    const refused = outcomes.filter(
      (o) => o.status === 'rejected' && o.reason instanceof LimitError && o.reason.limit === 'max_queued_per_sender',
    ).length
    assert.deepEqual([ok, refused], [3, 9])
  })

  test('an aborted call rejects at once; a ping is answered by the transport', async (t) => {
    const { zmq, serve } = transports(t)
    let handled = 0
    const { peer } = await serve('b', async (_f, _k, _b, meta) => {
      handled++
      await new Promise((resolve) => meta.signal.addEventListener('abort', resolve))
      return new Uint8Array(0)
    })
    const client = zmq({ nodeId: 'a' })
    const ping = await client.request(peer, {
      kind: PeerKind.PEER_KIND_PING,
      body: new Uint8Array(0),
      ringVersion: 1,
      timeoutMs: 5000,
    })
    assert.equal(ping.body.length, 0)
    assert.equal(handled, 0)
    const controller = new AbortController()
    const call = client.request(peer, {
      kind: WRITE,
      body: Buffer.from('x'),
      ringVersion: 1,
      timeoutMs: 60_000,
      signal: controller.signal,
    })
    await waitFor('the request to reach the handler', () => handled === 1, 10_000, 5)
    const start = Date.now()
    controller.abort()
    await assert.rejects(
      call,
      (err: unknown) => err instanceof DeadlineError && /node b .* was cancelled/.test(err.message),
    )
    assert.ok(Date.now() - start < 100)
    await assert.rejects(
      client.request(peer, {
        kind: WRITE,
        body: Buffer.from('x'),
        ringVersion: 1,
        timeoutMs: 60_000,
        signal: controller.signal,
      }),
      DeadlineError,
    )
    await assert.rejects(
      client.request(peer, { kind: WRITE, body: new Uint8Array(0), ringVersion: 1, timeoutMs: 0 }),
      ValidationError,
    )
  })

  test('a node whose event loop is held while a peer floods it and then hangs up keeps running', async (t) => {
    // libzmq 4.3.5 aborts the process (`Assertion failed: !_io_error`, stream_engine_base.cpp) when a
    // connection whose input is stopped at the receive high-water mark sees the peer hang up and then
    // its heartbeat timer fires: what a node resumed after SIGSTOP met in the Jepsen test. The server
    // runs in a process of its own, with the smallest per-sender bounds, so that a flood is far past
    // any high-water mark derived from them.
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'test/fixtures/peer-server.ts',
        JSON.stringify({
          maxServingPerSender: 1,
          maxQueuedPerSender: 1,
          heartbeatIntervalMs: 50,
          heartbeatTimeoutMs: 5000,
        }),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    )
    t.after(() => {
      child.kill('SIGKILL')
    })
    let out = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      out += chunk
    })
    await waitFor('the server to listen', () => /^listening /m.test(out), 30_000, 10)
    const address = /^listening (\S+)$/m.exec(out)?.[1] as string
    const { zmq } = transports(t)
    const client = zmq({ nodeId: 'a' })
    const peer = { id: 'server', address }
    const call = (i: number): Promise<PeerReply> =>
      client.request(peer, { kind: WRITE, body: Buffer.from([i]), ringVersion: 1, timeoutMs: 10_000 })
    assert.deepEqual([...(await call(1)).body], [1])
    const flood = new Dealer({ routingId: 'flood', linger: 0, sendHighWaterMark: 0 })
    t.after(() => flood.close())
    flood.connect(`tcp://${address}`)
    const request = (requestId: number): Uint8Array =>
      PeerRequest.encode({
        requestId,
        sequence: requestId,
        ringVersion: 1,
        term: 0,
        sender: 'flood',
        kind: WRITE,
        body: Buffer.from('x'),
        deadlineMs: 0,
      }).finish()
    await flood.send(request(1))
    await flood.receive()
    child.stdin.write('block 1500\n')
    await waitFor('the server to hold its event loop', () => /^blocking$/m.test(out), 10_000, 5)
    for (let i = 2; i < 500; i++) await flood.send(request(i))
    // Hangs up once ZeroMQ has sent what it queued (linger 0 would drop it).
    flood.linger = 1000
    flood.close()
    await waitFor('the server to run its event loop again', () => /^unblocked$/m.test(out), 10_000, 5)
    assert.deepEqual([...(await call(2)).body], [2])
    assert.equal(child.exitCode, null)
    assert.equal(child.signalCode, null)
  })
})

describe('MemoryPeerTransport', () => {
  function network(t: TestContext, options: ConstructorParameters<typeof MemoryNetwork>[0] = {}) {
    const net = new MemoryNetwork(options)
    const open: PeerTransport[] = []
    t.after(async () => {
      await Promise.all(open.map((x) => x.close()))
    })
    return {
      net,
      node: async (id: string, handler: PeerHandler = echo) => {
        const transport = net.transport(id)
        open.push(transport)
        const address = await transport.listen(handler)
        return { transport, peer: { id, address } }
      },
    }
  }

  test('round trip, domain errors and pings behave as over ZeroMQ', async (t) => {
    const { node } = network(t)
    const { peer } = await node('b', async (_f, _k, body) => {
      if (body.length === 0) throw ValidationError.field('series[0].metric', 'is empty')
      return body
    })
    const { transport: a } = await node('a')
    const reply = await a.request(peer, {
      kind: WRITE,
      body: encodePeerWrite([awkwardSeries(100, 9)]),
      ringVersion: 1,
      timeoutMs: 1000,
    })
    assert.ok(sameBits(decodePeerSeriesList(reply.body)[0]?.values ?? new Float64Array(), awkwardSeries(100, 9).values))
    await assert.rejects(
      a.request(peer, { kind: WRITE, body: new Uint8Array(0), ringVersion: 1, timeoutMs: 1000 }),
      (err: unknown) => err instanceof ValidationError && err.violations[0]?.field === 'series[0].metric',
    )
    await a.request(peer, { kind: PeerKind.PEER_KIND_PING, body: new Uint8Array(0), ringVersion: 1, timeoutMs: 1000 })
  })

  test('dropped messages and partitioned nodes time out naming the node; healing restores them', async (t) => {
    const { net, node } = network(t, { faults: { drop: 1 } })
    const { peer } = await node('b')
    const { transport: a } = await node('a')
    const call = () => a.request(peer, { kind: WRITE, body: Buffer.from('x'), ringVersion: 1, timeoutMs: 30 })
    await assert.rejects(
      call(),
      (err: unknown) =>
        err instanceof UnavailableError && err.message === 'node b (memory:b) did not answer within 30 ms',
    )
    net.setFaults({})
    await call()
    net.partition('b')
    await assert.rejects(call(), UnavailableError)
    net.heal('b')
    await call()
    assert.equal(a.stats().peers[0]?.timeouts, 2)
  })

  test('duplicated requests run twice but answer once', async (t) => {
    let runs = 0
    const { node } = network(t, { faults: { duplicate: 1 } })
    const { peer } = await node('b', async (_f, _k, body) => {
      runs++
      return body
    })
    const { transport: a } = await node('a')
    await a.request(peer, { kind: WRITE, body: Buffer.from('x'), ringVersion: 1, timeoutMs: 1000 })
    await waitFor('the duplicate answer', () => a.stats().peers[0]?.lateResponses === 1, 10_000, 5)
    assert.equal(runs, 2)
  })

  test('delayed and reordered responses still match their requests', async (t) => {
    const { node } = network(t, { seed: 5, faults: { delayMs: [0, 5], reorder: 0.3, reorderDelayMs: 10 } })
    const { peer } = await node('b')
    const { transport: a } = await node('a')
    const order: number[] = []
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        a.request(peer, { kind: WRITE, body: Buffer.from(`r${i}`), ringVersion: 1, timeoutMs: 1000 }).then((r) => {
          assert.equal(Buffer.from(r.body).toString(), `r${i}`)
          order.push(i)
        }),
      ),
    )
    assert.notDeepEqual(
      order,
      [...order].sort((x, y) => x - y),
    )
  })

  test('the same seed gives the same faults', async (t) => {
    async function outcome(): Promise<string> {
      const { node } = network(t, { seed: 42, faults: { drop: 0.3 } })
      const { peer } = await node('b')
      const { transport: a } = await node('a')
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          a.request(peer, { kind: WRITE, body: Buffer.from([i]), ringVersion: 1, timeoutMs: 50 }),
        ),
      )
      return results.map((r) => (r.status === 'fulfilled' ? '+' : '-')).join('')
    }
    const first = await outcome()
    assert.equal(await outcome(), first)
    assert.match(first, /\+/)
    assert.match(first, /-/)
  })
})
