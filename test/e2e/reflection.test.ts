// What a `buf curl` or `grpcurl` user does: discover the services through server reflection (both
// grpc.reflection.v1 and v1alpha) and call a method by name with JSON, no .proto files at hand.
// The server checks tokens, so this also shows reflection staying open while the RPC needs one.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const BUF = resolve(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'buf')
const READ_TOKEN = 'reflection-read-token'

describe('server reflection with buf curl', () => {
  let server: ServerProcess
  let dir: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-reflection-'))
    const tokens = join(dir, 'tokens')
    await writeFile(tokens, `read:${READ_TOKEN}\n`, { mode: 0o600 })
    server = await startServerProcess({ args: ['--tokens-file', tokens] })
  })
  after(async () => {
    await server.stop()
    await removeDataDir(server.dataDir)
    await rm(dir, { recursive: true, force: true })
  })

  /** buf curl over plaintext HTTP/2, as against any local gRPC server; the URL path names the method. */
  function curl(args: readonly string[], path = ''): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync(
      BUF,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args, `http://${server.address}${path}`],
      { encoding: 'utf8', timeout: 60_000 },
    )
    return { status: result.status, stdout: result.stdout, stderr: result.stderr }
  }

  for (const protocol of ['grpc-v1', 'grpc-v1alpha']) {
    test(`lists the services and methods over ${protocol}, without a token`, () => {
      const services = curl(['--reflect-protocol', protocol, '--list-services'])
      assert.equal(services.status, 0, services.stderr)
      const names = services.stdout.trim().split('\n')
      for (const name of ['WriteService', 'QueryService', 'StreamService', 'ClusterService', 'AdminService']) {
        assert.ok(names.includes(`v3storage.v1.${name}`), `${name} missing from ${names.join(', ')}`)
      }
      const methods = curl(['--reflect-protocol', protocol, '--list-methods'])
      assert.equal(methods.status, 0, methods.stderr)
      assert.match(methods.stdout, /^v3storage\.v1\.ClusterService\/Locate$/m)
      assert.match(methods.stdout, /^v3storage\.v1\.QueryService\/Query$/m)
    })
  }

  test('calls ClusterService/Locate by name with JSON, the token sent only with the call', () => {
    const request = JSON.stringify({ metric: 'cpu', tags: [{ key: 'host', value: 'a' }] })
    const call = curl(
      ['-H', `authorization: Bearer ${READ_TOKEN}`, '-d', request],
      '/v3storage.v1.ClusterService/Locate',
    )
    assert.equal(call.status, 0, call.stderr)
    const answer = JSON.parse(call.stdout) as {
      nodes: { id: string; address: string; state: string; leader: boolean }[]
    }
    assert.deepEqual(answer.nodes, [
      {
        id: answer.nodes[0]?.id,
        address: server.address,
        state: 'NODE_STATE_HEALTHY',
        leader: true,
        lifecycle: 'NODE_LIFECYCLE_ACTIVE',
        ringShare: 1,
      },
    ])

    const refused = curl(['-d', request], '/v3storage.v1.ClusterService/Locate')
    assert.notEqual(refused.status, 0)
    assert.match(refused.stderr, /unauthenticated/i)
  })
})
