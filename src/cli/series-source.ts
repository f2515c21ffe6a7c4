/**
 * Reading series out of a server or a data folder, for export and migrate: one series at a time,
 * through QueryStream for a server, splitting the time range whenever a read would exceed the
 * node's points-per-query limit. So any amount of data can be read, and memory holds one chunk.
 */
import { status, type V3Client, V3ClientError } from '../client/index.js'
import type { BasicEngine } from '../engine/basic-engine.js'
import { LimitError } from '../model/errors.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS } from '../model/timestamps.js'
import type { ConsistencyLevel, Selector, SeriesPoints, SeriesRef } from '../model/types.js'
import { exactSelector } from './selector.js'

/** The widest range a query accepts: every storable timestamp. */
export const ALL_TIME = { startMs: MIN_TIMESTAMP_MS, endMs: MAX_TIMESTAMP_MS + 1 } as const

export interface SeriesSource {
  listSeries(selector: Selector): Promise<SeriesRef[]>
  /** Every series, where the source can list them without a metric (a data folder can; a server cannot). */
  allSeries?(): Promise<SeriesRef[]>
  /** Raw points in [startMs, endMs), in chunks. */
  read(selector: Selector, startMs: number, endMs: number): AsyncIterable<SeriesPoints[]>
  /** Points per series in [startMs, endMs). */
  count(selector: Selector, startMs: number, endMs: number): Promise<SeriesPoints[]>
}

/** Reads from a server, every call at the consistency level given (absent: the server's default). */
export function clientSource(
  client: V3Client,
  options: { readonly consistency?: ConsistencyLevel } = {},
): SeriesSource {
  const read = { consistency: options.consistency }
  return {
    listSeries: (selector) => client.listSeries(selector, read),
    read: (selector, startMs, endMs) => client.queryStream({ selector, startMs, endMs }, read),
    count: (selector, startMs, endMs) =>
      client.query({ selector, startMs, endMs, aggregation: { func: 'count', stepMs: 0 } }, read),
  }
}

export function engineSource(engine: BasicEngine): SeriesSource {
  return {
    listSeries: (selector) => engine.listSeries(selector),
    allSeries: async () => engine.index.all().map((e) => ({ metric: e.metric, tags: e.tags })),
    async *read(selector, startMs, endMs) {
      yield await engine.query({ selector, startMs, endMs })
    },
    count: (selector, startMs, endMs) =>
      engine.query({
        selector,
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

/**
 * The points of one series in [startMs, endMs), in chunks. A read refused for too many points
 * (which a node decides before it sends anything) is retried as two halves of the range.
 */
export async function* readSeries(
  source: SeriesSource,
  series: SeriesRef,
  metricKeys: Iterable<string>,
  startMs: number,
  endMs: number,
): AsyncGenerator<SeriesPoints> {
  const selector = exactSelector(series.metric, series.tags, metricKeys)
  let received = false
  try {
    for await (const chunk of source.read(selector, startMs, endMs)) {
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
