/**
 * `v3 migrate --from <folder|host:port> --to <folder|host:port>`: copies series from a data folder
 * or a server to a server or a data folder, series by series, then counts the points of every
 * series on both sides over the same range and fails when any count differs. Moving a node to a new
 * one, or re-encoding a folder into a new one after a format change, are the same operation.
 */
import { existsSync, statSync } from 'node:fs'
import type { SeriesInput } from '../client/index.js'
import { BasicEngine } from '../engine/basic-engine.js'
import { DEFAULT_WRITE_LIMITS } from '../model/limits.js'
import type { SeriesRef } from '../model/types.js'
import { parseCount, UsageError } from './args.js'
import {
  CONNECTION_USAGE,
  checkServerAddress,
  connectTo,
  type FlagValues,
  parseCommandArgs,
  stringFlag,
} from './client-command.js'
import { rangeOf, selectorsOf } from './export.js'
import { engineSink, type PointSink, serverSink } from './point-sink.js'
import { Progress } from './progress.js'
import { formatSelector } from './selector.js'
import {
  ALL_TIME,
  clientSource,
  countAllSeries,
  engineSource,
  keysByMetric,
  readAllSeries,
  type SeriesSource,
} from './series-source.js'

export const MIGRATE_USAGE = `Usage: v3 migrate --from <folder|host:port> --to <folder|host:port> ['<selector>'…] [options]

Copies the selected series (every series when the source is a folder and no selector is given; a
server needs at least one selector) and verifies, per series, that the destination holds as many
points in the range as the source. A folder must not be in use by a running server.

  --start <time>           inclusive start: RFC 3339, epoch ms, now, or relative like -1h (default: all data)
  --end <time>             exclusive end (default: all data)
  --batch-points <n>       points per write (default 50000)
  --quiet                  no progress output

${CONNECTION_USAGE}(the connection options apply to whichever side is a server)
`

const FLAGS = {
  from: { type: 'string' },
  to: { type: 'string' },
  start: { type: 'string' },
  end: { type: 'string' },
  'batch-points': { type: 'string' },
  quiet: { type: 'boolean' },
} as const

interface Endpoint {
  readonly label: string
  readonly source: SeriesSource
  sink(): PointSink
  close(): Promise<void>
}

/** host:port is a server unless a folder of that name exists. */
export function isServerAddress(text: string): boolean {
  if (existsSync(text) && statSync(text).isDirectory()) return false
  return /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(text)
}

async function openEndpoint(text: string, values: FlagValues, mustExist: boolean): Promise<Endpoint> {
  if (isServerAddress(text)) {
    const client = await connectTo(checkServerAddress(mustExist ? '--from' : '--to', text), values)
    return {
      label: `server ${text}`,
      source: clientSource(client),
      sink: () => serverSink(client),
      close: async () => client.close(),
    }
  }
  if (mustExist && !existsSync(text)) throw new UsageError(`--from ${text}: no such folder (nor host:port)`)
  if (existsSync(text) && !statSync(text).isDirectory()) {
    throw new UsageError(`--${mustExist ? 'from' : 'to'} ${text}: a file, not a data folder (nor host:port)`)
  }
  const engine = new BasicEngine({ dataDir: text })
  await engine.open()
  return {
    label: `folder ${text}`,
    source: engineSource(engine),
    sink: () => engineSink(engine),
    close: () => engine.close(),
  }
}

export interface MigrateReport {
  readonly series: number
  readonly points: number
  readonly mismatches: string[]
}

/** Copies then verifies; mismatches name each series whose counts differ. */
export async function migrate(
  from: SeriesSource,
  to: { source: SeriesSource; sink: PointSink },
  selectors: ReturnType<typeof selectorsOf>,
  range: { startMs: number; endMs: number },
  batchPoints: number,
  progress: Progress,
): Promise<MigrateReport> {
  let series: SeriesRef[]
  if (selectors.length === 0) {
    if (from.allSeries === undefined) throw new UsageError('a server source needs at least one selector')
    series = await from.allSeries()
  } else {
    const seen = new Map<string, SeriesRef>()
    for (const sel of selectors)
      for (const s of await from.listSeries(sel)) seen.set(JSON.stringify([s.metric, s.tags]), s)
    series = [...seen.values()]
  }
  const keys = keysByMetric(series)
  let batch: SeriesInput[] = []
  let inBatch = 0
  let points = 0
  // The span of the points copied per series: verification counts over it, not over the whole
  // requested range, which by default is every storable millisecond.
  const spans: Array<{ min: number; max: number } | undefined> = new Array(series.length)
  for await (const { index, part } of readAllSeries(from, series, keys, range.startMs, range.endMs)) {
    if (part.timestamps.length === 0) continue
    const s = series[index]!
    const span = spans[index]
    spans[index] = {
      min: Math.min(span?.min ?? Number.POSITIVE_INFINITY, part.timestamps[0]!),
      max: Math.max(span?.max ?? Number.NEGATIVE_INFINITY, part.timestamps[part.timestamps.length - 1]!),
    }
    batch.push({ metric: s.metric, tags: s.tags, timestamps: part.timestamps, values: part.values })
    inBatch += part.timestamps.length
    points += part.timestamps.length
    progress.addRow(part.timestamps.length)
    // A write also ends at the default series limit of a request: many small series fill it
    // long before the points do.
    if (inBatch >= batchPoints || batch.length >= DEFAULT_WRITE_LIMITS.maxSeriesPerRequest) {
      await to.sink.send(batch)
      batch = []
      inBatch = 0
    }
  }
  if (batch.length > 0) await to.sink.send(batch)
  await to.sink.finish()

  // Verification: the points of each copied series counted on both sides over the span copied,
  // the series of one span together (a hundred a call).
  const bySpan = new Map<string, number[]>()
  spans.forEach((span, i) => {
    if (span === undefined) return
    const key = `${span.min}:${span.max}`
    const indexes = bySpan.get(key)
    if (indexes === undefined) bySpan.set(key, [i])
    else indexes.push(i)
  })
  const found: Array<{ readonly index: number; readonly text: string }> = []
  for (const indexes of bySpan.values()) {
    const span = spans[indexes[0]!]!
    const group = indexes.map((i) => series[i]!)
    const inSource = await countAllSeries(from, group, keys, span.min, span.max + 1)
    const inDestination = await countAllSeries(to.source, group, keys, span.min, span.max + 1)
    indexes.forEach((index, k) => {
      const s = series[index]!
      if (inSource[k] === inDestination[k]) return
      const name = formatSelector({ metric: s.metric, matchers: s.tags.map((t) => ({ ...t, op: 'eq' as const })) })
      found.push({
        index,
        text: `${name}: ${inSource[k]} points in the source, ${inDestination[k]} in the destination`,
      })
    })
  }
  const mismatches = found.sort((x, y) => x.index - y.index).map((m) => m.text)
  return { series: series.length, points, mismatches }
}

export async function runMigrate(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, FLAGS)
  if (values.help === true) {
    process.stdout.write(MIGRATE_USAGE)
    return 0
  }
  const fromText = stringFlag(values, 'from')
  const toText = stringFlag(values, 'to')
  if (fromText === undefined || toText === undefined) throw new UsageError('v3 migrate needs --from and --to')
  if (fromText === toText) throw new UsageError('--from and --to are the same')
  const selectors = positionals.length === 0 ? [] : selectorsOf(positionals, 'migrate')
  const range = rangeOf(values, ALL_TIME)
  const batchPoints = parseCount('batch-points', stringFlag(values, 'batch-points') ?? '50000')
  if (batchPoints < 1) throw new UsageError('--batch-points must be at least 1')
  const from = await openEndpoint(fromText, values, true)
  let to: Endpoint
  try {
    to = await openEndpoint(toText, values, false)
  } catch (err) {
    await from.close()
    throw err
  }
  const progress = new Progress('migrate', undefined, values.quiet === true)
  const started = performance.now()
  let report: MigrateReport
  try {
    report = await migrate(from.source, { source: to.source, sink: to.sink() }, selectors, range, batchPoints, progress)
  } finally {
    progress.done()
    await to.close()
    await from.close()
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  process.stderr.write(
    `v3 migrate: copied ${report.points} points of ${report.series} series from ${from.label} to ${to.label} in ${seconds} s\n`,
  )
  for (const m of report.mismatches) process.stderr.write(`v3 migrate: count mismatch: ${m}\n`)
  if (report.mismatches.length > 0) {
    process.stderr.write(`v3 migrate: verification failed for ${report.mismatches.length} series\n`)
    return 1
  }
  process.stderr.write(`v3 migrate: verified: every series has as many points in the destination as in the source\n`)
  return 0
}
