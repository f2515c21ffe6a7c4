// A call grpc-js ends by itself is counted in /metrics, and logged with --log-requests, under the
// status the client received, not as CANCELLED: a Write and a WriteStream message larger than
// --max-message-bytes (RESOURCE_EXHAUSTED) and a call whose deadline passes on the server
// (DEADLINE_EXCEEDED). A call the client really cancels still counts as CANCELLED: a subscription
// a gRPC client cancels, and a Write reset while the server still reads its request (grpc-js hands
// the handler a half-close first, and its answer, UNIMPLEMENTED, never reaches the client). Against
// a real `v3 serve`.
//
// The deadline goes over raw HTTP/2: a gRPC client's own deadline timer fires before the server's
// (the server counts the grpc-timeout header from when the call arrived) and resets the stream, so
// with it the server would only ever see a cancel. Raw HTTP/2 sends a grpc-timeout and no deadline
// of its own.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type ClientHttp2Session, type ClientHttp2Stream, connect } from 'node:http2'
import { createConnection } from 'node:net'
import { after, before, describe, test } from 'node:test'
import type { SeriesInput } from '../../src/client/index.js'
import { codeOf, grpcCounters } from '../fixtures/call-codes.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2024, 0, 1)
const MAX_MESSAGE_BYTES = 65_536
const WRITE_PATH = '/v3storage.v1.WriteService/Write'

/** One series of `n` points: about 14 bytes a point on the wire, so 10,000 are well over 64 KiB. */
function seriesOf(n: number): SeriesInput[] {
  return [
    {
      metric: 'callst_cpu',
      tags: { host: 'a' },
      timestamps: Array.from({ length: n }, (_, i) => T0 + i),
      values: Array.from({ length: n }, (_, i) => i + 0.123456789),
    },
  ]
}

/** An HTTP/2 connection to the gRPC port, once connected (a PING sent before that is cancelled). */
async function openSession(address: string): Promise<ClientHttp2Session> {
  const session = connect(`http://${address}`)
  // A failure shows as the test's own assertions failing.
  session.on('error', () => undefined)
  await once(session, 'connect')
  return session
}

/** A gRPC request over raw HTTP/2: headers only, the body left open. */
function openCall(session: ClientHttp2Session, path: string, headers: Record<string, string> = {}): ClientHttp2Stream {
  const stream = session.request({
    ':method': 'POST',
    ':path': path,
    'content-type': 'application/grpc',
    te: 'trailers',
    ...headers,
  })
  // The test reads the outcome from the headers; an error after a reset is expected.
  stream.on('error', () => undefined)
  return stream
}

/**
 * Starts a Write over a bare TCP socket speaking HTTP/2 by hand, and resolves once the server has
 * read its HEADERS; reset() then sends RST_STREAM CANCEL with the request body still open. (Node's
 * http2 client cannot send a reset alone: its close() ends the request body first.)
 */
async function writeToReset(address: string): Promise<{ reset(): void; close(): void }> {
  const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
    const header = Buffer.alloc(9)
    header.writeUIntBE(payload.length, 0, 3)
    header.writeUInt8(type, 3)
    header.writeUInt8(flags, 4)
    header.writeUInt32BE(stream, 5)
    return Buffer.concat([header, payload])
  }
  // HPACK literal fields without indexing, new names, all shorter than 127 bytes.
  const field = (name: string, value: string): Buffer =>
    Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)])
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))]
  const socket = createConnection({ host, port })
  await once(socket, 'connect')
  const pinged = new Promise<void>((resolve) => {
    let pending = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const [type, flags] = [pending.readUInt8(3), pending.readUInt8(4)]
        // The server's SETTINGS must be acknowledged; the PING's ACK means HEADERS were read.
        if (type === 4 && (flags & 1) === 0) socket.write(frame(4, 1, 0, Buffer.alloc(0)))
        if (type === 6 && (flags & 1) === 1) resolve()
        pending = pending.subarray(9 + pending.readUIntBE(0, 3))
      }
    })
  })
  socket.on('error', () => undefined)
  const headers = Buffer.concat([
    field(':method', 'POST'),
    field(':scheme', 'http'),
    field(':path', WRITE_PATH),
    field(':authority', address),
    field('content-type', 'application/grpc'),
    field('te', 'trailers'),
  ])
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frame(4, 0, 0, Buffer.alloc(0)),
      // END_HEADERS, no END_STREAM: the request body stays open.
      frame(1, 4, 1, headers),
      frame(6, 0, 0, Buffer.alloc(8)),
    ]),
  )
  await pinged
  return {
    reset: () => {
      const cancel = Buffer.alloc(4)
      cancel.writeUInt32BE(8)
      socket.write(frame(3, 0, 1, cancel))
    },
    close: () => socket.destroy(),
  }
}

describe('calls grpc-js ends itself in /metrics and the request log', () => {
  let server: ServerProcess
  let session: ClientHttp2Session

  before(async () => {
    server = await startServerProcess({ args: ['--max-message-bytes', String(MAX_MESSAGE_BYTES), '--log-requests'] })
    session = await openSession(server.address)
  })

  after(async () => {
    session?.close()
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    await removeDataDir(server.dataDir)
  })

  test('counted and logged under the code the client got; a real cancel stays CANCELLED', async (t) => {
    const client = server.client
    // A small write works, and the big one is over the limit.
    assert.equal(await codeOf(client.write(seriesOf(10))), 'OK')
    assert.equal(await codeOf(client.write(seriesOf(10_000))), 'RESOURCE_EXHAUSTED')
    // The same on a client stream, as `v3 import` writes.
    const stream = client.writeStream()
    await stream.write(seriesOf(10_000)).catch(() => undefined)
    assert.equal(await codeOf(stream.end()), 'RESOURCE_EXHAUSTED')

    // The server's deadline passes while it waits for the request message.
    const late = openCall(session, WRITE_PATH, { 'grpc-timeout': '200m' })
    const [lateHeaders] = (await new Promise((resolve) => late.once('response', (h) => resolve([h])))) as [
      Record<string, unknown>,
    ]
    assert.equal(lateHeaders['grpc-status'], String(4), 'the server answers DEADLINE_EXCEEDED')
    late.close()

    // A Write the client resets while the server reads it: a genuine cancel.
    const reset = await writeToReset(server.address)
    reset.reset()
    t.after(() => reset.close())
    // A subscription a gRPC client cancels once it is live.
    const subscription = client.subscribe({ metric: 'callst_cpu' })
    await subscription.live
    subscription.cancel()

    // The log lines and the counters are written when the server sees the resets, a moment later.
    const logged = (): string[] =>
      server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"msg":"call'))
        .map((l) => JSON.parse(l) as { method: string; code: string })
        .map((l) => `${l.method.slice(l.method.lastIndexOf('.') + 1)} ${l.code}`)
    const deadline = Date.now() + 5000
    while (logged().length < 6 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.deepEqual(logged().sort(), [
      'StreamService/Subscribe CANCELLED',
      'WriteService/Write CANCELLED',
      'WriteService/Write DEADLINE_EXCEEDED',
      'WriteService/Write OK',
      'WriteService/Write RESOURCE_EXHAUSTED',
      'WriteService/WriteStream RESOURCE_EXHAUSTED',
    ])

    const m = grpcCounters(await (await fetch(server.metricsUrl ?? assert.fail('no metrics address printed'))).text())
    const count = (method: string, code: string): [number | undefined, number | undefined] => [
      m.get(`v3_grpc_requests_total{method="${method}",code="${code}"}`),
      m.get(`v3_grpc_errors_total{method="${method}",code="${code}"}`),
    ]
    assert.deepEqual(count('WriteService/Write', 'OK'), [1, undefined])
    assert.deepEqual(count('WriteService/Write', 'RESOURCE_EXHAUSTED'), [1, 1])
    assert.deepEqual(count('WriteService/WriteStream', 'RESOURCE_EXHAUSTED'), [1, 1])
    assert.deepEqual(count('WriteService/Write', 'DEADLINE_EXCEEDED'), [1, 1])
    assert.deepEqual(count('WriteService/Write', 'CANCELLED'), [1, 1])
    assert.deepEqual(count('WriteService/WriteStream', 'CANCELLED'), [undefined, undefined])
    assert.deepEqual(count('StreamService/Subscribe', 'CANCELLED'), [1, 1])
    assert.equal(m.get('v3_rejected_writes_total{code="RESOURCE_EXHAUSTED"}'), 2)
    assert.equal(m.get('v3_rejected_writes_total{code="DEADLINE_EXCEEDED"}'), 1)
    assert.equal(m.get('v3_rejected_writes_total{code="CANCELLED"}'), 1)
  })
})
