import assert from 'node:assert/strict'
import { test } from 'node:test'
import { UsageError } from '../../src/cli/args.js'
import { clientOptions, consistencyFlag, parseCommandArgs, serverAddress } from '../../src/cli/client-command.js'
import { parseTimeFlag } from '../../src/cli/time.js'

const NOW = Date.UTC(2026, 5, 1, 12)

test('--start and --end take now, a duration before now, epoch milliseconds or RFC 3339', () => {
  assert.equal(parseTimeFlag('start', 'now', NOW), NOW)
  assert.equal(parseTimeFlag('start', '-1h', NOW), NOW - 3_600_000)
  assert.equal(parseTimeFlag('start', '-30d', NOW), NOW - 30 * 86_400_000)
  assert.equal(parseTimeFlag('end', '1767225600000', NOW), 1_767_225_600_000)
  assert.equal(parseTimeFlag('end', '-5', NOW), -5)
  assert.equal(parseTimeFlag('end', '2026-01-01T00:00:00Z', NOW), Date.UTC(2026, 0, 1))
  assert.throws(
    () => parseTimeFlag('end', 'yesterday', NOW),
    (err: unknown) => err instanceof UsageError && /--end/.test(err.message),
  )
  // A day the month lacks is refused, not rolled over to the next month (the parser the query API uses too).
  assert.throws(
    () => parseTimeFlag('start', '2024-02-30T00:00:00Z', NOW),
    (err: unknown) => err instanceof UsageError && /--start must be RFC 3339/.test(err.message),
  )
  assert.equal(parseTimeFlag('start', '2024-02-29 23:59:59.57Z', NOW), Date.UTC(2024, 1, 29, 23, 59, 59, 570))
  // Beyond what an int64 of milliseconds holds exactly: the flag is named, not sent to fail on the wire.
  assert.throws(
    () => parseTimeFlag('end', '99999999999999999999', NOW),
    (err: unknown) => err instanceof UsageError && /--end is out of range/.test(err.message),
  )
  assert.throws(
    () => parseTimeFlag('start', '-100000000000000000d', NOW),
    (err: unknown) => err instanceof UsageError && /--start is too long/.test(err.message),
  )
})

test('a value flag takes a following negative time or number as its value', () => {
  const flags = { start: { type: 'string' }, end: { type: 'string' }, merge: { type: 'boolean' } } as const
  const { values, positionals } = parseCommandArgs(['cpu', '--start', '-2d', '--end', '-5', '--merge'], flags)
  assert.equal(values.start, '-2d')
  assert.equal(values.end, '-5')
  assert.equal(values.merge, true)
  assert.deepEqual(positionals, ['cpu'])
  // Only a dash and a digit: a flag after a value flag is still a flag, and unknown ones are refused.
  assert.throws(() => parseCommandArgs(['--start', '--end', '1'], flags), UsageError)
  assert.throws(() => parseCommandArgs(['--start', '-x'], flags), UsageError)
})

test('the connection comes from flags, then V3_SERVER and V3_TOKEN, then the default', () => {
  assert.equal(serverAddress({}, {}), '127.0.0.1:50051')
  assert.equal(serverAddress({}, { V3_SERVER: 'db:1' }), 'db:1')
  assert.equal(serverAddress({ server: 'flag:2' }, { V3_SERVER: 'db:1' }), 'flag:2')
  assert.equal(serverAddress({ server: '[::1]:65535' }, {}), '[::1]:65535')
  assert.equal(serverAddress({ server: 'unix:/run/v3.sock' }, {}), 'unix:/run/v3.sock')
  for (const bad of ['127.0.0.1', '127.0.0.1:99999', '127.0.0.1:0', '', 'a b:1', 'http://db:1']) {
    assert.throws(
      () => serverAddress({ server: bad }, {}),
      new RegExp(
        `^UsageError: --server must be host:port with a port from 1 to 65535, got ${JSON.stringify(bad).replace(/[.*+?^$()[\]{}|\\/]/g, '\\$&')}$`,
      ),
    )
  }
  assert.throws(() => serverAddress({}, { V3_SERVER: 'db' }), /^UsageError: V3_SERVER must be host:port/)
  assert.deepEqual(clientOptions({}, { V3_TOKEN: 't1' }), { token: 't1' })
  assert.deepEqual(clientOptions({ token: 't2' }, { V3_TOKEN: 't1' }), { token: 't2' })
  assert.deepEqual(clientOptions({ 'tls-ca': 'ca.pem' }, {}), {
    tls: { caFile: 'ca.pem', certFile: undefined, keyFile: undefined },
  })
  assert.throws(() => clientOptions({ 'tls-cert': 'c.pem' }, {}), /--tls-cert and --tls-key go together/)
})

test('--consistency takes one, quorum or all; absent leaves the level to the server', () => {
  assert.equal(consistencyFlag({}), undefined)
  for (const level of ['one', 'quorum', 'all']) assert.equal(consistencyFlag({ consistency: level }), level)
  for (const bad of ['maybe', 'ONE', '']) {
    assert.throws(
      () => consistencyFlag({ consistency: bad }),
      (err: unknown) =>
        err instanceof UsageError &&
        err.message === `--consistency must be one, quorum or all, got ${JSON.stringify(bad)}`,
    )
  }
})
