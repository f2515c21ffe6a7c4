/**
 * Reading series out of a server or a data folder, for export and migrate: a hundred series a call,
 * through QueryStream for a server, and one series at a time, splitting the time range, whenever a
 * read would exceed the node's points-per-query limit. So any amount of data can be read, and
 * memory holds one call's chunks.
 */
import { status, type V3Client, V3ClientError } from '../client/index.js'
import type { BasicEngine } from '../engine/basic-engine.js'
import { LimitError } from '../model/errors.js'
import { canonicalSeriesKey, sortTags } from '../model/series-key.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS } from '../model/timestamps.js'
import type { ConsistencyLevel, Selector, SeriesPoints, SeriesRef } from '../model/types.js'
import { exactSelector, formatSelector } from './selector.js'

/** The widest range a query accepts: every storable timestamp. */
export const ALL_TIME = { startMs: MIN_TIMESTAMP_MS, endMs: MAX_TIMESTAMP_MS + 1 } as const

export interface SeriesSource {
  listSeries(selector: Selector): Promise<SeriesRef[]>
  /** Every series, where the source can list them without a metric (a data folder can; a server cannot). */
  allSeries?(): Promise<SeriesRef[]>
  /**
   * Raw points in [startMs, endMs), in chunks: the series of each selector in turn, as one query
   * with additional selectors answers them.
   */
  read(selectors: readonly Selector[], startMs: number, endMs: number): AsyncIterable<SeriesPoints[]>
  /** Points per series in [startMs, endMs): the series of each selector in turn. */
  count(selectors: readonly Selector[], startMs: number, endMs: number): Promise<SeriesPoints[]>
}

/** Reads from a server, every call at the consistency level given (absent: the server's default). */
export function clientSource(
  client: V3Client,
  options: { readonly consistency?: ConsistencyLevel } = {},
): SeriesSource {
  const read = { consistency: options.consistency }
  return {
    listSeries: (selector) => client.listSeries(selector, read),
    read: (selectors, startMs, endMs) =>
      client.queryStream({ selector: first(selectors), additionalSelectors: selectors.slice(1), startMs, endMs }, read),
    count: (selectors, startMs, endMs) =>
      client.query(
        {
          selector: first(selectors),
          additionalSelectors: selectors.slice(1),
          startMs,
          endMs,
          aggregation: { func: 'count', stepMs: 0 },
        },
        read,
      ),
  }
}

export function engineSource(engine: BasicEngine): SeriesSource {
  return {
    listSeries: (selector) => engine.listSeries(selector),
    allSeries: async () => engine.index.all().map((e) => ({ metric: e.metric, tags: e.tags })),
    async *read(selectors, startMs, endMs) {
      yield await engine.query({ selector: first(selectors), additionalSelectors: selectors.slice(1), startMs, endMs })
    },
    count: (selectors, startMs, endMs) =>
      engine.query({
        selector: first(selectors),
        additionalSelectors: selectors.slice(1),
        startMs,
        endMs,
        aggregation: { func: 'count', stepMs: 0, groupBy: [], mergeSeries: false },
      }),
  }
}

function isTooManyPoints(err: unknown): boolean {
  return err instanceof LimitError || (err instanceof V3ClientError && err.code === status.RESOURCE_EXHAUSTED)
}

/** The tag keys of each metric among the series, to tell one series from those with more tags. */
export function keysByMetric(series: readonly SeriesRef[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>()
  for (const s of series) {
    let keys = out.get(s.metric)
    if (keys === undefined) {
      keys = new Set()
      out.set(s.metric, keys)
    }
    for (const t of s.tags) keys.add(t.key)
  }
  return out
}

function first(selectors: readonly Selector[]): Selector {
  const selector = selectors[0]
  if (selector === undefined) throw new Error('BUG: a read of no selector')
  return selector
}

/** Series one call asks for: a query answers at most 100 selectors. */
const SERIES_PER_READ = 100

/**
 * The points of every series in [startMs, endMs), in chunks, each with the index of its series in
 * `series`. A hundred series go in one call, one exact selector each (the tag keys of each metric,
 * `keys`, tell a series from those with more tags). A call refused for too many points (which a
 * node decides before it sends anything) is made again series by series, each splitting its range
 * as it must (readSeries).
 */
export async function* readAllSeries(
  source: SeriesSource,
  series: readonly SeriesRef[],
  keys: ReadonlyMap<string, Iterable<string>>,
  startMs: number,
  endMs: number,
): AsyncGenerator<{ readonly index: number; readonly part: SeriesPoints }> {
  for (const { from, group, selectors, indexOf } of callsOf(series, keys)) {
    let received = false
    try {
      for await (const chunk of source.read(selectors, startMs, endMs)) {
        for (const part of chunk) {
          received = true
          yield { index: indexOf(part), part }
        }
      }
    } catch (err) {
      if (received || !isTooManyPoints(err)) throw err
      for (const [i, s] of group.entries()) {
        for await (const part of readSeries(source, s, keys.get(s.metric) ?? [], startMs, endMs)) {
          yield { index: from + i, part }
        }
      }
    }
  }
}

/**
 * The points of each series in [startMs, endMs), by its index in `series`: a hundred series a call
 * (see readAllSeries), and one call per series for a group refused for reading too many points.
 */
export async function countAllSeries(
  source: SeriesSource,
  series: readonly SeriesRef[],
  keys: ReadonlyMap<string, Iterable<string>>,
  startMs: number,
  endMs: number,
): Promise<number[]> {
  const out = new Array<number>(series.length).fill(0)
  for (const { selectors, indexOf } of callsOf(series, keys)) {
    let answers: SeriesPoints[]
    try {
      answers = await source.count(selectors, startMs, endMs)
    } catch (err) {
      if (!isTooManyPoints(err)) throw err
      answers = []
      for (const selector of selectors) answers.push(...(await source.count([selector], startMs, endMs)))
    }
    for (const answer of answers) out[indexOf(answer)] = answer.values[0] ?? 0
  }
  return out
}

/**
 * The series in calls of a hundred: each call's series (from `from` on), their exact selectors, and
 * the index in `series` of a series a call answers (a series not asked for is an error).
 */
function* callsOf(
  series: readonly SeriesRef[],
  keys: ReadonlyMap<string, Iterable<string>>,
): Generator<{
  readonly from: number
  readonly group: readonly SeriesRef[]
  readonly selectors: Selector[]
  readonly indexOf: (answered: SeriesRef) => number
}> {
  for (let from = 0; from < series.length; from += SERIES_PER_READ) {
    const group = series.slice(from, from + SERIES_PER_READ)
    const byKey = new Map(group.map((s, i) => [keyOf(s), from + i]))
    const indexOf = (answered: SeriesRef): number => {
      const index = byKey.get(keyOf(answered))
      if (index === undefined) throw new Error(`the server answered a series not asked for: ${formatRef(answered)}`)
      return index
    }
    const selectors = group.map((s) => exactSelector(s.metric, s.tags, keys.get(s.metric) ?? []))
    yield { from, group, selectors, indexOf }
  }
}

/** A series' identity whatever the order of its tags (see canonicalSeriesKey). */
function keyOf(series: SeriesRef): string {
  return canonicalSeriesKey(series.metric, sortTags(series.tags))
}

function formatRef(series: SeriesRef): string {
  return formatSelector({ metric: series.metric, matchers: series.tags.map((t) => ({ ...t, op: 'eq' as const })) })
}

/**
 * The points of one series in [startMs, endMs), in chunks. A read refused for too many points
 * (which a node decides before it sends anything) is retried as two halves of the range.
 */
async function* readSeries(
  source: SeriesSource,
  series: SeriesRef,
  metricKeys: Iterable<string>,
  startMs: number,
  endMs: number,
): AsyncGenerator<SeriesPoints> {
  const selector = exactSelector(series.metric, series.tags, metricKeys)
  let received = false
  try {
    for await (const chunk of source.read([selector], startMs, endMs)) {
      for (const part of chunk) {
        received = true
        yield part
      }
    }
  } catch (err) {
    if (received || !isTooManyPoints(err) || endMs - startMs < 2) throw err
    const mid = startMs + Math.floor((endMs - startMs) / 2)
    yield* readSeries(source, series, metricKeys, startMs, mid)
    yield* readSeries(source, series, metricKeys, mid, endMs)
  }
}
