/**
 * Engine write bench (`npm run bench -- --engine-write`): what write versions cost the engine's
 * write path on its own, without gRPC or a network. Each run is a process of its own, started with
 * the Node options of bin/v3.js's first line as a server is: it opens a BasicEngine in a fresh
 * folder at its defaults and writes two days of the bench's data set through writeValidated,
 * `timestampsPerRequest` timestamps of every series a request, `inflight` requests at a time, as a
 * cluster node stores its parts. The request is validated inside the measured time, as a node does.
 * - none: no versions, as on a single node;
 * - one: every point of a request shares one version, as a cluster write's do (NormalizedSeries.version);
 * - each: the same versions given per point, in one array per request (NormalizedSeries.versions),
 *   as a repair or a merged write hands them.
 * The modes take turns, `runs` times each; the figures are the process's CPU (all threads, and its
 * main thread alone) over the writes, medians per mode.
 *   npm run bench -- --engine-write [--runs 3] [--hosts 10]
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serverNodeOptions } from '../scripts/node-options.mjs'
import { BasicEngine } from '../src/engine/basic-engine.js'
import { type NormalizedBatch, ValidatedSeriesCache, validateWriteBatch } from '../src/model/validate.js'
import { hostTags, INTERVAL_MS, METRICS, POINTS_PER_SERIES, START_MS, seriesValues } from './dataset.js'
import { describeDataSet, describeMachine, mainThreadCpuSeconds, median, resultsName, saveResults } from './harness.js'

export interface EngineWriteBenchOptions {
  readonly hosts: number
  readonly decimals: number | undefined
  readonly timestampsPerRequest: number
  readonly inflight: number
  readonly runs: number
}

const MODES = ['none', 'one', 'each'] as const
type Mode = (typeof MODES)[number]
const DAYS = 2
const DAY_MS = 86_400_000

interface RunFigures {
  readonly cpuSeconds: number
  readonly mainThreadCpuSeconds: number
}

/** One run, in this process: the engine, the writes, the CPU they took. */
async function child(mode: Mode, o: EngineWriteBenchOptions): Promise<RunFigures> {
  const tags = Array.from({ length: o.hosts }, (_, h) =>
    Object.entries(hostTags(h)).map(([key, value]) => ({ key, value })),
  )
  const values = Array.from({ length: o.hosts }, (_, h) => METRICS.map((_, m) => seriesValues(h, m, o.decimals)))
  const dir = await mkdtemp(join(tmpdir(), 'v3-engine-write-'))
  const engine = new BasicEngine({ dataDir: dir })
  await engine.open()
  const cache = new ValidatedSeriesCache()
  let version = 1
  const cpu0 = process.cpuUsage()
  const main0 = await mainThreadCpuSeconds(process.pid)
  try {
    const inflight: Promise<unknown>[] = []
    for (let day = 0; day < DAYS; day++) {
      for (let i0 = 0; i0 < POINTS_PER_SERIES; i0 += o.timestampsPerRequest) {
        const n = Math.min(o.timestampsPerRequest, POINTS_PER_SERIES - i0)
        const timestamps = Float64Array.from({ length: n }, (_, i) => START_MS + day * DAY_MS + (i0 + i) * INTERVAL_MS)
        const series = tags.flatMap((t, h) =>
          METRICS.map((metric, m) => ({ metric, tags: t, timestamps, values: values[h]![m]!.subarray(i0, i0 + n) })),
        )
        inflight.push(
          engine.writeValidated(versioned(validateWriteBatch({ series }, undefined, cache), mode, version++)),
        )
        if (inflight.length >= o.inflight) await inflight.shift()
      }
    }
    await Promise.all(inflight)
    const cpu = process.cpuUsage(cpu0)
    return {
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      mainThreadCpuSeconds: (await mainThreadCpuSeconds(process.pid)) - main0,
    }
  } finally {
    await engine.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/** The batch with its points' version as `mode` gives it. */
function versioned(batch: NormalizedBatch, mode: Mode, version: number): NormalizedBatch {
  if (mode === 'none') return batch
  if (mode === 'one') return { ...batch, series: batch.series.map((s) => ({ ...s, version })) }
  const all = new Float64Array(batch.points).fill(version)
  let at = 0
  const series = batch.series.map((s) => {
    at += s.timestamps.length
    return { ...s, versions: all.subarray(at - s.timestamps.length, at) }
  })
  return { ...batch, series }
}

/** Starts one run in a process of its own and reads its figures from its last line. */
function spawnRun(mode: Mode, o: EngineWriteBenchOptions): Promise<RunFigures> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [...serverNodeOptions(), '--import', 'tsx', 'bench/engine-write-bench.ts', mode, JSON.stringify(o)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    proc.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c
    })
    proc.on('error', reject)
    proc.on('close', (code) => {
      if (code !== 0) return reject(new Error(`engine write run (${mode}) exited with ${code}`))
      resolve(JSON.parse(out.trim().split('\n').pop() as string) as RunFigures)
    })
  })
}

export async function runEngineWriteBench(o: EngineWriteBenchOptions): Promise<void> {
  const points = DAYS * o.hosts * METRICS.length * POINTS_PER_SERIES
  const figures = new Map<Mode, RunFigures[]>(MODES.map((m) => [m, []]))
  for (let r = 0; r < o.runs; r++) {
    // The order turns each round, so that no mode always runs first on a shared machine.
    for (let k = 0; k < MODES.length; k++) {
      const mode = MODES[(r + k) % MODES.length] as Mode
      const run = await spawnRun(mode, o)
      figures.get(mode)?.push(run)
      console.log(`${mode}: ${run.cpuSeconds.toFixed(2)} s CPU, ${run.mainThreadCpuSeconds.toFixed(2)} s main thread`)
    }
  }
  const perMillion = (s: number): string => ((s / points) * 1e6).toFixed(3)
  const none = median((figures.get('none') ?? []).map((f) => f.cpuSeconds))
  const rows = MODES.map((mode) => {
    const list = figures.get(mode) ?? []
    const cpu = median(list.map((f) => f.cpuSeconds))
    const main = median(list.map((f) => f.mainThreadCpuSeconds))
    const each = list.map((f) => f.cpuSeconds.toFixed(2)).join(', ')
    return `| ${mode} | ${perMillion(cpu)} | ${perMillion(main)} | ${(cpu / none).toFixed(2)}x | ${each} |`
  })
  const md = [
    `${describeMachine()}; ${describeDataSet(o.hosts, o.decimals)}, two days (${points.toLocaleString('en-US')} points) through BasicEngine.writeValidated, ${o.timestampsPerRequest} timestamps of every series a request, ${o.inflight} in flight; ${o.runs} runs per mode, taking turns.`,
    '',
    '| versions | CPU s per M points (median) | main thread, CPU s per M points (median) | against none | CPU s of each run |',
    '|---|---|---|---|---|',
    ...rows,
  ].join('\n')
  console.log(`\n${md}\n`)
  await saveResults(
    resultsName('engine-write', o.hosts, o.decimals),
    JSON.stringify({ options: o, points, runs: Object.fromEntries(figures) }),
    md,
  )
}

// A run's process: `engine-write-bench.ts <mode> <options as JSON>`.
const [mode, options] = process.argv.slice(2)
if (mode !== undefined && options !== undefined && (MODES as readonly string[]).includes(mode)) {
  const figures = await child(mode as Mode, JSON.parse(options) as EngineWriteBenchOptions)
  console.log(JSON.stringify(figures))
}
