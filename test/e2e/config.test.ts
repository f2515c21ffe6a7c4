// `v3 serve` configuration and plugins as an operator meets them: precedence shown by
// --print-config, refusal of an unknown key, and engines loaded from a path.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { runV3 } from './cli-run.js'
import { startServerProcess } from './server-process.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')
const T0 = Date.UTC(2026, 0, 1)

describe('v3 serve configuration and plugins', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'v3-config-e2e-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  test('a flag beats the environment, which beats the file; --print-config shows where each came from', async () => {
    const config = join(dir, 'v3.yaml')
    await writeFile(config, 'hot-window: 1h\nretention: 7d\nsync: off\nlog-level: warn\n')
    const r = await runV3(['serve', '--config', config, '--print-config', '--hot-window', '3h'], {
      env: { V3_HOT_WINDOW: '2h', V3_RETENTION: '30d' },
    })
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^hot-window: 3h {2}# flag$/m)
    assert.match(r.stdout, /^retention: 30d {2}# env$/m)
    assert.match(r.stdout, /^sync: off {2}# file$/m)
    assert.match(r.stdout, /^log-level: warn {2}# file$/m)
    assert.match(r.stdout, /^block-cache: 64MiB {2}# default$/m)
  })

  test('--print-config also names the V3_ variables a start would ignore, on stderr', async () => {
    const r = await runV3(['serve', '--print-config'], {
      env: { V3_PORT: 'tcp://10.0.0.1:50051', V3_HOT_WINDOW: '2h' },
    })
    assert.equal(r.code, 0, r.stderr)
    assert.match(
      r.stderr,
      /^v3: warning: ignoring unknown environment variable V3_PORT; the nearest option is V3_LISTEN \(--listen\)$/m,
    )
    assert.doesNotMatch(r.stderr, /V3_HOT_WINDOW/)
    assert.match(r.stdout, /^hot-window: 2h {2}# env$/m)
    assert.doesNotMatch(r.stdout, /V3_PORT|warning/)
  })

  test('an unknown key or a bad value stops the start with exit code 2, naming it', async () => {
    const config = join(dir, 'bad.json')
    await writeFile(config, '{"hot-window": "1h", "hotwindow": "2h"}')
    const unknown = await runV3(['serve', '--config', config, '--data', join(dir, 'never')])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /unknown option "hotwindow" in .*bad\.json; did you mean hot-window\?/)
    const bad = await runV3(['serve', '--data', join(dir, 'never')], { env: { V3_SYNC: 'sometimes' } })
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /V3_SYNC must be one of always, group, off, got "sometimes"/)
    const level = await runV3(['serve', '--cluster', '--write-consistency', 'maybe', '--data', join(dir, 'never')])
    assert.equal(level.code, 2)
    assert.equal(level.stderr, 'v3: --write-consistency must be one of one, quorum, all, got "maybe"\n')
  })

  test('an engine module named by path is started after its dependency and serves calls', async () => {
    const server = await startServerProcess({
      args: ['--engine', join(FIXTURES, 'memory-engine.ts'), '--log-format', 'json'],
    })
    try {
      await server.client.write([{ metric: 'mem_up', tags: { a: 'b' }, timestamps: [T0], values: [42] }])
      const got = await server.client.query({ selector: { metric: 'mem_up' }, startMs: T0, endMs: T0 + 1 })
      assert.deepEqual([...(got[0]?.values ?? [])], [42])
      assert.match(server.stderr(), /"engine":"memory"/)
    } finally {
      assert.equal((await server.stop()).code, 0, server.stderr())
      await rm(server.dataDir, { recursive: true, force: true })
    }
  })

  test('plugins whose dependencies form a cycle are refused', async () => {
    const r = await runV3(['serve', '--engine', join(FIXTURES, 'cycle-plugins.ts'), '--data', join(dir, 'never')])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /plugin dependency cycle: cyclic-a -> cyclic-b -> cyclic-a/)
    const missing = await runV3(['serve', '--engine', 'nosuch', '--data', join(dir, 'never')])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /unknown engine "nosuch"; registered: basic/)
  })
})
