// Configuration: file < environment < flag, validation naming the key and its source, defaults that
// agree with the components' own, and a README table that lists every option.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { UsageError } from '../../src/cli/args.js'
import { printConfig, SERVE_OPTIONS } from '../../src/cli/config.js'
import { parseServeArgs } from '../../src/cli/serve.js'
import { ENGINE_DEFAULTS } from '../../src/engine/config.js'
import { DEFAULT_WRITE_LIMITS } from '../../src/model/limits.js'
import { SERVER_DEFAULTS, TRANSPORT_DEFAULTS } from '../../src/server/server.js'

const dir = mkdtempSync(join(tmpdir(), 'v3-config-'))
after(() => rmSync(dir, { recursive: true, force: true }))
function file(name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

test('a flag beats the environment, which beats the file', () => {
  const yaml = file('v3.yaml', 'hot-window: 1h\nretention: 10d\nsync: off\nmax-points-per-query: 99\n')
  const c = parseServeArgs(['--config', yaml, '--hot-window', '3h'], { V3_HOT_WINDOW: '2h', V3_RETENTION: '20d' })
  assert.equal(c.engine.hotWindowMs, 3 * 3_600_000)
  assert.equal(c.engine.retentionMs, 20 * 86_400_000)
  assert.equal(c.engine.sync, 'off')
  assert.equal(c.engine.maxPointsPerQuery, 99)
  assert.equal(c.resolved.get('hot-window')?.source, 'flag')
  assert.equal(c.resolved.get('retention')?.source, 'env')
  assert.equal(c.resolved.get('sync')?.source, 'file')
  const json = file('v3.json', '{"listen": "127.0.0.1:0", "allow-nan": true, "plugins": ["a.js"]}')
  const j = parseServeArgs([], { V3_CONFIG: json })
  assert.equal(j.listen, '127.0.0.1:0')
  assert.equal(j.engine.limits?.allowNaN, true)
  assert.deepEqual(j.plugins, ['a.js'])
})

test('an unknown key or a bad value stops the start, naming it and where it came from', () => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [
      ['--config', file('u.yaml', 'hot_window: 1h\n')],
      {},
      /unknown option "hot_window" in .*u\.yaml; did you mean hot-window\?/,
    ],
    [['--config', file('b.yaml', 'sync: sometimes\n')], {}, /sync in .*b\.yaml must be one of always, group, off/],
    [['--config', file('d.yaml', 'hot-window: soon\n')], {}, /hot-window in .*d\.yaml must be a duration/],
    [['--config', file('l.yaml', '- a\n- b\n')], {}, /must hold a mapping/],
    [[], { V3_HOT_WINDOW: 'x' }, /V3_HOT_WINDOW must be a duration/],
    [['--log-level', 'loud'], {}, /--log-level must be one of trace/],
    [['--tls-cert', 'c.pem'], {}, /--tls-cert and --tls-key go together/],
    [['--http-listen', 'nowhere'], {}, /--http-listen must be host:port or off/],
    [['--config', join(dir, 'missing.yaml')], {}, /cannot read the config file/],
  ]
  for (const [args, env, message] of cases) {
    assert.throws(
      () => parseServeArgs(args, env),
      (err: unknown) => err instanceof UsageError && message.test(err.message),
      `${args.join(' ')} ${JSON.stringify(env)}`,
    )
  }
})

test('an unknown V3_ variable is one warning naming the nearest option, and the start goes on', () => {
  // What Kubernetes injects into every pod when a Service is named v3, a typo and a wrapper's own.
  const env = {
    V3_PORT: 'tcp://10.0.0.1:50051',
    V3_SERVICE_HOST: '10.0.0.1',
    V3_HOT_WINDOWS: '1h',
    V3_WRAPPER_MODE: 'blue',
    V3_SYNC: 'off',
    V3_RETENTION: '20d',
    V3_SERVER: 'localhost:50051',
  }
  const c = parseServeArgs([], env)
  assert.equal(c.engine.sync, 'off')
  assert.equal(c.engine.retentionMs, 20 * 86_400_000)
  assert.deepEqual(c.warnings, [
    'ignoring unknown environment variable V3_HOT_WINDOWS; the nearest option is V3_HOT_WINDOW (--hot-window)',
    'ignoring unknown environment variable V3_PORT; the nearest option is V3_LISTEN (--listen)',
    'ignoring unknown environment variable V3_SERVICE_HOST; the nearest option is V3_LISTEN (--listen)',
    'ignoring unknown environment variable V3_WRAPPER_MODE; no similar option',
  ])
  assert.deepEqual(parseServeArgs([], { V3_SYNC: 'off', HOME: '/root' }).warnings, [])
  // Unknown variables beside it do not soften a bad value of a known one.
  assert.throws(
    () => parseServeArgs([], { ...env, V3_SYNC: 'sometimes' }),
    (err: unknown) =>
      err instanceof UsageError && /^V3_SYNC must be one of always, group, off, got "sometimes"$/.test(err.message),
  )
})

test('--write-consistency, --read-timeout, --hint-window and --hint-max-bytes reach the cluster options', () => {
  const pick = (c: ReturnType<typeof parseServeArgs>) => {
    const o = c.cluster
    assert.ok(o, 'a cluster node')
    return {
      writeConsistency: o.writeConsistency,
      readTimeoutMs: o.readTimeoutMs,
      hintWindowMs: o.hintWindowMs,
      hintMaxBytes: o.hintMaxBytes,
    }
  }
  assert.deepEqual(pick(parseServeArgs(['--cluster'])), {
    writeConsistency: 'quorum',
    readTimeoutMs: 1000,
    hintWindowMs: 3 * 3_600_000,
    hintMaxBytes: 1024 ** 3,
  })
  const flags = ['--cluster', '--write-consistency', 'all', '--read-timeout', '250ms', '--hint-window', '30m']
  assert.deepEqual(pick(parseServeArgs([...flags, '--hint-max-bytes', '64MiB'])), {
    writeConsistency: 'all',
    readTimeoutMs: 250,
    hintWindowMs: 30 * 60_000,
    hintMaxBytes: 64 * 1024 ** 2,
  })
  assert.equal(pick(parseServeArgs(['--cluster'], { V3_WRITE_CONSISTENCY: 'one' })).writeConsistency, 'one')
  const yaml = file('wc.yaml', 'write-consistency: all\nhint-max-bytes: 512MiB\n')
  const fromFile = parseServeArgs(['--cluster', '--config', yaml], { V3_WRITE_CONSISTENCY: 'one' })
  assert.equal(pick(fromFile).writeConsistency, 'one')
  assert.equal(fromFile.resolved.get('write-consistency')?.source, 'env')
  assert.equal(pick(fromFile).hintMaxBytes, 512 * 1024 ** 2)
  assert.equal(pick(parseServeArgs(['--cluster', '--config', yaml])).writeConsistency, 'all')
  // A single node takes the options (a config file may be shared) and has no cluster options.
  assert.equal(parseServeArgs(['--write-consistency', 'one']).cluster, undefined)
  const refused: Array<[string[], Record<string, string>, RegExp]> = [
    [['--write-consistency', 'maybe'], {}, /^--write-consistency must be one of one, quorum, all, got "maybe"$/],
    [['--cluster'], { V3_WRITE_CONSISTENCY: 'QUORUM' }, /^V3_WRITE_CONSISTENCY must be one of one, quorum, all/],
    [['--read-timeout', 'soon'], {}, /^--read-timeout must be a duration/],
    [['--hint-window', 'forever'], {}, /^--hint-window must be a duration/],
    [['--hint-max-bytes', 'lots'], {}, /^--hint-max-bytes must be a size/],
    [['--cluster', '--read-timeout', '0'], {}, /^--read-timeout must be at least 1 ms, got "0"$/],
    [['--cluster', '--peer-timeout', '0s'], {}, /^--peer-timeout must be at least 1 ms, got "0s"$/],
    [['--cluster', '--hint-window', '0'], {}, /^--hint-window must be at least 1 ms, got "0"$/],
    [['--cluster', '--hint-max-bytes', '0'], {}, /^--hint-max-bytes must be at least 1 byte, got "0"$/],
  ]
  for (const [args, env, message] of refused) {
    assert.throws(
      () => parseServeArgs(args, env),
      (err: unknown) => err instanceof UsageError && message.test(err.message) && !err.message.includes('\n'),
      `${args.join(' ')} ${JSON.stringify(env)}`,
    )
  }
})

test('a number option outside its range is refused naming the option and its source; its bounds are taken', () => {
  const bounded = SERVE_OPTIONS.filter((s) => s.min !== undefined || s.max !== undefined)
  // The options whose zero the engine, the server or the transport would refuse under an internal name.
  for (const key of ['max-message-bytes', 'receive-window', 'query-concurrency', 'max-tags-per-series', 'hot-window']) {
    assert.ok(
      bounded.some((s) => s.key === key),
      key,
    )
  }
  for (const spec of bounded) {
    const cluster = spec.group === 'cluster' ? ['--cluster'] : []
    const flag = `--${spec.key}`
    for (const bad of [
      spec.min === undefined ? undefined : spec.min - 1,
      spec.max === undefined ? undefined : spec.max + 1,
    ]) {
      if (bad === undefined) continue
      assert.throws(
        () => parseServeArgs([...cluster, flag, String(bad)]),
        (err: unknown) =>
          err instanceof UsageError &&
          err.message.startsWith(`${flag} must be `) &&
          err.message.endsWith(`got "${bad}"`),
        `${flag} ${bad}`,
      )
    }
    for (const good of [spec.min, spec.max]) {
      if (good !== undefined)
        assert.doesNotThrow(() => parseServeArgs([...cluster, flag, String(good)]), `${flag} ${good}`)
    }
  }
  assert.throws(
    () => parseServeArgs(['--max-message-bytes', '0']),
    (err: unknown) =>
      err instanceof UsageError && err.message === '--max-message-bytes must be from 4096 to 2147483647 bytes, got "0"',
  )
  assert.throws(
    () => parseServeArgs([], { V3_QUERY_CONCURRENCY: '0' }),
    (err: unknown) => err instanceof UsageError && err.message === 'V3_QUERY_CONCURRENCY must be at least 1, got "0"',
  )
  assert.throws(
    () => parseServeArgs(['--config', file('w.yaml', 'receive-window: 1KiB\n')]),
    (err: unknown) =>
      err instanceof UsageError &&
      /^receive-window in .*w\.yaml must be from 65535 to 2147483647 bytes, got "1KiB"$/.test(err.message),
  )
})

test('--http-listen is a listen address or off, from any source', () => {
  assert.equal(parseServeArgs(['--http-listen', 'off']).httpListen, undefined)
  assert.equal(parseServeArgs([], { V3_HTTP_LISTEN: '0.0.0.0:9000' }).httpListen, '0.0.0.0:9000')
  assert.equal(parseServeArgs([]).httpListen, '127.0.0.1:9464')
  assert.throws(
    () => parseServeArgs(['--config', file('h.yaml', 'http-listen: nowhere\n')]),
    (err: unknown) =>
      err instanceof UsageError && /http-listen in .*h\.yaml must be host:port or off/.test(err.message),
  )
})

test('defaults agree with the defaults of the engine, the server and the transport', () => {
  const c = parseServeArgs([])
  const e = c.engine
  assert.deepEqual(
    {
      hotWindowMs: e.hotWindowMs,
      retentionMs: e.retentionMs,
      versionWindowMs: e.versionWindowMs,
      sync: e.sync,
      sealIdleMs: e.sealIdleMs,
      maxBufferedPoints: e.maxBufferedPoints,
      sealIntervalMs: e.sealIntervalMs,
      moveIntervalMs: e.moveIntervalMs,
      retentionIntervalMs: e.retentionIntervalMs,
      maxPointsPerQuery: e.maxPointsPerQuery,
      queryConcurrency: e.queryConcurrency,
      blockCacheBytes: e.blockCacheBytes,
      resultCachePoints: e.resultCachePoints,
      decodedCachePoints: e.decodedCachePoints,
      decodeWorkers: e.decodeWorkers,
      workerDecodeMinRuns: e.workerDecodeMinRuns,
    },
    { ...ENGINE_DEFAULTS },
  )
  assert.deepEqual({ ...e.limits }, { ...DEFAULT_WRITE_LIMITS })
  assert.equal(c.listen, SERVER_DEFAULTS.listen)
  assert.equal(c.maxMessageBytes, SERVER_DEFAULTS.maxMessageBytes)
  assert.equal(c.streamChunkBytes, SERVER_DEFAULTS.streamChunkBytes)
  assert.equal(c.shutdownTimeoutMs, SERVER_DEFAULTS.shutdownTimeoutMs)
  assert.equal(c.keepaliveTimeMs, TRANSPORT_DEFAULTS.keepaliveTimeMs)
  assert.equal(c.keepaliveTimeoutMs, TRANSPORT_DEFAULTS.keepaliveTimeoutMs)
  assert.equal(c.maxConcurrentStreams, TRANSPORT_DEFAULTS.maxConcurrentStreams)
})

test('--print-config output loads back as a config file with the same values', () => {
  const c = parseServeArgs(['--hot-window', '90m', '--plugins', 'a.js,b.js', '--allow-nan'], { V3_SYNC: 'always' })
  const printed = printConfig(c.resolved)
  assert.match(printed, /^hot-window: 90m {2}# flag$/m)
  assert.match(printed, /^sync: always {2}# env$/m)
  const again = parseServeArgs(['--config', file('printed.yaml', printed)])
  for (const spec of SERVE_OPTIONS) {
    assert.deepEqual(again.resolved.get(spec.key)?.value, c.resolved.get(spec.key)?.value, spec.key)
  }
})

test('--print-config prints a switch given as 1 or 0 as true or false, which a file takes', () => {
  const c = parseServeArgs([], { V3_ALLOW_NAN: '1', V3_LOG_REQUESTS: '0' })
  const printed = printConfig(c.resolved)
  assert.match(printed, /^allow-nan: true {2}# env$/m)
  assert.match(printed, /^log-requests: false {2}# env$/m)
  const again = parseServeArgs(['--config', file('printed-bools.yaml', printed)])
  assert.equal(again.resolved.get('allow-nan')?.value, true)
  assert.equal(again.resolved.get('log-requests')?.value, false)
})

test('an empty path or name is refused naming its source; an empty Consul token is none', () => {
  assert.throws(() => parseServeArgs(['--data', '']), /^UsageError: --data must be a non-empty string, got ""$/)
  assert.throws(() => parseServeArgs([], { V3_DATA: '' }), /^UsageError: V3_DATA must be a non-empty string, got ""$/)
  assert.throws(() => parseServeArgs(['--tls-cert', '']), /--tls-cert must be a non-empty string/)
  assert.equal(parseServeArgs([], { V3_CONSUL_TOKEN: '' }).resolved.get('consul-token')?.value, '')
})

test('the README options table lists every option with its default', () => {
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8')
  for (const spec of SERVE_OPTIONS) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`--${spec.key}`))
    assert.ok(row, `README has no row for --${spec.key}`)
    if (typeof spec.default === 'string')
      assert.ok(row.includes(`\`${spec.default}\``), `README default of --${spec.key}`)
  }
})
