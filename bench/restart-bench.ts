/**
 * Restart bench (`npm run bench -- --restart`): how long a server killed with the largest
 * write-ahead log its defaults allow takes to start again, and that it lost no acknowledged point.
 * - Load: the single-node bench's Write requests (the same data set, 2 in flight), at default
 *   flags, without pause; once the data set's day is written the load goes on with the next day.
 * - The folder's log files are measured every 20 ms (their sizes summed, as the engine measures its
 *   log). While writes go on, the engine flushes the log away once it passes WAL_FLUSH_BYTES, on its
 *   next sealer tick: the largest log the defaults allow is that much and what one tick adds. The
 *   server is killed with SIGKILL as soon as the log reaches KILL_AT_FRACTION of it, or when
 *   MAX_DAYS of data are written without it getting there (the table says which).
 * - Measured: the log at the kill (bytes and files), then the restart on the same folder: from the
 *   process spawned to its listening line, which it prints once the engine is open (RocksDB's
 *   replay of the log, the write buffer's replay into memory) and the server serves. Then every
 *   point is counted (a count per metric over the days written): no fewer than were acknowledged,
 *   no more than were sent, or the bench fails. Last, a clean stop (which leaves no log) and a
 *   start on the same folder, timed the same way, as the baseline.
 * Results go to bench/results/restart.json and .md.
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Client, credentials } from '@grpc/grpc-js'
import { WAL_FLUSH_BYTES } from '../src/engine/rocks-store.js'
import { Load } from './catch-up-bench.js'
import { hostTags, METRICS, POINTS_PER_SERIES, seriesValues } from './dataset.js'
import {
  countPoints,
  describeDataSet,
  describeMachine,
  encodeMessages,
  removeServer,
  type Server,
  saveResults,
  sleep,
  startServer,
  stopServer,
} from './harness.js'

export interface RestartBenchOptions {
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
}

/** The kill comes once the log holds this share of WAL_FLUSH_BYTES. */
const KILL_AT_FRACTION = 0.95
/** Days of data the load writes at most while waiting for the log to grow. */
const MAX_DAYS = 8
const POLL_MS = 20
const MIB = 2 ** 20

/** Sizes (as the engine sums them) and allocated bytes (as `du` counts them) of the folder's log files. */
async function logFiles(dir: string): Promise<{ bytes: number; diskBytes: number; files: number }> {
  let bytes = 0
  let diskBytes = 0
  let files = 0
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.log')) continue
    const info = await stat(join(dir, name)).catch(() => undefined)
    if (info === undefined) continue
    bytes += info.size
    diskBytes += info.blocks * 512
    files++
  }
  return { bytes, diskBytes, files }
}

/** Seconds from spawning `v3 serve` on `dir` to its listening line. */
async function timedStart(dir: string): Promise<{ server: Server; seconds: number }> {
  const t0 = performance.now()
  const server = await startServer([], '127.0.0.1:0', dir)
  return { server, seconds: (performance.now() - t0) / 1000 }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en')
const mib = (bytes: number): string => (bytes / MIB).toFixed(1)

export async function runRestartBench(o: RestartBenchOptions): Promise<void> {
  const tagRecords = Array.from({ length: o.hosts }, (_, h) => hostTags(h))
  const tags = tagRecords.map((t) => Object.entries(t).map(([key, value]) => ({ key, value })))
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  let daysEncoded = 0
  const points = new WeakMap<Buffer, number>()
  const load = new Load(
    (offsetMs) => {
      daysEncoded++
      const requests = encodeMessages(tags, values, o.timestampsPerRequest, offsetMs)
      requests.forEach((r, i) => {
        const timestamps = Math.min(o.timestampsPerRequest, POINTS_PER_SERIES - i * o.timestampsPerRequest)
        points.set(r, timestamps * o.hosts * METRICS.length)
      })
      return requests
    },
    undefined,
    (request) => points.get(request) ?? 0,
  )

  const killAt = KILL_AT_FRACTION * WAL_FLUSH_BYTES
  const first = await startServer()
  const dir = first.dataDir
  let restarted: Server | undefined
  try {
    const client = new Client(first.address, credentials.createInsecure())
    const t0 = performance.now()
    load.start([client], o.inflight)
    let peak = 0
    let reached = false
    for (;;) {
      const { bytes } = await logFiles(dir)
      peak = Math.max(peak, bytes)
      if (bytes >= killAt) {
        reached = true
        break
      }
      if (daysEncoded > MAX_DAYS) break
      await sleep(POLL_MS)
    }
    first.proc.kill('SIGKILL')
    const loadSeconds = (performance.now() - t0) / 1000
    await new Promise((resolve) => first.proc.once('exit', resolve))
    await load.stop()
    client.close()
    const atKill = await logFiles(dir)
    const acked = load.acked
    const sent = load.offered
    console.log(
      `killed after ${loadSeconds.toFixed(1)} s of load: log ${mib(atKill.bytes)} MiB in ${atKill.files} files (${reached ? 'the kill threshold reached' : `peak ${mib(peak)} MiB, the threshold not reached`}), ${fmt(acked)} points acknowledged`,
    )

    const afterKill = await timedStart(dir)
    restarted = afterKill.server
    const counted = await countPoints(restarted.address, daysEncoded)
    if (counted < acked)
      throw new Error(`lost acknowledged points: ${fmt(counted)} counted, ${fmt(acked)} acknowledged`)
    if (counted > sent) throw new Error(`${fmt(counted)} points counted, more than the ${fmt(sent)} sent`)
    const logAfterStart = await logFiles(dir)
    console.log(`restart after kill -9: ${afterKill.seconds.toFixed(2)} s to listening; ${fmt(counted)} points counted`)
    await stopServer(restarted)
    const logAfterStop = await logFiles(dir)
    const afterStop = await timedStart(dir)
    restarted = afterStop.server
    console.log(`restart after a clean stop: ${afterStop.seconds.toFixed(2)} s to listening`)

    const result = {
      machine: describeMachine(),
      dataSet: describeDataSet(o.hosts, o.decimals),
      walFlushBytes: WAL_FLUSH_BYTES,
      killThresholdReached: reached,
      loadSeconds,
      pointsAcknowledged: acked,
      pointsSent: sent,
      pointsCounted: counted,
      logAtKill: atKill,
      logPeakSeen: peak,
      restartAfterKillSeconds: afterKill.seconds,
      logAfterRestart: logAfterStart,
      logAfterCleanStop: logAfterStop,
      restartAfterCleanStopSeconds: afterStop.seconds,
    }
    const md = [
      `${result.machine}; ${result.dataSet}, written day after day without pause (Write, ${o.inflight} in flight); default server flags.`,
      '',
      '| figure | value |',
      '|---|---|',
      `| write-ahead log at the kill (SIGKILL), bytes as the engine sums them (files) | ${mib(atKill.bytes)} MiB (${atKill.files}) |`,
      `| the engine's flush threshold while writes go on (WAL_FLUSH_BYTES) | ${mib(WAL_FLUSH_BYTES)} MiB |`,
      `| write-ahead log at the kill, allocated on disk (du) | ${mib(atKill.diskBytes)} MiB |`,
      `| load before the kill | ${loadSeconds.toFixed(1)} s, ${fmt(acked)} points acknowledged (${fmt(acked / loadSeconds)} points/s) |`,
      `| **restart after the kill, spawn to listening** | **${afterKill.seconds.toFixed(2)} s** |`,
      `| points counted after the restart (acknowledged / sent) | ${fmt(counted)} (${fmt(acked)} / ${fmt(sent)}) |`,
      `| write-ahead log once restarted, then after a clean stop | ${mib(logAfterStart.bytes)} MiB, then ${mib(logAfterStop.bytes)} MiB |`,
      `| restart after a clean stop, spawn to listening | ${afterStop.seconds.toFixed(2)} s |`,
      '',
      reached
        ? `The server was killed once its log held ${(KILL_AT_FRACTION * 100).toFixed(0)}% of the flush threshold or more; the engine checks the threshold once a second, so the log can pass it by what one second of writes adds.`
        : `The log never reached ${(KILL_AT_FRACTION * 100).toFixed(0)}% of the flush threshold over ${daysEncoded} days of data (peak seen ${mib(peak)} MiB): the server was killed at the end of the load.`,
    ].join('\n')
    console.log(`\n${md}`)
    await saveResults('restart', JSON.stringify(result, null, 2), md)
  } finally {
    await removeServer(restarted ?? first)
  }
}
