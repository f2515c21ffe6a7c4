// `v3 serve` flags: each reaches the engine or server option it names, and bad values are usage
// errors that name the flag.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseDuration, parseListen, parseSize, UsageError } from '../../src/cli/args.js'
import { parseServeArgs } from '../../src/cli/serve.js'

test('defaults are the documented ones', () => {
  const config = parseServeArgs([])
  assert.equal(config.listen, '127.0.0.1:50051')
  assert.equal(config.engine.dataDir, './data')
  assert.equal(config.engine.hotWindowMs, 7_200_000)
  assert.equal(config.engine.limits?.maxPointsPerRequest, 1_000_000)
  assert.equal(config.maxMessageBytes, 16 * 1024 * 1024)
  assert.equal(config.httpListen, '127.0.0.1:9464')
})

test('flags map to options', () => {
  const config = parseServeArgs([
    '--data=/tmp/x',
    '--listen',
    '[::1]:0',
    '--hot-window',
    '3h',
    '--retention',
    '30d',
    '--sync',
    'always',
    '--max-points-per-query',
    '1_000',
    '--block-cache',
    '8MiB',
    '--max-message-bytes',
    '64KiB',
    '--receive-window',
    '1MiB',
    '--max-tags-per-series',
    '8',
    '--allow-nan',
  ])
  assert.equal(config.engine.dataDir, '/tmp/x')
  assert.equal(config.listen, '[::1]:0')
  // Not the default (2 h), so the assertion shows the flag was read.
  assert.equal(config.engine.hotWindowMs, 3 * 3_600_000)
  assert.equal(config.engine.retentionMs, 30 * 86_400_000)
  assert.equal(config.engine.sync, 'always')
  assert.equal(config.engine.maxPointsPerQuery, 1000)
  assert.equal(config.engine.blockCacheBytes, 8 * 1024 * 1024)
  assert.equal(config.maxMessageBytes, 65_536)
  assert.equal(config.receiveWindowBytes, 1024 * 1024)
  assert.equal(config.engine.limits?.maxTagsPerSeries, 8)
  assert.equal(config.engine.limits?.allowNaN, true)
})

test('bad values are usage errors naming the flag', () => {
  const cases: [string[], RegExp][] = [
    [['--sync', 'sometimes'], /--sync/],
    [['--hot-window', '2 hours'], /--hot-window/],
    [['--block-cache', '12XB'], /--block-cache/],
    [['--max-points-per-query', '-1'], /--max-points-per-query/],
    [['--listen', '127.0.0.1:99999'], /--listen/],
    [['--listen', 'localhost'], /--listen/],
    [['--no-such-flag'], /no-such-flag/],
  ]
  for (const [args, message] of cases) {
    assert.throws(
      () => parseServeArgs(args),
      (err: unknown) => err instanceof UsageError && message.test(err.message),
    )
  }
})

test('durations, sizes and addresses', () => {
  assert.equal(parseDuration('x', '500ms'), 500)
  assert.equal(parseDuration('x', '90s'), 90_000)
  assert.equal(parseDuration('x', '1500'), 1500)
  assert.equal(parseDuration('x', '0'), 0)
  assert.throws(() => parseDuration('step', '1000000000000000000000d'), /--step is too long/)
  assert.equal(parseSize('x', '1GB'), 1e9)
  assert.equal(parseSize('x', '512KiB'), 524_288)
  assert.equal(parseListen('0.0.0.0:50051'), '0.0.0.0:50051')
})
