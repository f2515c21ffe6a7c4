// npm run bench: the cpu-only data set (bench/dataset.ts) against real `v3 serve` processes.
// - Ingest through Write (50,000-point requests, 2 in flight), through WriteStream, and through the
//   batching writer on one Ingest stream, each into a fresh server, with its peak RSS.
// - After the Write load: compaction, bytes on disk per point once the data is cold, compacted and
//   settled, and the seven TSBS devops queries of the performance issue (median and p95 of 20 runs
//   after 2 warm-ups, parameters from a fixed seed), every answer checked against a reference
//   computed from the generated data (the check is not timed).
// With --against victoriametrics the same workload runs against VictoriaMetrics from Debian's
// package in the same run, and the table shows both columns and their ratio. Results go to
// bench/results/ as JSON and Markdown.
//   npm run bench [-- --decimals 2] [-- --hosts 10] [-- --against victoriametrics]
//   npm run bench -- --ring   (the hash ring alone, see bench/ring-bench.ts)
//   npm run bench -- --regex  (regex matchers alone, see bench/regex-bench.ts)
//   npm run bench -- --peer   (the peer transport alone, see bench/peer-bench.ts)
//   npm run bench -- --cluster 3 [--replication-factor 1]  (a cluster beside a single node, see
//   bench/cluster-bench.ts)
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { parseArgs } from 'node:util'
import { Client, credentials, type ServiceError } from '@grpc/grpc-js'
import { WriteResponse } from '../gen/v3storage/v1/write_service.js'
import { V3Client } from '../src/client/index.js'
import { BasicEngine } from '../src/engine/basic-engine.js'
import { HOSTS, hostTags, METRICS, POINTS_PER_SERIES, seriesValues } from './dataset.js'
import {
  encodeMessages,
  eventLoopDelayMs,
  folderBytes,
  peakRssMiB,
  type QueryResult,
  removeServer,
  startServer,
  stopServer,
  timed,
} from './harness.js'
import { drawParams, QUERY_KINDS, type QueryParams, runV3 } from './queries.js'
import { benchIngest, benchWriteStream, type IngestResult } from './streams.js'
import {
  ensureInstalled,
  ingest as ingestVictoriaMetrics,
  lineProtocol,
  runVictoriaMetrics,
  startVictoriaMetrics,
  stopVictoriaMetrics,
} from './victoriametrics.js'

const { values: args } = parseArgs({
  options: {
    decimals: { type: 'string' },
    hosts: { type: 'string', default: String(HOSTS) },
    batch: { type: 'string', default: '50' },
    inflight: { type: 'string', default: '2' },
    runs: { type: 'string', default: '20' },
    'writer-batch-points': { type: 'string', default: '50000' },
    against: { type: 'string' },
    // --ring runs only the hash-ring bench (bench/ring-bench.ts): no servers, a table of figures.
    ring: { type: 'boolean', default: false },
    // --peer runs only the peer transport bench (bench/peer-bench.ts): two processes on loopback.
    peer: { type: 'boolean', default: false },
    // --regex runs only the regex matcher bench (bench/regex-bench.ts): no servers, a table of figures.
    regex: { type: 'boolean', default: false },
    // --cluster N runs the cluster bench (bench/cluster-bench.ts): N nodes beside a single node.
    cluster: { type: 'string' },
    'replication-factor': { type: 'string', default: '1' },
  },
})
const decimals = args.decimals === undefined ? undefined : Number(args.decimals)
const hosts = Number(args.hosts)
const timestampsPerRequest = Number(args.batch)
const inflight = Number(args.inflight)
const runs = Number(args.runs)
const writerBatchPoints = Number(args['writer-batch-points'])
if (args.against !== undefined && args.against !== 'victoriametrics') {
  throw new Error(`--against takes victoriametrics, got ${args.against}`)
}

/** The pause between the end of a load and the first query, for both systems' background work. */
const SETTLE_MS = 10_000

interface SystemResult {
  readonly ingestPointsPerSecond: number
  /** Peak RSS of the process that served the ingest and the queries. */
  readonly peakRssMiB: number
  readonly bytesPerPoint: number
  readonly queries: QueryResult[]
  /** The server's event-loop delay while it answered the query mix; V3 only. */
  readonly eventLoopDelay?: { readonly p99Ms: number; readonly maxMs: number }
}

function unary<Res>(fn: (cb: (err: ServiceError | null, res?: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) =>
    fn((err, res) => (err || res === undefined ? reject(err ?? new Error('no response')) : resolve(res))),
  )
}

async function benchV3(
  requests: Buffer[],
  totalPoints: number,
  values: Float64Array[][],
  params: Map<string, QueryParams[]>,
): Promise<SystemResult> {
  const server = await startServer()
  const raw = new Client(server.address, credentials.createInsecure())
  const client = new V3Client(server.address)
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
    const seconds = (performance.now() - t0) / 1000
    const ingestPointsPerSecond = Math.round(totalPoints / seconds)
    console.log(`V3 ingest (Write): ${ingestPointsPerSecond.toLocaleString('en')} points/s (${seconds.toFixed(1)} s)`)
    console.log(`V3 compact: ${JSON.stringify(await client.compact())}`)
    // Let background work (RocksDB flushes and compactions) finish before timing queries.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))

    // This scrape starts the interval the one after the queries reports on.
    await eventLoopDelayMs(server)
    const queries: QueryResult[] = []
    for (const kind of QUERY_KINDS) {
      queries.push(await timed(kind.name, (p) => runV3(client, kind.name, p, values), params.get(kind.name) ?? []))
    }
    const eventLoopDelay = await eventLoopDelayMs(server)
    console.log(
      `V3 event-loop delay under the query mix: p99 ${eventLoopDelay.p99Ms.toFixed(1)} ms, max ${eventLoopDelay.maxMs.toFixed(1)} ms`,
    )
    const peak = await peakRssMiB(server.proc.pid as number)
    await stopServer(server)
    // Settle: reopening replays the write-ahead log into table files and drops the log, as any
    // restart does; a few seconds let RocksDB's background compaction drop deleted data.
    const settle = new BasicEngine({ dataDir: server.dataDir })
    await settle.open()
    await new Promise((resolve) => setTimeout(resolve, 5000))
    await settle.close()
    const bytesPerPoint = (await folderBytes(server.dataDir)) / totalPoints
    return { ingestPointsPerSecond, peakRssMiB: peak, bytesPerPoint, queries, eventLoopDelay }
  } finally {
    raw.close()
    client.close()
    await removeServer(server)
  }
}

async function benchVictoriaMetrics(
  bodies: string[],
  totalPoints: number,
  params: Map<string, QueryParams[]>,
): Promise<SystemResult> {
  ensureInstalled()
  const vm = await startVictoriaMetrics()
  try {
    const t0 = performance.now()
    await ingestVictoriaMetrics(vm, bodies, inflight)
    const seconds = (performance.now() - t0) / 1000
    const ingestPointsPerSecond = Math.round(totalPoints / seconds)
    console.log(
      `VictoriaMetrics ingest: ${ingestPointsPerSecond.toLocaleString('en')} points/s (${seconds.toFixed(1)} s)`,
    )
    // The same pause as V3 gets, for VictoriaMetrics' background merges.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
    const queries: QueryResult[] = []
    for (const kind of QUERY_KINDS) {
      queries.push(await timed(kind.name, (p) => runVictoriaMetrics(vm, kind.name, p), params.get(kind.name) ?? []))
    }
    const peak = await peakRssMiB(vm.proc.pid as number)
    await stopVictoriaMetrics(vm)
    const bytesPerPoint = (await folderBytes(vm.dataDir)) / totalPoints
    return { ingestPointsPerSecond, peakRssMiB: peak, bytesPerPoint, queries }
  } finally {
    await stopVictoriaMetrics(vm)
    await rm(vm.dataDir, { recursive: true, force: true })
  }
}

function ratio(v3: number, other: number | undefined, higherIsBetter: boolean): string {
  if (other === undefined || other === 0) return ''
  const r = v3 / other
  const better = higherIsBetter ? r >= 1 : r <= 1
  return `${r.toFixed(2)}x ${better ? '(V3 ahead)' : '(V3 behind)'}`
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')

async function main(): Promise<void> {
  const seriesCount = hosts * METRICS.length
  const totalPoints = seriesCount * POINTS_PER_SERIES
  const machine = `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`
  const dataSet = `${totalPoints.toLocaleString('en')} points (${hosts} hosts x ${METRICS.length} metrics x 24 h at 10 s), ${decimals === undefined ? 'full-precision values' : `values rounded to ${decimals} decimals`}`
  console.log(`data set: ${dataSet}`)

  // Generate and encode every request before the clock starts, as TSBS loads from a file.
  const tagRecords = Array.from({ length: hosts }, (_, h) => hostTags(h))
  const tags = tagRecords.map((t) => Object.entries(t).map(([key, value]) => ({ key, value })))
  const values = Array.from({ length: hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, decimals)))
  const requests = encodeMessages(tags, values, timestampsPerRequest)
  const params = drawParams(hosts, runs)

  const v3 = await benchV3(requests, totalPoints, values, params)
  const writeStream: IngestResult = await benchWriteStream(requests, totalPoints)
  console.log(`V3 ingest (WriteStream): ${fmt(writeStream.pointsPerSecond)} points/s`)
  const ingest: IngestResult = await benchIngest(tagRecords, values, writerBatchPoints, totalPoints)
  console.log(`V3 ingest (batching writer on Ingest): ${fmt(ingest.pointsPerSecond)} points/s`)
  let vm: SystemResult | undefined
  if (args.against === 'victoriametrics') {
    vm = await benchVictoriaMetrics(lineProtocol(hosts, tagRecords, values), totalPoints, params)
  }

  const vmIngest = vm ? fmt(vm.ingestPointsPerSecond) : 'about 2.6 M (issue)'
  const vmBytes = vm ? vm.bytesPerPoint.toFixed(2) : decimals === undefined ? 'about 6.6 (issue)' : 'about 1.4 (issue)'
  const vmRss = vm ? vm.peakRssMiB.toFixed(0) : 'about 200 (issue)'
  const rows: string[] = [
    `| figure | V3 | VictoriaMetrics | V3 / VM |`,
    '|---|---|---|---|',
    `| ingest, batching writer on one Ingest stream, points/s | ${fmt(ingest.pointsPerSecond)} | ${vmIngest} | ${ratio(ingest.pointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| ingest, WriteStream, points/s | ${fmt(writeStream.pointsPerSecond)} | | ${ratio(writeStream.pointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| ingest, Write (2 in flight), points/s | ${fmt(v3.ingestPointsPerSecond)} | | ${ratio(v3.ingestPointsPerSecond, vm?.ingestPointsPerSecond, true)} |`,
    `| bytes per point on disk, settled | ${v3.bytesPerPoint.toFixed(2)} | ${vmBytes} | ${ratio(v3.bytesPerPoint, vm?.bytesPerPoint, false)} |`,
    `| peak RSS while ingesting (batching writer), MiB | ${ingest.peakRssMiB.toFixed(0)} | ${vmRss} | ${ratio(ingest.peakRssMiB, vm?.peakRssMiB, false)} |`,
    `| peak RSS, Write ingest then queries, MiB | ${v3.peakRssMiB.toFixed(0)} | | ${ratio(v3.peakRssMiB, vm?.peakRssMiB, false)} |`,
    ...v3.queries.map((q, i) => {
      const other = vm?.queries[i]
      const vmCell = other
        ? `${other.medianMs.toFixed(2)} (${other.p95Ms.toFixed(2)})`
        : `${QUERY_KINDS[i]?.vmFigure} (issue)`
      return `| ${q.name}, median (p95) ms | ${q.medianMs.toFixed(2)} (${q.p95Ms.toFixed(2)}) | ${vmCell} | ${ratio(q.medianMs, other?.medianMs, false)} |`
    }),
    `| server event-loop delay under the query mix, p99 (max) ms | ${v3.eventLoopDelay?.p99Ms.toFixed(1)} (${v3.eventLoopDelay?.maxMs.toFixed(1)}) | | |`,
  ]
  const md = [`${machine}; ${dataSet}.`, '', ...rows].join('\n')
  console.log(`\n${md}\n`)
  await mkdir('bench/results', { recursive: true })
  const name = decimals === undefined ? 'latest' : `latest-${decimals}dp`
  const report = {
    date: new Date().toISOString(),
    machine,
    dataSet: { hosts, metrics: METRICS.length, points: totalPoints, decimals: decimals ?? null },
    write: { requests: requests.length, pointsPerRequest: timestampsPerRequest * seriesCount, inflight },
    v3: { ...v3, writeStream, ingest: { ...ingest, batchPoints: writerBatchPoints } },
    victoriaMetrics: vm ?? null,
  }
  await writeFile(`bench/results/${name}.json`, `${JSON.stringify(report, null, 2)}\n`)
  await writeFile(`bench/results/${name}.md`, `${md}\n`)
}

if (args.ring) {
  const { ringBench } = await import('./ring-bench.js')
  ringBench()
} else if (args.regex) {
  const { regexBench } = await import('./regex-bench.js')
  regexBench()
} else if (args.cluster !== undefined) {
  const { runClusterBench } = await import('./cluster-bench.js')
  await runClusterBench({
    nodes: Number(args.cluster),
    replicationFactor: Number(args['replication-factor']),
    hosts,
    decimals,
    timestampsPerRequest,
    inflight,
    runs,
  })
} else if (args.peer) {
  const { runPeerBench } = await import('./peer-bench.js')
  await runPeerBench()
} else {
  await main()
}
