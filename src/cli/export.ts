/**
 * `v3 export '<selector>'…`: writes series as CSV, in the long or wide format that `v3 import`
 * reads, streaming a hundred series a call through QueryStream (see readAllSeries).
 */

import { once } from 'node:events'
import { createWriteStream, rmSync } from 'node:fs'
import { rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { SeriesPoints, SeriesRef } from '../model/types.js'
import { UsageError } from './args.js'
import {
  CONNECTION_USAGE,
  CONSISTENCY_FLAG,
  connect,
  consistencyFlag,
  type FlagValues,
  parseCommandArgs,
  READ_CONSISTENCY_USAGE,
  stringFlag,
} from './client-command.js'
import { csvLine } from './csv.js'
import { parseSelector, SelectorSyntaxError } from './selector.js'
import { ALL_TIME, clientSource, keysByMetric, readAllSeries, type SeriesSource } from './series-source.js'
import { formatTime, parseTimeFlag } from './time.js'
import { formatValue } from './values.js'

export const EXPORT_USAGE = `Usage: v3 export '<selector>'… [options]

Writes the selected series as CSV: long format metric,timestamp,value,<tag columns…> (every tag key
of the selected series is a column; an empty cell means the series lacks the tag), or with --wide
timestamp,<tag columns>,<one column per metric>. \`v3 import\` reads both back.

  --start <time>           inclusive start: RFC 3339, epoch ms, now, or relative like -1h (default: all data)
  --end <time>             exclusive end (default: all data)
  --wide                   wide format; import it with the --tags the export prints
  --time-format ms|rfc3339 timestamps as epoch milliseconds (default) or RFC 3339
  --output <file>          write to a file instead of stdout
${READ_CONSISTENCY_USAGE}
${CONNECTION_USAGE}`

const FLAGS = {
  start: { type: 'string' },
  end: { type: 'string' },
  wide: { type: 'boolean' },
  'time-format': { type: 'string' },
  output: { type: 'string', short: 'o' },
  ...CONSISTENCY_FLAG,
} as const

/** Parses each selector, turning a syntax error into a usage error that points at the column. */
export function selectorsOf(positionals: readonly string[], command: string): ReturnType<typeof parseSelector>[] {
  if (positionals.length === 0) throw new UsageError(`v3 ${command} needs a selector such as 'cpu{host="a"}'`)
  return positionals.map((text) => {
    try {
      return parseSelector(text)
    } catch (err) {
      if (err instanceof SelectorSyntaxError) throw new UsageError(err.pointed())
      throw err
    }
  })
}

/** --start and --end, each defaulting as the command decides. */
export function rangeOf(values: FlagValues, defaults: { startMs: number; endMs: number }) {
  const now = Date.now()
  const start = stringFlag(values, 'start')
  const end = stringFlag(values, 'end')
  const startMs = start === undefined ? defaults.startMs : parseTimeFlag('start', start, now)
  const endMs = end === undefined ? defaults.endMs : parseTimeFlag('end', end, now)
  if (endMs <= startMs) throw new UsageError('--end must be after --start')
  return { startMs, endMs }
}

/**
 * Gathers output lines into writes of about 64 KiB: a write and an await per batch rather than per
 * point, and a wait for 'drain' when the stream's buffer is full, so that memory stays bounded.
 * A failed write (a full disk) stops the export at the next flush with an error naming the output.
 */
class LineBatcher {
  private parts: string[] = []
  private chars = 0
  private failure: Error | undefined

  constructor(
    private readonly out: Writable,
    private readonly name: string,
    private readonly limitChars = 64 * 1024,
  ) {
    out.on('error', (err) => {
      this.failure ??= err
    })
  }

  /** Adds a line; true when the batch is full and flush() should be awaited. */
  add(line: string): boolean {
    this.parts.push(line)
    this.chars += line.length + 1
    return this.chars >= this.limitChars
  }

  async flush(): Promise<void> {
    this.check()
    if (this.parts.length === 0) return
    const ok = this.out.write(`${this.parts.join('\n')}\n`)
    this.parts = []
    this.chars = 0
    if (!ok) await once(this.out, 'drain').catch(() => undefined)
    this.check()
  }

  private check(): void {
    if (this.failure) throw outputError(this.name, this.failure)
  }
}

function outputError(name: string, err: Error): Error {
  return new Error(`cannot write ${name}: ${err.message}`, { cause: err })
}

async function listAll(source: SeriesSource, selectors: ReturnType<typeof parseSelector>[]): Promise<SeriesRef[]> {
  const seen = new Map<string, SeriesRef>()
  for (const selector of selectors) {
    for (const s of await source.listSeries(selector)) seen.set(JSON.stringify([s.metric, s.tags]), s)
  }
  return [...seen.values()]
}

export interface ExportOptions {
  readonly startMs: number
  readonly endMs: number
  readonly wide: boolean
  readonly rfc3339: boolean
}

/** Writes the series as CSV; returns the tag columns (which the wide format's import needs). */
export async function exportCsv(
  source: SeriesSource,
  selectors: ReturnType<typeof parseSelector>[],
  out: Writable,
  options: ExportOptions,
  /** The output as messages name it: its path, or standard output. */
  outName = 'the output',
): Promise<{ tagKeys: string[]; points: number }> {
  const series = await listAll(source, selectors)
  const keys = keysByMetric(series)
  const tagKeys = [...new Set(series.flatMap((s) => s.tags.map((t) => t.key)))].sort()
  const time = (ms: number): string => (options.rfc3339 ? formatTime(ms) : String(ms))
  let points = 0
  const lines = new LineBatcher(out, outName)
  if (!options.wide) {
    lines.add(csvLine(['metric', 'timestamp', 'value', ...tagKeys]))
    for await (const { index, part } of readAllSeries(source, series, keys, options.startMs, options.endMs)) {
      const s = series[index]!
      const tags = tagKeys.map((k) => s.tags.find((t) => t.key === k)?.value ?? '')
      for (let i = 0; i < part.timestamps.length; i++) {
        if (lines.add(csvLine([s.metric, time(part.timestamps[i]!), formatValue(part.values[i]!), ...tags]))) {
          await lines.flush()
        }
      }
      points += part.timestamps.length
    }
    await lines.flush()
    return { tagKeys, points }
  }
  // Wide: one row per timestamp and tag set, one column per metric. The points of one tag set
  // (every metric of it) are held in memory to be joined by timestamp.
  const metrics = [...keys.keys()].sort()
  const bySet = new Map<string, SeriesRef[]>()
  for (const s of series) {
    const id = JSON.stringify(tagKeys.map((k) => s.tags.find((t) => t.key === k)?.value ?? ''))
    bySet.set(id, [...(bySet.get(id) ?? []), s])
  }
  lines.add(csvLine(['timestamp', ...tagKeys, ...metrics]))
  for (const [id, members] of bySet) {
    const tagValues = JSON.parse(id) as string[]
    const rows = new Map<number, string[]>()
    for await (const { index, part } of readAllSeries(source, members, keys, options.startMs, options.endMs)) {
      addWide(rows, part, metrics.indexOf(members[index]!.metric), metrics.length)
      points += part.timestamps.length
    }
    for (const ts of [...rows.keys()].sort((a, b) => a - b)) {
      if (lines.add(csvLine([time(ts), ...tagValues, ...rows.get(ts)!]))) await lines.flush()
    }
  }
  await lines.flush()
  return { tagKeys, points }
}

function addWide(rows: Map<number, string[]>, part: SeriesPoints, col: number, width: number): void {
  for (let i = 0; i < part.timestamps.length; i++) {
    const ts = part.timestamps[i]!
    let row = rows.get(ts)
    if (row === undefined) {
      row = new Array<string>(width).fill('')
      rows.set(ts, row)
    }
    row[col] = formatValue(part.values[i]!)
  }
}

export async function runExport(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, FLAGS)
  if (values.help === true) {
    process.stdout.write(EXPORT_USAGE)
    return 0
  }
  const selectors = selectorsOf(positionals, 'export')
  const range = rangeOf(values, ALL_TIME)
  const timeFormat = stringFlag(values, 'time-format') ?? 'ms'
  if (timeFormat !== 'ms' && timeFormat !== 'rfc3339') throw new UsageError('--time-format must be ms or rfc3339')
  const consistency = consistencyFlag(values)
  const outputPath = stringFlag(values, 'output')
  const file = outputPath === undefined ? undefined : await openOutput(outputPath)
  const out: Writable = file?.stream ?? process.stdout
  const outName = outputPath ?? 'standard output'
  let exported: { tagKeys: string[]; points: number } | undefined
  try {
    const client = await connect(values)
    try {
      exported = await exportCsv(
        clientSource(client, { consistency }),
        selectors,
        out,
        { ...range, wide: values.wide === true, rfc3339: timeFormat === 'rfc3339' },
        outName,
      )
    } finally {
      client.close()
    }
    // A file is closed before the summary: its last bytes are written (or fail) at the close.
    await file?.commit().catch((err: Error) => {
      throw outputError(outName, err)
    })
  } finally {
    if (exported === undefined || file?.committed === false) await file?.abandon()
  }
  process.stderr.write(`v3 export: ${exported.points} points\n`)
  if (values.wide === true)
    process.stderr.write(`v3 export: import with: v3 import --wide --tags '${exported.tagKeys.join(',')}'\n`)
  return 0
}

/**
 * The file --output names, written under a temporary name beside it and renamed to it only once
 * complete: an export that fails or is interrupted leaves no partial file that an import would
 * take for the whole (and an existing file stays as it was).
 */
interface OutputFile {
  readonly stream: Writable
  readonly committed: boolean
  /** Closes the file and gives it its name. */
  commit(): Promise<void>
  /** Closes and removes the temporary file. */
  abandon(): Promise<void>
}

/**
 * Opens the output once its folder takes a file: one that cannot be created (a missing folder, no
 * permission) is a usage error naming it, before any call to the server.
 */
async function openOutput(path: string): Promise<OutputFile> {
  // A device, a pipe or a socket (/dev/stdout, a FIFO) is written as it is: only a file is renamed.
  const special = await stat(path).then(
    (info) => !info.isFile(),
    () => false,
  )
  const temporary = special ? path : join(dirname(path), `.${basename(path)}.${process.pid}.partial`)
  // Interrupted (Ctrl-C, a kill): the temporary file goes, and the exit status is the signal's.
  // Listening before the file exists leaves no moment when a signal would leave it behind.
  let stream: Writable | undefined
  const onSignal = (signal: NodeJS.Signals): void => {
    stream?.destroy()
    if (!special) rmSync(temporary, { force: true })
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15))
  }
  const signals = ['SIGINT', 'SIGTERM'] as const
  for (const signal of signals) process.once(signal, onSignal)
  const detach = (): void => {
    for (const signal of signals) process.off(signal, onSignal)
  }
  const file = createWriteStream(temporary)
  stream = file
  try {
    await once(file, 'open')
  } catch (err) {
    detach()
    // Node's message ends with the temporary name, which is not the user's.
    const reason = (err as Error).message.replace(/, open '.*'$/, '')
    throw new UsageError(`--output ${path}: cannot create the file: ${reason}`)
  }
  let committed = false
  return {
    stream: file,
    get committed() {
      return committed
    },
    async commit() {
      file.end()
      await finished(file)
      if (!special) await rename(temporary, path)
      committed = true
      detach()
    },
    async abandon() {
      detach()
      file.destroy()
      if (!special) await rm(temporary, { force: true })
    },
  }
}
