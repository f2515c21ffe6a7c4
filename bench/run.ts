// npm run bench: loads the cpu-only data set (bench/dataset.ts) into a real `v3 serve` process
// through Write, then measures ingest rate, bytes on disk per point once cold and compacted, the
// server's peak RSS, and query latencies (median and p95 of 20 runs after 2 warm-ups), checking
// every query result against a reference computed here. Results go to bench/results/.
//   npm run bench [-- --decimals 2] [-- --hosts 10]
// V3_BENCH_SERVER_NODE_ARGS passes Node options to the server process, e.g. "--cpu-prof".
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { Client, credentials, type ServiceError } from '@grpc/grpc-js'
import { AdminServiceClient, type GetStatsResponse } from '../gen/v3storage/v1/admin_service.js'
import { AggFunc, MatchOp } from '../gen/v3storage/v1/common.js'
import { type LatestResponse, type QueryResponse, QueryServiceClient } from '../gen/v3storage/v1/query_service.js'
import { WriteRequest, WriteResponse } from '../gen/v3storage/v1/write_service.js'
import { BasicEngine } from '../src/engine/basic-engine.js'
import {
  HOSTS,
  hostTags,
  INTERVAL_MS,
  METRICS,
  POINTS_PER_SERIES,
  prng,
  START_MS,
  seriesValues,
  timestampAt,
} from './dataset.js'

const { values: args } = parseArgs({
  options: {
    decimals: { type: 'string' },
    hosts: { type: 'string', default: String(HOSTS) },
    batch: { type: 'string', default: '50' },
    inflight: { type: 'string', default: '2' },
    runs: { type: 'string', default: '20' },
  },
})
const decimals = args.decimals === undefined ? undefined : Number(args.decimals)
const hosts = Number(args.hosts)
const timestampsPerRequest = Number(args.batch)
const inflight = Number(args.inflight)
const runs = Number(args.runs)

interface Server {
  readonly proc: ChildProcess
  readonly address: string
  readonly dataDir: string
}

async function startServer(): Promise<Server> {
  const dataDir = await mkdtemp(join(tmpdir(), 'v3-bench-'))
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.V3_BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      'bin/v3.js',
      'serve',
      '--data',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      '--hot-window',
      '1h',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const address = await new Promise<string>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)))
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const m = /listening on (\S+)/.exec(line)
      if (m?.[1]) resolve(m[1])
    })
  })
  return { proc, address, dataDir }
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0)
  return kb / 1024
}

/** Bytes by kind of file: RocksDB tables (.sst), write-ahead logs (.log), the rest. */
async function folderBreakdown(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue
    const kind = entry.name.endsWith('.sst') ? 'sst' : entry.name.endsWith('.log') ? 'log' : 'other'
    out[kind] = (out[kind] ?? 0) + (await stat(join(dir, entry.name))).size
  }
  return out
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? await folderBytes(path) : (await stat(path)).size
  }
  return total
}

function unary<Res>(fn: (cb: (err: ServiceError | null, res?: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) =>
    fn((err, res) => (err || res === undefined ? reject(err ?? new Error('no response')) : resolve(res))),
  )
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}

async function timed(
  name: string,
  run: (i: number) => Promise<void>,
): Promise<{ name: string; medianMs: number; p95Ms: number }> {
  for (let i = 0; i < 2; i++) await run(-1 - i)
  const times: number[] = []
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    await run(i)
    times.push(performance.now() - t)
  }
  times.sort((a, b) => a - b)
  return { name, medianMs: quantile(times, 0.5), p95Ms: quantile(times, 0.95) }
}

function assertClose(what: string, got: number[], want: number[]): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, expected ${want.length}`)
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) throw new Error(`${what}: value ${i} is ${got[i]}, expected ${want[i]}`)
  }
}

async function main(): Promise<void> {
  const seriesCount = hosts * METRICS.length
  const totalPoints = seriesCount * POINTS_PER_SERIES
  console.log(
    `data set: ${hosts} hosts x ${METRICS.length} metrics x ${POINTS_PER_SERIES} points = ${totalPoints} points`,
  )
  console.log(`values: ${decimals === undefined ? 'full precision' : `rounded to ${decimals} decimals`}`)

  // Generate and encode every request before the clock starts, as TSBS loads from a file.
  const tags = Array.from({ length: hosts }, (_, h) =>
    Object.entries(hostTags(h)).map(([key, value]) => ({ key, value })),
  )
  const values = Array.from({ length: hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, decimals)))
  const requests: Buffer[] = []
  for (let i0 = 0; i0 < POINTS_PER_SERIES; i0 += timestampsPerRequest) {
    const n = Math.min(timestampsPerRequest, POINTS_PER_SERIES - i0)
    const timestamps = Array.from({ length: n }, (_, i) => timestampAt(i0 + i))
    const series = []
    for (let h = 0; h < hosts; h++) {
      for (let m = 0; m < METRICS.length; m++) {
        series.push({
          metric: METRICS[m] as string,
          tags: tags[h] ?? [],
          timestamps,
          values: Array.from(values[h]?.[m]?.subarray(i0, i0 + n) ?? []),
        })
      }
    }
    requests.push(Buffer.from(WriteRequest.encode({ series, precision: 0 }).finish()))
  }
  console.log(`requests: ${requests.length} of ${timestampsPerRequest * seriesCount} points, ${inflight} in flight`)

  const server = await startServer()
  const raw = new Client(server.address, credentials.createInsecure())
  const query = new QueryServiceClient(server.address, credentials.createInsecure())
  const admin = new AdminServiceClient(server.address, credentials.createInsecure())
  try {
    const t0 = performance.now()
    let next = 0
    const send = async (): Promise<void> => {
      while (next < requests.length) {
        const body = requests[next++] as Buffer
        await unary<WriteResponse>((cb) =>
          raw.makeUnaryRequest(
            '/v3storage.v1.WriteService/Write',
            (b: Buffer) => b,
            (b: Buffer) => WriteResponse.decode(b),
            body,
            cb,
          ),
        )
      }
    }
    await Promise.all(Array.from({ length: inflight }, send))
    const ingestSeconds = (performance.now() - t0) / 1000
    const pointsPerSecond = totalPoints / ingestSeconds
    const rssAfterIngest = await peakRssMiB(server.proc.pid as number)
    console.log(
      `ingest (Write): ${Math.round(pointsPerSecond).toLocaleString('en')} points/s (${ingestSeconds.toFixed(1)} s), peak RSS ${rssAfterIngest.toFixed(0)} MiB`,
    )

    const c0 = performance.now()
    const compacted = await unary((cb) => admin.compact({}, cb))
    console.log(`compact: ${JSON.stringify(compacted)} in ${((performance.now() - c0) / 1000).toFixed(1)} s`)
    const stats = await unary<GetStatsResponse>((cb) => admin.getStats({}, cb))
    const liveBytes = await folderBytes(server.dataDir)

    const r = prng(42)
    const pick = (n: number): number => Math.floor(r() * n)
    const sel = (metric: number, host?: number) => ({
      metric: METRICS[metric] as string,
      matchers: host === undefined ? [] : [{ key: 'hostname', value: `host_${host}`, op: MatchOp.MATCH_OP_EQ }],
    })

    const results = []
    // (a) max per minute of one series over one hour.
    results.push(
      await timed('max per minute, 1 series, 1 h', async () => {
        const h = pick(hosts)
        const m = pick(METRICS.length)
        const hour = pick(24)
        const startMs = START_MS + hour * 3_600_000
        const res = await unary<QueryResponse>((cb) =>
          query.query(
            {
              selector: sel(m, h),
              startMs,
              endMs: startMs + 3_600_000,
              aggregation: { func: AggFunc.AGG_FUNC_MAX, stepMs: 60_000, groupBy: [], mergeSeries: false },
            },
            cb,
          ),
        )
        const v = values[h]?.[m] as Float64Array
        const want: number[] = []
        for (let minute = 0; minute < 60; minute++) {
          const i0 = hour * 360 + minute * 6
          want.push(Math.max(...v.subarray(i0, i0 + 6)))
        }
        assertClose('max per minute', res.series[0]?.values ?? [], want)
      }),
    )
    // (b) every raw point of one series over 24 hours.
    results.push(
      await timed('raw points, 1 series, 24 h', async () => {
        const h = pick(hosts)
        const m = pick(METRICS.length)
        const res = await unary<QueryResponse>((cb) =>
          query.query(
            { selector: sel(m, h), startMs: START_MS, endMs: START_MS + POINTS_PER_SERIES * INTERVAL_MS },
            cb,
          ),
        )
        assertClose('raw range', res.series[0]?.values ?? [], Array.from(values[h]?.[m] ?? []))
      }),
    )
    // (c) the latest point of every host, for one metric.
    results.push(
      await timed('latest point of every host', async () => {
        const m = pick(METRICS.length)
        const res = await unary<LatestResponse>((cb) => query.latest({ selector: sel(m) }, cb))
        if (res.series.length !== hosts) throw new Error(`latest: ${res.series.length} series, expected ${hosts}`)
        for (const s of res.series) {
          const h = Number(s.tags.find((t) => t.key === 'hostname')?.value.slice(5))
          assertClose('latest', s.values, [values[h]?.[m]?.[POINTS_PER_SERIES - 1] as number])
        }
      }),
    )
    const peakRss = await peakRssMiB(server.proc.pid as number)
    server.proc.kill('SIGTERM')
    await new Promise((resolve) => server.proc.once('exit', resolve))
    const stoppedBytes = await folderBytes(server.dataDir)
    console.log(`data folder after stop: ${JSON.stringify(await folderBreakdown(server.dataDir))}`)
    // Settle: reopening replays the write-ahead log into table files and drops the log, as any
    // restart does; a few seconds let RocksDB's background compaction drop deleted data.
    const settle = new BasicEngine({ dataDir: server.dataDir })
    await settle.open()
    await new Promise((resolve) => setTimeout(resolve, 5000))
    await settle.close()
    const settledBytes = await folderBytes(server.dataDir)
    console.log(`data folder settled: ${JSON.stringify(await folderBreakdown(server.dataDir))}`)

    const report = {
      date: new Date().toISOString(),
      machine: `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
      dataSet: {
        hosts,
        metrics: METRICS.length,
        points: totalPoints,
        intervalMs: INTERVAL_MS,
        decimals: decimals ?? null,
      },
      ingest: {
        rpc: 'Write',
        pointsPerSecond: Math.round(pointsPerSecond),
        seconds: ingestSeconds,
        requests: requests.length,
        inflight,
      },
      disk: {
        bytesPerPointLive: liveBytes / totalPoints,
        bytesPerPointStopped: stoppedBytes / totalPoints,
        bytesPerPointSettled: settledBytes / totalPoints,
        hotBlocks: stats.hotBlocks,
        coldRuns: stats.coldRuns,
      },
      peakRssMiB: peakRss,
      queries: results,
    }
    const md = [
      `| figure | V3 (${report.machine}) |`,
      '|---|---|',
      `| ingest through Write, points/s | ${report.ingest.pointsPerSecond.toLocaleString('en')} |`,
      `| bytes per point on disk, cold, compacted and settled | ${report.disk.bytesPerPointSettled.toFixed(2)} |`,
      `| bytes per point on disk, right after ingest (write-ahead log included) | ${report.disk.bytesPerPointLive.toFixed(2)} |`,
      `| peak server RSS | ${peakRss.toFixed(0)} MiB |`,
      ...results.map((q) => `| ${q.name}: median / p95 | ${q.medianMs.toFixed(2)} ms / ${q.p95Ms.toFixed(2)} ms |`),
    ].join('\n')
    console.log(`\n${md}\n`)
    await mkdir('bench/results', { recursive: true })
    const name = decimals === undefined ? 'latest' : `latest-${decimals}dp`
    await writeFile(`bench/results/${name}.json`, `${JSON.stringify(report, null, 2)}\n`)
    await writeFile(`bench/results/${name}.md`, `${md}\n`)
  } finally {
    raw.close()
    query.close()
    admin.close()
    if (server.proc.exitCode === null) server.proc.kill('SIGKILL')
    await rm(server.dataDir, { recursive: true, force: true })
  }
}

await main()
