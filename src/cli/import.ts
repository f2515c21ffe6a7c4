/**
 * `v3 import <file.csv|->`: streams a CSV file (gzip too) into a server in batches, with memory
 * bounded by one batch plus the batches in flight whatever the size of the file.
 */
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { type SeriesInput, status, V3ClientError } from '../client/index.js'
import { DEFAULT_WRITE_LIMITS } from '../model/limits.js'
import { nameViolation, tagKeyViolation } from '../model/series-key.js'
import type { Precision, Tag } from '../model/types.js'
import { parseCount, UsageError } from './args.js'
import {
  CONNECTION_USAGE,
  CONSISTENCY_FLAG,
  connect,
  consistencyFlag,
  type FlagValues,
  parseCommandArgs,
  stringFlag,
  WRITE_CONSISTENCY_USAGE,
} from './client-command.js'
import { CsvReader, type CsvRecord } from './csv.js'
import { type PointSink, serverSink } from './point-sink.js'
import { Progress } from './progress.js'
import { parsePrecision, parseTimestampCell } from './time.js'
import { parseValue } from './values.js'

export const IMPORT_USAGE = `Usage: v3 import <file.csv|file.csv.gz|-> [options]

Long format (the default): a header metric,timestamp,value,<tag columns…>; an empty tag cell means
the series lacks that tag. Wide format (--wide): timestamp,<tag columns>,<one column per metric>,
naming the tag columns with --tags; an empty metric cell means no point. Timestamps are epoch
integers in --precision, or RFC 3339 (2026-01-01T00:00:00Z). Gzip input is recognised by its bytes.

  --wide                   wide format
  --tags <k1,k2,…>         the tag columns of the wide format (default: none)
  --precision s|ms|us|ns   unit of integer timestamps (default ms)
  --on-error abort|skip    abort: stop at the first bad row (default); skip: report it and go on
  --max-reported <n>       bad rows reported one by one with --on-error skip (default 20)
  --batch-points <n>       points per write message (default 20000)
  --quiet                  no progress output
${WRITE_CONSISTENCY_USAGE}
${CONNECTION_USAGE}
Exit code 0 when every row was written, 1 when any row was rejected or the import stopped.
`

const FLAGS = {
  wide: { type: 'boolean' },
  tags: { type: 'string' },
  precision: { type: 'string' },
  'on-error': { type: 'string' },
  'max-reported': { type: 'string' },
  'batch-points': { type: 'string' },
  quiet: { type: 'boolean' },
  ...CONSISTENCY_FLAG,
} as const

/** How the columns of a file map to series and points. */
export interface Layout {
  readonly wide: boolean
  /** Long: columns of metric, timestamp, value. Wide: timestamp only (the others are -1). */
  readonly metricCol: number
  readonly timestampCol: number
  readonly valueCol: number
  readonly tagCols: ReadonlyArray<{ readonly col: number; readonly key: string }>
  /** Wide: the metric columns. */
  readonly metricCols: ReadonlyArray<{ readonly col: number; readonly metric: string }>
  readonly width: number
}

/**
 * Reads the header; throws UsageError naming the column that is missing or not a valid name. The
 * first column named `metric`, `timestamp` or `value` (wide: `timestamp`, then the first column of
 * each --tags key) is that column; a later one of the same name is a tag (wide: a metric), as
 * export writes a series with a tag of such a name. Any other name twice is an error.
 */
export function layoutOf(header: readonly string[], wide: boolean, wideTags: readonly string[]): Layout {
  const taken = new Set<number>()
  const first = (name: string): number | undefined => {
    const i = header.findIndex((h, col) => h === name && !taken.has(col))
    if (i < 0) return undefined
    taken.add(i)
    return i
  }
  const need = (name: string): number => {
    const i = first(name)
    if (i === undefined) throw new UsageError(`header: no ${name} column (the header is ${header.join(',')})`)
    return i
  }
  const checkName = (name: string, what: 'tag name' | 'metric name'): void => {
    const problem = (what === 'tag name' ? tagKeyViolation : nameViolation)(name, DEFAULT_WRITE_LIMITS.maxNameBytes)
    if (problem !== undefined)
      throw new UsageError(`header: column ${JSON.stringify(name)} is not a valid ${what}: ${problem}`)
  }
  const timestampCol = need('timestamp')
  const tagColumn = (key: string): number => {
    const i = first(key)
    if (i === undefined)
      throw new UsageError(`header: no column for the tag ${key} of --tags (the header is ${header.join(',')})`)
    return i
  }
  const fixed = wide ? [timestampCol, ...wideTags.map(tagColumn)] : [timestampCol, need('metric'), need('value')]
  const rest = header.map((name, col) => ({ name, col })).filter(({ col }) => !taken.has(col))
  const seen = new Set<string>()
  for (const { name } of rest) {
    if (seen.has(name)) throw new UsageError(`header: column ${JSON.stringify(name)} appears twice`)
    seen.add(name)
  }
  if (!wide) {
    const tagCols = rest.map(({ name, col }) => ({ key: name, col }))
    for (const t of tagCols) checkName(t.key, 'tag name')
    return {
      wide,
      metricCol: fixed[1]!,
      timestampCol,
      valueCol: fixed[2]!,
      tagCols,
      metricCols: [],
      width: header.length,
    }
  }
  const tagCols = wideTags.map((key, i) => ({ key, col: fixed[i + 1]! }))
  const metricCols = rest.map(({ name, col }) => ({ metric: name, col }))
  if (metricCols.length === 0) throw new UsageError('header: the wide format needs at least one metric column')
  for (const t of tagCols) checkName(t.key, 'tag name')
  for (const m of metricCols) checkName(m.metric, 'metric name')
  return { wide, metricCol: -1, timestampCol, valueCol: -1, tagCols, metricCols, width: header.length }
}

export interface ParsedPoint {
  readonly metric: string
  readonly tags: Tag[]
  readonly ts: number
  readonly value: number
}

/** A value cell (see values.ts) the gRPC API takes: ±Infinity only remote write stores. */
function cellValue(text: string): number | string {
  const v = parseValue(text)
  if (v === Number.POSITIVE_INFINITY || v === Number.NEGATIVE_INFINITY) {
    return `value ${JSON.stringify(text)}: ±Infinity cannot be written through the gRPC API (v3 migrate copies it between data folders)`
  }
  return v
}

/** The points of one data row, or the reason it is bad. */
export function parseRow(fields: readonly string[], layout: Layout, precision: Precision): ParsedPoint[] | string {
  if (fields.length !== layout.width) return `expected ${layout.width} fields, found ${fields.length}`
  const ts = parseTimestampCell(fields[layout.timestampCol]!, precision)
  if (typeof ts === 'string') return ts
  const tags: Tag[] = []
  for (const { col, key } of layout.tagCols) {
    const value = fields[col]!
    if (value === '') continue
    if (Buffer.byteLength(value) > DEFAULT_WRITE_LIMITS.maxTagValueBytes) {
      return `tag ${key}: value longer than ${DEFAULT_WRITE_LIMITS.maxTagValueBytes} bytes`
    }
    tags.push({ key, value })
  }
  if (!layout.wide) {
    const metric = fields[layout.metricCol]!
    const problem = nameViolation(metric, DEFAULT_WRITE_LIMITS.maxNameBytes)
    if (problem !== undefined) return `metric ${JSON.stringify(metric)}: ${problem}`
    const value = cellValue(fields[layout.valueCol]!)
    if (typeof value === 'string') return value
    return [{ metric, tags, ts, value }]
  }
  const out: ParsedPoint[] = []
  for (const { col, metric } of layout.metricCols) {
    const cell = fields[col]!
    if (cell === '') continue
    const value = cellValue(cell)
    if (typeof value === 'string') return `${metric}: ${value}`
    out.push({ metric, tags, ts, value })
  }
  return out
}

/** One series' points in a batch: values in a Float64Array, which keeps a NaN's bits (an array would not). */
interface BatchSeries {
  readonly metric: string
  readonly tags: Tag[]
  readonly timestamps: number[]
  values: Float64Array
}

/** Points grouped per series until the batch is full. */
class Batch {
  private readonly series = new Map<string, BatchSeries>()
  points = 0
  firstLine = 0
  lastLine = 0

  add(p: ParsedPoint, line: number): void {
    let key = p.metric
    for (const t of p.tags) key += `\u0000${t.key}\u0000${t.value}`
    let s = this.series.get(key)
    if (s === undefined) {
      s = { metric: p.metric, tags: p.tags, timestamps: [], values: new Float64Array(16) }
      this.series.set(key, s)
    }
    const n = s.timestamps.length
    if (n === s.values.length) {
      const grown = new Float64Array(n * 2)
      grown.set(s.values)
      s.values = grown
    }
    s.timestamps.push(p.ts)
    s.values[n] = p.value
    if (this.points === 0) this.firstLine = line
    this.lastLine = line
    this.points++
  }

  get seriesCount(): number {
    return this.series.size
  }

  take(): SeriesInput[] {
    const out = [...this.series.values()].map((s) => ({
      metric: s.metric,
      tags: s.tags,
      timestamps: s.timestamps,
      values: s.values.subarray(0, s.timestamps.length),
    }))
    this.series.clear()
    this.points = 0
    return out
  }
}

/** Bytes from a file or stdin, gunzipped when they start with gzip's magic bytes; counts raw bytes read. */
async function* inputBytes(source: AsyncIterable<Buffer>, onRead: (n: number) => void): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]()
  const first = await it.next()
  if (first.done) return
  async function* raw(): AsyncGenerator<Buffer> {
    onRead(first.value.length)
    yield first.value as Buffer
    for (;;) {
      const next = await it.next()
      if (next.done) return
      onRead(next.value.length)
      yield next.value as Buffer
    }
  }
  const head = first.value as Buffer
  if (head[0] === 0x1f && head[1] === 0x8b) yield* Readable.from(raw()).pipe(createGunzip())
  else yield* raw()
}

interface ImportOptions {
  readonly wide: boolean
  readonly tags: readonly string[]
  readonly precision: Precision
  readonly skip: boolean
  readonly maxReported: number
  readonly batchPoints: number
  readonly quiet: boolean
}

function importOptions(values: FlagValues): ImportOptions {
  const onError = stringFlag(values, 'on-error') ?? 'abort'
  if (onError !== 'abort' && onError !== 'skip') {
    throw new UsageError(`--on-error must be abort or skip, got ${JSON.stringify(onError)}`)
  }
  const tags = (stringFlag(values, 'tags') ?? '').split(',').filter((t) => t !== '')
  const twice = tags.find((t, i) => tags.indexOf(t) !== i)
  if (twice !== undefined) throw new UsageError(`--tags names ${twice} twice`)
  const batchPoints = parseCount('batch-points', stringFlag(values, 'batch-points') ?? '20000')
  if (batchPoints < 1) throw new UsageError('--batch-points must be at least 1')
  return {
    wide: values.wide === true,
    tags,
    precision: parsePrecision(stringFlag(values, 'precision')),
    skip: onError === 'skip',
    maxReported: parseCount('max-reported', stringFlag(values, 'max-reported') ?? '20'),
    batchPoints,
    quiet: values.quiet === true,
  }
}

/** A batch as sent: the CSV lines of its rows and its points. */
interface SentBatch {
  readonly firstLine: number
  readonly lastLine: number
  readonly points: number
}

/**
 * The batch a write-stream failure names (its field begins `messages[i]`, the stream's i-th batch),
 * with the points of the batches before it; undefined for a failure that names none.
 */
function refusedBatch(
  err: unknown,
  sent: readonly SentBatch[],
): { readonly batch: SentBatch; readonly pointsBefore: number } | undefined {
  if (!(err instanceof V3ClientError)) return undefined
  const match = /^messages\[(\d+)\]/.exec(err.violations[0]?.field ?? '')
  const index = match === null ? -1 : Number(match[1])
  const batch = sent[index]
  if (batch === undefined) return undefined
  let pointsBefore = 0
  for (let i = 0; i < index; i++) pointsBefore += sent[i]!.points
  return { batch, pointsBefore }
}

/** Whether a failed call never reached a server: the connection was refused or never made. */
function neverConnected(err: unknown): boolean {
  return (
    err instanceof V3ClientError &&
    err.code === status.UNAVAILABLE &&
    /ECONNREFUSED|No connection established/.test(err.details)
  )
}

/** Reads CSV records from bytes without holding more than one chunk of text. */
async function* csvRecords(bytes: AsyncIterable<Buffer>): AsyncGenerator<CsvRecord> {
  const reader = new CsvReader()
  const decoder = new TextDecoder('utf-8', { fatal: false })
  for await (const chunk of bytes) yield* reader.push(decoder.decode(chunk, { stream: true }))
  yield* reader.push(decoder.decode())
  yield* reader.end()
}

export interface ImportSummary {
  rows: number
  points: number
  rejectedRows: number
  /** Points sent whose storing the server did not confirm: a stream that failed naming no batch. */
  unconfirmed: number
  /** Why the import stopped before the end, and at which line when a row or the CSV was the reason. */
  aborted: { readonly line?: number; readonly reason: string } | undefined
  /** The write's own failure, when a row or the input had stopped the import first. */
  writeFailure?: string
}

/** The import loop, apart from flags and files: records in, batches to the sink, a summary out. */
async function importRecords(
  records: AsyncIterable<CsvRecord>,
  sink: PointSink,
  options: ImportOptions,
  report: (line: string) => void,
  onRow: () => void,
): Promise<ImportSummary> {
  const summary: ImportSummary = { rows: 0, points: 0, rejectedRows: 0, unconfirmed: 0, aborted: undefined }
  const batch = new Batch()
  let layout: Layout | undefined
  /** Every batch sent, in order: message i of the write stream. */
  const sent: SentBatch[] = []
  /** Why the stream failed, naming the lines of the batch it refused when the error names one. */
  const failed = (err: unknown): Error => {
    const refused = refusedBatch(err, sent)
    if (refused === undefined) {
      // The stream counts what it stored only when it ends well: the batches sent may or may not
      // be stored, unless no connection was ever made.
      if (!neverConnected(err)) summary.unconfirmed = sent.reduce((n, b) => n + b.points, 0) - summary.points
      return new Error(`the write failed: ${(err as Error).message}`, { cause: err })
    }
    // The batches before the refused one are stored (WriteStream keeps them), the rest are not.
    summary.points = refused.pointsBefore
    const { firstLine, lastLine } = refused.batch
    return new Error(`the server refused the rows of lines ${firstLine}-${lastLine}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  /** Whether the sink has failed: what ended the loop was then not the input. */
  let sinkFailed = false
  const flush = async (): Promise<void> => {
    if (batch.points === 0) return
    sent.push({ firstLine: batch.firstLine, lastLine: batch.lastLine, points: batch.points })
    try {
      await sink.send(batch.take())
    } catch (err) {
      sinkFailed = true
      throw failed(err)
    }
  }
  try {
    for await (const record of records) {
      if (layout === undefined) {
        if (record.error !== undefined) throw new UsageError(`header: ${record.error}`)
        layout = layoutOf(record.fields, options.wide, options.tags)
        continue
      }
      // A blank line is not a row.
      if (record.fields.length === 1 && record.fields[0] === '') continue
      summary.rows++
      onRow()
      const points = record.error ?? parseRow(record.fields, layout, options.precision)
      if (typeof points === 'string') {
        summary.rejectedRows++
        if (!options.skip) {
          summary.aborted = { line: record.line, reason: points }
          break
        }
        if (summary.rejectedRows <= options.maxReported) report(`line ${record.line}: ${points} (skipped)`)
        continue
      }
      for (const p of points) batch.add(p, record.line)
      if (batch.points >= options.batchPoints || batch.seriesCount >= 5000) await flush()
    }
    await flush()
  } catch (err) {
    if (err instanceof UsageError) throw err
    if (sinkFailed) summary.aborted = { reason: (err as Error).message }
    else {
      // The input failed (a truncated gzip stream, a read error): the rows before it are written.
      summary.aborted = { reason: `cannot read the input: ${(err as Error).message}` }
      await flush().catch((e: unknown) => {
        summary.aborted = { reason: (e as Error).message }
      })
    }
  }
  try {
    const result = await sink.finish()
    summary.points = result.pointsWritten
  } catch (err) {
    // A failure flush() met has already stopped the import; finish() fails with it again. A bad
    // row or the input may have stopped it before: the server's refusal is told as well.
    if (!sinkFailed) {
      if (summary.aborted === undefined) summary.aborted = { reason: failed(err).message }
      else summary.writeFailure = failed(err).message
    }
  }
  if (options.skip && summary.rejectedRows > options.maxReported) {
    report(`… and ${summary.rejectedRows - options.maxReported} more bad rows skipped`)
  }
  if (layout === undefined && summary.aborted === undefined)
    summary.aborted = { reason: 'the input is empty: no header' }
  return summary
}

export async function runImport(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, FLAGS)
  if (values.help === true) {
    process.stdout.write(IMPORT_USAGE)
    return 0
  }
  if (positionals.length !== 1) throw new UsageError('v3 import takes one file name, or - for stdin')
  const options = importOptions(values)
  const consistency = consistencyFlag(values)
  const path = positionals[0]!
  const info = path === '-' ? undefined : await stat(path).catch(() => undefined)
  if (path !== '-' && info === undefined) throw new UsageError(`cannot read ${path}: no such file`)
  if (info?.isDirectory() === true) throw new UsageError(`cannot read ${path}: it is a folder, not a file`)
  const totalBytes = info?.size
  const source: AsyncIterable<Buffer> =
    path === '-' ? process.stdin : createReadStream(path, { highWaterMark: 256 * 1024 })
  const client = await connect(values)
  const progress = new Progress('import', totalBytes, options.quiet)
  const started = performance.now()
  let summary: ImportSummary
  try {
    summary = await importRecords(
      csvRecords(inputBytes(source, (n) => progress.addBytes(n))),
      serverSink(client, { consistency }),
      options,
      (line) => {
        progress.clear()
        process.stderr.write(`v3 import: ${line}\n`)
      },
      () => progress.addRow(),
    )
  } finally {
    progress.done()
    client.close()
  }
  const seconds = (performance.now() - started) / 1000
  const unconfirmed =
    summary.unconfirmed > 0 ? ` (and ${summary.unconfirmed} points sent that the server may have stored)` : ''
  const written = `${summary.points} points written${unconfirmed} from ${summary.rows - summary.rejectedRows} rows`
  const stop = summary.aborted
  if (stop !== undefined) {
    const where = stop.line === undefined ? 'stopped' : `stopped at line ${stop.line}`
    process.stderr.write(`v3 import: ${where}: ${stop.reason}\n`)
  }
  if (summary.writeFailure !== undefined) process.stderr.write(`v3 import: and ${summary.writeFailure}\n`)
  process.stderr.write(
    `v3 import: ${written}, ${summary.rejectedRows} rows rejected, in ${seconds.toFixed(1)} s${stop === undefined ? '' : ' (stopped early)'}\n`,
  )
  return summary.aborted === undefined && summary.rejectedRows === 0 ? 0 : 1
}
