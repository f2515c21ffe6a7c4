// The Python client generated into clients/python/gen: its example runs against a real `v3 serve`,
// over plaintext and over TLS with a bearer token, and prints what the README says it prints.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { makeTestCertificates, opensslMissing, type TestCertificates } from './security-certs.js'
import { removeDataDir, startServerProcess } from './server-process.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const EXAMPLE = join(ROOT, 'clients', 'python', 'example.py')
// Debian's interpreter: python3-grpcio belongs to it, not to whatever python3 is first on PATH.
const PYTHON = '/usr/bin/python3'

function pythonMissing(): string | false {
  const probe = spawnSync(PYTHON, ['-c', 'import grpc, google.protobuf'], { stdio: 'ignore' })
  return probe.status === 0
    ? false
    : `needs ${PYTHON} with grpcio: apt-get update && apt-get install -y python3-grpcio python3-grpc-tools`
}

const EXPECTED = `wrote 12 points in 2 series
avg of example_cpu per minute by host:
  host=a 1704067200000 2
  host=a 1704067260000 5
  host=b 1704067200000 20
  host=b 1704067260000 50
bad write: INVALID_ARGUMENT
  series[0].metric: must match [a-zA-Z_][a-zA-Z0-9_.:-]*, got "example cpu"
  series[0].tags[0].key: must match [a-zA-Z_][a-zA-Z0-9_.:-]*, got "1host"
`

function runExample(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    // No .pyc files in the committed gen/ folder.
    const child = spawn(PYTHON, [EXAMPLE, ...args], { env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c
    })
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr })
    })
  })
}

describe('Python client example', { skip: pythonMissing() }, () => {
  test('writes, queries an aggregate and prints the BadRequest violations of a bad write', async () => {
    const server = await startServerProcess()
    try {
      const run = await runExample(['--address', server.address])
      assert.equal(run.code, 0, run.stderr)
      assert.equal(run.stdout, EXPECTED)
    } finally {
      await server.stop()
      await removeDataDir(server.dataDir)
    }
  })

  describe('over TLS with a bearer token', { skip: opensslMissing() }, () => {
    let certs: TestCertificates
    before(async () => {
      certs = await makeTestCertificates()
    })
    after(async () => {
      await certs?.remove()
    })

    test('runs the same and is refused without the token', async () => {
      const tokens = join(certs.dir, 'tokens')
      await writeFile(tokens, 'write:py-example-token\n', { mode: 0o600 })
      const server = await startServerProcess({
        args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tokens-file', tokens],
      })
      try {
        const address = `localhost:${server.address.slice(server.address.lastIndexOf(':') + 1)}`
        const tls = ['--address', address, '--ca', certs.caFile]
        const run = await runExample([...tls, '--token', 'py-example-token'])
        assert.equal(run.code, 0, run.stderr)
        assert.equal(run.stdout, EXPECTED)
        const refused = await runExample(tls)
        assert.notEqual(refused.code, 0)
        assert.match(refused.stderr, /UNAUTHENTICATED/)
      } finally {
        await server.stop()
        await removeDataDir(server.dataDir)
        await rm(tokens, { force: true })
      }
    })
  })
})
