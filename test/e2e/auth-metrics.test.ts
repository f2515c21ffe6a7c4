// A call refused by authentication or authorization is counted in /metrics, and logged with
// --log-requests, under the status the client received (UNAUTHENTICATED, PERMISSION_DENIED), not
// as CANCELLED: unary, server-streaming, client-streaming and bidi methods, against a real
// `v3 serve` with tokens, and with TLS and tokens.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BatchingWriter, V3Client, type V3ClientOptions } from '../../src/client/index.js'
import { codeOf, grpcCounters } from '../fixtures/call-codes.js'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2024, 0, 1)
const TOKENS = { read: 'r3ad-metrics-41c2', write: 'wr1te-metrics-8e0d' }
const TOKENS_FILE = `read:${TOKENS.read}\nwrite:${TOKENS.write}\n`
const SERIES = [{ metric: 'authm_cpu', tags: { host: 'a' }, timestamps: [T0], values: [1] }]
const QUERY = { selector: { metric: 'authm_cpu' }, startMs: T0, endMs: T0 + 1000 }

interface Setup {
  /** Extra `v3 serve` flags (TLS), besides the tokens file and request logging. */
  readonly args: readonly string[]
  /** Client options other than the token. */
  readonly client: V3ClientOptions
  /** The host clients dial: with TLS localhost, since Node warns when the server name is an IP address. */
  readonly host: string
  /** Reads a URL of the HTTP listener. */
  readonly get: (url: string) => Promise<string>
}

/** Every kind of method refused both ways, then the counters and log lines by code. */
function refusedCallsSuite(setup: () => Setup): void {
  let server: ServerProcess
  let options: Setup
  const clients: V3Client[] = []
  const target = (): string => `${options.host}:${server.address.slice(server.address.lastIndexOf(':') + 1)}`
  const as = (token?: string): V3Client => {
    const c = new V3Client(target(), { ...options.client, ...(token === undefined ? {} : { token }) })
    clients.push(c)
    return c
  }

  before(async () => {
    options = setup()
    const dir = await mkdtemp(join(tmpdir(), 'v3-auth-metrics-'))
    const file = join(dir, 'tokens')
    await writeFile(file, TOKENS_FILE, { mode: 0o600 })
    try {
      server = await startServerProcess({
        args: [...options.args, '--tokens-file', file, '--log-requests'],
        client: options.client,
      })
    } finally {
      // The server read the file at start.
      await rm(dir, { recursive: true, force: true })
    }
  })

  after(async () => {
    for (const c of clients) c.close()
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    await removeDataDir(server.dataDir)
  })

  test('refused calls are counted and logged under the code the client got, never CANCELLED', async () => {
    // Unary.
    assert.equal(await codeOf(as(TOKENS.read).stats()), 'PERMISSION_DENIED')
    assert.equal(await codeOf(as().stats()), 'UNAUTHENTICATED')
    assert.equal(await codeOf(as('not-a-token').stats()), 'UNAUTHENTICATED')
    assert.equal(await codeOf(as(TOKENS.read).write(SERIES)), 'PERMISSION_DENIED')
    // Server streaming: every such method needs only read, so only UNAUTHENTICATED applies.
    assert.equal(await codeOf(drain(as().queryStream(QUERY))), 'UNAUTHENTICATED')
    const subscription = as().subscribe({ metric: 'authm_cpu' })
    assert.equal(await codeOf(subscription.live), 'UNAUTHENTICATED')
    subscription.cancel()
    // Client streaming, as `v3 import` calls it.
    assert.equal(await codeOf(writeStream(as(TOKENS.read))), 'PERMISSION_DENIED')
    assert.equal(await codeOf(writeStream(as())), 'UNAUTHENTICATED')
    // Bidi.
    assert.equal(await codeOf(ingest(target(), options.client, TOKENS.read)), 'PERMISSION_DENIED')
    assert.equal(await codeOf(ingest(target(), options.client, undefined)), 'UNAUTHENTICATED')
    // An allowed call still counts as OK.
    assert.equal(await codeOf(as(TOKENS.write).write(SERIES)), 'OK')

    const m = grpcCounters(await options.get(server.metricsUrl ?? assert.fail('no metrics address printed')))
    const cancelled = [...m.keys()].filter((k) => k.includes('code="CANCELLED"'))
    assert.deepEqual(cancelled, [], 'a refused call was counted as CANCELLED')
    const count = (method: string, code: string): [number | undefined, number | undefined] => [
      m.get(`v3_grpc_requests_total{method="${method}",code="${code}"}`),
      m.get(`v3_grpc_errors_total{method="${method}",code="${code}"}`),
    ]
    assert.deepEqual(count('AdminService/GetStats', 'PERMISSION_DENIED'), [1, 1])
    assert.deepEqual(count('AdminService/GetStats', 'UNAUTHENTICATED'), [2, 2])
    assert.deepEqual(count('WriteService/Write', 'PERMISSION_DENIED'), [1, 1])
    assert.deepEqual(count('QueryService/QueryStream', 'UNAUTHENTICATED'), [1, 1])
    assert.deepEqual(count('StreamService/Subscribe', 'UNAUTHENTICATED'), [1, 1])
    assert.deepEqual(count('WriteService/WriteStream', 'PERMISSION_DENIED'), [1, 1])
    assert.deepEqual(count('WriteService/WriteStream', 'UNAUTHENTICATED'), [1, 1])
    assert.deepEqual(count('StreamService/Ingest', 'PERMISSION_DENIED'), [1, 1])
    assert.deepEqual(count('StreamService/Ingest', 'UNAUTHENTICATED'), [1, 1])
    assert.equal(m.get('v3_grpc_requests_total{method="WriteService/Write",code="OK"}'), 1)
    // A refused write is a rejected write, by its code.
    assert.equal(m.get('v3_rejected_writes_total{code="PERMISSION_DENIED"}'), 3)
    assert.equal(m.get('v3_rejected_writes_total{code="UNAUTHENTICATED"}'), 2)

    // The request log: one line per refused call, with its code.
    const logged = (): { method: string; code: string }[] =>
      server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"msg":"call'))
        .map((l) => JSON.parse(l) as { method: string; code: string })
    // A line may reach the pipe a moment after the answer.
    const deadline = Date.now() + 5000
    while (logged().length < 11 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    const codes = logged().map((l) => `${l.method.slice(l.method.lastIndexOf('.') + 1)} ${l.code}`)
    assert.deepEqual(codes.sort(), [
      'AdminService/GetStats PERMISSION_DENIED',
      'AdminService/GetStats UNAUTHENTICATED',
      'AdminService/GetStats UNAUTHENTICATED',
      'QueryService/QueryStream UNAUTHENTICATED',
      'StreamService/Ingest PERMISSION_DENIED',
      'StreamService/Ingest UNAUTHENTICATED',
      'StreamService/Subscribe UNAUTHENTICATED',
      'WriteService/Write OK',
      'WriteService/Write PERMISSION_DENIED',
      'WriteService/WriteStream PERMISSION_DENIED',
      'WriteService/WriteStream UNAUTHENTICATED',
    ])
    for (const token of Object.values(TOKENS)) assert.ok(!server.stderr().includes(token), 'a token was logged')
  })
}

async function drain(chunks: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of chunks) {
    // Nothing to read: the call is refused.
  }
}

/** One batch on a WriteStream, then its end. */
async function writeStream(client: V3Client): Promise<unknown> {
  const stream = client.writeStream()
  await stream.write(SERIES).catch(() => undefined)
  return stream.end()
}

/** One point on an Ingest stream, flushed. */
async function ingest(address: string, options: V3ClientOptions, token: string | undefined): Promise<void> {
  const writer = new BatchingWriter(address, { ...options, ...(token === undefined ? {} : { token }) })
  writer.write('authm_ingest', { host: 'a' }, T0, 1)
  try {
    await writer.flush()
  } finally {
    writer.abort()
  }
}

describe('refused calls in /metrics, tokens on loopback', () => {
  refusedCallsSuite(() => ({
    args: [],
    client: {},
    host: '127.0.0.1',
    get: async (url) => {
      const res = await fetch(url)
      assert.equal(res.status, 200)
      return res.text()
    },
  }))
})

describe('refused calls in /metrics, TLS and tokens', { skip: opensslMissing() }, () => {
  let certs: TestCertificates
  let ca: Buffer
  before(async () => {
    certs = await makeTestCertificates()
    ca = await readFile(certs.caFile)
  })
  after(async () => {
    await certs?.remove()
  })
  refusedCallsSuite(() => ({
    args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
    client: { tls: { caFile: certs.caFile } },
    host: 'localhost',
    get: (url) =>
      new Promise<string>((resolve, reject) => {
        const req = httpsRequest(url, { ca }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            body += chunk
          })
          res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))))
        })
        req.on('error', reject)
        req.end()
      }),
  }))
})
