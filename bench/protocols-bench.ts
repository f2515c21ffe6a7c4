// `npm run bench -- --protocols`: ingest of the cpu-only data set (bench/dataset.ts) through the two
// ecosystem protocols, V3 beside VictoriaMetrics in the same run, with the same bytes on the wire.
// - Prometheus remote write 1.0 (POST /api/v1/write, snappy-compressed prometheus.WriteRequest):
//   2,000 samples a request, each sample its own TimeSeries with its full label set, which is what
//   Prometheus' remote-write queue sends; 2,000 is its default max_samples_per_send since 2.44
//   (prometheus/prometheus#12203; 500 before, as in Debian 12's 2.42).
// - InfluxDB line protocol (POST /write?precision=ns): the 5,000-row bodies of the VictoriaMetrics
//   ingest of `npm run bench -- --against victoriametrics`, ten fields a row, 50,000 points a request.
// Every body is built once, before any clock starts, and the identical bytes go to both systems, 2
// requests in flight (`--inflight` for more) through one keep-alive agent per server. Each run
// starts a fresh server (V3 `v3 serve` at its default flags, VictoriaMetrics as
// bench/victoriametrics.ts starts it), times the load from the first request to the last answer,
// reads the server's peak RSS (VmHWM) and the CPU its process used (over the load, and to the end of
// a settle in which both seal and flush what they buffered; for V3 also its event-loop thread's
// share), and then counts the points it holds: an ingest that lost or doubled points fails the bench
// rather than giving a figure. The runs alternate which system goes first, so that neither always
// gets the quieter machine.
import { rm } from 'node:fs/promises'
import { Agent } from 'node:http'
import { hostTags, INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS, seriesValues } from './dataset.js'
import {
  countPoints,
  cpuSeconds,
  DEFAULT_INFLIGHT,
  describeDataSet,
  describeMachine,
  mainThreadCpuSeconds,
  peakRssMiB,
  removeServer,
  resultsName,
  saveResults,
  sleep,
  startServer,
} from './harness.js'
import { encodeLabels, encodeRemoteWriteBody, type RemoteSample } from './prom-remote-encode.js'
import {
  ensureInstalled,
  type HttpTarget,
  lineProtocol,
  send,
  startVictoriaMetrics,
  stopVictoriaMetrics,
} from './victoriametrics.js'

export interface ProtocolsBenchOptions {
  readonly hosts: number
  readonly decimals: number | undefined
  /** Ingest runs per protocol and system; the table shows their median. */
  readonly runs: number
  /** Requests in flight per server. */
  readonly inflight: number
}

/** Prometheus' default max_samples_per_send since 2.44, so each request is what a stock Prometheus sends. */
const SAMPLES_PER_REMOTE_WRITE = 2000
/** How long VictoriaMetrics may take to make acknowledged rows searchable (it flushes them about every second). */
const VM_VISIBLE_WITHIN_MS = 60_000
/**
 * The pause after each load, the same for both, before the CPU is read again: V3 seals its buffered
 * points into blocks and VictoriaMetrics flushes its in-memory rows, each on its own schedule.
 */
const SETTLE_MS = 10_000

interface Protocol {
  readonly key: 'remoteWrite' | 'lineProtocol'
  /** The table's label of the protocol and its request shape. */
  readonly label: string
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly bodies: readonly Buffer[]
  readonly pointsPerRequest: number
}

type System = 'V3' | 'VictoriaMetrics'

interface IngestRun {
  readonly pointsPerSecond: number
  readonly seconds: number
  /** The server's peak resident set when the last request was answered, MiB. */
  readonly peakRssMiB: number
  /** The points the server counted after the load; equal to the data set's, or the bench fails. */
  readonly pointsCounted: number
  readonly requests: number
  /** TCP connections the keep-alive agent opened for the load. */
  readonly connections: number
  /** CPU seconds (user + system) of the server process from the first request to the last answer. */
  readonly cpuSeconds: number
  /** The same, to the end of the settle that follows the load. */
  readonly cpuSecondsWithSettle: number
  /** V3 only: its event-loop thread's share of cpuSeconds. */
  readonly eventLoopCpuSeconds?: number
}

interface SystemFigures {
  readonly runs: IngestRun[]
  readonly medianPointsPerSecond: number
  readonly medianCpuPerMillionPoints: number
  readonly medianCpuPerMillionPointsWithSettle: number
  /** The highest peak RSS over the runs, MiB. */
  readonly peakRssMiB: number
}

function newTarget(port: number): HttpTarget {
  return { port, agent: new Agent({ keepAlive: true }), sockets: new WeakSet(), connections: 0, requests: 0 }
}

/** Sends every body, `inflight` at a time in order, and wants 204 for each. */
async function load(target: HttpTarget, system: System, p: Protocol, inflight: number): Promise<void> {
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < p.bodies.length) {
      const res = await send(target, 'POST', p.path, p.bodies[next++] as Buffer, p.headers)
      if (res.status !== 204) throw new Error(`${system} ${p.path}: ${res.status} ${res.text.slice(0, 500)}`)
    }
  }
  await Promise.all(Array.from({ length: inflight }, lane))
}

/**
 * The points VictoriaMetrics holds in the data set's day, once they are searchable: it answers a
 * write when the rows are in its in-memory buffer and makes them searchable at its next flush, so
 * the count is asked again until it reaches `expected` or the wait runs out. Its rollup result cache
 * is bypassed (nocache=1), so that each answer is read from storage.
 */
async function countVictoriaMetrics(target: HttpTarget, expected: number): Promise<number> {
  const endS = (START_MS + POINTS_PER_SERIES * INTERVAL_MS) / 1000
  const query = new URLSearchParams({
    // The window (end - 2 d, end] holds the whole day, whose last point lies 10 s before the end.
    query: `sum(count_over_time({__name__=~"${METRICS.join('|')}"}[2d]))`,
    time: String(endS),
    nocache: '1',
  })
  const deadline = performance.now() + VM_VISIBLE_WITHIN_MS
  for (;;) {
    const res = await send(target, 'GET', `/api/v1/query?${query}`)
    if (res.status !== 200) throw new Error(`VictoriaMetrics count: ${res.status} ${res.text.slice(0, 500)}`)
    const parsed = JSON.parse(res.text) as { data?: { result?: Array<{ value?: [number, string] }> } }
    const counted = Number(parsed.data?.result?.[0]?.value?.[1] ?? 0)
    if (counted >= expected || performance.now() > deadline) return counted
    await sleep(250)
  }
}

async function runV3(p: Protocol, inflight: number, totalPoints: number): Promise<IngestRun> {
  const server = await startServer()
  const target = newTarget(Number(new URL(server.metricsUrl).port))
  try {
    const loaded = await measuredLoad(server.proc.pid as number, target, 'V3', p, inflight, totalPoints)
    // A write is answered once durable, so every acknowledged point must be counted.
    return { ...loaded, pointsCounted: await countPoints(server.address) }
  } finally {
    target.agent.destroy()
    await removeServer(server)
  }
}

async function runVictoriaMetrics(p: Protocol, inflight: number, totalPoints: number): Promise<IngestRun> {
  const vm = await startVictoriaMetrics()
  // Its own agent carried the start-up health checks; the load gets a fresh count.
  const target = newTarget(vm.port)
  try {
    const loaded = await measuredLoad(vm.proc.pid as number, target, 'VictoriaMetrics', p, inflight, totalPoints)
    return { ...loaded, pointsCounted: await countVictoriaMetrics(target, totalPoints) }
  } finally {
    target.agent.destroy()
    await stopVictoriaMetrics(vm)
    await rm(vm.dataDir, { recursive: true, force: true })
  }
}

/**
 * The load, timed from its first request to its last answer, with the server's CPU over it and to
 * the end of the settle after it (for V3 also its event-loop thread's), its peak RSS, and the
 * agent's requests and connections, all read before the count adds its own requests.
 */
async function measuredLoad(
  pid: number,
  target: HttpTarget,
  system: System,
  p: Protocol,
  inflight: number,
  totalPoints: number,
): Promise<Omit<IngestRun, 'pointsCounted'>> {
  // A Node server's event loop is its main thread; VictoriaMetrics has no such thread.
  const eventLoop = system === 'V3' ? () => mainThreadCpuSeconds(pid) : undefined
  const [cpu0, loop0] = [await cpuSeconds(pid), await eventLoop?.()]
  const t0 = performance.now()
  await load(target, system, p, inflight)
  const seconds = (performance.now() - t0) / 1000
  const [cpu1, loop1] = [await cpuSeconds(pid), await eventLoop?.()]
  const figures = {
    pointsPerSecond: Math.round(totalPoints / seconds),
    seconds,
    peakRssMiB: await peakRssMiB(pid),
    requests: target.requests,
    connections: target.connections,
    cpuSeconds: cpu1 - cpu0,
  }
  await sleep(SETTLE_MS)
  const cpuSecondsWithSettle = (await cpuSeconds(pid)) - cpu0
  if (loop0 === undefined || loop1 === undefined) return { ...figures, cpuSecondsWithSettle }
  return { ...figures, cpuSecondsWithSettle, eventLoopCpuSeconds: loop1 - loop0 }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** Remote write bodies in time order: every series' sample of a timestamp, then the next timestamp. */
function remoteWriteBodies(tags: ReadonlyArray<Record<string, string>>, values: Float64Array[][]): Buffer[] {
  const labels = tags.map((t) => METRICS.map((metric) => encodeLabels({ __name__: metric, ...t })))
  const bodies: Buffer[] = []
  let samples: RemoteSample[] = []
  for (let i = 0; i < POINTS_PER_SERIES; i++) {
    const timestampMs = START_MS + i * INTERVAL_MS
    for (let h = 0; h < tags.length; h++) {
      for (let m = 0; m < METRICS.length; m++) {
        const value = values[h]?.[m]?.[i] as number
        samples.push({ labels: labels[h]?.[m] as Buffer, timestampMs, value })
        if (samples.length === SAMPLES_PER_REMOTE_WRITE) {
          bodies.push(encodeRemoteWriteBody(samples))
          samples = []
        }
      }
    }
  }
  if (samples.length > 0) bodies.push(encodeRemoteWriteBody(samples))
  return bodies
}

function ratio(v3: number, vm: number, higherIsBetter: boolean): string {
  const r = v3 / vm
  return `${r.toFixed(2)}x ${(higherIsBetter ? r >= 1 : r <= 1) ? '(V3 ahead)' : '(V3 behind)'}`
}

/** The protocol's name without its request shape: "remote write", "line protocol". */
const shortName = (p: Protocol): string => p.label.replace(/ \(.*/, '')
const fmt = (n: number): string => Math.round(n).toLocaleString('en')
const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)

export async function runProtocolsBench(o: ProtocolsBenchOptions): Promise<void> {
  const totalPoints = o.hosts * METRICS.length * POINTS_PER_SERIES
  const machine = describeMachine()
  const dataSet = describeDataSet(o.hosts, o.decimals)
  console.log(`data set: ${dataSet}`)
  ensureInstalled()

  // Every body is built once, before any clock starts; both systems get these very buffers.
  const tags = Array.from({ length: o.hosts }, (_, h) => hostTags(h))
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const protocols: Protocol[] = [
    {
      key: 'remoteWrite',
      label: `remote write (${fmt(SAMPLES_PER_REMOTE_WRITE)} samples a request)`,
      path: '/api/v1/write',
      headers: {
        'content-type': 'application/x-protobuf',
        'content-encoding': 'snappy',
        'x-prometheus-remote-write-version': '0.1.0',
      },
      bodies: remoteWriteBodies(tags, values),
      pointsPerRequest: SAMPLES_PER_REMOTE_WRITE,
    },
    {
      key: 'lineProtocol',
      label: 'line protocol (5,000 rows, 50,000 points a request)',
      path: '/write?precision=ns',
      headers: { 'content-type': 'text/plain; charset=utf-8' },
      bodies: lineProtocol(o.hosts, tags, values).map((body) => Buffer.from(body)),
      pointsPerRequest: 5000 * METRICS.length,
    },
  ]
  const bytes = (p: Protocol): number => p.bodies.reduce((n, b) => n + b.length, 0)
  for (const p of protocols) {
    console.log(`${p.label}: ${fmt(p.bodies.length)} requests, ${mb(bytes(p))} MiB`)
  }

  const millions = totalPoints / 1e6
  const perMillion = (seconds: number): string => (seconds / millions).toFixed(2)
  const figures = new Map<string, SystemFigures>()
  for (const p of protocols) {
    const runs: Record<System, IngestRun[]> = { V3: [], VictoriaMetrics: [] }
    for (let r = 0; r < o.runs; r++) {
      const order: System[] = r % 2 === 0 ? ['V3', 'VictoriaMetrics'] : ['VictoriaMetrics', 'V3']
      for (const system of order) {
        const run =
          system === 'V3'
            ? await runV3(p, o.inflight, totalPoints)
            : await runVictoriaMetrics(p, o.inflight, totalPoints)
        console.log(
          `${system} ${p.label}, run ${r + 1}: ${fmt(run.pointsPerSecond)} points/s (${run.seconds.toFixed(1)} s), CPU ${perMillion(run.cpuSeconds)} s per M points (${perMillion(run.cpuSecondsWithSettle)} with the settle), peak RSS ${run.peakRssMiB.toFixed(0)} MiB, ${fmt(run.pointsCounted)} points counted, ${run.requests} requests over ${run.connections} connections`,
        )
        if (run.pointsCounted !== totalPoints) {
          throw new Error(
            `${system} ${p.label}: ${fmt(run.pointsCounted)} points counted after the ingest, ${fmt(totalPoints)} sent`,
          )
        }
        runs[system].push(run)
      }
    }
    for (const system of ['V3', 'VictoriaMetrics'] as const) {
      const list = runs[system]
      figures.set(`${p.key} ${system}`, {
        runs: list,
        medianPointsPerSecond: median(list.map((x) => x.pointsPerSecond)),
        medianCpuPerMillionPoints: median(list.map((x) => x.cpuSeconds / millions)),
        medianCpuPerMillionPointsWithSettle: median(list.map((x) => x.cpuSecondsWithSettle / millions)),
        peakRssMiB: Math.max(...list.map((x) => x.peakRssMiB)),
      })
    }
  }

  const get = (p: Protocol, system: System): SystemFigures => figures.get(`${p.key} ${system}`) as SystemFigures
  const runsWord = o.runs === 1 ? '1 run' : `median of ${o.runs} runs`
  const rows = [
    '| figure | V3 | VictoriaMetrics | V3 / VM |',
    '|---|---|---|---|',
    ...protocols.map((p) => {
      const [v3, vm] = [get(p, 'V3'), get(p, 'VictoriaMetrics')]
      return `| ingest, ${p.label}, ${o.inflight} in flight, points/s (${runsWord}) | ${fmt(v3.medianPointsPerSecond)} | ${fmt(vm.medianPointsPerSecond)} | ${ratio(v3.medianPointsPerSecond, vm.medianPointsPerSecond, true)} |`
    }),
    ...protocols.flatMap((p) => {
      const [v3, vm] = [get(p, 'V3'), get(p, 'VictoriaMetrics')]
      const name = shortName(p)
      return [
        `| server CPU seconds per million points while loading, ${name} (${runsWord}) | ${v3.medianCpuPerMillionPoints.toFixed(2)} | ${vm.medianCpuPerMillionPoints.toFixed(2)} | ${ratio(v3.medianCpuPerMillionPoints, vm.medianCpuPerMillionPoints, false)} |`,
        `| server CPU seconds per million points to the end of a ${SETTLE_MS / 1000} s settle, ${name} (${runsWord}) | ${v3.medianCpuPerMillionPointsWithSettle.toFixed(2)} | ${vm.medianCpuPerMillionPointsWithSettle.toFixed(2)} | ${ratio(v3.medianCpuPerMillionPointsWithSettle, vm.medianCpuPerMillionPointsWithSettle, false)} |`,
      ]
    }),
    ...protocols.map((p) => {
      const [v3, vm] = [get(p, 'V3'), get(p, 'VictoriaMetrics')]
      return `| peak RSS while ingesting, ${shortName(p)}, MiB (highest of the runs) | ${v3.peakRssMiB.toFixed(0)} | ${vm.peakRssMiB.toFixed(0)} | ${ratio(v3.peakRssMiB, vm.peakRssMiB, false)} |`
    }),
  ]
  /** V3's event-loop CPU seconds per million points, median of the runs. */
  const eventLoop = (p: Protocol): number =>
    median(get(p, 'V3').runs.map((x) => (x.eventLoopCpuSeconds ?? 0) / millions))
  const perRun = (p: Protocol, system: System): string =>
    get(p, system)
      .runs.map((x) => fmt(x.pointsPerSecond))
      .join(', ')
  const connections = (p: Protocol, system: System): string =>
    get(p, system)
      .runs.map((x) => x.connections)
      .join(', ')
  const notes = [
    `Each run loads a fresh server; the runs alternate which system goes first. Every body was built once and the same bytes went to both: ${protocols.map((p) => `${shortName(p)} ${fmt(p.bodies.length)} requests, ${mb(bytes(p))} MiB`).join('; ')}. Remote write sends each sample as its own TimeSeries with its 11 labels, as Prometheus does.`,
    `After every run each server counted all ${fmt(totalPoints)} points (V3 through a count query per metric over gRPC, VictoriaMetrics through \`sum(count_over_time(...[2d]))\` with \`nocache=1\`, asked again until its buffers were searchable).`,
    `Points/s per run: ${protocols.map((p) => `${shortName(p)} V3 ${perRun(p, 'V3')}, VictoriaMetrics ${perRun(p, 'VictoriaMetrics')}`).join('; ')}. TCP connections per run (one keep-alive agent per server): ${protocols.map((p) => `${shortName(p)} V3 ${connections(p, 'V3')}, VictoriaMetrics ${connections(p, 'VictoriaMetrics')}`).join('; ')}.`,
    `CPU is the server process's (user + system, all threads, from /proc), read before the first request, after the last answer, and again after ${SETTLE_MS / 1000} s in which neither server was sent anything. V3's event-loop thread, where its JavaScript runs (HTTP handling, the engine's writes, sealing; the ingest workers decode the bodies beside it), used ${protocols.map((p) => `${eventLoop(p).toFixed(2)} s per million points while loading ${shortName(p)}`).join(' and ')} (medians): one thread at that cost caps the load at ${protocols.map((p) => `${fmt(1e6 / eventLoop(p))} points/s for ${shortName(p)}`).join(' and ')}.`,
    `V3 answers once the points are in its write-ahead log (\`--sync group\`, the default); VictoriaMetrics answers once the rows are in its in-memory buffer, which it writes out about every second.`,
  ]
  const md = [`${machine}; ${dataSet}; default server flags.`, '', ...rows, '', ...notes].join('\n')
  console.log(`\n${md}\n`)

  const name = resultsName(
    'protocols',
    o.hosts,
    o.decimals,
    o.inflight === DEFAULT_INFLIGHT ? '' : `-${o.inflight}inflight`,
  )
  const report = {
    date: new Date().toISOString(),
    machine,
    dataSet: { hosts: o.hosts, metrics: METRICS.length, points: totalPoints, decimals: o.decimals ?? null },
    inflight: o.inflight,
    protocols: Object.fromEntries(
      protocols.map((p) => [
        p.key,
        {
          path: p.path,
          requests: p.bodies.length,
          pointsPerRequest: p.pointsPerRequest,
          bodyBytes: bytes(p),
          v3: get(p, 'V3'),
          victoriaMetrics: get(p, 'VictoriaMetrics'),
        },
      ]),
    ),
  }
  await saveResults(name, JSON.stringify(report, null, 2), md)
  console.log(`results in bench/results/${name}.md and .json`)
}
