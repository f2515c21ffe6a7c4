// The client commands against real `v3 serve` processes: import (both error modes, gzip, wide),
// export then import into an empty server, query output formats and syntax errors, series, stats,
// and migrate between a server and data folders with count verification.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import type { V3Client } from '../../src/client/index.js'
import { BasicEngine } from '../../src/engine/basic-engine.js'
import { MIN_TIMESTAMP_MS } from '../../src/model/timestamps.js'
import { STALE_BITS, writeRequest } from '../fixtures/prom-remote-bodies.js'
import { waitFor } from '../fixtures/wait.js'
import { MAIN, runV3 } from './cli-run.js'
import { makeDataDir, removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)
const ALL = { startMs: T0 - 86_400_000, endMs: T0 + 86_400_000 }

/** Every point of every series of the metrics, as comparable plain data. */
/** Each value's 64 bits in hex: NaN payloads and the sign of zero tell apart. */
function bitsOf(values: Float64Array): string[] {
  return [...new BigUint64Array(values.buffer, values.byteOffset, values.length)].map((b) => b.toString(16))
}

async function dump(client: V3Client, metrics: string[]): Promise<string[]> {
  const out: string[] = []
  for (const metric of metrics) {
    for (const s of await client.query({ selector: { metric }, ...ALL })) {
      const tags = [...s.tags].map((t) => `${t.key}=${t.value}`).join(',')
      for (let i = 0; i < s.timestamps.length; i++) out.push(`${metric}{${tags}} ${s.timestamps[i]} ${s.values[i]}`)
    }
  }
  return out.sort()
}

describe('v3 client commands', () => {
  let a: ServerProcess
  let b: ServerProcess
  let dir: string

  before(async () => {
    ;[a, b] = await Promise.all([startServerProcess(), startServerProcess()])
    dir = await mkdtemp(join(tmpdir(), 'v3-cli-'))
  })

  after(async () => {
    for (const s of [a, b]) {
      assert.equal((await s.stop()).code, 0, s.stderr())
      await removeDataDir(s.dataDir)
    }
    await rm(dir, { recursive: true, force: true })
  })

  test('import --on-error abort stops at the first bad row, naming its line, and keeps the rows before it', async () => {
    const csv = [
      'metric,timestamp,value,host',
      `ab_cpu,${T0},1,a`,
      `ab_cpu,${T0 + 1000},2,a`,
      `ab_cpu,${T0 + 2000},oops,a`,
      `ab_cpu,${T0 + 3000},4,a`,
    ].join('\n')
    await writeFile(join(dir, 'abort.csv'), csv)
    const r = await runV3(['import', join(dir, 'abort.csv'), '--server', a.address])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /stopped at line 4: value "oops" is not a number/)
    assert.match(r.stderr, /2 points written from 2 rows, 1 rows rejected/)
    const got = await a.client.query({ selector: { metric: 'ab_cpu' }, ...ALL })
    assert.deepEqual([...(got[0]?.values ?? [])], [1, 2])

    // A row the CSV syntax breaks stops the import alike, after the rows before it in the same read.
    const quoted = [
      'metric,timestamp,value,host',
      `aq_cpu,${T0},1,a`,
      `aq_cpu,${T0 + 1000},2,a"b`,
      `aq_cpu,${T0 + 2000},3,a`,
    ]
    await writeFile(join(dir, 'quote.csv'), quoted.join('\n'))
    const q = await runV3(['import', join(dir, 'quote.csv'), '--server', a.address])
    assert.equal(q.code, 1, q.stderr)
    assert.match(q.stderr, /stopped at line 3: a quote inside an unquoted field/)
    assert.match(q.stderr, /1 points written from 1 rows, 1 rows rejected/)
    const gotQuoted = await a.client.query({ selector: { metric: 'aq_cpu' }, ...ALL })
    assert.deepEqual([...(gotQuoted[0]?.values ?? [])], [1])

    // The server refuses the rows before the bad one (NaN without --allow-nan): both are told.
    const nan = [
      'metric,timestamp,value,host',
      `an_cpu,${T0},NaN,a`,
      `an_cpu,${T0 + 1000},2,a`,
      `an_cpu,${T0 + 2000},x,a`,
    ]
    await writeFile(join(dir, 'nan.csv'), nan.join('\n'))
    const n = await runV3(['import', join(dir, 'nan.csv'), '--server', a.address])
    assert.equal(n.code, 1, n.stderr)
    assert.match(n.stderr, /^v3 import: stopped at line 4: value "x" is not a number\n/m)
    assert.match(n.stderr, /^v3 import: and the server refused the rows of lines 2-3: INVALID_ARGUMENT: .*NaN/m)
    assert.match(n.stderr, /0 points written from 2 rows, 1 rows rejected/)
  })

  test('import says why it stopped when no row is to blame: no server, or no header', async () => {
    await writeFile(join(dir, 'nowhere.csv'), ['metric,timestamp,value,host', `nw_cpu,${T0},1,a`].join('\n'))
    // A port that was free a moment ago: nothing answers on it.
    const probe = createNetServer().listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const { port } = probe.address() as AddressInfo
    await new Promise((resolve) => probe.close(resolve))
    const refused = await runV3(['import', join(dir, 'nowhere.csv'), '--server', `127.0.0.1:${port}`])
    assert.equal(refused.code, 1, refused.stderr)
    assert.match(refused.stderr, /^v3 import: stopped: the write failed: UNAVAILABLE/m)
    assert.match(refused.stderr, /0 points written from 1 rows, 0 rows rejected, .*\(stopped early\)/)
    // grpc-js' empty "Resolution note: " label is not passed on.
    assert.match(refused.stderr, /ECONNREFUSED 127\.0\.0\.1:\d+\.\n/)
    assert.doesNotMatch(refused.stderr, /Resolution note/)
    await writeFile(join(dir, 'empty.csv'), '')
    const empty = await runV3(['import', join(dir, 'empty.csv'), '--server', a.address])
    assert.equal(empty.code, 1, empty.stderr)
    assert.match(empty.stderr, /^v3 import: stopped: the input is empty: no header$/m)
  })

  test('import: a batch the server refuses mid-stream is named by its lines, the batches before it are counted, and the exit code is 1', async () => {
    // A server that lets a client send only 64 KiB ahead: the import waits for room again and again,
    // and the refusal of the batch with the NaN (which the server does not allow) arrives while it
    // waits. That wait used to last for ever, and the import exited 0 with nothing said.
    const narrow = await startServerProcess({ args: ['--receive-window', '64KiB'] })
    try {
      const rows = 60_000
      const bad = 30_000
      const lines = ['metric,timestamp,value,host']
      for (let i = 0; i < rows; i++) lines.push(`mid_cpu,${T0 + i * 1000},${i === bad ? 'NaN' : i},h${i % 50}`)
      await writeFile(join(dir, 'mid.csv'), lines.join('\n'))
      const r = await runV3(['import', join(dir, 'mid.csv'), '--batch-points', '100', '--server', narrow.address])
      assert.equal(r.code, 1, r.stderr)
      // Row i is on line i + 2; its batch holds rows 30,000 to 30,099.
      assert.match(
        r.stderr,
        /stopped: the server refused the rows of lines 30002-30101: INVALID_ARGUMENT: messages\[300\]\.series\[0\]\.values\[0\]: is NaN/,
      )
      assert.match(r.stderr, /30000 points written from \d+ rows/)
      const stored = await narrow.client.query({ selector: { metric: 'mid_cpu' }, ...ALL, endMs: T0 + rows * 1000 })
      assert.equal(
        stored.reduce((n, s) => n + s.timestamps.length, 0),
        bad,
        'the batches before the refused one are stored',
      )
    } finally {
      assert.equal((await narrow.stop()).code, 0, narrow.stderr())
      await removeDataDir(narrow.dataDir)
    }
  })

  test('import that loses its server mid-stream says how many points it sent unconfirmed, not just 0 written', async () => {
    const s = await startServerProcess({ args: ['--shutdown-timeout', '1s'] })
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', MAIN, 'import', '-', '--batch-points', '1000', '--quiet', '--server', s.address],
      {
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c
    })
    const exited = once(child, 'exit')
    try {
      const rows = Array.from({ length: 3000 }, (_, i) => `lost_cpu,${T0 + i * 1000},${i},a`)
      child.stdin.write(['metric,timestamp,value,host', ...rows, ''].join('\n'))
      // The stream stays open (more input may come): the server stores each batch as it arrives.
      await waitFor('the three batches stored', async () => (await s.client.stats()).pointsWritten >= 3000)
      assert.equal((await s.stop()).code, 0, s.stderr())
      child.stdin.end()
      const [code] = await exited
      assert.equal(code, 1, stderr)
      assert.match(stderr, /v3 import: stopped: the write failed: /)
      assert.match(stderr, /0 points written \(and 3000 points sent that the server may have stored\) from 3000 rows/)
    } finally {
      child.kill('SIGKILL')
      await s.stop()
      await removeDataDir(s.dataDir)
    }
  })

  test('a client command gives up on a node that neither answers nor refuses after --connect-timeout', async () => {
    // Takes connections and never says a word, as a stopped process or a port of another protocol.
    const silent = createNetServer((socket) => socket.on('data', () => {})).listen(0, '127.0.0.1')
    await once(silent, 'listening')
    const { port } = silent.address() as AddressInfo
    try {
      const started = Date.now()
      const r = await runV3(['stats', '--server', `127.0.0.1:${port}`, '--connect-timeout', '1s'])
      assert.equal(r.code, 1, r.stderr)
      // v3 migrate's --from and --to wait the same way.
      const from = await runV3([
        'migrate',
        '--from',
        `127.0.0.1:${port}`,
        '--to',
        join(dir, 'mg-silent'),
        '--connect-timeout',
        '1s',
        'x',
      ])
      assert.equal(from.code, 1, from.stderr)
      assert.match(from.stderr, /no answer from 127\.0\.0\.1:\d+ within 1 s/)
      assert.match(
        r.stderr,
        new RegExp(`^v3: no answer from 127\\.0\\.0\\.1:${port} within 1 s \\(--connect-timeout\\)`, 'm'),
      )
      assert.ok(Date.now() - started < 20_000, 'it gave up')
      const bad = await runV3(['stats', '--server', `127.0.0.1:${port}`, '--connect-timeout', 'soon'])
      assert.equal(bad.code, 2, bad.stderr)
      assert.match(bad.stderr, /--connect-timeout must be a duration/)
    } finally {
      silent.close()
    }
  })

  test('a folder to import, a certificate file that is not there, or a flag its subcommand does not take, is named', async () => {
    const folder = await runV3(['import', dir, '--server', a.address])
    assert.equal(folder.code, 2, folder.stderr)
    assert.match(folder.stderr, /^v3: cannot read .+: it is a folder, not a file$/m)
    const missing = join(dir, 'no-such-ca.pem')
    const ca = await runV3(['stats', '--server', a.address, '--tls-ca', missing])
    assert.equal(ca.code, 2, ca.stderr)
    assert.equal(ca.stderr, `v3: --tls-ca ${missing}: no such file\n`)
    const timeout = await runV3(['cluster', 'status', '--timeout', '1s', '--server', a.address])
    assert.equal(timeout.code, 2, timeout.stderr)
    assert.match(timeout.stderr, /--timeout goes with v3 cluster repair and decommission/)
    const twice = await runV3(['import', '-', '--wide', '--tags', 'host,dc,host', '--server', a.address])
    assert.equal(twice.code, 2, twice.stderr)
    assert.equal(twice.stderr, 'v3: --tags names host twice\n')
    const extra = await runV3(['cluster', 'status', 'extra', '--server', a.address])
    assert.equal(extra.code, 2, extra.stderr)
    assert.equal(extra.stderr, 'v3: v3 cluster status takes no argument, got "extra"\n')
    const file = join(dir, 'not-a-folder.csv')
    await writeFile(file, 'metric,timestamp,value\n')
    for (const flag of ['--from', '--to']) {
      const other = flag === '--from' ? ['--to', join(dir, 'mig-out')] : ['--from', a.address, 'x']
      const migrate = await runV3(['migrate', flag, file, ...other])
      assert.equal(migrate.code, 2, migrate.stderr)
      assert.equal(migrate.stderr, `v3: ${flag} ${file}: a file, not a data folder (nor host:port)\n`)
    }
  })

  test('import --on-error skip reports every bad row with its line and writes the rest', async () => {
    const csv = [
      'metric,timestamp,value,host,region',
      `sk_cpu,${T0},1,a,eu`,
      `sk_cpu,not-a-time,2,a,eu`,
      `sk_cpu,2026-01-01T00:00:05Z,3,a,`,
      `9bad,${T0},4,a,eu`,
      `sk_cpu,${T0},5,b`,
      `sk_cpu,${T0 + 9000},6,"b,c",eu`,
      `sk_cpu,${T0 + 10_000},7,"b"c,eu`,
      `sk_cpu,${T0 + 11_000},8,"b,c",eu`,
    ].join('\r\n')
    await writeFile(join(dir, 'skip.csv'), csv)
    const r = await runV3(['import', join(dir, 'skip.csv'), '--server', a.address, '--on-error', 'skip'])
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /line 3: timestamp "not-a-time" is neither/)
    assert.match(r.stderr, /line 5: metric "9bad"/)
    assert.match(r.stderr, /line 6: expected 5 fields, found 4/)
    assert.match(r.stderr, /line 8: text after the closing quote of a field \(skipped\)/)
    assert.match(r.stderr, /4 points written from 4 rows, 4 rows rejected/)
    const series = await a.client.listSeries({ metric: 'sk_cpu' })
    assert.deepEqual(series.map((s) => s.tags.map((t) => `${t.key}=${t.value}`).join(',')).sort(), [
      'host=a',
      'host=a,region=eu',
      'host=b,c,region=eu',
    ])
  })

  test('import reads gzip and the wide format, from stdin', async () => {
    const csv = [
      'timestamp,host,wd_cpu,wd_mem',
      `${T0 / 1000},a,1,10`,
      `${T0 / 1000 + 10},a,,11`,
      `${T0 / 1000},,3,`,
    ].join('\n')
    const r = await runV3(['import', '-', '--wide', '--tags', 'host', '--precision', 's', '--server', a.address], {
      stdin: gzipSync(csv),
    })
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(
      await dump(a.client, ['wd_cpu', 'wd_mem']),
      [
        `wd_cpu{host=a} ${T0} 1`,
        `wd_cpu{} ${T0} 3`,
        `wd_mem{host=a} ${T0 + 10_000} 11`,
        `wd_mem{host=a} ${T0} 10`,
      ].sort(),
    )
  })

  test('export then import into an empty server gives identical data, long and wide', async () => {
    const series = []
    for (let h = 0; h < 5; h++) {
      for (const metric of ['rt_cpu', 'rt_mem']) {
        const timestamps = Array.from({ length: 200 }, (_, i) => T0 + i * 10_000 + h)
        series.push({
          metric,
          tags: h === 0 ? { host: `h${h}` } : { host: `h${h}`, dc: h % 2 ? 'eu' : 'us,"x"' },
          timestamps,
          values: timestamps.map((_, i) => Math.sin(i + h) * 1e6 + i / 3),
        })
      }
    }
    await a.client.write(series)
    const expected = await dump(a.client, ['rt_cpu', 'rt_mem'])
    assert.equal(expected.length, 2000)

    // An output file that cannot be created: one line naming it, no stack trace, nothing asked of the server.
    const nowhere = join(dir, 'no-such-folder', 'rt.csv')
    const refused = await runV3(['export', 'rt_cpu', '--server', a.address, '--output', nowhere])
    assert.equal(refused.code, 2, refused.stderr)
    assert.equal(refused.stderr.trimEnd().split('\n').length, 1, refused.stderr)
    assert.match(refused.stderr, new RegExp(`^v3: --output ${nowhere}: cannot create the file: ENOENT`))
    const exported = await runV3(['export', 'rt_cpu', 'rt_mem', '--server', a.address, '--output', join(dir, 'rt.csv')])
    assert.equal(exported.code, 0, exported.stderr)
    assert.match(exported.stderr, /2000 points/)
    const imported = await runV3(['import', join(dir, 'rt.csv'), '--server', b.address])
    assert.equal(imported.code, 0, imported.stderr)
    assert.deepEqual(await dump(b.client, ['rt_cpu', 'rt_mem']), expected)

    await b.client.deleteSeries({ selector: { metric: 'rt_cpu' } })
    await b.client.deleteSeries({ selector: { metric: 'rt_mem' } })
    const wide = await runV3(['export', 'rt_cpu', 'rt_mem', '--wide', '--server', a.address])
    assert.equal(wide.code, 0, wide.stderr)
    assert.match(wide.stdout, /^timestamp,dc,host,rt_cpu,rt_mem\n/)
    const tags = /--tags '([^']*)'/.exec(wide.stderr)?.[1]
    assert.equal(tags, 'dc,host')
    const back = await runV3(['import', '-', '--wide', '--tags', tags ?? '', '--server', b.address], {
      stdin: Buffer.from(wide.stdout),
    })
    assert.equal(back.code, 0, back.stderr)
    assert.deepEqual(await dump(b.client, ['rt_cpu', 'rt_mem']), expected)
  })

  test('export writes every value to its bits (-0, NaN payloads, ±Infinity); import and migrate read them back', async () => {
    // Values only remote write stores: the staleness marker and ±Infinity, beside -0 and the rest.
    const samples = [
      -0,
      'stale',
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
      1.5,
      1e308,
      5e-324,
    ] as const
    const rw = await fetch(a.metricsUrl!.replace(/\/metrics$/, '/api/v1/write'), {
      method: 'POST',
      body: writeRequest([
        {
          labels: [
            ['__name__', 'fx_val'],
            ['job', 'j'],
          ],
          samples: samples.map((v, i) => [v, T0 + i * 1000]),
        },
      ]),
    })
    assert.equal(rw.status, 204, await rw.text())
    const stored = (await a.client.query({ selector: { metric: 'fx_val' }, ...ALL }))[0]!
    const want = bitsOf(stored.values)
    assert.equal(want[1], STALE_BITS.toString(16))

    const exported = await runV3(['export', 'fx_val', '--server', a.address])
    assert.equal(exported.code, 0, exported.stderr)
    assert.deepEqual(
      exported.stdout
        .trimEnd()
        .split('\n')
        .map((line) => line.split(',')[2]),
      ['value', '-0', 'NaN(0x7ff0000000000002)', 'Infinity', '-Infinity', 'NaN', '1.5', '1e+308', '5e-324'],
    )

    const json = await runV3([
      'query',
      'fx_val',
      '--format',
      'json',
      '--start',
      String(T0),
      '--end',
      String(T0 + 10_000),
      '--server',
      a.address,
    ])
    assert.equal(json.code, 0, json.stderr)
    const points = (JSON.parse(json.stdout) as Array<{ points: [number, number | string][] }>)[0]!.points
    assert.deepEqual(
      points.map((p) => p[1]),
      [0, 'NaN(0x7ff0000000000002)', 'Infinity', '-Infinity', 'NaN', 1.5, 1e308, 5e-324],
    )

    // Through the gRPC API: NaN with --allow-nan, every bit kept; ±Infinity refused row by row.
    const c = await startServerProcess({ args: ['--allow-nan'] })
    try {
      const imported = await runV3(['import', '-', '--on-error', 'skip', '--server', c.address], {
        stdin: Buffer.from(exported.stdout),
      })
      assert.equal(imported.code, 1, imported.stderr)
      assert.match(
        imported.stderr,
        /line 4: value "Infinity": ±Infinity cannot be written through the gRPC API \(v3 migrate copies it between data folders\) \(skipped\)/,
      )
      assert.match(imported.stderr, /6 points written from 6 rows, 2 rows rejected/)
      const back = (await c.client.query({ selector: { metric: 'fx_val' }, ...ALL }))[0]!
      assert.deepEqual(bitsOf(back.values), [want[0], want[1], want[4], want[5], want[6], want[7]])
    } finally {
      assert.equal((await c.stop()).code, 0, c.stderr())
      await removeDataDir(c.dataDir)
    }

    // Into a data folder, every value as stored: a copy of stored points is not checked again.
    const folder = await makeDataDir()
    try {
      const out = await runV3(['migrate', '--from', a.address, '--to', folder, 'fx_val'])
      assert.equal(out.code, 0, out.stderr)
      const engine = new BasicEngine({ dataDir: folder })
      await engine.open()
      try {
        const copied = (await engine.query({ selector: { metric: 'fx_val', matchers: [] }, ...ALL }))[0]!
        assert.deepEqual(bitsOf(copied.values), want)
      } finally {
        await engine.close()
      }
    } finally {
      await removeDataDir(folder)
    }
  })

  test('export then import keeps tags named metric, timestamp or value, metrics named as tags, and the earliest dates', async () => {
    await a.client.write([
      {
        metric: 'hc_cpu',
        tags: { metric: 'm1', timestamp: 't1', value: 'v1', host: 'a' },
        timestamps: [T0],
        values: [1],
      },
      { metric: 'hc_cpu', tags: { host: 'b' }, timestamps: [T0], values: [2] },
      { metric: 'host', tags: { host: 'a' }, timestamps: [T0, T0 + 1000], values: [3, 4] },
      { metric: 'timestamp', tags: { host: 'a' }, timestamps: [T0], values: [5] },
      { metric: 'hc_old', tags: { host: 'a' }, timestamps: [MIN_TIMESTAMP_MS, T0], values: [6, 7] },
    ])
    const metrics = ['hc_cpu', 'host', 'timestamp']
    const expected = await dump(a.client, metrics)
    const long = await runV3(['export', ...metrics, '--server', a.address])
    assert.equal(long.code, 0, long.stderr)
    assert.match(long.stdout, /^metric,timestamp,value,host,metric,timestamp,value\n/)
    const longBack = await runV3(['import', '-', '--server', b.address], { stdin: Buffer.from(long.stdout) })
    assert.equal(longBack.code, 0, longBack.stderr)
    assert.deepEqual(await dump(b.client, metrics), expected)
    for (const metric of metrics) await b.client.deleteSeries({ selector: { metric } })

    const wide = await runV3(['export', 'host', 'timestamp', '--wide', '--server', a.address])
    assert.equal(wide.code, 0, wide.stderr)
    assert.match(wide.stdout, /^timestamp,host,host,timestamp\n/)
    const wideBack = await runV3(['import', '-', '--wide', '--tags', 'host', '--server', b.address], {
      stdin: Buffer.from(wide.stdout),
    })
    assert.equal(wideBack.code, 0, wideBack.stderr)
    assert.deepEqual(
      await dump(b.client, ['host', 'timestamp']),
      expected.filter((l) => !l.startsWith('hc_cpu')),
    )

    // The earliest storable time is before year 0: an expanded ISO 8601 year, which import reads.
    const old = await runV3(['export', 'hc_old', '--time-format', 'rfc3339', '--server', a.address])
    assert.equal(old.code, 0, old.stderr)
    assert.match(old.stdout, /\nhc_old,-0000\d\d-\d\d-\d\dT[0-9:.]+Z,6,a\n/)
    const oldBack = await runV3(['import', '-', '--server', b.address], { stdin: Buffer.from(old.stdout) })
    assert.equal(oldBack.code, 0, oldBack.stderr)
    const got = await b.client.query({ selector: { metric: 'hc_old' }, startMs: MIN_TIMESTAMP_MS, endMs: ALL.endMs })
    assert.deepEqual([...(got[0]?.timestamps ?? [])], [MIN_TIMESTAMP_MS, T0])
  })

  test('query prints a table, CSV or JSON, and points at a syntax error', async () => {
    await a.client.write([
      { metric: 'q_cpu', tags: { host: 'a', region: 'eu-west' }, timestamps: [T0, T0 + 60_000], values: [1.5, 20] },
      { metric: 'q_cpu', tags: { host: 'b', region: 'us-east' }, timestamps: [T0], values: [7] },
    ])
    const range = ['--start', '2026-01-01T00:00:00Z', '--end', '2026-01-01T01:00:00Z', '--server', a.address]
    const many = await runV3(['query', ...Array.from({ length: 102 }, () => 'q_cpu'), ...range])
    assert.equal(many.code, 2, many.stderr)
    assert.equal(many.stderr, 'v3: v3 query takes at most 101 selectors in one call, got 102\n')
    const table = await runV3(['query', 'q_cpu{region=~"eu-.*"}', ...range])
    assert.equal(table.code, 0, table.stderr)
    assert.equal(
      table.stdout,
      [
        'metric  host  region   time                      value',
        'q_cpu   a     eu-west  2026-01-01T00:00:00.000Z    1.5',
        'q_cpu   a     eu-west  2026-01-01T00:01:00.000Z     20',
        '',
      ].join('\n'),
    )
    const csv = await runV3([
      'query',
      'q_cpu',
      '--agg',
      'max',
      '--step',
      '1h',
      '--group-by',
      'region',
      '--format',
      'csv',
      ...range,
    ])
    assert.equal(csv.stdout, `metric,timestamp,value,region\nq_cpu,${T0},20,eu-west\nq_cpu,${T0},7,us-east\n`)
    const two = await runV3([
      'query',
      'q_cpu{host="b"}',
      'q_cpu{host="a"}',
      '--agg',
      'count',
      '--format',
      'csv',
      ...range,
    ])
    assert.equal(two.stdout, `metric,timestamp,value,host,region\nq_cpu,${T0},1,b,us-east\nq_cpu,${T0},2,a,eu-west\n`)
    const json = await runV3(['query', 'q_cpu{host!="a"}', '--format', 'json', ...range])
    assert.deepEqual(JSON.parse(json.stdout), [
      { metric: 'q_cpu', tags: { host: 'b', region: 'us-east' }, points: [[T0, 7]] },
    ])
    // A relative time is a value of its own after the flag, as --help writes it: no --start=-… needed.
    const relative = await runV3([
      'query',
      'q_cpu{host="b"}',
      '--start',
      '-3650d',
      '--format',
      'csv',
      '--server',
      a.address,
    ])
    assert.equal(relative.code, 0, relative.stderr)
    assert.equal(relative.stdout, `metric,timestamp,value,host,region\nq_cpu,${T0},7,b,us-east\n`)
    const both = await runV3(['query', 'q_cpu', '--agg', 'max', '--group-by', 'region', '--merge', ...range])
    assert.equal(both.code, 2, both.stderr)
    assert.match(both.stderr, /^v3: --merge goes without --group-by/)
    const bad = await runV3(['query', 'q_cpu{host="a",region=~eu}', ...range])
    assert.equal(bad.code, 2)
    assert.equal(
      bad.stderr.trimEnd(),
      [
        'v3: bad selector at column 24: expected a quoted value, found "e"',
        '  q_cpu{host="a",region=~eu}',
        `  ${' '.repeat(23)}^`,
      ].join('\n'),
    )
  })

  test('series lists series as selectors; stats prints statistics', async () => {
    await a.client.write([{ metric: 'ls_up', tags: { job: 'api', zone: 'z"1' }, timestamps: [T0], values: [1] }])
    const series = await runV3(['series', 'ls_up', '--server', a.address])
    assert.equal(series.stdout, 'ls_up{job="api",zone="z\\"1"}\n')
    const stats = await runV3(['stats', '--format', 'json', '--server', a.address])
    const parsed = JSON.parse(stats.stdout) as { series: number; pointsWritten: number }
    assert.ok(parsed.series >= 1 && parsed.pointsWritten >= 1)
    const table = await runV3(['stats', '--server', a.address])
    assert.match(table.stdout, /^series\s+\d+$/m)
  })

  test('import, export, query and series take --consistency; an unknown level is a usage error', async () => {
    const file = join(dir, 'consistency.csv')
    await writeFile(file, ['metric,timestamp,value,host', `cl_up,${T0},1,a`, `cl_up,${T0 + 1000},2,a`].join('\n'))
    const imported = await runV3(['import', file, '--server', a.address, '--consistency', 'all', '--quiet'])
    assert.equal(imported.code, 0, imported.stderr)
    const csv = `metric,timestamp,value,host\ncl_up,${T0},1,a\ncl_up,${T0 + 1000},2,a\n`
    const range = ['--start', String(T0), '--end', String(T0 + 60_000), '--server', a.address]
    for (const level of ['one', 'quorum', 'all']) {
      const query = await runV3(['query', 'cl_up', ...range, '--format', 'csv', '--consistency', level])
      assert.equal(query.stdout, csv, query.stderr)
      const exported = await runV3(['export', 'cl_up', ...range, '--consistency', level])
      assert.equal(exported.stdout, csv, exported.stderr)
      const series = await runV3(['series', 'cl_up', '--server', a.address, '--consistency', level])
      assert.equal(series.stdout, 'cl_up{host="a"}\n', series.stderr)
    }
    for (const command of [
      ['import', file],
      ['export', 'cl_up'],
      ['query', 'cl_up'],
      ['series', 'cl_up'],
    ]) {
      const r = await runV3([...command, '--consistency', 'maybe', '--server', a.address])
      assert.equal(r.code, 2, command[0])
      assert.equal(r.stderr, 'v3: --consistency must be one, quorum or all, got "maybe"\n')
      const help = await runV3([command[0]!, '--help'])
      assert.match(help.stdout, /--consistency one\|quorum\|all/, command[0])
    }
  })

  test('migrate copies server → folder → server and verifies counts per series', async () => {
    const timestamps = Array.from({ length: 500 }, (_, i) => T0 + i * 1000)
    await a.client.write(
      ['x', 'y', 'z'].map((host) => ({
        metric: 'mg_load',
        tags: { host },
        timestamps,
        values: timestamps.map((t) => t % 97),
      })),
    )
    const folder = await makeDataDir()
    try {
      const out = await runV3(['migrate', '--from', a.address, '--to', folder, 'mg_load{host!="z"}'])
      assert.equal(out.code, 0, out.stderr)
      assert.match(out.stderr, /copied 1000 points of 2 series/)
      assert.match(out.stderr, /verified/)
      const noSelector = await runV3(['migrate', '--from', a.address, '--to', folder])
      assert.equal(noSelector.code, 2)
      assert.match(noSelector.stderr, /a server source needs at least one selector/)
      const noBatch = await runV3(['migrate', '--from', a.address, '--to', folder, '--batch-points', '0', 'mg_load'])
      assert.equal(noBatch.code, 2)
      assert.match(noBatch.stderr, /--batch-points must be at least 1/)
      const back = await runV3([
        'migrate',
        '--from',
        folder,
        '--to',
        b.address,
        '--start',
        String(T0),
        '--end',
        String(T0 + 100_000),
      ])
      assert.equal(back.code, 0, back.stderr)
      assert.match(back.stderr, /copied 200 points of 2 series/)
      const got = await b.client.query({
        selector: { metric: 'mg_load' },
        ...ALL,
        aggregation: { func: 'count', groupBy: ['host'] },
      })
      assert.deepEqual(
        got.map((s) => [s.tags[0]?.value, s.values[0]]),
        [
          ['x', 100],
          ['y', 100],
        ],
      )
    } finally {
      await removeDataDir(folder)
    }
  })

  test('export and migrate read a hundred series a call', async () => {
    const series = Array.from({ length: 250 }, (_, i) => ({
      metric: 'hc_load',
      tags: (i % 2 ? { host: `h${i}` } : { host: `h${i}`, dc: 'eu' }) as Record<string, string>,
      timestamps: [T0, T0 + 1000],
      values: [i, -i],
    }))
    await a.client.write(series)
    const queries = async (): Promise<number> => {
      const r = await runV3(['stats', '--server', a.address, '--format', 'json'])
      return (JSON.parse(r.stdout) as { queries: { count: number } }).queries.count
    }
    const before = await queries()
    const out = await runV3(['export', 'hc_load', '--server', a.address])
    assert.equal(out.code, 0, out.stderr)
    // 250 series in calls of 100: three queries, where a call per series made 250.
    assert.equal((await queries()) - before, 3)
    const lines = out.stdout.trimEnd().split('\n').slice(1).sort()
    const expected = series
      .flatMap((s, i) =>
        // -0 (the second value of h0) is written as such.
        s.timestamps.map(
          (t, k) =>
            `hc_load,${t},${Object.is(s.values[k], -0) ? '-0' : s.values[k]},${'dc' in s.tags ? 'eu' : ''},h${i}`,
        ),
      )
      .sort()
    assert.deepEqual(lines, expected)
    const folder = await makeDataDir()
    try {
      const copied = await runV3(['migrate', '--from', a.address, '--to', folder, 'hc_load', '--quiet'])
      assert.equal(copied.code, 0, copied.stderr)
      // Three calls to read the series and three to count them for the verification.
      assert.equal((await queries()) - before, 9)
      assert.match(copied.stderr, /250 series/)
    } finally {
      await removeDataDir(folder)
    }
  })

  test('migrate copies more one-point series than one write may carry', async () => {
    // 10,050 series of one point: its writes of 50,000 points would hold them all, past the
    // 10,000 series a request may carry.
    const SERIES = 10_050
    for (let from = 0; from < SERIES; from += 5_000) {
      const n = Math.min(5_000, SERIES - from)
      await a.client.write(
        Array.from({ length: n }, (_, i) => ({
          metric: 'mw_one',
          tags: { s: String(from + i) },
          timestamps: [T0],
          values: [from + i],
        })),
      )
    }
    const folder = await makeDataDir()
    try {
      const copied = await runV3(['migrate', '--from', a.address, '--to', folder, 'mw_one', '--quiet'])
      assert.equal(copied.code, 0, copied.stderr)
      assert.match(copied.stderr, /copied 10050 points of 10050 series/)
      assert.match(copied.stderr, /verified/)
    } finally {
      await removeDataDir(folder)
    }
  })

  test('export reads a series larger than the points-per-query limit in parts', async () => {
    const small = await startServerProcess({ args: ['--max-points-per-query', '300'] })
    try {
      const timestamps = Array.from({ length: 1000 }, (_, i) => T0 + i * 1000)
      await small.client.write([{ metric: 'big_one', tags: { h: 'a' }, timestamps, values: timestamps }])
      const out = await runV3(['export', 'big_one', '--server', small.address])
      assert.equal(out.code, 0, out.stderr)
      const lines = out.stdout.trim().split('\n').slice(1)
      assert.equal(lines.length, 1000)
      assert.match(out.stderr, /1000 points/)
    } finally {
      await small.stop()
      await removeDataDir(small.dataDir)
    }
  })

  test('output of a few hundred thousand rows, and output that cannot be written', async (t) => {
    // 250,000 points of one series: a table of that many rows (whose column widths were once
    // found by spreading a column into Math.max's arguments, which overflowed the call stack).
    const timestamps = Array.from({ length: 250_000 }, (_, i) => T0 + i * 100)
    await a.client.write([{ metric: 'wo_big', tags: { h: 'a' }, timestamps, values: timestamps }])
    const range = ['--start', String(T0), '--end', String(T0 + 25_000_000)]
    const table = await runV3(['query', 'wo_big', ...range, '--server', a.address])
    assert.equal(table.code, 0, table.stderr)
    assert.equal(table.stdout.trimEnd().split('\n').length, 250_001)

    // A reader that goes away (`| head -1`): the command ends quietly with 141, as a Unix tool
    // that SIGPIPE stops does, for export and query alike.
    for (const args of [
      ['export', 'wo_big'],
      ['query', 'wo_big', ...range, '--format', 'csv'],
    ]) {
      const cut = await runV3([...args, '--server', a.address], { closeStdoutEarly: true })
      assert.equal(cut.code, 141, cut.stderr)
      assert.equal(cut.stderr, '', args[0])
    }

    // --output is written under a temporary name and renamed once complete: an export that cannot
    // reach its server, or is interrupted, leaves neither the file nor a part of it.
    const target = join(dir, 'wo-big.csv')
    const partial = (pid: number | undefined) => join(dir, `.wo-big.csv.${pid}.partial`)
    const probe = createNetServer().listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const { port } = probe.address() as AddressInfo
    await new Promise((resolve) => probe.close(resolve))
    const unreachable = await runV3(['export', 'wo_big', '--output', target, '--server', `127.0.0.1:${port}`])
    assert.equal(unreachable.code, 1, unreachable.stderr)
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('wo-big')),
      [],
    )
    for (const [signal, code] of [
      ['SIGTERM', 143],
      ['SIGINT', 130],
    ] as const) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', MAIN, 'export', 'wo_big', '--output', target, '--server', a.address],
        { stdio: 'ignore' },
      )
      const exited = once(child, 'exit')
      await waitFor('the temporary output file', () => existsSync(partial(child.pid)), 20_000, 5)
      child.kill(signal)
      assert.deepEqual(await exited, [code, null], signal)
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.includes('wo-big')),
        [],
      )
    }
    const whole = await runV3(['export', 'wo_big', '--output', target, '--server', a.address])
    assert.equal(whole.code, 0, whole.stderr)
    assert.equal(readFileSync(target, 'utf8').split('\n').length, 250_002)
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('wo-big')),
      ['wo-big.csv'],
    )

    if (!existsSync('/dev/full')) {
      t.skip('no /dev/full here to fail the writes with ENOSPC')
      return
    }
    // A full disk: one line naming the output and the reason, exit 1, and no summary that claims
    // the points were exported.
    const toFile = await runV3(['export', 'wo_big', '--server', a.address, '--output', '/dev/full'])
    assert.equal(toFile.code, 1, toFile.stderr)
    assert.equal(toFile.stderr, 'v3: cannot write /dev/full: ENOSPC: no space left on device, write\n')
    const full = openSync('/dev/full', 'w')
    try {
      for (const args of [
        ['export', 'wo_big'],
        ['query', 'wo_big', ...range],
      ]) {
        const r = await runV3([...args, '--server', a.address], { stdoutFd: full })
        assert.equal(r.code, 1, r.stderr)
        assert.equal(r.stderr, 'v3: cannot write standard output: ENOSPC: no space left on device, write\n')
      }
    } finally {
      closeSync(full)
    }
  })

  test('migrate reports a per-series count mismatch with exit code 1', async () => {
    const timestamps = Array.from({ length: 50 }, (_, i) => T0 + i * 1000)
    await a.client.write([{ metric: 'mm_load', tags: { host: 'x' }, timestamps, values: timestamps }])
    // The destination already holds an extra point of the same series inside the copied span.
    await b.client.write([{ metric: 'mm_load', tags: { host: 'x' }, timestamps: [T0 + 500], values: [1] }])
    const out = await runV3(['migrate', '--from', a.address, '--to', b.address, 'mm_load'])
    assert.equal(out.code, 1, out.stderr)
    assert.match(out.stderr, /count mismatch: .*50 points in the source, 51 in the destination/)
  })

  test('import of a large file keeps the importer in bounded memory', async () => {
    // 1,000,000 rows (about 45 MB) over 100 series.
    const path = join(dir, 'large.csv')
    const lines = ['metric,timestamp,value,host,region']
    const chunks: string[] = []
    for (let i = 0; i < 1_000_000; i++) {
      lines.push(`lg_cpu,${T0 + Math.floor(i / 100) * 1000},${(i % 1000) + 0.25},host-${i % 100},region-${i % 7}`)
      if (lines.length === 50_000) chunks.push(`${lines.splice(0).join('\n')}\n`)
    }
    chunks.push(`${lines.join('\n')}\n`)
    await writeFile(path, chunks.join(''))
    // A 48 MiB heap could not hold the file's text, let alone its rows: an importer whose memory
    // grew with the file would die here. Node with tsx alone is about 120 MiB resident.
    const r = await runV3(['import', path, '--server', a.address], {
      env: { NODE_OPTIONS: '--max-old-space-size=48' },
    })
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /1000000 points written from 1000000 rows, 0 rows rejected/)
    assert.ok(r.peakRssBytes > 0, 'peak RSS was sampled')
    assert.ok(r.peakRssBytes < 200 * 1024 * 1024, `importer peak RSS ${(r.peakRssBytes / 1048576).toFixed(0)} MiB`)
    const count = await a.client.query({
      selector: { metric: 'lg_cpu' },
      ...ALL,
      aggregation: { func: 'count', mergeSeries: true },
    })
    assert.equal(count[0]?.values[0], 1_000_000)
  })
})
