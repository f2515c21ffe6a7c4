/**
 * Cluster join bench (`npm run bench -- --cluster-join`): a node joining a loaded cluster under a
 * steady write and query load, as `v3 serve --cluster` nodes at their default flags run it.
 * - Setup: the Consul emulator and 3 nodes (--cluster) with replication factor 2, loaded with the
 *   data set (by default 23 hosts, 1,987,200 points) through every node at the default write level.
 * - Load: the catch-up bench's Write driver (2 calls in flight per node, without pause) writing the
 *   data set's following days, new points every one, through the first nodes; beside it one query
 *   loop through n1 that runs, in turn, a raw range of one series (24 h), an aggregate over every
 *   series (the max of each metric per hour over all hosts, 24 h) and the latest point of one
 *   metric of every host. Every answer is checked: the first two against the generated data, the
 *   latest for a series per host at or past the data set's last timestamp.
 * - Before: after a 2 s warm-up, the load's rate and the query medians over 10 s.
 * - The join: a 4th node starts while both go on; ListNodes through n1, every 200 ms, shows it
 *   `joining` (the time from its spawn), then `active` with no member showing a move (the time from
 *   joining; the window of the "during" figures); the leaders' changes-completed metric then says
 *   when the old owners have dropped the ranges they lost. Points moved: the leaders' counter of
 *   points their changes copied, beside the largest pointsMoved ListNodes showed.
 * - After: per-node series counts (Stats) against the owners Locate names for every series, each
 *   node's ring share (primary ownership) against 1/4 and its share of all copies (from Locate of
 *   made-up series), and the points of every series of the data set's day through the new node.
 * - CPU: the cores each process kept busy per window, and those the rest of the machine did (other
 *   work on the machine skews every figure; the report says so above 0.2 cores).
 * The days the load writes are encoded in a worker thread ahead of it: encoding one takes about
 * 0.6 s, which on the bench's own event loop would stall the query timings and the polls.
 * Results go to bench/results/cluster-join.md and a JSON line on stdout.
 */

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Client, credentials } from '@grpc/grpc-js'
import { type NodeInfo, V3Client } from '../src/client/index.js'
import { Load } from './catch-up-bench.js'
import { type Cluster, type Consul, removeAll, startCluster, startConsul, stopProcess } from './cluster-bench.js'
import { hostTags, INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS, seriesValues } from './dataset.js'
import {
  cpuSeconds,
  describeDataSet,
  describeMachine,
  encodeMessages,
  freePort,
  quantile,
  type Server,
  sendWrites,
  sleep,
  startServer,
} from './harness.js'
import { drawParams, type QueryParams, runV3, type Values } from './queries.js'

export interface ClusterJoinBenchOptions {
  /** Nodes before the join; one more joins. */
  readonly nodes: number
  readonly replicationFactor: number
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  /** Write calls in flight per entry node, for the initial load and the steady load alike. */
  readonly inflight: number
  /** The command line, for the report. */
  readonly command: string
}

/** Load and queries run this long before the "before" window opens: connections and caches warm up. */
const WARM_UP_MS = 2_000
const WINDOW_MS = 10_000
const POLL_MS = 200
/** How long the bench waits for the cluster to settle, and for the join to finish, before it fails. */
const SETTLE_CAP_MS = 120_000
const JOIN_CAP_MS = 30 * 60_000
/** Made-up series whose owners estimate each node's share of all copies. */
const PROBE_SERIES = 4_000
/** A ring share may differ from 1/N by this fraction of 1/N (the ring tests' bound for joins). */
const SHARE_TOLERANCE = 0.05
const DAY_MS = POINTS_PER_SERIES * INTERVAL_MS
/** Linux clock ticks per second, as cluster-bench.ts reads /proc. */
const CLK_TCK = 100
/** Days the encoder keeps ready ahead of the load. */
const DAYS_AHEAD = 2
const ENCODER_ROLE = 'cluster-join-day-encoder'
const CLUSTER_NAME = 'bench-join'

interface EncoderSetup {
  readonly role: typeof ENCODER_ROLE
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
}

interface EncodedDay {
  readonly day: number
  /** Every request of the day, back to back, transferred rather than copied. */
  readonly bytes: ArrayBuffer
  readonly lengths: number[]
}

function dataSet(
  hosts: number,
  decimals: number | undefined,
): { tags: { key: string; value: string }[][]; values: Values } {
  return {
    tags: Array.from({ length: hosts }, (_, h) => Object.entries(hostTags(h)).map(([key, value]) => ({ key, value }))),
    values: Array.from({ length: hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, decimals))),
  }
}

/** The worker thread's side: encodes each day it is asked for and sends it back. */
function runEncoder(setup: EncoderSetup): void {
  const { tags, values } = dataSet(setup.hosts, setup.decimals)
  parentPort?.on('message', (day: number) => {
    const requests = encodeMessages(tags, values, setup.timestampsPerRequest, day * DAY_MS)
    const all = Buffer.concat(requests)
    // Copied into an ArrayBuffer of its own, which moves to the main thread without another copy.
    const bytes = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer
    const message: EncodedDay = { day, bytes, lengths: requests.map((r) => r.length) }
    parentPort?.postMessage(message, [bytes])
  })
}

if (!isMainThread && (workerData as Partial<EncoderSetup> | null)?.role === ENCODER_ROLE) {
  runEncoder(workerData as EncoderSetup)
}

/**
 * The load's days, encoded in a worker thread ahead of it. A day not ready when the load needs it
 * is encoded on the spot (counted in `fellBehind`), as the catch-up bench does every day.
 */
class DayEncoder {
  fellBehind = 0
  private readonly worker: Worker
  private readonly ready = new Map<number, Buffer[]>()
  private requested = 0
  private taken = 0
  private waiter: { day: number; resolve: () => void } | undefined

  constructor(
    setup: Omit<EncoderSetup, 'role'>,
    private readonly encodeNow: (day: number) => Buffer[],
  ) {
    // An eval worker registers tsx itself: Node 20 workers do not run the parent's --import hooks.
    const entry = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}) })`
    this.worker = new Worker(entry, { eval: true, workerData: { ...setup, role: ENCODER_ROLE } })
    this.worker.on('message', (m: EncodedDay) => {
      if (m.day <= this.taken) return
      let offset = 0
      this.ready.set(
        m.day,
        m.lengths.map((n) => {
          const b = Buffer.from(m.bytes, offset, n)
          offset += n
          return b
        }),
      )
      if (this.waiter?.day === m.day) this.waiter.resolve()
    })
    this.worker.on('error', (err) => console.error(`the day encoder failed: ${String(err)}`))
    this.askUpTo(DAYS_AHEAD)
  }

  /** Resolves once day `day` is encoded: the load starts with its first day ready. */
  whenReady(day: number): Promise<void> {
    this.askUpTo(day)
    if (this.ready.has(day)) return Promise.resolve()
    return new Promise((resolve) => {
      this.waiter = { day, resolve }
    })
  }

  /** The requests of data-set day `day` (1 is the day after the data set's). */
  take(day: number): Buffer[] {
    this.taken = Math.max(this.taken, day)
    this.askUpTo(day + DAYS_AHEAD)
    const got = this.ready.get(day)
    this.ready.delete(day)
    if (got !== undefined) return got
    this.fellBehind++
    return this.encodeNow(day)
  }

  async close(): Promise<void> {
    await this.worker.terminate()
  }

  private askUpTo(day: number): void {
    while (this.requested < day) this.worker.postMessage(++this.requested)
  }
}

interface QuerySample {
  readonly kind: string
  /** When the call was sent, in seconds on the bench's clock. */
  readonly at: number
  readonly ms: number
}

interface QueryKindRun {
  readonly name: string
  /** Sends one query (the i-th of its kind); the returned function checks the answer, untimed. */
  readonly run: (i: number) => Promise<() => void>
}

/** One client sending the query kinds in turn, one at a time, each timed and its answer checked. */
class QueryLoop {
  readonly samples: QuerySample[] = []
  failed = 0
  readonly firstErrors: string[] = []
  private stopped = false
  private running: Promise<void> | undefined

  constructor(
    private readonly kinds: readonly QueryKindRun[],
    private readonly at: () => number,
  ) {}

  start(): void {
    this.running = this.loop()
  }

  async stop(): Promise<void> {
    this.stopped = true
    await this.running
  }

  private async loop(): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const kind = this.kinds[i % this.kinds.length] as QueryKindRun
      const at = this.at()
      const t = performance.now()
      try {
        const check = await kind.run(Math.floor(i / this.kinds.length))
        const ms = performance.now() - t
        check()
        this.samples.push({ kind: kind.name, at, ms })
      } catch (err) {
        this.failed++
        if (this.firstErrors.length < 5) this.firstErrors.push(`${kind.name}: ${String(err)}`)
      }
    }
  }

  /** Median of each kind over the calls sent in [from, to), with the number of calls. */
  medians(from: number, to: number): Map<string, { medianMs: number; calls: number }> {
    const out = new Map<string, { medianMs: number; calls: number }>()
    for (const kind of this.kinds) {
      const times = this.samples
        .filter((s) => s.kind === kind.name && s.at >= from && s.at < to)
        .map((s) => s.ms)
        .sort((a, b) => a - b)
      out.set(kind.name, { medianMs: times.length === 0 ? Number.NaN : quantile(times, 0.5), calls: times.length })
    }
    return out
  }
}

/** The sum of a metric over the nodes' /metrics (0 where absent). */
async function metricSum(servers: readonly Server[], name: string): Promise<number> {
  const texts = await Promise.all(servers.map(async (s) => (await fetch(s.metricsUrl)).text()))
  return texts.reduce((n, t) => n + Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(t)?.[1] ?? 0), 0)
}

/** Waits until ListNodes lists exactly `ids`, all healthy and active, no move, no hint pending. */
async function waitSettled(admin: V3Client, ids: readonly string[], what: string): Promise<void> {
  const want = [...ids].sort().join(',')
  const deadline = performance.now() + SETTLE_CAP_MS
  let last: NodeInfo[] = []
  for (;;) {
    last = await admin.listNodes({ timeoutMs: 5_000 }).catch(() => last)
    const listed = last
      .map((m) => m.id)
      .sort()
      .join(',')
    const settled = last.every(
      (m) => m.state === 'healthy' && m.lifecycle === 'active' && m.move === undefined && m.hintsPending === 0,
    )
    if (listed === want && settled) return
    if (performance.now() > deadline) {
      throw new Error(`${what} did not settle within ${SETTLE_CAP_MS / 1000} s: ${JSON.stringify(last)}`)
    }
    await sleep(POLL_MS)
  }
}

/** CPU seconds used so far: by each process named, by the bench's own (load, queries, encoder), and by the whole machine. */
interface CpuReading {
  readonly procs: number[]
  readonly machine: number
}

async function cpuNow(pids: readonly number[]): Promise<CpuReading> {
  const client = process.cpuUsage()
  // The first line of /proc/stat: user nice system idle iowait irq softirq steal, in clock ticks.
  const ticks = (await readFile('/proc/stat', 'utf8')).split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? []
  const busyTicks = ticks.slice(0, 8).reduce((n, t, i) => (i === 3 || i === 4 ? n : n + t), 0)
  return {
    procs: [...(await Promise.all(pids.map((pid) => cpuSeconds(pid)))), (client.user + client.system) / 1e6],
    machine: busyTicks / CLK_TCK,
  }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')
const secs = (s: number): string => s.toFixed(1)

export async function runClusterJoinBench(o: ClusterJoinBenchOptions): Promise<void> {
  if (!(o.nodes >= 1)) throw new Error(`--cluster takes a node count of 1 or more, got ${o.nodes}`)
  if (!(o.replicationFactor >= 1)) throw new Error('--replication-factor must be 1 or more')
  const seriesCount = o.hosts * METRICS.length
  const totalPoints = seriesCount * POINTS_PER_SERIES
  const machine = describeMachine()
  // Other work on the machine skews every figure: its load average goes into the report.
  const loadAverage = loadavg()[0] ?? Number.NaN
  const dataSetText = describeDataSet(o.hosts, o.decimals)
  const ids = Array.from({ length: o.nodes }, (_, i) => `n${i + 1}`)
  const joinerId = `n${o.nodes + 1}`
  const setup = `${o.nodes} nodes, replication factor ${o.replicationFactor}, default flags; ${joinerId} joins`
  console.log(`cluster join: data set ${dataSetText}; cluster: ${setup}`)

  // Generated and encoded before any clock starts, as in the other benches.
  const { tags, values } = dataSet(o.hosts, o.decimals)
  const requests = encodeMessages(tags, values, o.timestampsPerRequest)
  const pointsPerRequest = o.timestampsPerRequest * seriesCount
  const rawParams = drawParams(o.hosts, 48).get('raw-range') ?? []
  const allSeries: QueryParams = {
    hosts: [...Array(o.hosts).keys()],
    metrics: METRICS.map((_, m) => m),
    startMs: START_MS,
    endMs: START_MS + DAY_MS,
  }
  const lastTimestamp = START_MS + (POINTS_PER_SERIES - 1) * INTERVAL_MS

  const cluster: Cluster = { nodes: [], args: [] }
  let consul: Consul | undefined
  let joiner: Server | undefined
  const clients: Client[] = []
  const v3Clients: V3Client[] = []
  let load: Load | undefined
  let queries: QueryLoop | undefined
  let encoder: DayEncoder | undefined
  try {
    consul = await startConsul()
    await startCluster(consul, CLUSTER_NAME, o.nodes, o.replicationFactor, cluster)
    // The nodes log to the bench's stderr with their pids.
    console.log(`node pids: ${cluster.nodes.map((s, i) => `n${i + 1} ${s.proc.pid}`).join(', ')}`)
    const entry = cluster.nodes[0] as Server
    const admin = new V3Client(entry.address, { defaultTimeoutMs: 60_000 })
    const reader = new V3Client(entry.address, { defaultTimeoutMs: 60_000 })
    v3Clients.push(admin, reader)
    // Nodes after the first join the ring through the leader; startCluster returns once they are listed.
    await waitSettled(admin, ids, `the first ${o.nodes} nodes`)
    for (const s of cluster.nodes) clients.push(new Client(s.address, credentials.createInsecure()))

    const loadStart = performance.now()
    const written = await sendWrites(clients, requests, o.inflight)
    if (written !== totalPoints) throw new Error(`the load acknowledged ${written} points of ${totalPoints}`)
    const loadSeconds = (performance.now() - loadStart) / 1000
    console.log(
      `loaded ${fmt(totalPoints)} points in ${secs(loadSeconds)} s (${fmt(totalPoints / loadSeconds)} points/s)`,
    )
    await waitSettled(admin, ids, 'the loaded cluster')

    const kinds: QueryKindRun[] = [
      {
        name: 'raw range of one series, 24 h',
        run: (i) => runV3(reader, 'raw-range', rawParams[i % rawParams.length] as QueryParams, values),
      },
      {
        name: 'max per hour of each metric over every series, 24 h',
        run: () => runV3(reader, 'cpu-max-all-8', allSeries, values),
      },
      {
        name: 'latest point of one metric, every host',
        run: async (i) => {
          const metric = METRICS[i % METRICS.length] as string
          const answer = await reader.latest({ metric })
          return () => {
            if (answer.length !== o.hosts) throw new Error(`latest ${metric}: ${answer.length} series, not ${o.hosts}`)
            const stale = answer.find((s) => !((s.timestamps[0] ?? 0) >= lastTimestamp))
            if (stale !== undefined)
              throw new Error(`latest ${metric}: ${stale.timestamps[0]} is before the data set's end`)
          }
        },
      },
    ]

    encoder = new DayEncoder(
      { hosts: o.hosts, decimals: o.decimals, timestampsPerRequest: o.timestampsPerRequest },
      (day) => encodeMessages(tags, values, o.timestampsPerRequest, day * DAY_MS),
    )
    const days = encoder
    await days.whenReady(1)
    const t0 = performance.now()
    const at = (): number => (performance.now() - t0) / 1000
    // The load's day k is the data set's day k + 1: every point it writes is new.
    const steady = new Load((offsetMs) => days.take(offsetMs / DAY_MS + 1), undefined)
    load = steady
    const loop = new QueryLoop(kinds, at)
    queries = loop
    steady.start(clients, o.inflight)
    loop.start()
    await sleep(WARM_UP_MS)
    // The nodes and the Consul emulator: with the bench's own process, every process the bench runs.
    const pids = [...cluster.nodes.map((n) => n.proc.pid as number), consul.proc.pid as number]
    const before = { from: at(), acked: steady.acked, cpu: await cpuNow(pids) }
    await sleep(WINDOW_MS)
    const beforeEnd = { to: at(), acked: steady.acked, cpu: await cpuNow(pids) }
    const beforeRate = (beforeEnd.acked - before.acked) / (beforeEnd.to - before.from)
    console.log(`before the join: ${fmt(beforeRate)} points/s`)

    // The join.
    const changesBefore = await metricSum(cluster.nodes, 'v3_cluster_changes_completed')
    const leaderPointsBefore = await metricSum(cluster.nodes, 'v3_cluster_changes_points_moved')
    const port = await freePort()
    const peerPort = await freePort()
    // The flags startCluster gives its nodes, with this node's id and ports.
    const joinerArgs = [
      '--cluster',
      '--node-id',
      joinerId,
      '--consul',
      consul.url,
      '--cluster-name',
      CLUSTER_NAME,
      '--peer-listen',
      `127.0.0.1:${peerPort}`,
      '--replication-factor',
      String(o.replicationFactor),
    ]
    const spawnAt = at()
    let listeningAt: number | undefined
    let startError: unknown
    const starting = startServer(joinerArgs, `127.0.0.1:${port}`).then(
      (s) => {
        joiner = s
        listeningAt = at()
        console.log(`${joinerId} pid ${s.proc.pid}`)
      },
      (err: unknown) => {
        startError = err
      },
    )
    const phases = new Map<string, number>()
    /** The load, the queries and the CPU counters at a moment of the join. */
    interface Mark {
      readonly at: number
      readonly acked: number
      readonly failed: number
      readonly queriesFailed: number
      readonly cpu: CpuReading
      /** The new node's CPU seconds since its spawn; NaN before its start is seen. */
      readonly joinerCpu: number
    }
    const mark = async (now: number): Promise<Mark> => ({
      at: now,
      acked: steady.acked,
      failed: steady.failed,
      queriesFailed: loop.failed,
      cpu: await cpuNow(pids),
      joinerCpu: joiner === undefined ? Number.NaN : await cpuSeconds(joiner.proc.pid as number),
    })
    let joining: Mark | undefined
    let active: Mark | undefined
    let doneAt: number | undefined
    let doneAcked = 0
    let maxPointsMoved = 0
    let rangesTotal = 0
    let pollErrors = 0
    let lastList: NodeInfo[] = []
    let lastReport = 0
    while (doneAt === undefined) {
      if (startError !== undefined) throw new Error(`${joinerId} did not start`, { cause: startError })
      if (at() - spawnAt > JOIN_CAP_MS / 1000) {
        throw new Error(
          `${joinerId} did not finish joining within ${JOIN_CAP_MS / 1000} s: ${JSON.stringify(lastList)}`,
        )
      }
      const tick = performance.now()
      const list = await admin.listNodes({ timeoutMs: 5_000 }).catch(() => {
        pollErrors++
        return undefined
      })
      if (list !== undefined) {
        lastList = list
        const now = at()
        const self = list.find((m) => m.id === joinerId)
        const moving = list.filter((m) => m.move !== undefined)
        for (const m of moving) {
          const move = m.move!
          if (!phases.has(move.phase)) phases.set(move.phase, now)
          maxPointsMoved = Math.max(maxPointsMoved, move.pointsMoved)
          rangesTotal = Math.max(rangesTotal, move.rangesTotal)
        }
        if (joining === undefined && self !== undefined) {
          joining = await mark(now)
          console.log(`${secs(now - spawnAt)} s after its spawn: ${joinerId} listed ${self.lifecycle}`)
        }
        if (active === undefined && self?.lifecycle === 'active' && moving.length === 0) {
          active = await mark(now)
          console.log(`${secs(now - (joining?.at ?? now))} s after joining: ${joinerId} active, no member moving`)
        }
        if (now - lastReport >= 5 && active === undefined) {
          lastReport = now
          const move = self?.move
          console.log(
            `  ${secs(now - spawnAt)} s: ${joinerId} ${self?.lifecycle ?? 'not listed'}${move === undefined ? '' : `, ${move.phase}, ${move.rangesDone}/${move.rangesTotal} ranges, ${fmt(move.pointsMoved)} points`}; load ${fmt(steady.acked)} points acked`,
          )
        }
      }
      // The old owners drop their lost ranges after the switch; the leader counts the change once they have.
      if (active !== undefined && joiner !== undefined) {
        if ((await metricSum([...cluster.nodes, joiner], 'v3_cluster_changes_completed')) > changesBefore) {
          doneAt = at()
          doneAcked = steady.acked
          console.log(`${secs(doneAt - active.at)} s after active: the change is done (old owners cleaned up)`)
          break
        }
      }
      await sleep(Math.max(0, POLL_MS - (performance.now() - tick)))
    }
    await starting
    const newNode = joiner as Server
    if (joining === undefined || active === undefined) throw new Error('BUG: the join finished unseen')
    const joinedAt = joining.at
    await steady.stop()
    await loop.stop()
    const leaderPoints =
      (await metricSum([...cluster.nodes, newNode], 'v3_cluster_changes_points_moved')) - leaderPointsBefore

    // After the move: series per node against Locate, ring shares, and the data set's points.
    const all = [...ids, joinerId]
    const stats = await admin.stats()
    const series = new Map(stats.nodes.map((n) => [n.id, n.stats.series]))
    const expected = new Map(all.map((id) => [id, 0]))
    let wrongOwnerCount = 0
    for (let h = 0; h < o.hosts; h++) {
      for (const metric of METRICS) {
        const owners = await admin.locate(metric, hostTags(h))
        if (owners.length !== Math.min(o.replicationFactor, all.length)) wrongOwnerCount++
        for (const owner of owners) expected.set(owner.id, (expected.get(owner.id) ?? 0) + 1)
      }
    }
    const seriesMismatches = all.filter((id) => series.get(id) !== expected.get(id))
    const finalList = await admin.listNodes()
    const shares = new Map(finalList.map((m) => [m.id, m.ringShare]))
    const fair = 1 / all.length
    const shareOff = all.filter((id) => !(Math.abs((shares.get(id) ?? 0) / fair - 1) <= SHARE_TOLERANCE))
    // ListNodes' share counts primary ownership only; what a node stores is its share of every copy,
    // estimated from the owners Locate names for made-up series (none is written).
    const copies = new Map(all.map((id) => [id, 0]))
    for (let i = 0; i < PROBE_SERIES; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, PROBE_SERIES - i) }, (_, k) =>
          admin.locate('join_probe', { n: String(i + k) }),
        ),
      )
      for (const owners of batch) for (const owner of owners) copies.set(owner.id, (copies.get(owner.id) ?? 0) + 1)
    }
    const copyTotal = [...copies.values()].reduce((a, b) => a + b, 0)
    const copyShares = new Map(all.map((id) => [id, (copies.get(id) ?? 0) / copyTotal]))
    // Every series of the data set's day, counted through the new node (one copy each).
    const viaNew = new V3Client(newNode.address, { defaultTimeoutMs: 120_000 })
    v3Clients.push(viaNew)
    let shortSeries = 0
    let countedSeries = 0
    for (const metric of METRICS) {
      const answer = await viaNew.query({
        selector: { metric },
        startMs: START_MS,
        endMs: START_MS + DAY_MS,
        aggregation: { func: 'count', stepMs: DAY_MS },
      })
      countedSeries += answer.length
      shortSeries += answer.filter((s) => s.values[0] !== POINTS_PER_SERIES).length
    }
    shortSeries += seriesCount - countedSeries

    const joinSeconds = joining.at - spawnAt
    const moveSeconds = active.at - joining.at
    const cleanupSeconds = doneAt - active.at
    const duringRate = (active.acked - joining.acked) / moveSeconds
    const cleanupRate = (doneAcked - active.acked) / cleanupSeconds
    const medBefore = loop.medians(before.from, beforeEnd.to)
    const medDuring = loop.medians(joining.at, active.at)
    const busy = (from: CpuReading, to: CpuReading, seconds: number): number[] =>
      to.procs.map((c, i) => (c - (from.procs[i] as number)) / seconds)
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
    const cpuBefore = busy(before.cpu, beforeEnd.cpu, beforeEnd.to - before.from)
    const cpuDuring = busy(joining.cpu, active.cpu, moveSeconds)
    // The new node's share of the move: from joining when its process was known by then, else since its spawn.
    const joinerDuring =
      (active.joinerCpu - (Number.isNaN(joining.joinerCpu) ? 0 : joining.joinerCpu)) /
      (Number.isNaN(joining.joinerCpu) ? active.at - spawnAt : moveSeconds)
    // What the rest of the machine kept busy: other work skews every figure of a run.
    const otherBefore = (beforeEnd.cpu.machine - before.cpu.machine) / (beforeEnd.to - before.from) - sum(cpuBefore)
    const otherDuring = (active.cpu.machine - joining.cpu.machine) / moveSeconds - sum(cpuDuring) - joinerDuring
    const cores = (xs: number[]): string =>
      `${xs.reduce((a, b) => a + b, 0).toFixed(2)} (${xs.map((c) => c.toFixed(2)).join(' + ')})`
    // ListNodes shows no move once the node is active, so the last copy, recorded just before the
    // switch, can fall between two polls; the leader's counter has the final figure.
    const pointsMoved = Math.max(maxPointsMoved, leaderPoints)
    const perMillion = pointsMoved > 0 ? moveSeconds / (pointsMoved / 1e6) : Number.NaN
    const failedWrites = steady.failed
    const failedQueries = loop.failed
    const checks = {
      failedWrites: failedWrites === 0,
      failedQueries: failedQueries === 0,
      seriesPerNode: seriesMismatches.length === 0 && wrongOwnerCount === 0,
      shares: shareOff.length === 0,
      dataSetPoints: shortSeries === 0,
    }
    const ms = (m: { medianMs: number; calls: number } | undefined): string =>
      m === undefined || m.calls === 0 ? 'no call' : `${m.medianMs.toFixed(1)} (${m.calls} calls)`
    const nodeOrder = `${ids.join(' + ')} + consul + bench`
    const rows = [
      '| | |',
      '|---|---|',
      `| command | \`${o.command}\` |`,
      `| date | ${new Date().toISOString()} |`,
      `| machine | ${machine}; load average ${loadAverage.toFixed(2)} (1 min) when the bench started |`,
      `| data set | ${dataSetText}, loaded at ${fmt(totalPoints / loadSeconds)} points/s through the ${o.nodes} nodes |`,
      `| cluster | ${setup} |`,
      `| load | Write, ${pointsPerRequest.toLocaleString('en')} points per request, ${o.inflight} in flight per node through ${ids.join(', ')}, default level, the following days without pause |`,
      `| queries | one at a time through n1, the ${kinds.length} kinds in turn, every answer checked |`,
      '',
      '| figure | value |',
      '|---|---|',
      `| spawn of ${joinerId} to listed joining, s | ${secs(joinSeconds)} (listening after ${listeningAt === undefined ? '?' : secs(listeningAt - spawnAt)}) |`,
      `| joining to active with no member moving, s | ${secs(moveSeconds)} |`,
      `| active to change done (old owners dropped their lost ranges), s | ${secs(cleanupSeconds)} |`,
      `| move phases first seen, s after joining | ${[...phases].map(([p, t]) => `${p} ${secs(t - joinedAt)}`).join(', ')} |`,
      `| points moved (the leader's v3_cluster_changes_points_moved; the largest pointsMoved ListNodes showed) | ${fmt(pointsMoved)} in ${fmt(rangesTotal)} ranges (${fmt(maxPointsMoved)}) |`,
      `| move time per million points moved, s | ${perMillion.toFixed(2)} |`,
      `| ingest before the join, points/s | ${fmt(beforeRate)} |`,
      `| ingest during the move (joining to active), points/s | ${fmt(duringRate)} (${(duringRate / beforeRate).toFixed(2)}x before) |`,
      `| ingest during the cleanup (active to done), points/s | ${fmt(cleanupRate)} (${(cleanupRate / beforeRate).toFixed(2)}x before) |`,
      ...kinds.map(
        (k) =>
          `| ${k.name}: median ms before / during the move | ${ms(medBefore.get(k.name))} / ${ms(medDuring.get(k.name))} (${((medDuring.get(k.name)?.medianMs ?? Number.NaN) / (medBefore.get(k.name)?.medianMs ?? Number.NaN)).toFixed(2)}x) |`,
      ),
      `| failed writes, whole run (during the move) | ${failedWrites} (${active.failed - joining.failed}) |`,
      `| failed or wrong queries, whole run (during the move) | ${failedQueries} (${active.queriesFailed - joining.queriesFailed}) |`,
      `| series per node after the change (Stats), against Locate for all ${fmt(seriesCount)} series | ${all.map((id) => `${id} ${series.get(id) ?? '?'}/${expected.get(id)}`).join(', ')} ${checks.seriesPerNode ? '(equal)' : '(DIFFER)'} |`,
      `| ring share after the change (1/${all.length} = ${fair.toFixed(3)}, within ${SHARE_TOLERANCE * 100} %) | ${all.map((id) => `${id} ${(shares.get(id) ?? 0).toFixed(3)}`).join(', ')} ${checks.shares ? '(within)' : '(OUTSIDE)'} |`,
      `| share of all copies after the change (replication factor ${o.replicationFactor}), from Locate of ${fmt(PROBE_SERIES)} made-up series | ${all.map((id) => `${id} ${(copyShares.get(id) ?? 0).toFixed(3)}`).join(', ')} |`,
      `| series of the data set's day with all ${fmt(POINTS_PER_SERIES)} points, counted through ${joinerId} | ${fmt(seriesCount - shortSeries)} of ${fmt(seriesCount)} |`,
      `| cores busy before the join (${nodeOrder}) | ${cores(cpuBefore)} |`,
      `| cores busy during the move (${nodeOrder} + ${joinerId}) | ${cores([...cpuDuring, joinerDuring])} |`,
      `| cores busy on the machine outside the bench's processes, before / during the move | ${otherBefore.toFixed(2)} / ${otherDuring.toFixed(2)}${Math.max(otherBefore, otherDuring) > 0.2 ? ' (other work ran: the figures are skewed)' : ''} |`,
      `| load days encoded on the bench's event loop (the encoder fell behind) | ${days.fellBehind} |`,
      `| ListNodes polls that failed | ${pollErrors} |`,
    ]
    const note =
      "Points moved are what the new node's ranges held when they were copied: the data set and the days the load had written by then, so they exceed the data set's share."
    const md = ['# Cluster join', '', ...rows, '', note, ''].join('\n')
    console.log(`\n${md}`)
    if (steady.firstErrors.length > 0) console.log(`first write errors: ${steady.firstErrors.join('; ')}`)
    if (loop.firstErrors.length > 0) console.log(`first query errors: ${loop.firstErrors.join('; ')}`)
    await mkdir('bench/results', { recursive: true })
    await writeFile('bench/results/cluster-join.md', md)
    const report = {
      bench: 'cluster-join',
      date: new Date().toISOString(),
      machine,
      loadAverageAtStart: loadAverage,
      dataSet: { hosts: o.hosts, metrics: METRICS.length, points: totalPoints, decimals: o.decimals ?? null },
      cluster: { nodes: o.nodes, replicationFactor: o.replicationFactor, joined: joinerId },
      write: { pointsPerRequest, inflight: o.inflight, entryNodes: o.nodes },
      seconds: {
        load: loadSeconds,
        spawnToJoining: joinSeconds,
        spawnToListening: listeningAt === undefined ? null : listeningAt - spawnAt,
        joiningToActive: moveSeconds,
        activeToDone: cleanupSeconds,
        phasesAfterJoining: Object.fromEntries([...phases].map(([p, t]) => [p, t - joinedAt])),
      },
      pointsMoved,
      pointsMovedListed: maxPointsMoved,
      pointsMovedLeaderCounter: leaderPoints,
      rangesMoved: rangesTotal,
      moveSecondsPerMillionPoints: perMillion,
      pointsPerSecond: { before: beforeRate, duringMove: duringRate, duringCleanup: cleanupRate },
      ingestRatioDuringBefore: duringRate / beforeRate,
      queryMediansMs: Object.fromEntries(
        kinds.map((k) => [k.name, { before: medBefore.get(k.name), during: medDuring.get(k.name) }]),
      ),
      failedWrites,
      failedQueries,
      failedWritesDuringMove: active.failed - joining.failed,
      failedQueriesDuringMove: active.queriesFailed - joining.queriesFailed,
      seriesPerNode: Object.fromEntries(
        all.map((id) => [id, { stats: series.get(id) ?? null, locate: expected.get(id) }]),
      ),
      ringShares: Object.fromEntries(shares),
      copyShares: Object.fromEntries(copyShares),
      shortSeries,
      coresBusy: {
        before: cpuBefore,
        duringMove: [...cpuDuring, joinerDuring],
        order: [...ids, 'consul', 'bench', joinerId],
        otherProcesses: { before: otherBefore, duringMove: otherDuring },
      },
      checks,
    }
    console.log(JSON.stringify(report))
    const failed = Object.entries(checks).filter(([, ok]) => !ok)
    if (failed.length > 0) throw new Error(`cluster join: checks failed: ${failed.map(([k]) => k).join(', ')}`)
  } finally {
    await load?.stop()
    await queries?.stop()
    await encoder?.close()
    for (const c of clients) c.close()
    for (const c of v3Clients) c.close()
    await removeAll(joiner === undefined ? cluster.nodes : [...cluster.nodes, joiner])
    if (consul !== undefined) await stopProcess(consul.proc)
  }
}
