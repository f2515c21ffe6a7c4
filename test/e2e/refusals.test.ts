// A start that is refused prints one line naming the problem and the fix, exits non-zero without a
// stack trace, and refuses before the engine opens the data folder (issue 14, item 7).
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { freePort } from '../fixtures/net.js'
import { runV3 } from './cli-run.js'
import { makeTestCertificates, opensslMissing } from './security-certs.js'
import { makeDataDir, removeDataDir, startServerProcess } from './server-process.js'

describe('refused starts of v3 serve', () => {
  let dir: string
  before(async () => {
    dir = await makeDataDir()
  })
  after(async () => {
    await removeDataDir(dir)
  })

  const cases: [string, string[], RegExp][] = [
    [
      'a non-loopback address without TLS and tokens',
      ['--listen', '0.0.0.0:0'],
      /--tls-cert.*--tokens-file.*--insecure/,
    ],
    [
      'cluster peers on a non-loopback address without a peer key',
      ['--cluster', '--peer-listen', '0.0.0.0:0'],
      /refusing to serve peers \(--peer-listen\) on 0\.0\.0\.0:0 without a peer key.*--peer-key.*v3 cluster peer-key.*--insecure/,
    ],
    [
      'a peer key file that does not exist',
      ['--cluster', '--peer-key', '/nonexistent/peer.key'],
      /cannot read --peer-key \/nonexistent\/peer\.key/,
    ],
    ['an unknown option', ['--no-such-flag'], /'--no-such-flag'.*v3 serve --help/],
    ['a bad duration', ['--hot-window', 'soon'], /--hot-window must be a duration/],
    ['a bad listen address', ['--listen', 'localhost'], /--listen must be host:port/],
    ['a flag value that looks like a flag', ['--max-message-bytes', '-5'], /--max-message-bytes=-XYZ/],
    [
      'a message limit too small to stream in',
      ['--max-message-bytes', '100'],
      /--max-message-bytes must be from 4096 /,
    ],
    ['a query concurrency of 0', ['--query-concurrency', '0'], /^v3: --query-concurrency must be at least 1, got "0"$/],
    ["a receive window under HTTP/2's", ['--receive-window', '1KiB'], /^v3: --receive-window must be from 65535 to /],
    ['a tag limit of 0', ['--max-tags-per-series', '0'], /^v3: --max-tags-per-series must be at least 1, got "0"$/],
    ['a tokens file that does not exist', ['--tokens-file', '/nonexistent/tokens'], /cannot read tokens file/],
    [
      'TLS files that do not exist',
      ['--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'],
      /cannot read TLS certificate/,
    ],
  ]

  for (const [what, args, message] of cases) {
    test(`${what}: one line, exit 2, data folder untouched`, async () => {
      const data = join(dir, what.replace(/\W+/g, '-'))
      const r = await runV3(['serve', '--data', data, '--http-listen', 'off', ...args])
      assert.equal(r.code, 2, r.stderr)
      assert.equal(r.stdout, '')
      const lines = r.stderr.trimEnd().split('\n')
      assert.equal(lines.length, 1, r.stderr)
      assert.match(lines[0] ?? '', /^v3: /)
      assert.match(lines[0] ?? '', message)
      assert.doesNotMatch(r.stderr, /^\s+at /m)
      assert.equal(existsSync(data), false, 'the engine opened the data folder')
    })
  }

  test('a peer address on the port of --listen or --http-listen: one line naming both, exit 2, data folder untouched', async () => {
    const port = await freePort()
    for (const [flag, args] of [
      ['--listen', ['--listen', `127.0.0.1:${port}`, '--peer-listen', `127.0.0.1:${port}`, '--http-listen', 'off']],
      ['--http-listen', ['--peer-listen', `127.0.0.1:${port}`, '--http-listen', `127.0.0.1:${port}`]],
    ] as const) {
      const data = join(dir, `peer-port-${flag}`)
      const r = await runV3(['serve', '--cluster', '--consul', 'http://127.0.0.1:1', '--data', data, ...args])
      assert.equal(r.code, 2, r.stderr)
      assert.equal(
        r.stderr.trimEnd(),
        `v3: --peer-listen (127.0.0.1:${port}) and ${flag} (127.0.0.1:${port}) must use different ports`,
      )
      assert.equal(existsSync(data), false, 'the engine opened the data folder')
    }
  })

  test('--listen and --http-listen on one port: one line naming both, exit 2, data folder untouched', async () => {
    const port = await freePort()
    const data = join(dir, 'one-port')
    const r = await runV3([
      'serve',
      '--data',
      data,
      '--listen',
      `127.0.0.1:${port}`,
      '--http-listen',
      `127.0.0.1:${port}`,
    ])
    assert.equal(r.code, 2, r.stderr)
    assert.equal(
      r.stderr.trimEnd(),
      `v3: --http-listen (127.0.0.1:${port}) and --listen (127.0.0.1:${port}) must use different ports`,
    )
    assert.equal(existsSync(data), false, 'the engine opened the data folder')
  })

  test('v3 cluster peer-key writes a new key; a --peer-key file without one is refused naming it, without echoing it', async () => {
    const keys = await Promise.all([runV3(['cluster', 'peer-key']), runV3(['cluster', 'peer-key'])])
    for (const r of keys) {
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}\n$/)
    }
    assert.notEqual(keys[0]?.stdout, keys[1]?.stdout)
    const file = join(dir, 'peer.key')
    const secret = keys[0]!.stdout.trim()
    await writeFile(file, `${secret.slice(0, 39)}\n`)
    const data = join(dir, 'bad-peer-key')
    const r = await runV3(['serve', '--data', data, '--http-listen', 'off', '--cluster', '--peer-key', file])
    assert.equal(r.code, 2, r.stderr)
    assert.equal(
      r.stderr.trimEnd(),
      `v3: --peer-key ${file} must hold a CurveZMQ secret key: 40 characters of Z85, as \`v3 cluster peer-key\` writes`,
    )
    assert.equal(existsSync(data), false)
  })

  test('cluster peers on the host of a non-loopback gRPC address that has TLS and tokens, without a peer key: refused', async (t) => {
    const missing = opensslMissing()
    if (missing) return t.skip(missing)
    const certs = await makeTestCertificates()
    t.after(() => certs.remove())
    const tokens = join(dir, 'peer-rule-tokens')
    await writeFile(tokens, 'admin:abcdefghijklmnopqrstuvwx\n')
    const tls = ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--tokens-file', tokens]
    const data = join(dir, 'peer-rule')
    const r = await runV3([
      'serve',
      '--data',
      data,
      '--http-listen',
      'off',
      '--cluster',
      '--listen',
      '0.0.0.0:0',
      ...tls,
    ])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr.trimEnd(), /^v3: refusing to serve peers \(--peer-listen\) on 0\.0\.0\.0 without a peer key/)
    assert.equal(existsSync(data), false)
  })

  test('a malformed tokens file: one line naming the line, not echoing the secret', async () => {
    const file = join(dir, 'tokens')
    await writeFile(file, 'read:abcdefghijklmnop\nroot:sup3r-secret-token\n')
    const data = join(dir, 'malformed-tokens')
    const r = await runV3(['serve', '--data', data, '--http-listen', 'off', '--tokens-file', file])
    assert.equal(r.code, 2, r.stderr)
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
    assert.match(r.stderr, /line 2/)
    assert.doesNotMatch(r.stderr, /sup3r-secret-token/)
    assert.equal(existsSync(data), false)
  })

  test('an address another process listens on, gRPC, HTTP or peers: one line, exit 2, data folder untouched', async () => {
    const other = createServer()
    await new Promise<void>((ok) => other.listen(0, '127.0.0.1', ok))
    const taken = `127.0.0.1:${(other.address() as AddressInfo).port}`
    try {
      for (const [flag, what] of [
        ['--listen', 'gRPC'],
        ['--http-listen', 'HTTP'],
      ] as const) {
        const data = join(dir, `taken-${what}`)
        const r = await runV3(['serve', '--data', data, '--listen', '127.0.0.1:0', '--http-listen', 'off', flag, taken])
        assert.equal(r.code, 2, r.stderr)
        assert.equal(r.stderr, `v3: cannot listen on ${taken} for ${what}: another process listens there\n`)
        assert.equal(existsSync(data), false, 'the engine opened the data folder')
      }
      // A cluster node's peer address: given, or by default the port after the advertised gRPC port.
      const port = (other.address() as AddressInfo).port
      for (const [name, peerArgs] of [
        ['given', ['--peer-listen', taken]],
        ['default', ['--advertise', `127.0.0.1:${port - 1}`]],
      ] as const) {
        const data = join(dir, `taken-peers-${name}`)
        const r = await runV3([
          'serve',
          '--cluster',
          '--consul',
          'http://127.0.0.1:1',
          '--data',
          data,
          '--listen',
          '127.0.0.1:0',
          '--http-listen',
          'off',
          ...peerArgs,
        ])
        assert.equal(r.code, 2, r.stderr)
        assert.equal(
          r.stderr,
          `v3: cannot listen on ${taken} for peers (--peer-listen): another process listens there\n`,
        )
        assert.equal(existsSync(data), false, 'the engine opened the data folder')
      }
    } finally {
      other.close()
    }
  })

  test('a data folder that is a file: one line naming it', async () => {
    const file = join(dir, 'a-file')
    await writeFile(file, 'not a folder')
    for (const data of [file, join(file, 'below')]) {
      const r = await runV3(['serve', '--data', data, '--listen', '127.0.0.1:0', '--http-listen', 'off'])
      assert.notEqual(r.code, 0)
      assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr)
      assert.match(r.stderr, /cannot create the database folder \S+: it, or a folder above it, is not a folder/)
    }
  })

  test('a data folder another server holds: one line, no stack trace', async () => {
    const data = join(dir, 'held')
    const first = await startServerProcess({ dataDir: data })
    try {
      const r = await runV3(['serve', '--data', data, '--listen', '127.0.0.1:0', '--http-listen', 'off'])
      assert.notEqual(r.code, 0)
      assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr)
      // RocksDB's reason, not the binding's "Database is not open".
      assert.match(
        r.stderr,
        /cannot open the database in \S+held: it is in use by another server or tool, which holds its lock \(.*LOCK/,
      )
      assert.equal(
        r.stderr
          .trimEnd()
          .split('\n')
          .filter((l) => l.startsWith('v3:')).length,
        1,
        r.stderr,
      )
    } finally {
      await first.stop()
    }
  })
})
