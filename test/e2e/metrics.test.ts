// /metrics, /healthz and /readyz of a real `v3 serve`: the Prometheus text parses, and the series
// operators alert on are there and move with the traffic.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { BatchingWriter, type IngestRejection, V3ClientError } from '../../src/client/index.js'
import { removeDataDir, type ServerProcess, startServerProcess } from './server-process.js'

const T0 = Date.UTC(2026, 0, 1)

/** Parses the Prometheus text format into `name{labels}` → value, checking every line's syntax. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line)
    assert.ok(m, `not a sample line: ${line}`)
    const value = Number(m[3])
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', line)
    out.set(`${m[1]}${m[2] ?? ''}`, value)
  }
  return out
}

describe('v3 serve metrics and health', () => {
  let server: ServerProcess
  let base: string

  before(async () => {
    server = await startServerProcess({ args: ['--log-requests'] })
    assert.ok(server.metricsUrl, 'the metrics address is printed')
    base = server.metricsUrl.replace(/\/metrics$/, '')
  })

  after(async () => {
    assert.equal((await server.stop()).code, 0, server.stderr())
    await removeDataDir(server.dataDir)
  })

  test('/healthz and /readyz answer 200 while serving', async () => {
    assert.equal((await fetch(`${base}/healthz`)).status, 200)
    const ready = await fetch(`${base}/readyz`)
    assert.equal(ready.status, 200)
    assert.equal(await ready.text(), 'ready\n')
    assert.equal((await fetch(`${base}/nope`)).status, 404)
  })

  test('/metrics has per-RPC counts, errors and latencies, write and storage figures, RocksDB and process metrics', async () => {
    await server.client.write([
      { metric: 'm_cpu', tags: { host: 'a' }, timestamps: [T0, T0 + 1000], values: [1, 2] },
      { metric: 'm_cpu', tags: { host: 'b' }, timestamps: [T0], values: [3] },
    ])
    await assert.rejects(server.client.write([{ metric: '9bad', timestamps: [T0], values: [1] }]), V3ClientError)
    // Two batches on one Ingest stream: the server rejects the second and the stream goes on.
    const rejections: IngestRejection[] = []
    const writer = new BatchingWriter(server.address, { onReject: (r) => rejections.push(r) })
    writer.write('m_ingest', { host: 'a' }, T0, 1)
    await writer.flush()
    writer.write('m_ingest', { host: 'a' }, T0 + 1000, Number.POSITIVE_INFINITY)
    await writer.close()
    assert.equal(rejections.length, 1)
    await server.client.query({ selector: { metric: 'm_cpu' }, startMs: T0, endMs: T0 + 10_000 })

    const res = await fetch(server.metricsUrl!)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    const m = parseMetrics(await res.text())
    assert.equal(m.get('v3_grpc_requests_total{method="WriteService/Write",code="OK"}'), 1)
    assert.equal(m.get('v3_grpc_requests_total{method="WriteService/Write",code="INVALID_ARGUMENT"}'), 1)
    assert.equal(m.get('v3_grpc_errors_total{method="WriteService/Write",code="INVALID_ARGUMENT"}'), 1)
    // The failed Write call and the rejected Ingest message.
    assert.equal(m.get('v3_rejected_writes_total{code="INVALID_ARGUMENT"}'), 2)
    assert.equal(m.get('v3_grpc_request_duration_seconds_count{method="QueryService/Query"}'), 1)
    assert.ok(m.has('v3_grpc_request_duration_seconds_bucket{le="0.005",method="QueryService/Query"}'))
    assert.equal(m.get('v3_points_written_total'), 4)
    assert.equal(m.get('v3_series_written_total'), 2)
    assert.equal(m.get('v3_series'), 3)
    for (const name of [
      'v3_buffered_points',
      'v3_hot_blocks',
      'v3_cold_runs',
      'v3_cold_blocks',
      'v3_rocksdb_running_compactions',
      'v3_rocksdb_background_errors',
      'v3_rocksdb_default_cf_memtable_bytes',
      'v3_rocksdb_default_cf_pending_compaction_bytes',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_seconds',
    ]) {
      assert.ok(m.has(name), `${name} is exported`)
    }
    assert.ok((m.get('v3_bytes_on_disk') ?? 0) > 0)
    assert.ok((m.get('v3_disk_free_bytes') ?? 0) > 0, 'free space of the data folder is exported')
    assert.equal(m.get('v3_seal_failures'), 0)
    // The one query above resolved its selector through the index and computed its result.
    assert.equal(m.get('v3_cache_lookups{cache="results",outcome="miss"}'), 1)
    assert.equal(m.get('v3_cache_lookups{cache="results",outcome="hit"}'), 0)
    await server.client.query({ selector: { metric: 'm_cpu' }, startMs: T0, endMs: T0 + 10_000 })
    // A second scrape this soon can hold NaN in the event-loop figures, so read the two lines alone.
    const text = await (await fetch(server.metricsUrl!)).text()
    const value = (name: string): number =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(`${name} `))
          ?.slice(name.length + 1),
      )
    assert.equal(value('v3_cache_lookups{cache="results",outcome="hit"}'), 1)
    assert.ok(value('v3_cache_lookups{cache="selectors",outcome="hit"}') >= 1)
  })

  test('request logging writes one JSON line per call without metadata', async () => {
    await server.client.listSeries({ metric: 'm_cpu' })
    const logged = () =>
      server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"msg":"call'))
        .map((l) => JSON.parse(l) as { method: string; code: string; durationMs: number })
    // The line is written after the answer is sent, so it may reach the pipe a moment later.
    const deadline = Date.now() + 5000
    let lines = logged()
    while (!lines.some((l) => l.method === '/v3storage.v1.QueryService/ListSeries') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      lines = logged()
    }
    const listed = lines.find((l) => l.method === '/v3storage.v1.QueryService/ListSeries')
    assert.ok(listed, server.stderr())
    assert.equal(listed.code, 'OK')
    assert.equal(typeof listed.durationMs, 'number')
    assert.ok(lines.some((l) => l.code === 'INVALID_ARGUMENT'))
    assert.doesNotMatch(server.stderr(), /authorization/i)
  })
})
