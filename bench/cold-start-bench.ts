/**
 * Cold-start bench (`npm run bench -- --cold-start`): what the first queries after a start cost,
 * and how much of it is memory the process touches for the first time.
 * - Load: the single-node bench's Write requests into a server at default flags, a settle of
 *   SETTLE_MS in which it seals and flushes on its own timers, then a clean stop.
 * - Then, for each of the seven queries, a start on the same folder with `--result-cache-points 0`
 *   (as the single-node bench's storage-path table), its health-check round trip (as that table
 *   measures it before the queries), the queries' client connected (VictoriaMetrics' round trip
 *   opens the connection its queries use), and `runs` queries one at a time with the parameters the
 *   single-node bench draws. For each query the server's minor page faults (`/proc/<pid>/stat`,
 *   all threads: pages the process touched for the first time, or again after the allocator or
 *   V8 gave them back) are read before and after it, and its garbage collections (from its
 *   /metrics) before and after all of them.
 * - After those, WARM_QUERIES more of the same kind, and the last WARM_MEASURED of them measured the
 *   same way: the same server once V8 has optimized the path and the process has all the memory it
 *   uses.
 * - The machine's cost of a page fault: the bench's own process writes one byte to each 4 KiB page
 *   of a fresh FAULT_PROBE_BYTES buffer, timed.
 * With `--against victoriametrics` the same sequence runs against VictoriaMetrics from Debian's
 * package (loaded through line protocol, queried with nocache=1 as the storage-path table queries
 * it, restarted before each kind, its round trip a GET /health), with its process's page faults.
 * Both are loaded first; then each kind runs on both, one after the other, the one that goes first
 * alternating from kind to kind.
 * Every answer is checked against the reference from the generated data. Results go to
 * bench/results/cold-start.json and .md (cold-start-10hosts.* with --hosts 10, -2dp with --decimals 2).
 */
import { rm } from 'node:fs/promises'
import { Client, credentials } from '@grpc/grpc-js'
import { V3Client } from '../src/client/index.js'
import { hostTags, METRICS, seriesValues } from './dataset.js'
import {
  describeDataSet,
  describeMachine,
  encodeMessages,
  FAULT_PROBE_BYTES,
  grpcHealthRoundTrip,
  median,
  minorFaults,
  pageFaultMicros,
  removeServer,
  resultsName,
  saveResults,
  sendWrites,
  sleep,
  startServer,
  stopServer,
} from './harness.js'
import { drawParams, QUERY_KINDS, type QueryParams, runV3 } from './queries.js'
import {
  ensureInstalled,
  healthRoundTrip,
  ingest as ingestVictoriaMetrics,
  lineProtocol,
  runVictoriaMetrics,
  startVictoriaMetrics,
  stopVictoriaMetrics,
  type VictoriaMetrics,
} from './victoriametrics.js'

export interface ColdStartBenchOptions {
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
  /** Queries measured after each start. */
  readonly runs: number
  /** Also run the sequence against VictoriaMetrics. */
  readonly againstVictoriaMetrics: boolean
}

const SETTLE_MS = 10_000
const WARM_QUERIES = 1000
const WARM_MEASURED = 200

interface Sample {
  readonly ms: number
  readonly faults: number
}

interface Figures {
  readonly cold: Sample[]
  readonly warm: Sample[]
  /** Garbage collections the server ran over the cold queries, from its /metrics. */
  readonly coldCollections: number
}

interface KindFigures extends Figures {
  readonly name: string
  readonly victoriaMetrics?: Figures
}

/** Runs `list` one query at a time, with the page faults of process `pid` around each. */
async function measure(
  pid: number,
  list: readonly QueryParams[],
  run: (p: QueryParams) => Promise<() => void>,
): Promise<Sample[]> {
  const out: Sample[] = []
  for (const p of list) {
    const before = await minorFaults(pid)
    const t = performance.now()
    const check = await run(p)
    const ms = performance.now() - t
    out.push({ ms, faults: (await minorFaults(pid)) - before })
    check()
  }
  return out
}

/**
 * Collections so far, from a /metrics text: V3's (prom-client's nodejs_gc_duration_seconds, every
 * kind) or VictoriaMetrics' (Go's go_gc_duration_seconds).
 */
function collections(metrics: string): number {
  let n = 0
  for (const line of metrics.split('\n')) {
    const m = /^(?:nodejs_gc_duration_seconds_count|go_gc_duration_seconds_count)(?:\{[^}]*\})? (\S+)$/.exec(line)
    if (m?.[1] !== undefined) n += Number(m[1])
  }
  return n
}

async function collectionsAt(metricsUrl: string): Promise<number> {
  const res = await fetch(metricsUrl)
  if (!res.ok) throw new Error(`${metricsUrl} answered ${res.status}`)
  return collections(await res.text())
}

/**
 * The first `runs` of `list` after a start, with the collections over them (read once before and
 * once after, so that the reads do not add to what is counted between), then the rest, of which the
 * last WARM_MEASURED are measured.
 */
async function coldAndWarm(
  pid: number,
  metricsUrl: string,
  list: readonly QueryParams[],
  runs: number,
  run: (p: QueryParams) => Promise<() => void>,
): Promise<Figures> {
  const before = await collectionsAt(metricsUrl)
  const cold = await measure(pid, list.slice(0, runs), run)
  const coldCollections = (await collectionsAt(metricsUrl)) - before
  await measure(pid, list.slice(runs, list.length - WARM_MEASURED), run)
  const warm = await measure(pid, list.slice(list.length - WARM_MEASURED), run)
  return { cold, warm, coldCollections }
}

/** The median of one field of a figure's cold or warm queries. */
function med(f: Figures, key: 'cold' | 'warm', field: keyof Sample): number {
  return median(f[key].map((s) => s[field]))
}

function summary(what: string, f: Figures): string {
  return `${what} ${med(f, 'cold', 'ms').toFixed(2)} ms cold (median), ${med(f, 'cold', 'faults')} page faults a query, ${f.coldCollections} collections; warm ${med(f, 'warm', 'ms').toFixed(2)} ms, ${med(f, 'warm', 'faults')}`
}

/** Each query's ms (to the µs) and faults, as two arrays: the JSON keeps every query without an object apiece. */
function columns(samples: readonly Sample[]): { ms: number[]; faults: number[] } {
  return { ms: samples.map((s) => Math.round(s.ms * 1000) / 1000), faults: samples.map((s) => s.faults) }
}

function compact(k: KindFigures): object {
  const figures = (f: Figures): object => ({
    cold: columns(f.cold),
    coldCollections: f.coldCollections,
    warm: columns(f.warm),
  })
  return {
    name: k.name,
    v3: figures(k),
    ...(k.victoriaMetrics === undefined ? {} : { victoriaMetrics: figures(k.victoriaMetrics) }),
  }
}

export async function runColdStartBench(o: ColdStartBenchOptions): Promise<void> {
  const machine = describeMachine()
  const dataSet = describeDataSet(o.hosts, o.decimals)
  const hostTagRecords = Array.from({ length: o.hosts }, (_, h) => hostTags(h))
  const tags = hostTagRecords.map((t) => Object.entries(t).map(([key, value]) => ({ key, value })))
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const requests = encodeMessages(tags, values, o.timestampsPerRequest)
  const params = drawParams(o.hosts, o.runs + WARM_QUERIES)
  const faultMicros = median([pageFaultMicros(), pageFaultMicros(), pageFaultMicros()])
  console.log(`data set: ${dataSet}; a page fault costs ${faultMicros.toFixed(2)} µs here`)

  // Both systems are loaded first; then each kind runs on V3 and on VictoriaMetrics one after the
  // other, the one that goes first alternating, so that both meet the same spells of a shared machine.
  const loaded = await startServer()
  const dir = loaded.dataDir
  let vmDir: string | undefined
  let vm: VictoriaMetrics | undefined
  const kinds: KindFigures[] = []
  try {
    const raw = new Client(loaded.address, credentials.createInsecure())
    try {
      await sendWrites([raw], requests, o.inflight)
    } finally {
      raw.close()
    }
    await sleep(SETTLE_MS)
    await stopServer(loaded)
    if (o.againstVictoriaMetrics) {
      ensureInstalled()
      vm = await startVictoriaMetrics()
      vmDir = vm.dataDir
      await ingestVictoriaMetrics(vm, lineProtocol(o.hosts, hostTagRecords, values), o.inflight)
      await sleep(SETTLE_MS)
      await stopVictoriaMetrics(vm)
      vm = undefined
    }
    const onV3 = async (kind: string, list: readonly QueryParams[]): Promise<Figures> => {
      const server = await startServer(['--result-cache-points', '0'], '127.0.0.1:0', dir)
      const client = new V3Client(server.address)
      try {
        await grpcHealthRoundTrip(server.address)
        // The queries' own connection, opened before the first is timed, as VictoriaMetrics' round
        // trip opens the connection its queries then use.
        await client.waitForReady()
        return await coldAndWarm(server.proc.pid as number, server.metricsUrl, list, o.runs, (p) =>
          runV3(client, kind, p, values),
        )
      } finally {
        client.close()
        await stopServer(server)
      }
    }
    const onVictoriaMetrics = async (folder: string, kind: string, list: readonly QueryParams[]): Promise<Figures> => {
      const started = await startVictoriaMetrics(folder)
      vm = started
      await healthRoundTrip(started)
      const figures = await coldAndWarm(
        started.proc.pid as number,
        `http://127.0.0.1:${started.port}/metrics`,
        list,
        o.runs,
        (p) => runVictoriaMetrics(started, kind, p, values, { nocache: true }),
      )
      await stopVictoriaMetrics(started)
      vm = undefined
      return figures
    }
    for (const [i, kind] of QUERY_KINDS.entries()) {
      const list = params.get(kind.name) ?? []
      let v3: Figures | undefined
      let other: Figures | undefined
      if (i % 2 === 0) v3 = await onV3(kind.name, list)
      if (vmDir !== undefined) other = await onVictoriaMetrics(vmDir, kind.name, list)
      v3 ??= await onV3(kind.name, list)
      kinds.push({ name: kind.name, ...v3, victoriaMetrics: other })
      console.log(summary(`${kind.name}: V3`, v3))
      if (other !== undefined) console.log(summary(`${kind.name}: VictoriaMetrics`, other))
    }
  } finally {
    if (vm !== undefined) await stopVictoriaMetrics(vm)
    if (vmDir !== undefined) await rm(vmDir, { recursive: true, force: true })
    await removeServer(loaded)
  }

  const rows = kinds.map((k) => {
    const total = k.cold.reduce((a, s) => a + s.faults, 0)
    return `| ${k.name} | ${med(k, 'cold', 'ms').toFixed(2)} | ${med(k, 'cold', 'faults')} | ${k.coldCollections} | ${((total * faultMicros) / 1000 / k.cold.length).toFixed(2)} | ${med(k, 'warm', 'ms').toFixed(2)} | ${med(k, 'warm', 'faults')} |`
  })
  const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`
  const vmRows = kinds.flatMap((k) => {
    const peer = k.victoriaMetrics
    if (peer === undefined) return []
    return [
      `| ${k.name} | ${med(k, 'cold', 'ms').toFixed(2)} | ${med(peer, 'cold', 'ms').toFixed(2)} | ${ratio(med(k, 'cold', 'ms'), med(peer, 'cold', 'ms'))} | ${med(k, 'cold', 'faults')} | ${med(peer, 'cold', 'faults')} | ${k.coldCollections} | ${peer.coldCollections} | ${med(k, 'warm', 'ms').toFixed(2)} | ${med(peer, 'warm', 'ms').toFixed(2)} | ${ratio(med(k, 'warm', 'ms'), med(peer, 'warm', 'ms'))} | ${med(k, 'warm', 'faults')} | ${med(peer, 'warm', 'faults')} |`,
    ]
  })
  const vmTable =
    vmRows.length === 0
      ? []
      : [
          '',
          `Beside VictoriaMetrics, each restarted before each kind, kind by kind with the one that goes first alternating, VictoriaMetrics queried with nocache=1 (medians; first ${o.runs} after the start, then warm):`,
          '',
          `| query | V3 first, ms | VM first, ms | V3 / VM | V3 faults a query | VM faults a query | V3 collections, first ${o.runs} | VM collections, first ${o.runs} | V3 warm, ms | VM warm, ms | V3 / VM | V3 warm faults | VM warm faults |`,
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
          ...vmRows,
        ]
  const md = [
    `${machine}; ${dataSet}; default server flags and \`--result-cache-points 0\`, a start on the loaded folder before each query.`,
    '',
    `| query | first ${o.runs} after the start, median ms | page faults a query, median | garbage collections over them | page faults a query at ${faultMicros.toFixed(1)} µs each, mean ms | warm (the last ${WARM_MEASURED} of ${WARM_QUERIES} more), median ms | warm, page faults a query, median |`,
    '|---|---|---|---|---|---|---|',
    ...rows,
    ...vmTable,
    '',
    `A page fault here: ${faultMicros.toFixed(2)} µs, the bench process writing one byte to each 4 KiB page of a fresh ${FAULT_PROBE_BYTES / 2 ** 20} MiB buffer (median of 3). Page faults are the server process's minor faults over each query, all threads; garbage collections are read from its /metrics (V3: nodejs_gc_duration_seconds, every kind; VictoriaMetrics: go_gc_duration_seconds) before and after the first queries. Every answer was checked against the reference from the generated data.`,
  ].join('\n')
  console.log(`\n${md}\n`)
  await saveResults(
    resultsName('cold-start', o.hosts, o.decimals),
    JSON.stringify({
      machine,
      dataSet,
      faultMicros,
      runs: o.runs,
      warmQueries: WARM_QUERIES,
      warmMeasured: WARM_MEASURED,
      kinds: kinds.map(compact),
    }),
    md,
  )
}
