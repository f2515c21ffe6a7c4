// A client command whose TLS settings do not fit the server, or whose TLS files are not what their
// flags need, says so in one line naming the cause, against real `v3 serve` processes with and
// without TLS: no OpenSSL dump, no bare "Failed to connect", no internal option name.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { TlsFileError, V3Client, V3ClientError } from '../../src/client/index.js'
import { runV3 } from './cli-run.js'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

/** A loopback port nothing listens on: one the system gave out and took back. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** The whole of stderr is the one line: `v3: <message>`. */
function assertOneLine(stderr: string, message: string): void {
  assert.equal(stderr, `v3: ${message}\n`)
}

describe('TLS mismatches and TLS files of the client commands', { skip: opensslMissing() }, () => {
  let certs: TestCertificates
  let plain: ServerProcess
  let secure: ServerProcess

  before(async () => {
    certs = await makeTestCertificates()
    ;[plain, secure] = await Promise.all([
      startServerProcess(),
      startServerProcess({
        args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
        client: { tls: { caFile: certs.caFile } },
      }),
    ])
  })

  after(async () => {
    for (const s of [plain, secure]) {
      if (s === undefined) continue
      assert.equal((await s.stop()).code, 0, s.stderr())
      await removeDataDir(s.dataDir)
    }
    await certs?.remove()
  })

  test('the right settings reach either server', async () => {
    const tls = await runV3(['stats', '--server', secure.address, '--tls-ca', certs.caFile])
    assert.equal(tls.code, 0, tls.stderr)
    const mutual = await runV3([
      'stats',
      '--server',
      secure.address,
      '--tls-ca',
      certs.caFile,
      '--tls-cert',
      certs.clientCert,
      '--tls-key',
      certs.clientKey,
    ])
    assert.equal(mutual.code, 0, mutual.stderr)
    const plaintext = await runV3(['stats', '--server', plain.address])
    assert.equal(plaintext.code, 0, plaintext.stderr)
  })

  test('a TLS client at a plaintext server is told the server does not speak TLS', async () => {
    const r = await runV3(['stats', '--server', plain.address, '--tls-ca', certs.caFile])
    assert.equal(r.code, 1, r.stderr)
    assertOneLine(
      r.stderr,
      `the server at ${plain.address} does not speak TLS (drop --tls-ca, or point at its TLS port)`,
    )
    const mutual = await runV3([
      'query',
      'cpu',
      '--server',
      plain.address,
      '--tls-ca',
      certs.caFile,
      '--tls-cert',
      certs.clientCert,
      '--tls-key',
      certs.clientKey,
    ])
    assert.equal(mutual.code, 1, mutual.stderr)
    assertOneLine(
      mutual.stderr,
      `the server at ${plain.address} does not speak TLS (drop --tls-ca, --tls-cert and --tls-key, or point at its TLS port)`,
    )
  })

  test('a plaintext client at a TLS server is told the server requires TLS', async () => {
    const r = await runV3(['stats', '--server', secure.address])
    assert.equal(r.code, 1, r.stderr)
    assertOneLine(r.stderr, `the server at ${secure.address} requires TLS (give --tls-ca)`)
    const series = await runV3(['series', 'cpu', '--server', secure.address])
    assert.equal(series.code, 1, series.stderr)
    assertOneLine(series.stderr, `the server at ${secure.address} requires TLS (give --tls-ca)`)
  })

  test('a TLS failure that is no mismatch keeps its own reason', async () => {
    // The server speaks TLS, but with a certificate the CA given does not sign.
    const r = await runV3(['stats', '--server', secure.address, '--tls-ca', certs.strangerCert])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /^v3: UNAVAILABLE: .*unable to verify the first certificate/)
    assert.doesNotMatch(r.stderr, /does not speak TLS|requires TLS/)
    // A plaintext server of another protocol: the TLS client is not sent to a TLS port of it.
    const http1 = createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')).listen(0, '127.0.0.1')
    await once(http1, 'listening')
    try {
      const { port } = http1.address() as AddressInfo
      const other = await runV3(['stats', '--server', `127.0.0.1:${port}`, '--tls-ca', certs.caFile])
      assert.equal(other.code, 1, other.stderr)
      assert.doesNotMatch(other.stderr, /does not speak TLS|requires TLS/)
    } finally {
      http1.close()
    }
    // Nothing listens there: the connection is refused, whatever the client speaks.
    const closed = await closedPort()
    for (const flags of [[], ['--tls-ca', certs.caFile]]) {
      const refused = await runV3(['stats', '--server', `127.0.0.1:${closed}`, ...flags])
      assert.equal(refused.code, 1, refused.stderr)
      assert.match(refused.stderr, /^v3: UNAVAILABLE: .*ECONNREFUSED/)
      assert.doesNotMatch(refused.stderr, /does not speak TLS|requires TLS/)
    }
  })

  test('a TLS file that is not what its flag needs is named with its flag, exit code 2', async () => {
    const cases: [string[], string][] = [
      [
        ['--tls-cert', join(certs.dir, 'ca.key'), '--tls-key', certs.clientKey],
        `--tls-cert ${join(certs.dir, 'ca.key')}: not a PEM certificate`,
      ],
      [['--tls-ca', certs.clientKey], `--tls-ca ${certs.clientKey}: not a PEM certificate`],
      [
        ['--tls-cert', certs.clientCert, '--tls-key', certs.clientCert],
        `--tls-key ${certs.clientCert}: not a PEM private key`,
      ],
      [
        ['--tls-cert', certs.clientCert, '--tls-key', certs.serverKey],
        `--tls-key ${certs.serverKey}: not the private key of --tls-cert ${certs.clientCert}`,
      ],
    ]
    // A certificate in DER rather than PEM, which grpc-js does not read.
    const der = join(certs.dir, 'ca.der')
    await writeFile(der, new X509Certificate(await readFile(certs.caFile)).raw)
    cases.push([['--tls-ca', der], `--tls-ca ${der}: not a PEM certificate`])
    for (const [flags, message] of cases) {
      const r = await runV3(['stats', '--server', secure.address, '--tls-ca', certs.caFile, ...flags])
      assert.equal(r.code, 2, `${flags.join(' ')}: ${r.stderr}`)
      assertOneLine(r.stderr, message)
    }
  })

  test('a TLS file that is not there, or is a folder, is named with its flag, exit code 2', async () => {
    const missing = join(certs.dir, 'no-such-ca.pem')
    const gone = await runV3(['stats', '--server', secure.address, '--tls-ca', missing])
    assert.equal(gone.code, 2, gone.stderr)
    assertOneLine(gone.stderr, `--tls-ca ${missing}: no such file`)
    const folder = join(certs.dir, 'a-folder')
    await mkdir(folder)
    const dir = await runV3(['stats', '--server', secure.address, '--tls-ca', folder])
    assert.equal(dir.code, 2, dir.stderr)
    assertOneLine(dir.stderr, `--tls-ca ${folder}: it is a folder, not a file`)
    // v3 migrate's --from connects the same way.
    const from = await runV3([
      'migrate',
      '--from',
      secure.address,
      '--to',
      join(certs.dir, 'mg'),
      '--tls-ca',
      missing,
      'x',
    ])
    assert.equal(from.code, 2, from.stderr)
    assertOneLine(from.stderr, `--tls-ca ${missing}: no such file`)
  })

  test('the library names its own options, with a typed error for a bad file', async () => {
    const missing = join(certs.dir, 'no-such-ca.pem')
    assert.throws(
      () => new V3Client(secure.address, { tls: { caFile: missing } }),
      (err: unknown) =>
        err instanceof TlsFileError &&
        err.code === 'TLS_FILE' &&
        err.setting === 'caFile' &&
        err.path === missing &&
        err.message === `tls.caFile ${missing}: no such file`,
    )
    const client = new V3Client(secure.address)
    try {
      await assert.rejects(
        client.waitForAnswer(10_000),
        (err: unknown) =>
          err instanceof V3ClientError &&
          err.codeName === 'UNAVAILABLE' &&
          err.details === `the server at ${secure.address} requires TLS (give tls.caFile)`,
      )
    } finally {
      client.close()
    }
  })
})
