/**
 * Cold-start bench (`npm run bench -- --cold-start`): what the first queries after a start cost,
 * and how much of it is memory the process touches for the first time.
 * - Load: the single-node bench's Write requests into a server at default flags, a settle of
 *   SETTLE_MS in which it seals and flushes on its own timers, then a clean stop.
 * - Then, for each of the seven queries, a start on the same folder with `--result-cache-points 0`
 *   (as the single-node bench's storage-path table), its health-check round trip (as that table
 *   measures it before the queries), and `runs` queries one at a time with the parameters the
 *   single-node bench draws. For each query the server's minor page faults (`/proc/<pid>/stat`,
 *   all threads: pages the process touched for the first time, or again after the allocator or
 *   V8 gave them back) are read before and after it.
 * - After those, WARM_QUERIES more of the same kind, and the last WARM_MEASURED of them measured the
 *   same way: the same server once V8 has optimized the path and the process has all the memory it
 *   uses.
 * - The machine's cost of a page fault: the bench's own process writes one byte to each 4 KiB page
 *   of a fresh FAULT_PROBE_BYTES buffer, timed.
 * Every answer is checked against the reference from the generated data. Results go to
 * bench/results/cold-start.json and .md.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { Client, credentials } from '@grpc/grpc-js'
import { V3Client } from '../src/client/index.js'
import { hostTags, METRICS, seriesValues } from './dataset.js'
import {
  describeDataSet,
  describeMachine,
  encodeMessages,
  grpcHealthRoundTrip,
  quantile,
  removeServer,
  type Server,
  sendWrites,
  sleep,
  startServer,
  stopServer,
} from './harness.js'
import { drawParams, QUERY_KINDS, runV3 } from './queries.js'

export interface ColdStartBenchOptions {
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
  /** Queries measured after each start. */
  readonly runs: number
}

const SETTLE_MS = 10_000
const WARM_QUERIES = 1000
const WARM_MEASURED = 200
/** Faults below this count a query as one that touched (almost) no new memory. */
const FEW_FAULTS = 10
const PAGE = 4096
const FAULT_PROBE_BYTES = 64 * 2 ** 20

/** Minor page faults of a process so far: field 10 of /proc/<pid>/stat, the 8th after the command name. */
async function minorFaults(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7])
}

/** Microseconds per first touch of a 4 KiB page in this process, over a fresh buffer. */
function pageFaultMicros(): number {
  // allocUnsafeSlow of this size is a fresh mapping: no page of it has been touched yet.
  const buffer = Buffer.allocUnsafeSlow(FAULT_PROBE_BYTES)
  const t = performance.now()
  for (let i = 0; i < buffer.length; i += PAGE) buffer[i] = 1
  return ((performance.now() - t) * 1000) / (FAULT_PROBE_BYTES / PAGE)
}

interface Sample {
  readonly ms: number
  readonly faults: number
}

interface KindFigures {
  readonly name: string
  readonly cold: Sample[]
  readonly warm: Sample[]
}

const median = (xs: readonly number[]): number =>
  quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  )

/** Runs `list` one query at a time, with the server's page faults around each. */
async function measure(
  server: Server,
  client: V3Client,
  kind: string,
  list: readonly Parameters<typeof runV3>[2][],
  values: Parameters<typeof runV3>[3],
): Promise<Sample[]> {
  const pid = server.proc.pid as number
  const out: Sample[] = []
  for (const p of list) {
    const before = await minorFaults(pid)
    const t = performance.now()
    const check = await runV3(client, kind, p, values)
    const ms = performance.now() - t
    out.push({ ms, faults: (await minorFaults(pid)) - before })
    check()
  }
  return out
}

export async function runColdStartBench(o: ColdStartBenchOptions): Promise<void> {
  const machine = describeMachine()
  const dataSet = describeDataSet(o.hosts, o.decimals)
  const tags = Array.from({ length: o.hosts }, (_, h) =>
    Object.entries(hostTags(h)).map(([key, value]) => ({ key, value })),
  )
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const requests = encodeMessages(tags, values, o.timestampsPerRequest)
  const params = drawParams(o.hosts, o.runs + WARM_QUERIES)
  const faultMicros = median([pageFaultMicros(), pageFaultMicros(), pageFaultMicros()])
  console.log(`data set: ${dataSet}; a page fault costs ${faultMicros.toFixed(2)} µs here`)

  const loaded = await startServer()
  const dir = loaded.dataDir
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
    for (const kind of QUERY_KINDS) {
      const list = params.get(kind.name) ?? []
      const server = await startServer(['--result-cache-points', '0'], '127.0.0.1:0', dir)
      const client = new V3Client(server.address)
      try {
        await grpcHealthRoundTrip(server.address)
        const cold = await measure(server, client, kind.name, list.slice(0, o.runs), values)
        await measure(server, client, kind.name, list.slice(o.runs, list.length - WARM_MEASURED), values)
        const warm = await measure(server, client, kind.name, list.slice(list.length - WARM_MEASURED), values)
        kinds.push({ name: kind.name, cold, warm })
        console.log(
          `${kind.name}: first ${o.runs} after the start ${median(cold.map((s) => s.ms)).toFixed(2)} ms (median), ${median(cold.map((s) => s.faults))} page faults a query; warm ${median(warm.map((s) => s.ms)).toFixed(2)} ms, ${median(warm.map((s) => s.faults))}`,
        )
      } finally {
        client.close()
        await stopServer(server)
      }
    }
  } finally {
    await removeServer(loaded)
  }

  const rows = kinds.map((k) => {
    const few = k.cold.filter((s) => s.faults < FEW_FAULTS)
    const many = k.cold.filter((s) => s.faults >= FEW_FAULTS)
    const part = (xs: Sample[]): string =>
      xs.length === 0 ? '–' : `${median(xs.map((s) => s.ms)).toFixed(2)} (${xs.length})`
    const total = k.cold.reduce((a, s) => a + s.faults, 0)
    return `| ${k.name} | ${median(k.cold.map((s) => s.ms)).toFixed(2)} | ${median(k.cold.map((s) => s.faults))} | ${((total * faultMicros) / 1000 / k.cold.length).toFixed(2)} | ${part(many)} | ${part(few)} | ${median(k.warm.map((s) => s.ms)).toFixed(2)} | ${median(k.warm.map((s) => s.faults))} |`
  })
  const md = [
    `${machine}; ${dataSet}; default server flags and \`--result-cache-points 0\`, a start on the loaded folder before each query.`,
    '',
    `| query | first ${o.runs} after the start, median ms | page faults a query, median | page faults a query at ${faultMicros.toFixed(1)} µs each, mean ms | queries with ${FEW_FAULTS} faults or more, median ms (count) | queries with fewer, median ms (count) | warm (the last ${WARM_MEASURED} of ${WARM_QUERIES} more), median ms | warm, page faults a query, median |`,
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `A page fault here: ${faultMicros.toFixed(2)} µs, the bench process writing one byte to each 4 KiB page of a fresh ${FAULT_PROBE_BYTES / 2 ** 20} MiB buffer (median of 3). Page faults are the server's minor faults over each query, all threads. Every answer was checked against the reference from the generated data.`,
  ].join('\n')
  console.log(`\n${md}\n`)
  await mkdir('bench/results', { recursive: true })
  await writeFile(
    'bench/results/cold-start.json',
    `${JSON.stringify({ machine, dataSet, faultMicros, runs: o.runs, warmQueries: WARM_QUERIES, warmMeasured: WARM_MEASURED, kinds }, null, 2)}\n`,
  )
  await writeFile('bench/results/cold-start.md', `${md}\n`)
}
