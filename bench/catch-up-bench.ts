/**
 * Catch-up bench (`npm run bench -- --cluster 3 --replication-factor 3 --catch-up`): how long a node
 * killed under load takes to catch up after its restart. A phase of its own, on a fresh cluster, so
 * the cluster bench's other figures stay comparable with earlier runs.
 * - Load: the cluster bench's Write requests (the same data set, 2 in flight per client) at the
 *   server's default level, QUORUM, through every node but the one to be killed, without pause
 *   (the cluster's maximum, as the cluster bench's ingest), or paced at `ratePointsPerSecond`. Once the data set's day is written the load goes on with the next day (the same values, the
 *   timestamps a day later), so that it never stops while it is measured.
 * - After BEFORE_MS (20 s) of load, the last node is killed with SIGKILL and kept down for `downMs`, then
 *   started again on its data folder, ports and id, while the load goes on.
 * - Measured: the time from the restart (the process spawned), and separately from when the other
 *   nodes list it healthy and active, until both list no hint pending for it (ListNodes
 *   hints_pending 0 on both at one poll, every 100 ms): every hint queued for it while it was down
 *   delivered. Also the hints queued for it during the outage (v3_hints_queued), their bytes, and
 *   the load's rate before the kill, during the outage and during the catch-up, the cores each
 *   process kept busy, and the writes the restarted node received from the others while catching
 *   up (hint deliveries and the load's new writes, which do not wait behind hints) with their mean
 *   size.
 * Results go to bench/results/cluster-<N>-rf<R>[-<hosts>hosts]-catch-up[-<rate>pps].json and .md.
 */
import { Client, credentials } from '@grpc/grpc-js'
import { V3Client } from '../src/client/index.js'
import { type Cluster, type Consul, removeAll, startCluster, startConsul, stopProcess } from './cluster-bench.js'
import { hostTags, METRICS, seriesValues } from './dataset.js'
import {
  cpuSeconds,
  describeDataSet,
  describeMachine,
  encodeMessages,
  resultsName,
  type Server,
  saveResults,
  startServer,
  writeRequest,
} from './harness.js'

export interface CatchUpBenchOptions {
  readonly nodes: number
  readonly replicationFactor: number
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
  /** How long the node stays down, in ms (the issue's figure: 60 s). */
  readonly downMs: number
  /** Points per second the load offers; 0: no pause, as the cluster bench's ingest (its maximum). */
  readonly ratePointsPerSecond: number
}

/** Load before the kill, for the rate it is compared with. */
const BEFORE_MS = 20_000
/** How long the bench waits for the catch-up before it reports that it did not finish. */
const CATCH_UP_CAP_MS = 600_000
const POLL_MS = 100
const DAY_MS = 86_400_000

/** A figure of a /metrics text for one peer, 0 when absent. */
function peerMetric(text: string, name: string, peer: string): number {
  const line = new RegExp(`^${name}\\{peer="${peer}"\\} (\\S+)$`, 'm').exec(text)
  return line === null ? 0 : Number(line[1])
}

/** The points a node has stored (v3_points_written_total), over its restarts. */
async function pointsWritten(server: Server): Promise<number> {
  const text = await (await fetch(server.metricsUrl)).text()
  return Number(/^v3_points_written_total (\S+)$/m.exec(text)?.[1] ?? Number.NaN)
}

interface HintFigures {
  /** Hints stored for the peer since each node started, summed over the nodes. */
  readonly queued: number
  readonly delivered: number
  /** Hints waiting now, and their bytes. */
  readonly backlog: number
  readonly backlogBytes: number
  /** Requests to the peer sent or waiting for a slot, not answered yet: parts that become hints only at the peer timeout. */
  readonly inFlight: number
  /** Requests sent to the peer since each node started: writes, and hint deliveries. */
  readonly requestsSent: number
}

async function hintFigures(servers: readonly Server[], peer: string): Promise<HintFigures> {
  const texts = await Promise.all(servers.map(async (s) => (await fetch(s.metricsUrl)).text()))
  const sum = (name: string): number => texts.reduce((n, t) => n + peerMetric(t, name, peer), 0)
  return {
    queued: sum('v3_hints_queued'),
    delivered: sum('v3_hints_delivered'),
    backlog: sum('v3_hints_backlog'),
    backlogBytes: sum('v3_hints_backlog_bytes'),
    inFlight: sum('v3_peer_in_flight') + sum('v3_peer_queue_depth'),
    requestsSent: sum('v3_peer_requests_sent'),
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)))

/**
 * The Write load: `inflight` calls per client, the requests of one day after another (encoded when
 * a day starts), acknowledged points counted as they come. With `intervalMs` the k-th request is
 * not sent before k × intervalMs after the start (a paced load; one that falls behind sends at
 * once); without it, no pause.
 */
export class Load {
  acked = 0
  failed = 0
  /** Points of the requests sent so far, when the constructor was told how to count them. */
  offered = 0
  readonly firstErrors: string[] = []
  private stopped = false
  private readonly loops: Promise<void>[] = []
  private queue: Buffer[] = []
  private next = 0
  private day = 0
  private issued = 0
  private readonly startedAt = performance.now()

  constructor(
    private readonly encodeDay: (offsetMs: number) => Buffer[],
    private readonly intervalMs: number | undefined,
    private readonly pointsOf?: (request: Buffer) => number,
  ) {}

  start(clients: readonly Client[], inflight: number): void {
    for (const client of clients) {
      for (let k = 0; k < inflight; k++) this.loops.push(this.loop(client))
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.all(this.loops)
  }

  private take(): Buffer {
    if (this.next >= this.queue.length) {
      this.queue = this.encodeDay(this.day++ * DAY_MS)
      this.next = 0
    }
    const request = this.queue[this.next++] as Buffer
    if (this.pointsOf !== undefined) this.offered += this.pointsOf(request)
    return request
  }

  private async loop(client: Client): Promise<void> {
    while (!this.stopped) {
      if (this.intervalMs !== undefined) {
        const due = this.startedAt + this.issued++ * this.intervalMs
        await sleep(due - performance.now())
        if (this.stopped) return
      }
      try {
        // Awaited first: `acked += await …` would read `acked` before the wait and lose counts.
        const res = await writeRequest(client, this.take())
        this.acked += res.pointsWritten
      } catch (err) {
        this.failed++
        if (this.firstErrors.length < 5) this.firstErrors.push(String(err))
      }
    }
  }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')

export async function runCatchUpBench(o: CatchUpBenchOptions): Promise<void> {
  if (!(o.nodes >= 3)) throw new Error(`--catch-up needs a cluster of 3 or more nodes, got ${o.nodes}`)
  if (!(o.replicationFactor >= 2))
    throw new Error('--catch-up needs --replication-factor 2 or more: hints are for copies')
  if (!(o.downMs > 0)) throw new Error('--catch-up-down must be above zero')
  const machine = describeMachine()
  const dataSet = describeDataSet(o.hosts, o.decimals)
  const setup = `${o.nodes} nodes, replication factor ${o.replicationFactor}`
  console.log(`catch-up: data set ${dataSet}; cluster: ${setup}; a node down for ${o.downMs / 1000} s under load`)
  const tags = Array.from({ length: o.hosts }, (_, h) =>
    Object.entries(hostTags(h)).map(([key, value]) => ({ key, value })),
  )
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const seriesCount = o.hosts * METRICS.length
  const encodeDay = (offsetMs: number): Buffer[] => encodeMessages(tags, values, o.timestampsPerRequest, offsetMs)

  const cluster: Cluster = { nodes: [], args: [] }
  let consul: Consul | undefined
  const clients: Client[] = []
  const admins: V3Client[] = []
  let load: Load | undefined
  try {
    consul = await startConsul()
    await startCluster(consul, 'bench-catch-up', o.nodes, o.replicationFactor, cluster)
    const victimIndex = o.nodes - 1
    const victimId = `n${o.nodes}`
    const victim = cluster.nodes[victimIndex] as Server
    const others = cluster.nodes.filter((_, i) => i !== victimIndex)
    // The victim is the last node, so the others are n1 … n(N-1) in order.
    const otherIds = others.map((_, i) => `n${i + 1}`)
    for (const s of others) {
      clients.push(new Client(s.address, credentials.createInsecure()))
      admins.push(new V3Client(s.address))
    }

    const pointsPerRequest = o.timestampsPerRequest * seriesCount
    load = new Load(
      encodeDay,
      o.ratePointsPerSecond > 0 ? (pointsPerRequest / o.ratePointsPerSecond) * 1000 : undefined,
    )
    const t0 = performance.now()
    const at = (): number => (performance.now() - t0) / 1000
    load.start(clients, o.inflight)
    await sleep(BEFORE_MS)
    const beforeSeconds = at()
    const beforePoints = load.acked

    // CPU seconds of the nodes that stay up and of this process (the load's client), per window.
    const cpuNow = async (): Promise<number[]> => [
      ...(await Promise.all(others.map((s) => cpuSeconds(s.proc.pid as number)))),
      (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    ]
    const cpuAtKill = await cpuNow()
    // kill -9, as a crash: no clean shutdown, no deregistration.
    await stopProcess(victim.proc)
    const killedAt = at()
    const killedPoints = load.acked
    console.log(`${killedAt.toFixed(1)} s: ${victimId} killed with SIGKILL; the load goes on through the others`)
    await sleep(o.downMs)
    const atRestart = await hintFigures(others, victimId)
    const cpuAtRestart = await cpuNow()
    const restartAt = at()
    const restartPoints = load.acked
    console.log(
      `${restartAt.toFixed(1)} s: restarting ${victimId}; ${fmt(atRestart.queued)} hints queued for it (${(atRestart.backlogBytes / 2 ** 20).toFixed(0)} MiB waiting)`,
    )
    cluster.nodes[victimIndex] = await startServer(
      cluster.args[victimIndex] as string[],
      victim.address,
      victim.dataDir,
    )
    const listeningAt = at()
    // The node keeps its points-written count across restarts: what it stores while catching up is
    // the difference from the count it starts with.
    const pointsAtStart = await pointsWritten(cluster.nodes[victimIndex] as Server)

    let healthyAt: number | undefined
    let caughtUpAt: number | undefined
    const backlog: { readonly seconds: number; readonly hints: number }[] = []
    let lastSample = 0
    while (caughtUpAt === undefined && at() - restartAt < CATCH_UP_CAP_MS / 1000) {
      const lists = await Promise.all(admins.map((a) => a.listNodes({ timeoutMs: 5_000 }).catch(() => undefined)))
      const entries = lists.map((l) => l?.find((n) => n.id === victimId))
      if (
        healthyAt === undefined &&
        entries.every((e) => e !== undefined && e.state === 'healthy' && e.lifecycle === 'active')
      ) {
        healthyAt = at()
        console.log(`${healthyAt.toFixed(1)} s: ${victimId} healthy and active on every other node`)
      }
      const pending = entries.reduce((n, e) => n + (e?.hintsPending ?? Number.NaN), 0)
      if (at() - lastSample >= 1) {
        lastSample = at()
        backlog.push({ seconds: Number((lastSample - restartAt).toFixed(1)), hints: pending })
      }
      if (healthyAt !== undefined && pending === 0) caughtUpAt = at()
      else await sleep(POLL_MS)
    }
    const caughtUpPoints = load.acked
    const cpuAtEnd = await cpuNow()
    const restarted = cluster.nodes[victimIndex] as Server
    const victimCpu = await cpuSeconds(restarted.proc.pid as number)
    const delivered = await hintFigures(others, victimId)
    const victimPoints = (await pointsWritten(restarted)) - pointsAtStart
    await load.stop()

    const rate = (points: number, seconds: number): number => points / seconds
    const before = rate(beforePoints, beforeSeconds)
    const outage = rate(restartPoints - killedPoints, restartAt - killedAt)
    const end = caughtUpAt ?? at()
    const during = rate(caughtUpPoints - restartPoints, end - restartAt)
    const fromStart = caughtUpAt === undefined ? undefined : caughtUpAt - restartAt
    const fromHealthy = caughtUpAt === undefined || healthyAt === undefined ? undefined : caughtUpAt - healthyAt
    // Cores busy per window: each node that stayed up, the restarted node (catch-up only), the client.
    const busy = (from: number[], to: number[], seconds: number): number[] =>
      to.map((c, i) => (c - (from[i] as number)) / seconds)
    const cpuOutage = busy(cpuAtKill, cpuAtRestart, restartAt - killedAt)
    const cpuCatchUp = [...busy(cpuAtRestart, cpuAtEnd, end - restartAt), victimCpu / (end - restartAt)]
    const cores = (xs: number[]): string =>
      `${xs.reduce((a, b) => a + b, 0).toFixed(2)} (${xs.map((c) => c.toFixed(2)).join(' + ')})`
    // What it receives from the other nodes in the catch-up: hint deliveries (up to two writes at a
    // time from each coordinator) and the load's new writes, which no longer wait behind hints.
    const deliveries = delivered.requestsSent - atRestart.requestsSent
    const pointsPerDelivery = victimPoints / deliveries
    const msPerDelivery = ((end - restartAt) * 1000 * others.length) / deliveries
    const secs = (s: number | undefined): string =>
      s === undefined ? `not within ${CATCH_UP_CAP_MS / 1000} s` : `${s.toFixed(1)}`
    const verdict = fromStart === undefined ? '(target missed)' : fromStart < 10 ? '(target met)' : '(target missed)'
    const rows = [
      `| figure | value |`,
      '|---|---|',
      `| node down (kill -9), s | ${(restartAt - killedAt).toFixed(1)} |`,
      `| hints queued for it while down, over the other nodes | ${fmt(atRestart.queued)} (${(atRestart.backlogBytes / 2 ** 20).toFixed(0)} MiB waiting at the restart) |`,
      `| requests to it still unanswered at the restart (hinted only at the peer timeout) | ${fmt(atRestart.inFlight)} |`,
      `| hints queued for it by the end of the catch-up | ${fmt(delivered.queued)} |`,
      `| points written while it was down | ${fmt(restartPoints - killedPoints)} |`,
      `| restart (process spawned) to listening, s | ${(listeningAt - restartAt).toFixed(1)} |`,
      `| restart to healthy and active on the other nodes, s | ${healthyAt === undefined ? 'never' : (healthyAt - restartAt).toFixed(1)} |`,
      `| catch-up from the restart (hints_pending 0 on every other node), s | ${secs(fromStart)} ${verdict} |`,
      `| catch-up from healthy and active, s | ${secs(fromHealthy)} |`,
      `| hints delivered to it (since the nodes started) | ${fmt(delivered.delivered)} |`,
      `| writes it received from the other nodes from the restart to the end of the catch-up (hint deliveries and new writes) | ${fmt(deliveries)}, ${fmt(pointsPerDelivery)} points each on average, ${msPerDelivery.toFixed(0)} ms each per sending node |`,
      `| points it stored from the restart to the end of the catch-up | ${fmt(victimPoints)} (${fmt(victimPoints / (end - restartAt))} points/s) |`,
      `| ingest before the kill, points/s | ${fmt(before)} |`,
      `| ingest while it was down, points/s | ${fmt(outage)} (${(outage / before).toFixed(2)}x) |`,
      `| ingest while it caught up, points/s | ${fmt(during)} (${(during / before).toFixed(2)}x) |`,
      `| failed writes (QUORUM) over the whole run | ${load.failed} |`,
      `| cores busy while it was down (${otherIds.join(' + ')} + client) | ${cores(cpuOutage)} |`,
      `| cores busy while it caught up (${otherIds.join(' + ')} + client + ${victimId}) | ${cores(cpuCatchUp)} |`,
    ]
    const md = [
      `${machine}; ${dataSet}, written day after day ${o.ratePointsPerSecond > 0 ? `at ${fmt(o.ratePointsPerSecond)} points/s offered` : 'without pause'}; cluster of ${setup}; Write (${o.inflight} in flight per client) at QUORUM (the default) through the ${others.length} nodes that stay up; n${o.nodes} killed with SIGKILL after ${BEFORE_MS / 1000} s of load, restarted ${o.downMs / 1000} s later on its data folder while the load goes on. Target of issue 10: caught up within 10 s of the restart.`,
      '',
      ...rows,
      '',
    ].join('\n')
    console.log(`\n${md}`)
    if (load.firstErrors.length > 0) console.log(`first write errors: ${load.firstErrors.join('; ')}`)
    const name = resultsName(
      `cluster-${o.nodes}-rf${o.replicationFactor}`,
      o.hosts,
      o.decimals,
      `-catch-up${o.ratePointsPerSecond > 0 ? `-${o.ratePointsPerSecond}pps` : ''}`,
    )
    const report = {
      date: new Date().toISOString(),
      machine,
      dataSet: { hosts: o.hosts, metrics: METRICS.length, decimals: o.decimals ?? null },
      cluster: { nodes: o.nodes, replicationFactor: o.replicationFactor, killed: victimId },
      write: {
        pointsPerRequest,
        inflight: o.inflight,
        entryNodes: others.length,
        offeredPointsPerSecond: o.ratePointsPerSecond > 0 ? o.ratePointsPerSecond : null,
      },
      seconds: {
        before: beforeSeconds,
        down: restartAt - killedAt,
        restartToListening: listeningAt - restartAt,
        restartToHealthy: healthyAt === undefined ? null : healthyAt - restartAt,
        catchUpFromRestart: fromStart ?? null,
        catchUpFromHealthy: fromHealthy ?? null,
      },
      hints: { atRestart, afterCatchUp: delivered },
      pointsPerSecond: { before, outage, catchUp: during },
      coresBusy: { outage: cpuOutage, catchUp: cpuCatchUp, order: [...otherIds, 'client', victimId] },
      pointsWrittenWhileDown: restartPoints - killedPoints,
      catchUpDeliveries: { writes: deliveries, pointsStored: victimPoints, pointsPerDelivery, msPerDelivery },
      failedWrites: load.failed,
      firstErrors: load.firstErrors,
      backlogAfterRestart: backlog,
    }
    await saveResults(name, JSON.stringify(report, null, 2), md)
  } finally {
    await load?.stop()
    for (const c of clients) c.close()
    for (const a of admins) a.close()
    await removeAll(cluster.nodes)
    if (consul !== undefined) await stopProcess(consul.proc)
  }
}
