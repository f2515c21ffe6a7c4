// WriteStream, Ingest and Subscribe against real `v3 serve` processes.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Client, credentials, Metadata, type ServiceError, status } from '@grpc/grpc-js'
import { IngestResponse, StreamServiceService } from '../../gen/v3storage/v1/stream_service.js'
import { WriteServiceService, WriteStreamResponse } from '../../gen/v3storage/v1/write_service.js'
import { BatchingWriter, type IngestRetry, V3ClientError } from '../../src/client/index.js'
import type { SeriesPoints } from '../../src/model/types.js'
import { encodeIngestRequest } from '../../src/wire/ingest-codec.js'
import { encodeWriteRequest } from '../../src/wire/series-codec.js'
import { freePort, refused } from '../fixtures/net.js'
import { waitFor } from '../fixtures/wait.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const identity = (b: Buffer): Buffer => b
// Several servers run at once here; each would otherwise claim the default metrics port.
const ARGS = ['--http-listen', 'off']
const FLOOD_POINTS = 2_000_000

/** One message of `n` points of series `metric{k=key}`, timestamps T0 + (base + i) * 1000. */
function message(metric: string, key: string, base: number, n: number): Buffer {
  const timestamps = Array.from({ length: n }, (_, i) => T0 + (base + i) * 1000)
  return encodeWriteRequest([{ metric, tags: [{ key: 'k', value: key }], timestamps, values: timestamps }], 0)
}

async function count(server: ServerProcess, metric: string): Promise<Map<string, number[]>> {
  const got = await server.client.query({ selector: { metric }, startMs: 0, endMs: T0 + 1e10 })
  return new Map(got.map((s) => [s.tags.map((t) => t.value).join(','), Array.from(s.timestamps)]))
}

/** A raw Ingest call (frames as the test encodes them) on a client of its own; close `raw` after. */
function ingestCall(address: string) {
  const raw = new Client(address, credentials.createInsecure())
  const call = raw.makeBidiStreamRequest(
    StreamServiceService.ingest.path,
    identity,
    (b: Buffer) => IngestResponse.decode(b),
    new Metadata(),
    {},
  )
  return { raw, call }
}

function writeStream(address: string, messages: readonly Buffer[]): Promise<WriteStreamResponse> {
  const raw = new Client(address, credentials.createInsecure())
  return new Promise<WriteStreamResponse>((resolve, reject) => {
    const call = raw.makeClientStreamRequest(
      WriteServiceService.writeStream.path,
      identity,
      (b: Buffer) => WriteStreamResponse.decode(b),
      new Metadata(),
      {},
      (err: ServiceError | null, res?: WriteStreamResponse) => (err || !res ? reject(err) : resolve(res)),
    )
    for (const m of messages) call.write(m)
    call.end()
  }).finally(() => raw.close())
}

describe('streams against v3 serve', () => {
  let server: ServerProcess
  before(async () => {
    server = await startServerProcess({ args: ARGS })
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  test('WriteStream answers totals once every point is durable', async () => {
    const messages = Array.from({ length: 40 }, (_, i) => message('ws', String(i % 4), i * 100, 100))
    const res = await writeStream(server.address, messages)
    assert.deepEqual(res, { pointsWritten: 4000, seriesWritten: 40 })
    const stored = await count(server, 'ws')
    assert.equal(
      [...stored.values()].reduce((n, ts) => n + ts.length, 0),
      4000,
    )
  })

  test('WriteStream: a bad message ends the stream naming it; those before stay, none after is stored', async () => {
    const messages = Array.from({ length: 10 }, (_, i) => message('wsbad', String(i), i * 10, 10))
    messages[5] = encodeWriteRequest(
      [{ metric: 'wsbad', tags: [{ key: '9bad', value: 'x' }], timestamps: [T0], values: [1] }],
      0,
    )
    const err = (await writeStream(server.address, messages).then(
      () => assert.fail('the stream succeeded'),
      (e: unknown) => e,
    )) as ServiceError
    assert.equal(err.code, status.INVALID_ARGUMENT)
    assert.match(err.details, /messages\[5\]\.series\[0\]\.tags\[0\]\.key/)
    const stored = await count(server, 'wsbad')
    assert.deepEqual([...stored.keys()].sort(), ['0', '1', '2', '3', '4'])
  })

  test('Ingest acknowledges cumulatively, never ahead of durable data, and reports rejections without ending', async () => {
    const { raw, call } = ingestCall(server.address)
    const acks: IngestResponse[] = []
    const checks: Promise<void>[] = []
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (ack: IngestResponse) => {
        acks.push(ack)
        // Everything up to durable_through (but a rejection) must be readable the moment it is acknowledged.
        const through = ack.durableThrough
        checks.push(
          count(server, 'ing').then((stored) => {
            for (let seq = 1; seq <= through; seq++) {
              if (seq === 7) continue
              assert.equal(stored.get(String(seq))?.length, 50, `sequence ${seq} acknowledged but not stored`)
            }
          }),
        )
      })
      call.on('error', reject)
      call.on('end', resolve)
    })
    for (let seq = 1; seq <= 20; seq++) {
      const write =
        seq === 7
          ? encodeWriteRequest([{ metric: 'ing', tags: [], timestamps: [T0, T0 + 1], values: [1, Number.NaN] }], 0)
          : message('ing', String(seq), seq * 50, 50)
      call.write(encodeIngestRequest(seq, write))
    }
    call.end()
    await done
    await Promise.all(checks)
    raw.close()
    const throughs = acks.map((a) => a.durableThrough)
    assert.deepEqual(
      throughs,
      [...throughs].sort((a, b) => a - b),
    )
    assert.equal(throughs.at(-1), 20)
    const rejected = acks.filter((a) => a.rejectedSequence > 0)
    assert.equal(rejected.length, 1)
    assert.equal(rejected[0]?.rejectedSequence, 7)
    assert.equal(rejected[0]?.error?.code, status.INVALID_ARGUMENT)
    assert.match(rejected[0]?.error?.field ?? '', /series\[0\]\.values/)
  })

  test('an Ingest message out of sequence ends the call with the error, after acknowledging what came before it', async () => {
    const { raw, call } = ingestCall(server.address)
    const acks: IngestResponse[] = []
    const ended = new Promise<ServiceError>((resolve, reject) => {
      call.on('data', (ack: IngestResponse) => acks.push(ack))
      call.on('error', (err: ServiceError) => resolve(err))
      call.on('end', () => reject(new Error('the call ended without an error')))
    })
    // Large enough to be still in flight when the next message arrives.
    call.write(encodeIngestRequest(1, message('ing_seq', 'a', 0, 100_000)))
    call.write(encodeIngestRequest(3, message('ing_seq', 'b', 0, 10)))
    const err = await ended
    raw.close()
    assert.equal(err.code, status.INVALID_ARGUMENT)
    assert.match(err.details, /sequence: must be 2, one more than the previous message's; got 3/)
    assert.deepEqual(
      acks.map((a) => [a.durableThrough, a.rejectedSequence]),
      [[1, 0]],
    )
    const stored = await count(server, 'ing_seq')
    assert.equal(stored.get('a')?.length, 100_000)
    assert.equal(stored.has('b'), false)
  })

  test('a subscriber sees exactly the matching points written after it subscribed, once each', async () => {
    await server.client.write([{ metric: 'sub', tags: { host: 'a' }, timestamps: [T0], values: [-1] }])
    const subscription = server.client.subscribe({
      metric: 'sub',
      matchers: [{ key: 'host', value: 'a|b', op: 'regex' }],
    })
    await subscription.live
    const writer = new BatchingWriter(server.address, { batchPoints: 700 })
    for (let i = 1; i <= 5000; i++) {
      writer.write('sub', { host: ['a', 'b', 'c'][i % 3] as string }, T0 + i, i)
      writer.write('other', { host: 'a' }, T0 + i, i)
    }
    await writer.close()
    const seen = new Map<string, number[]>()
    let total = 0
    const expected = 5000 - Math.floor((5000 + 1) / 3)
    for await (const batch of subscription) {
      for (const s of batch) {
        assert.equal(s.metric, 'sub')
        const host = s.tags.find((t) => t.key === 'host')?.value ?? ''
        const list = seen.get(host) ?? []
        list.push(...s.values)
        seen.set(host, list)
        total += s.values.length
      }
      if (total >= expected) break
    }
    assert.deepEqual([...seen.keys()].sort(), ['a', 'b'])
    for (const [host, values] of seen) {
      const want = Array.from({ length: 5000 }, (_, i) => i + 1).filter((i) => i % 3 === (host === 'a' ? 0 : 1))
      assert.deepEqual(
        [...values].sort((x, y) => x - y),
        want,
      )
    }
    assert.equal(total, expected)
  })

  test('since_ms replays stored points, then live ones, without gaps or duplicates', async () => {
    const stored = Array.from({ length: 3000 }, (_, i) => T0 + i)
    await server.client.write([{ metric: 'replay', tags: { h: 'x' }, timestamps: stored, values: stored }])
    // Writes keep going while the subscription starts, so some land between listener and replay.
    const writer = new BatchingWriter(server.address, { batchPoints: 50, flushIntervalMs: 1 })
    let next = 3000
    let writing = true
    const background = (async () => {
      while (writing) {
        for (let i = 0; i < 50; i++, next++) writer.write('replay', { h: 'x' }, T0 + next, T0 + next)
        await new Promise((resolve) => setTimeout(resolve, 1))
      }
      await writer.close()
    })()
    const subscription = server.client.subscribe({ metric: 'replay' }, { sinceMs: T0 + 1000 })
    await subscription.live
    await new Promise((resolve) => setTimeout(resolve, 200))
    writing = false
    await background
    const want = next - 1000
    const got: number[] = []
    for await (const batch of subscription) {
      for (const s of batch) got.push(...s.timestamps)
      if (got.length >= want) break
    }
    assert.equal(got.length, want)
    assert.equal(new Set(got).size, want, 'a point arrived twice')
    assert.equal(Math.min(...got), T0 + 1000)
    assert.equal(Math.max(...got), T0 + next - 1)
  })

  test('a slow subscriber is cut off with RESOURCE_EXHAUSTED while writes go on', async () => {
    const raw = new Client(server.address, credentials.createInsecure())
    const call = raw.makeServerStreamRequest(
      StreamServiceService.subscribe.path,
      StreamServiceService.subscribe.requestSerialize,
      identity,
      { selector: { metric: 'flood', matchers: [] }, sinceMs: 0 },
      new Metadata(),
      {},
    )
    const ended = new Promise<ServiceError>((resolve) => call.on('error', resolve))
    const live = new Promise<void>((resolve) => call.once('data', () => resolve()))
    await live
    call.pause()
    const writer = new BatchingWriter(server.address)
    const started = performance.now()
    // Well past what the HTTP/2 windows (the server's --receive-window, 8 MiB) and the client's
    // buffers take in before the paused subscriber holds the server back: 600,000 points (8.5 MB)
    // all reached the client without a cut-off.
    for (let i = 0; i < FLOOD_POINTS; i++) {
      if (!writer.write('flood', { s: String(i % 100) }, T0 + Math.floor(i / 100) * 1000, i))
        await writer.whenWritable()
    }
    await writer.close()
    const seconds = (performance.now() - started) / 1000
    // The status travels behind the messages the server had sent already, so the client reads them first.
    call.on('data', () => {})
    call.resume()
    const err = await ended
    assert.equal(err.code, status.RESOURCE_EXHAUSTED)
    assert.match(err.details, /fell behind.*\(limit subscriber_buffer_points = \d+\)/)
    raw.close()
    // Counted by the server: the points themselves would pass the largest message.
    const [counted] = await server.client.query({
      selector: { metric: 'flood' },
      startMs: 0,
      endMs: T0 + 1e10,
      aggregation: { func: 'count', stepMs: 0, mergeSeries: true },
    })
    assert.deepEqual([...(counted?.values ?? [])], [FLOOD_POINTS])
    // Writes are not held back by the subscriber: well above 100k points/s even on a busy test machine.
    assert.ok(FLOOD_POINTS / seconds > 100_000, `ingest ran at ${Math.round(FLOOD_POINTS / seconds)} points/s`)
  })
})

describe('the batching writer across a server crash', () => {
  test('kill -9 in the middle of an Ingest stream: after a restart every point is stored exactly once', async () => {
    let server = await startServerProcess({ args: ARGS })
    const dataDir = server.dataDir
    let address = server.address
    const rejections: unknown[] = []
    const writer = new BatchingWriter(() => address, {
      batchPoints: 2000,
      retryDelayMs: 50,
      onReject: (r) => rejections.push(r),
    })
    const total = 400_000
    try {
      for (let i = 0; i < total; i++) {
        // Each point is unique: series i % 50, timestamp by i / 50, value i.
        if (!writer.write('crash', { s: String(i % 50) }, T0 + Math.floor(i / 50) * 1000, i))
          await writer.whenWritable()
        if (i === total / 2) {
          // Crash once some batches are acknowledged and many are not (200,000 points are pending).
          while (writer.acknowledgedThrough === 0) await new Promise((resolve) => setTimeout(resolve, 5))
          assert.ok(writer.pending > 0, 'nothing was left in flight at the crash')
          await server.kill()
          server = await startServerProcess({ dataDir, args: ARGS })
          address = server.address
        }
      }
      await writer.close()
      assert.deepEqual(rejections, [])
      assert.equal(writer.pending, 0)
      const got = await server.client.query({ selector: { metric: 'crash' }, startMs: 0, endMs: T0 + 1e10 })
      const seen = new Set<number>()
      let points = 0
      for (const s of got as SeriesPoints[]) {
        const series = Number(s.tags[0]?.value)
        s.timestamps.forEach((t, j) => {
          const value = s.values[j] as number
          assert.equal(value % 50, series)
          assert.equal(T0 + Math.floor(value / 50) * 1000, t)
          seen.add(value)
        })
        points += s.timestamps.length
      }
      assert.equal(points, total)
      assert.equal(seen.size, total)
    } finally {
      writer.abort()
      await server.kill()
      await removeDataDir(dataDir)
    }
  })

  test('a writer whose call failed resends its batches with no new write to prompt it, and close() ends', async () => {
    let server = await startServerProcess({ args: ARGS })
    const dataDir = server.dataDir
    let address = server.address
    const asked: string[] = []
    const retries: IngestRetry[] = []
    const writer = new BatchingWriter(
      () => {
        asked.push(address)
        return address
      },
      { batchPoints: 500, retryDelayMs: 50, maxRetryDelayMs: 200, onRetry: (retry) => retries.push(retry) },
    )
    try {
      for (let i = 0; i < 1000; i++) writer.write('resend', { s: 'a' }, T0 + i * 1000, i)
      await writer.flush()
      // The server stops answering, takes more points, and dies with them unacknowledged.
      server.child.kill('SIGSTOP')
      for (let i = 1000; i < 5000; i++) writer.write('resend', { s: 'a' }, T0 + i * 1000, i)
      const closed = writer.close()
      await server.kill()
      server = await startServerProcess({ dataDir, args: ARGS })
      address = server.address
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        closed,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('close() did not end within 30 s of the restart')), 30_000)
        }),
      ]).finally(() => clearTimeout(timer))
      assert.equal(writer.pending, 0)
      assert.equal((await count(server, 'resend')).get('a')?.length, 5000)
      assert.ok(asked.includes(server.address), 'the address function was not asked again')
      // Each retry was told, numbered in a row, with the points waiting: the 4,000 sent to the held server.
      assert.ok(retries.length >= 1)
      assert.deepEqual(
        retries.map((r) => r.attempt),
        retries.map((_, i) => i + 1),
      )
      for (const r of retries) {
        assert.equal(r.error.code, 14, r.error.message)
        assert.equal(r.unacknowledgedPoints, 4000)
        assert.ok(r.delayMs > 0 && r.delayMs <= 200, `delay ${r.delayMs}`)
      }
    } finally {
      writer.abort()
      await server.kill()
      await removeDataDir(dataDir)
    }
  })

  test('a writer whose server stays away waits twice as long after each failure, up to 5 s by default', async () => {
    // Nothing listens on the port: every call fails at once with UNAVAILABLE.
    const address = `127.0.0.1:${await freePort()}`
    assert.ok(await refused(address))
    const retries: IngestRetry[] = []
    const writer = new BatchingWriter(address, { onRetry: (retry) => retries.push(retry) })
    try {
      writer.write('away', { s: 'a' }, T0, 1)
      const flushed = writer.flush().then(
        () => 'acknowledged',
        (err: unknown) => err,
      )
      // The defaults: 100 ms, doubled per failure, at most 5 s, each less up to half by jitter. The
      // seventh and eighth delays (6.4 and 12.8 s unbounded) are the first the bound cuts; the seven
      // before the eighth retry take 5.7 to 11.3 s.
      await waitFor('eight retries', () => retries.length >= 8, 30_000)
      for (const [i, retry] of retries.slice(0, 8).entries()) {
        const nominal = Math.min(5000, 100 * 2 ** i)
        assert.equal(retry.attempt, i + 1)
        assert.equal(retry.error.code, status.UNAVAILABLE, retry.error.message)
        assert.equal(retry.unacknowledgedPoints, 1)
        assert.ok(retry.delayMs >= nominal / 2 && retry.delayMs <= nominal, `retry ${i + 1}: ${retry.delayMs} ms`)
      }
      writer.abort()
      assert.notEqual(await flushed, 'acknowledged')
    } finally {
      writer.abort()
    }
  })

  test('a writer files each point under the tags it had when written, one object reused or not', async () => {
    const server = await startServerProcess({ args: ARGS })
    const writer = new BatchingWriter(server.address)
    try {
      const tags: Record<string, string> = { host: 'a' }
      const list = [{ key: 'dc', value: 'x' }]
      for (const [i, host] of ['a', 'b', 'c'].entries()) {
        tags.host = host
        writer.write('reuse', tags, T0, i)
        list[0]!.value = host
        writer.write('reuse_list', list, T0, i)
      }
      // A key added to the same object is a new series too.
      tags.rack = 'r1'
      writer.write('reuse', tags, T0, 9)
      await writer.close()
      const got = await server.client.query({ selector: { metric: 'reuse' }, startMs: T0, endMs: T0 + 1 })
      assert.deepEqual(got.map((x) => [x.tags.map((t) => `${t.key}=${t.value}`).join(','), [...x.values]]).sort(), [
        ['host=a', [0]],
        ['host=b', [1]],
        ['host=c', [2]],
        ['host=c,rack=r1', [9]],
      ])
      const listed = await server.client.query({ selector: { metric: 'reuse_list' }, startMs: T0, endMs: T0 + 1 })
      assert.deepEqual(listed.map((x) => [x.tags[0]?.value, [...x.values]]).sort(), [
        ['a', [0]],
        ['b', [1]],
        ['c', [2]],
      ])
    } finally {
      writer.abort()
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  test('a bound series files its points across batches under the tags it was bound with, beside write(), refusing what write() refuses', async () => {
    const server = await startServerProcess({ args: ARGS })
    // Batches of 7 points: the bound series' points go into one batch after another.
    const writer = new BatchingWriter(server.address, { batchPoints: 7 })
    const refused = (write: () => void, field: string) =>
      assert.throws(
        write,
        (e: unknown) =>
          e instanceof V3ClientError && e.code === status.INVALID_ARGUMENT && e.violations[0]?.field === field,
      )
    try {
      const tags: Record<string, string> = { host: 'a' }
      const a = writer.series('bound', tags)
      // The object changed after binding: the bound series keeps host=a.
      tags.host = 'b'
      const b = writer.series('bound', tags)
      for (let i = 0; i < 50; i++) {
        assert.equal(a.write(T0 + i * 1000, i), true)
        if (i % 2 === 0) b.write(T0 + i * 1000, 100 + i)
        // write() of the same series, between the bound writes: the same series.
        if (i % 5 === 0) writer.write('bound', { host: 'a' }, T0 + i * 1000 + 500, 1000 + i)
      }
      refused(() => a.write('1767225601000' as unknown as number, 2), 'timestamp')
      refused(() => a.write(T0, '2' as unknown as number), 'value')
      refused(() => writer.series('bad metric', {}), 'metric')
      refused(() => writer.series('bound', { h: '' }), 'tags[0].value')
      refused(() => writer.series('bound', 'host=a' as unknown as Record<string, string>), 'tags')
      await writer.close()
      const counted = await count(server, 'bound')
      const expected = [...Array(50).keys()].flatMap((i) =>
        i % 5 === 0 ? [T0 + i * 1000, T0 + i * 1000 + 500] : [T0 + i * 1000],
      )
      assert.deepEqual(counted.get('a'), expected)
      assert.deepEqual(
        counted.get('b'),
        [...Array(25).keys()].map((i) => T0 + 2 * i * 1000),
      )
      const [values] = await server.client.query({
        selector: { metric: 'bound', matchers: [{ key: 'host', value: 'b', op: 'eq' }] },
        startMs: T0,
        endMs: T0 + 1e6,
      })
      assert.deepEqual(
        [...(values?.values ?? [])],
        [...Array(25).keys()].map((i) => 100 + 2 * i),
      )
      // After close(), a bound series refuses as the writer does.
      assert.throws(
        () => a.write(T0, 1),
        (e: unknown) => e instanceof V3ClientError && e.code === status.CANCELLED,
      )
    } finally {
      writer.abort()
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  test('a writer refuses a point it cannot send when it is written, and its batch goes on', async () => {
    const server = await startServerProcess({ args: ARGS })
    const writer = new BatchingWriter(server.address, { flushIntervalMs: 1 })
    try {
      writer.write('poison', {}, T0, 1)
      const refused = (write: () => void, field: string) =>
        assert.throws(
          write,
          (e: unknown) =>
            e instanceof V3ClientError && e.code === status.INVALID_ARGUMENT && e.violations[0]?.field === field,
        )
      refused(() => writer.write('poison', {}, '1767225601000' as unknown as number, 2), 'timestamp')
      refused(() => writer.write(undefined as unknown as string, {}, T0, 2), 'metric')
      refused(() => writer.write('poison', { host: 7 as unknown as string }, T0, 2), 'tags[0].value')
      refused(() => writer.write('poison', undefined as unknown as Record<string, string>, T0, 2), 'tags')
      refused(() => writer.write('poison', {}, 2n ** 63n, 2), 'timestamp')
      // Names and tags every server refuses never join a batch, whose other series they would sink.
      refused(() => writer.write('bad metric', {}, T0, 2), 'metric')
      refused(() => writer.write('poison', { h: '' }, T0, 2), 'tags[0].value')
      refused(() => writer.write('poison', { __name__: 'x' }, T0, 2), 'tags[0].key')
      refused(
        () =>
          writer.write(
            'poison',
            [
              { key: 'h', value: 'a' },
              { key: 'h', value: 'b' },
            ],
            T0,
            2,
          ),
        'tags[1].key',
      )
      writer.write('poison', {}, T0 + 1000, 3)
      await writer.close()
      assert.deepEqual((await count(server, 'poison')).get(''), [T0, T0 + 1000])
      assert.throws(
        () => new BatchingWriter(server.address, { precision: 'seconds' as unknown as 'ms' }),
        (e: unknown) => e instanceof V3ClientError && e.violations[0]?.field === 'precision',
      )
    } finally {
      writer.abort()
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  test('a writer reports a rejected batch through flush() when no onReject is given', async () => {
    const server = await startServerProcess({ args: ARGS })
    const writer = new BatchingWriter(server.address)
    try {
      // NaN without --allow-nan: a rule of the server's, which the writer leaves to it.
      writer.write('nan_metric', {}, T0, Number.NaN)
      const err = await writer.flush().then(
        () => assert.fail('flush succeeded'),
        (e: unknown) => e,
      )
      assert.ok(err instanceof V3ClientError)
      assert.equal(err.code, status.INVALID_ARGUMENT)
      writer.write('good', {}, T0, 1)
      await writer.close()
      assert.equal((await count(server, 'good')).size, 1)
    } finally {
      writer.abort()
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })
})
