// Authentication, authorization, TLS, the refusal to expose a plaintext unauthenticated node, and
// transport limits, each against a real `v3 serve` process.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type Client, credentials, makeGenericClientConstructor, type ServiceError, status } from '@grpc/grpc-js'
import { service as healthService } from 'grpc-health-check'
import { BatchingWriter, V3Client, V3ClientError, type V3ClientOptions } from '../../src/client/index.js'
import { codeOf } from '../fixtures/call-codes.js'
import { runV3 } from './cli-run.js'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2024, 0, 1)
const TOKENS = { read: 'r3ad-7a1f0c', write: 'wr1te-93bd22', admin: 'adm1n-5e77c4' }
const TOKENS_FILE = `# roles: read < write < admin
read:${TOKENS.read}

write:${TOKENS.write}
admin:${TOKENS.admin}
`

let scratch: string
before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'v3-security-'))
})
after(async () => {
  await rm(scratch, { recursive: true, force: true })
})

async function tokensFile(name: string, text: string): Promise<string> {
  const path = join(scratch, name)
  await writeFile(path, text, { mode: 0o600 })
  return path
}

function withPort(address: string, host = '127.0.0.1'): string {
  return `${host}:${address.slice(address.lastIndexOf(':') + 1)}`
}

describe('bearer tokens on a loopback address', () => {
  let server: ServerProcess
  const clients: V3Client[] = []
  const as = (token?: string): V3Client => {
    const c = new V3Client(server.address, token === undefined ? {} : { token })
    clients.push(c)
    return c
  }
  const series = [{ metric: 'auth_cpu', tags: { host: 'a' }, timestamps: [T0], values: [1] }]
  const query = { selector: { metric: 'auth_cpu' }, startMs: T0, endMs: T0 + 1000 }

  before(async () => {
    server = await startServerProcess({ args: ['--tokens-file', await tokensFile('tokens', TOKENS_FILE)] })
  })
  after(async () => {
    for (const c of clients) c.close()
    const { code } = await server.stop()
    assert.equal(code, 0, server.stderr())
    for (const token of Object.values(TOKENS)) assert.ok(!server.stderr().includes(token), 'a token was logged')
    await removeDataDir(server.dataDir)
  })

  test('no token and an unknown token are UNAUTHENTICATED', async () => {
    assert.equal(await codeOf(as().query(query)), 'UNAUTHENTICATED')
    assert.equal(await codeOf(as('not-a-token').query(query)), 'UNAUTHENTICATED')
    assert.equal(await codeOf(as(`${TOKENS.admin}x`).stats()), 'UNAUTHENTICATED')
    const err = await as()
      .listNodes()
      .catch((e: unknown) => e)
    assert.ok(err instanceof V3ClientError)
    assert.match(err.details, /authorization: Bearer/)
  })

  test('read reads but cannot write or administer', async () => {
    const reader = as(TOKENS.read)
    assert.equal(await codeOf(reader.query(query)), 'OK')
    assert.equal(await codeOf(reader.latest({ metric: 'auth_cpu' })), 'OK')
    assert.equal(await codeOf(reader.listNodes()), 'OK')
    assert.equal(await codeOf(reader.locate('auth_cpu', { host: 'a' })), 'OK')
    assert.equal(await codeOf(reader.write(series)), 'PERMISSION_DENIED')
    assert.equal(await codeOf(reader.stats()), 'PERMISSION_DENIED')
  })

  test('write writes and reads but cannot administer', async () => {
    const writer = as(TOKENS.write)
    assert.equal(await codeOf(writer.write(series)), 'OK')
    const [got] = await writer.query(query)
    assert.deepEqual(Array.from(got?.values ?? []), [1])
    assert.equal(await codeOf(writer.compact()), 'PERMISSION_DENIED')
    const err = await writer.deleteSeries({ selector: { metric: 'auth_cpu' } }).catch((e: unknown) => e)
    assert.ok(err instanceof V3ClientError && err.code === status.PERMISSION_DENIED)
    assert.match(err.details, /AdminService\/DeleteSeries needs the admin role; this token has write/)
  })

  test('admin calls everything', async () => {
    const admin = as(TOKENS.admin)
    assert.equal(await codeOf(admin.stats()), 'OK')
    assert.equal(await codeOf(admin.compact()), 'OK')
    assert.equal(await codeOf(admin.write(series)), 'OK')
    assert.equal(await codeOf(admin.query(query)), 'OK')
  })

  test('a refused bad write carries no details, an authorized one its BadRequest', async () => {
    const bad = [{ metric: '1bad', timestamps: [T0], values: [1] }]
    assert.equal(await codeOf(as(TOKENS.read).write(bad)), 'PERMISSION_DENIED')
    const err = await as(TOKENS.write)
      .write(bad)
      .catch((e: unknown) => e)
    assert.ok(err instanceof V3ClientError && err.code === status.INVALID_ARGUMENT)
    assert.deepEqual(
      err.violations.map((v) => v.field),
      ['series[0].metric'],
    )
  })

  test('health stays open without a token', async () => {
    const Health = makeGenericClientConstructor(healthService, 'Health')
    const health = new Health(server.address, credentials.createInsecure()) as unknown as Client & {
      check(req: { service: string }, cb: (err: ServiceError | null, res: { status: string }) => void): void
    }
    try {
      const res = await new Promise<{ status: string }>((resolve, reject) => {
        health.check({ service: '' }, (err, r) => (err ? reject(err) : resolve(r)))
      })
      assert.equal(res.status, 'SERVING')
    } finally {
      health.close()
    }
  })
})

describe('refusals at start', () => {
  test('a non-loopback address without TLS and tokens refuses to start, naming what to add', async () => {
    await assert.rejects(startServerProcess({ args: ['--listen', '0.0.0.0:0'] }), (err: Error) => {
      assert.match(err.message, /refusing to serve 0\.0\.0\.0:0 without TLS \(--tls-cert and --tls-key\)/)
      assert.match(err.message, /--tokens-file/)
      assert.match(err.message, /--insecure/)
      return true
    })
  })

  test('tokens alone do not make a non-loopback address acceptable', async () => {
    const file = await tokensFile('tokens-only', TOKENS_FILE)
    await assert.rejects(
      startServerProcess({ args: ['--listen', '0.0.0.0:0', '--tokens-file', file] }),
      /without TLS \(--tls-cert and --tls-key\): it is not a loopback address/,
    )
  })

  test('--insecure serves a non-loopback address anyway, with a warning', async () => {
    const server = await startServerProcess({ args: ['--listen', '0.0.0.0:0', '--insecure'] })
    const client = new V3Client(withPort(server.address))
    try {
      assert.equal(await codeOf(client.listNodes()), 'OK')
      assert.match(server.stderr(), /because --insecure was given/)
    } finally {
      client.close()
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  test('a malformed tokens file refuses to start, naming the line but not echoing it', async () => {
    const secret = 'sup3r-secret-token'
    const file = await tokensFile('bad-tokens', `# ok\nread:${TOKENS.read}\nsuperuser:${secret}\n`)
    await assert.rejects(startServerProcess({ args: ['--tokens-file', file] }), (err: Error) => {
      assert.match(err.message, /line 3: expected <role>:<token> with role read, write or admin/)
      assert.ok(!err.message.includes(secret), 'the secret was echoed')
      return true
    })
  })
})

describe('TLS', { skip: opensslMissing() }, () => {
  let certs: TestCertificates
  before(async () => {
    certs = await makeTestCertificates()
  })
  after(async () => {
    await certs?.remove()
  })

  async function withServer(
    args: readonly string[],
    run: (server: ServerProcess, connect: (options: V3ClientOptions) => V3Client) => Promise<void>,
  ): Promise<void> {
    const server = await startServerProcess({ args })
    const clients: V3Client[] = []
    try {
      await run(server, (options) => {
        // localhost, not 127.0.0.1: the certificate names both, and Node warns when TLS's server
        // name (taken from the target) is an IP address.
        const c = new V3Client(withPort(server.address, 'localhost'), { defaultTimeoutMs: 5000, ...options })
        clients.push(c)
        return c
      })
    } finally {
      for (const c of clients) c.close()
      const { code } = await server.stop()
      assert.equal(code, 0, server.stderr())
      await removeDataDir(server.dataDir)
    }
  }

  test('TLS with tokens serves a non-loopback address; plaintext clients cannot talk to it', async () => {
    const file = await tokensFile('tls-tokens', TOKENS_FILE)
    const args = ['--listen', '0.0.0.0:0', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey]
    await withServer([...args, '--tokens-file', file], async (_server, connect) => {
      const writer = connect({ tls: { caFile: certs.caFile }, token: TOKENS.write })
      const result = await writer.write([{ metric: 'tls_cpu', timestamps: [T0], values: [7] }])
      assert.equal(result.pointsWritten, 1)
      assert.equal(await codeOf(connect({ tls: { caFile: certs.caFile } }).listNodes()), 'UNAUTHENTICATED')
      assert.equal(await codeOf(connect({ token: TOKENS.write }).listNodes()), 'UNAVAILABLE')
      // A server certificate from a CA the client does not trust.
      assert.equal(
        await codeOf(connect({ tls: { caFile: join(certs.dir, 'stranger-ca.pem') }, token: TOKENS.read }).listNodes()),
        'UNAVAILABLE',
      )
    })
  })

  test('the batching writer streams over TLS with a token, as the client does', async () => {
    const file = await tokensFile('tls-writer-tokens', TOKENS_FILE)
    const args = ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tokens-file', file]
    await withServer(args, async (server, connect) => {
      const address = withPort(server.address, 'localhost')
      const writer = new BatchingWriter(address, { tls: { caFile: certs.caFile }, token: TOKENS.write })
      for (let i = 0; i < 100; i++) writer.write('tls_writer', { host: 'a' }, T0 + i * 1000, i)
      await writer.close()
      const reader = connect({ tls: { caFile: certs.caFile }, token: TOKENS.read })
      const got = await reader.query({ selector: { metric: 'tls_writer' }, startMs: T0, endMs: T0 + 100_000 })
      assert.deepEqual(
        [...(got[0]?.values ?? [])],
        Array.from({ length: 100 }, (_, i) => i),
      )
      // Without the token the stream is refused, and the writer reports it instead of retrying.
      const anonymous = new BatchingWriter(address, { tls: { caFile: certs.caFile } })
      anonymous.write('tls_writer', { host: 'b' }, T0, 1)
      await assert.rejects(
        anonymous.flush(),
        (err: unknown) => err instanceof V3ClientError && err.codeName === 'UNAUTHENTICATED',
      )
      anonymous.abort()
    })
  })

  test('the v3 CLI reaches a node over TLS by its IP address, with no warning on stderr', async () => {
    await withServer(['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey], async (server) => {
      const r = await runV3(['stats', '--server', server.address, '--tls-ca', certs.caFile, '--format', 'json'])
      assert.equal(r.code, 0, r.stderr)
      assert.match(server.address, /^127\.0\.0\.1:\d+$/)
      assert.equal(r.stderr, '')
      assert.equal(typeof (JSON.parse(r.stdout) as { series: unknown }).series, 'number')
    })
  })

  test('mutual TLS refuses a client without a certificate or with one from another CA', async () => {
    const args = ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tls-client-ca', certs.caFile]
    await withServer(args, async (_server, connect) => {
      const trusted = connect({ tls: { caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey } })
      assert.equal(await codeOf(trusted.listNodes()), 'OK')
      assert.equal(await codeOf(connect({ tls: { caFile: certs.caFile } }).listNodes()), 'UNAVAILABLE')
      const stranger = connect({
        tls: { caFile: certs.caFile, certFile: certs.strangerCert, keyFile: certs.strangerKey },
      })
      assert.equal(await codeOf(stranger.listNodes()), 'UNAVAILABLE')
    })
  })
})

describe('transport', () => {
  let server: ServerProcess
  const clients: V3Client[] = []
  before(async () => {
    server = await startServerProcess({
      args: ['--max-message-bytes', '64KiB', '--keepalive-time', '10s', '--max-concurrent-streams', '8'],
    })
  })
  after(async () => {
    for (const c of clients) c.close()
    await server.stop()
    await removeDataDir(server.dataDir)
  })

  /** About 16 bytes a point on the wire: well past 64 KiB, yet compressing to a few KiB. */
  const big = (n: number) => [
    { metric: 'gz_cpu', timestamps: Array.from({ length: n }, (_, i) => T0 + i * 1000), values: new Array(n).fill(1) },
  ]

  test('gzip-compressed requests are accepted, and their decompressed size is what the limit bounds', async () => {
    const gzip = new V3Client(server.address, { channelOptions: { 'grpc.default_compression_algorithm': 2 } })
    clients.push(gzip)
    assert.equal((await gzip.write(big(1000))).pointsWritten, 1000)
    const [got] = await gzip.query({ selector: { metric: 'gz_cpu' }, startMs: T0, endMs: T0 + 1_000_000 })
    assert.equal(got?.timestamps.length, 1000)
    const err = await gzip.write(big(10_000)).catch((e: unknown) => e)
    assert.ok(err instanceof V3ClientError && err.code === status.RESOURCE_EXHAUSTED, String(err))
    assert.match(err.details, /decompresses to a size larger than 65536/)
  })

  test('a request over --max-message-bytes is RESOURCE_EXHAUSTED stating the limit', async () => {
    const err = await server.client.write(big(10_000)).catch((e: unknown) => e)
    assert.ok(err instanceof V3ClientError && err.code === status.RESOURCE_EXHAUSTED, String(err))
    assert.match(err.details, /larger than max \(\d+ vs\.? 65536\)/)
  })

  test('more concurrent calls than --max-concurrent-streams wait their turn and all succeed', async () => {
    const results = await Promise.all(
      Array.from({ length: 40 }, () =>
        server.client.query({ selector: { metric: 'gz_cpu' }, startMs: T0, endMs: T0 + 1000 }),
      ),
    )
    assert.equal(results.length, 40)
  })
})
