/** `v3 query`, `v3 series` and `v3 stats`: what an operator types to look at a node. */
import { MAX_ADDITIONAL_SELECTORS } from '../model/limits.js'
import type { AggFunc, SeriesPoints, SeriesRef, Tag } from '../model/types.js'
import { parseDuration, UsageError } from './args.js'
import {
  CONNECTION_USAGE,
  CONSISTENCY_FLAG,
  connect,
  consistencyFlag,
  parseCommandArgs,
  READ_CONSISTENCY_USAGE,
  stringFlag,
} from './client-command.js'
import { csvLine } from './csv.js'
import { rangeOf, selectorsOf } from './export.js'
import { formatSelector } from './selector.js'
import { formatTime } from './time.js'
import { formatValue } from './values.js'

const AGG_FUNCS: readonly AggFunc[] = [
  'count',
  'sum',
  'min',
  'max',
  'avg',
  'first',
  'last',
  'stddev',
  'p50',
  'p90',
  'p95',
  'p99',
]
const FORMATS = ['table', 'csv', 'json'] as const
type Format = (typeof FORMATS)[number]

export const QUERY_USAGE = `Usage: v3 query '<selector>' ['<selector>' …] [options]

The selector is PromQL's: cpu_usage{host="a",region=~"eu-.*"} with =, !=, =~, !~ (regexes anchored).
Several selectors (at most 101) are answered in one call, each as if queried alone, in order.

  --start <time>           inclusive: RFC 3339, epoch ms, now, or relative like -1h (default -1h)
  --end <time>             exclusive (default now)
  --agg <func>             ${AGG_FUNCS.join(', ')}; absent: raw points
  --step <duration>        bucket width, e.g. 1m (default: the whole range is one bucket)
  --group-by <k1,k2>       tags that stay; the others are merged away
  --merge                  with no --group-by: merge every series into one
  --format table|csv|json  aligned table (default), CSV (as v3 export writes), or JSON
${READ_CONSISTENCY_USAGE}
${CONNECTION_USAGE}`

export const SERIES_USAGE = `Usage: v3 series '<selector>' [--format table|json] [--consistency one|quorum|all]

Lists the series the selector matches, one per line as a selector.

${READ_CONSISTENCY_USAGE}
${CONNECTION_USAGE}`

export const STATS_USAGE = `Usage: v3 stats [--format table|json]

Prints the node's engine statistics.

${CONNECTION_USAGE}`

function formatOf(text: string | undefined): Format {
  const f = text ?? 'table'
  if (!(FORMATS as readonly string[]).includes(f))
    throw new UsageError(`--format must be table, csv or json, got ${JSON.stringify(f)}`)
  return f as Format
}

/** Columns padded to their widest cell; numbers right-aligned. */
export function alignedTable(
  header: readonly string[],
  rows: readonly string[][],
  numeric: ReadonlySet<number>,
): string {
  const cellsOf = (row: readonly string[]) => row.map(printable)
  const head = cellsOf(header)
  const body = rows.map(cellsOf)
  // A loop, not Math.max(...cells): spreading a column of a few hundred thousand rows into
  // arguments overflows the call stack.
  const widths = head.map(displayWidth)
  for (const row of body) {
    for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i]!, displayWidth(row[i] ?? ''))
  }
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => {
        const pad = ' '.repeat(widths[i]! - displayWidth(c))
        return numeric.has(i) ? pad + c : c + pad
      })
      .join('  ')
      .trimEnd()
  return `${[line(head), ...body.map(line)].join('\n')}\n`
}

/** Control characters (a line break in a tag value) as escapes: a table row stays one line. */
const CONTROL = /\p{Cc}/gu
const CONTROL_ESCAPES: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

function printable(cell: string): string {
  if (PLAIN.test(cell)) return cell
  return cell.replace(CONTROL, (c) => CONTROL_ESCAPES[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** Printable ASCII, one column a character: the common case, measured without a loop. */
const PLAIN = /^[\x20-\x7e]*$/
/** Code points that take no column: combining marks, zero-width characters, variation selectors. */
const ZERO_WIDTH = /^[\p{M}\u200b-\u200f\u2060\ufeff]$/u
/** East Asian wide and fullwidth ranges, and the emoji blocks: two columns each. */
const WIDE: ReadonlyArray<readonly [number, number]> = [
  [0x1100, 0x115f],
  [0x2e80, 0x303e],
  [0x3041, 0x33ff],
  [0x3400, 0x4dbf],
  [0x4e00, 0x9fff],
  [0xa000, 0xa4cf],
  [0xac00, 0xd7a3],
  [0xf900, 0xfaff],
  [0xfe30, 0xfe4f],
  [0xff00, 0xff60],
  [0xffe0, 0xffe6],
  [0x1f300, 0x1f64f],
  [0x1f900, 0x1f9ff],
  [0x20000, 0x3fffd],
]

/** The columns `text` takes on a terminal: what padding must count, not UTF-16 units. */
export function displayWidth(text: string): number {
  if (PLAIN.test(text)) return text.length
  let width = 0
  for (const c of text) {
    if (ZERO_WIDTH.test(c)) continue
    const cp = c.codePointAt(0)!
    width += WIDE.some(([lo, hi]) => cp >= lo && cp <= hi) ? 2 : 1
  }
  return width
}

function tagValue(tags: readonly Tag[], key: string): string {
  return tags.find((t) => t.key === key)?.value ?? ''
}

/** Renders query results in the chosen format. */
export function renderSeries(series: readonly SeriesPoints[], format: Format): string {
  const keys = [...new Set(series.flatMap((s) => s.tags.map((t) => t.key)))].sort()
  if (format === 'json') {
    const out = series.map((s) => ({
      metric: s.metric,
      tags: Object.fromEntries(s.tags.map((t) => [t.key, t.value])),
      // JSON has no NaN or Infinity (JSON.stringify writes null for each): they go as their cells.
      points: Array.from(s.timestamps, (ts, i) => {
        const v = s.values[i]!
        return [ts, Number.isFinite(v) ? v : formatValue(v)]
      }),
    }))
    return `${JSON.stringify(out, null, 2)}\n`
  }
  const rows: string[][] = []
  for (const s of series) {
    const tags = keys.map((k) => tagValue(s.tags, k))
    for (let i = 0; i < s.timestamps.length; i++) {
      const ts = s.timestamps[i]!
      const v = formatValue(s.values[i]!)
      rows.push(format === 'csv' ? [s.metric, String(ts), v, ...tags] : [s.metric, ...tags, formatTime(ts), v])
    }
  }
  if (format === 'csv') return [csvLine(['metric', 'timestamp', 'value', ...keys]), ...rows.map(csvLine), ''].join('\n')
  return alignedTable(['metric', ...keys, 'time', 'value'], rows, new Set([keys.length + 2]))
}

export async function runQuery(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    start: { type: 'string' },
    end: { type: 'string' },
    agg: { type: 'string' },
    step: { type: 'string' },
    'group-by': { type: 'string' },
    merge: { type: 'boolean' },
    format: { type: 'string' },
    ...CONSISTENCY_FLAG,
  })
  if (values.help === true) {
    process.stdout.write(QUERY_USAGE)
    return 0
  }
  const [selector, ...additionalSelectors] = selectorsOf(positionals, 'query')
  if (additionalSelectors.length > MAX_ADDITIONAL_SELECTORS) {
    throw new UsageError(
      `v3 query takes at most ${MAX_ADDITIONAL_SELECTORS + 1} selectors in one call, got ${positionals.length}`,
    )
  }
  const format = formatOf(stringFlag(values, 'format'))
  const consistency = consistencyFlag(values)
  const now = Date.now()
  const range = rangeOf(values, { startMs: now - 3_600_000, endMs: now })
  const agg = stringFlag(values, 'agg')
  if (agg !== undefined && !(AGG_FUNCS as readonly string[]).includes(agg)) {
    throw new UsageError(`--agg must be one of ${AGG_FUNCS.join(', ')}, got ${JSON.stringify(agg)}`)
  }
  const step = stringFlag(values, 'step')
  const groupBy = (stringFlag(values, 'group-by') ?? '').split(',').filter((k) => k !== '')
  if (agg === undefined && (step !== undefined || groupBy.length > 0 || values.merge === true)) {
    throw new UsageError('--step, --group-by and --merge need --agg')
  }
  if (groupBy.length > 0 && values.merge === true) {
    throw new UsageError('--merge goes without --group-by: --group-by already merges the series that share its tags')
  }
  const client = await connect(values)
  try {
    const result = await client.query(
      {
        selector: selector!,
        additionalSelectors,
        ...range,
        aggregation:
          agg === undefined
            ? undefined
            : {
                func: agg as AggFunc,
                stepMs: step === undefined ? 0 : parseDuration('step', step),
                groupBy,
                mergeSeries: values.merge === true,
              },
      },
      { consistency },
    )
    process.stdout.write(renderSeries(result, format))
  } finally {
    client.close()
  }
  return 0
}

function renderRefs(refs: readonly SeriesRef[], format: Format): string {
  if (format === 'json') {
    const out = refs.map((s) => ({ metric: s.metric, tags: Object.fromEntries(s.tags.map((t) => [t.key, t.value])) }))
    return `${JSON.stringify(out, null, 2)}\n`
  }
  return refs
    .map((s) => formatSelector({ metric: s.metric, matchers: s.tags.map((t) => ({ ...t, op: 'eq' as const })) }))
    .map((line) => `${line}\n`)
    .join('')
}

export async function runSeries(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { format: { type: 'string' }, ...CONSISTENCY_FLAG })
  if (values.help === true) {
    process.stdout.write(SERIES_USAGE)
    return 0
  }
  if (positionals.length !== 1) throw new UsageError('v3 series takes one selector')
  const [selector] = selectorsOf(positionals, 'series')
  const format = formatOf(stringFlag(values, 'format'))
  if (format === 'csv') throw new UsageError('v3 series prints table or json')
  const consistency = consistencyFlag(values)
  const client = await connect(values)
  try {
    const refs = await client.listSeries(selector!, { consistency })
    process.stdout.write(renderRefs(refs, format))
  } finally {
    client.close()
  }
  return 0
}

export async function runStats(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { format: { type: 'string' } })
  if (values.help === true) {
    process.stdout.write(STATS_USAGE)
    return 0
  }
  if (positionals.length !== 0) throw new UsageError('v3 stats takes no arguments')
  const format = formatOf(stringFlag(values, 'format'))
  if (format === 'csv') throw new UsageError('v3 stats prints table or json')
  const client = await connect(values)
  try {
    const s = await client.stats()
    if (format === 'json') {
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`)
      return 0
    }
    const rows = [
      ['series', String(s.series)],
      ['points written', String(s.pointsWritten)],
      ['buffered points', String(s.bufferedPoints)],
      ['hot blocks', String(s.hotBlocks)],
      ['cold runs', String(s.coldRuns)],
      ['cold blocks', String(s.coldBlocks)],
      ['bytes on disk', String(s.bytesOnDisk)],
      ['writes', String(s.writes.count)],
      ['write latency p50 ms', s.writes.p50Ms.toFixed(2)],
      ['write latency p99 ms', s.writes.p99Ms.toFixed(2)],
      ['queries', String(s.queries.count)],
      ['query latency p50 ms', s.queries.p50Ms.toFixed(2)],
      ['query latency p99 ms', s.queries.p99Ms.toFixed(2)],
    ]
    process.stdout.write(alignedTable(['statistic', 'value'], rows, new Set([1])))
  } finally {
    client.close()
  }
  return 0
}
