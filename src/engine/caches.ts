import type { RunSummaryWithSpan } from '../codec/cold-value.js'
import { blockOfKey } from '../codec/row-key.js'
import type { Aggregation, QueryRequest, Selector, SeriesPoints } from '../model/types.js'
import type { PointRun } from './head.js'

/** Hits and misses of one cache, for stats and /metrics. */
export interface CacheCounters {
  hits: number
  misses: number
}

/** A normalized, order-independent key of a selector. */
export function selectorKey(selector: Selector): string {
  const matchers = selector.matchers.map((m) => `${m.op}\u0000${m.key}\u0000${m.value}`).sort()
  return `${selector.metric}\u0001${matchers.join('\u0001')}`
}

function aggregationKey(agg: Aggregation | undefined): string {
  if (!agg) return ''
  return `${agg.func}/${agg.stepMs}/${[...agg.groupBy].sort().join(',')}/${agg.mergeSeries}`
}

/** The key of a query result: two requests with the same key have the same answer. */
export function queryKey(request: QueryRequest): string {
  const f = request.valueFilter
  return [
    selectorKey(request.selector),
    request.startMs,
    request.endMs,
    aggregationKey(request.aggregation),
    f ? `${f.op}${f.value}` : '',
  ].join('\u0002')
}

/**
 * The keys of a Map, oldest first, one at a time as an eviction takes them. A Map deletes by leaving
 * a hole, which it clears only when it rehashes; a fresh keys() for every eviction steps over all
 * the holes of the keys evicted or moved since, a walk that grows with every eviction. One iterator
 * kept across evictions steps over each hole once: every key before it was taken or moved to the
 * end, where the iterator meets it again.
 */
export class OldestKeys<K> {
  private keys: Iterator<K> | undefined

  constructor(private readonly map: Map<K, unknown>) {}

  /** The oldest key, or undefined when the Map is empty; the caller deletes or moves it. */
  next(): K | undefined {
    this.keys ??= this.map.keys()
    const next = this.keys.next()
    if (!next.done) return next.value
    // Every key placed before the iterator reached the end was passed; begin again.
    this.keys = this.map.keys()
    const first = this.keys.next()
    return first.done ? undefined : first.value
  }
}

interface ResultEntry {
  readonly result: SeriesPoints[]
  readonly handles: readonly number[]
  readonly metric: string
  readonly startMs: number
  readonly endMs: number
  /** What the entry weighs against the budget, in points (16 bytes each): see resultCost(). */
  readonly points: number
}

/** Queries with a longer key are never cached: a hostile selector can be 100 KB long. */
const MAX_CACHED_KEY_CHARS = 8192

/**
 * What a result costs to keep, in points of 16 bytes: the points its arrays keep alive (a result
 * may be a view of a larger decoded run, which stays in memory with it), its key (twice its
 * length, as V8 may keep it in two-byte form), and the objects around each series and the entry.
 * So an empty result of a long selector is no longer free, and entries are bounded by bytes.
 * Undefined when it costs more than `most`: that is known from the points alone, before the
 * arrays' buffers are looked at, which moves each small array's contents off the heap (a raw
 * result of 150,000 series spent 0.4-0.5 s here, to find it was too large to keep).
 */
function resultCost(key: string, result: readonly SeriesPoints[], handles: number, most: number): number | undefined {
  const around = 2 * key.length + 8 * handles + 256
  let bytes = around
  for (const s of result) bytes += 16 * s.timestamps.length + 128
  if (bytes > 16 * most) return undefined
  bytes = around
  for (const s of result) bytes += s.timestamps.buffer.byteLength + s.values.buffer.byteLength + 128
  return bytes > 16 * most ? undefined : Math.ceil(bytes / 16)
}

/**
 * Results of recent queries, keyed by the normalized request. An entry is dropped exactly when a
 * write touches one of its series inside its range, when a series of its metric appears or goes,
 * or when retention has started to hide part of its range. A query that raced with such a change
 * does not store its result: every change gets a sequence number, and a result is stored only if
 * none of its series (and not its metric) changed after the query began.
 */
export class ResultCache {
  readonly counters: CacheCounters = { hits: 0, misses: 0 }
  private readonly entries = new Map<string, ResultEntry>()
  private readonly oldest = new OldestKeys(this.entries)
  private readonly byHandle = new Map<number, Set<string>>()
  private readonly byMetric = new Map<string, Set<string>>()
  private readonly changedAt = new Map<number, number>()
  private readonly metricChangedAt = new Map<string, number>()
  private seq = 0
  private points = 0

  constructor(
    /** Points kept at most, over all entries; 0 disables the cache. */
    private readonly maxPoints: number,
  ) {}

  /** Whether the cache keeps anything: a disabled one (0 points) is not worth a key. */
  get enabled(): boolean {
    return this.maxPoints > 0
  }

  /** A lookup a disabled cache answers without a key: counted as a miss, as get() would. */
  miss(): undefined {
    this.counters.misses++
    return undefined
  }

  /** A token to pass to set(): the sequence when the query began. */
  begin(): number {
    return this.seq
  }

  get(key: string, retentionCutoffMs: number): SeriesPoints[] | undefined {
    const entry = this.entries.get(key)
    if (!entry || entry.startMs < retentionCutoffMs) {
      if (entry) this.remove(key)
      this.counters.misses++
      return undefined
    }
    // Map order is the LRU order: a hit moves the entry to the end.
    this.entries.delete(key)
    this.entries.set(key, entry)
    this.counters.hits++
    return entry.result
  }

  set(key: string, token: number, request: QueryRequest, result: SeriesPoints[], handles: readonly number[]): void {
    if (this.maxPoints === 0 || key.length > MAX_CACHED_KEY_CHARS) return
    const points = resultCost(key, result, handles.length, this.maxPoints / 4)
    if (points === undefined) return
    if ((this.metricChangedAt.get(request.selector.metric) ?? -1) >= token) return
    for (const h of handles) if ((this.changedAt.get(h) ?? -1) >= token) return
    this.remove(key)
    const entry = {
      result,
      handles,
      metric: request.selector.metric,
      startMs: request.startMs,
      endMs: request.endMs,
      points,
    }
    this.entries.set(key, entry)
    this.points += points
    for (const h of handles) addTo(this.byHandle, h, key)
    addTo(this.byMetric, entry.metric, key)
    while (this.points > this.maxPoints || this.entries.size > 4096) {
      const oldest = this.oldest.next()
      if (oldest === undefined) break
      this.remove(oldest)
    }
  }

  /** Points of a series were written or deleted in [fromMs, toMs]. */
  changed(handle: number, fromMs: number, toMs: number): void {
    this.changedAt.set(handle, this.seq++)
    const keys = this.byHandle.get(handle)
    if (!keys) return
    for (const key of [...keys]) {
      const e = this.entries.get(key)
      if (e && e.startMs <= toMs && fromMs < e.endMs) this.remove(key)
    }
  }

  /**
   * The series was deleted and its handle is never used again: its change mark goes. Call after
   * changed() and metricChanged() of the deletion, which already keep a query that began before it
   * from storing its result.
   */
  forget(handle: number): void {
    this.changedAt.delete(handle)
  }

  /**
   * A series of this metric appeared or was removed: any selector of the metric may now differ, and
   * so may any selector of every metric (metric ''), whose results are kept under ''.
   */
  metricChanged(metric: string): void {
    for (const name of [metric, '']) {
      this.metricChangedAt.set(name, this.seq++)
      const keys = this.byMetric.get(name)
      if (keys) for (const key of [...keys]) this.remove(key)
    }
  }

  private remove(key: string): void {
    const e = this.entries.get(key)
    if (!e) return
    this.entries.delete(key)
    this.points -= e.points
    for (const h of e.handles) removeFrom(this.byHandle, h, key)
    removeFrom(this.byMetric, e.metric, key)
  }
}

/** Removes `key` from the set under `k`, and the set once empty: metrics may be any string. */
function removeFrom<K>(map: Map<K, Set<string>>, k: K, key: string): void {
  const set = map.get(k)
  if (!set) return
  set.delete(key)
  if (set.size === 0) map.delete(k)
}

function addTo<K>(map: Map<K, Set<string>>, k: K, key: string): void {
  let set = map.get(k)
  if (!set) {
    set = new Set()
    map.set(k, set)
  }
  set.add(key)
}

/**
 * What an entry costs against the points budget (16 bytes each) besides the points of its run: its
 * key, its objects and the two typed arrays of a run hold about 1.1 KB of heap, a summary about
 * 0.75 KB (measured on Node 20 with 200,000 entries, heap and array buffers after a full GC). A
 * budget counted in points alone let one-point runs hold seventy times what it said.
 */
const RUN_ENTRY_COST = 64
const SUMMARY_COST = 48
/**
 * Blocks and runs of fewer points are not kept: up to 8 points their two arrays stay on the V8 heap
 * and decode in 0.3 µs (from 9 on, the arrays are allocated off it and a decode costs 2.5-7 µs,
 * measured on this project's machine), where keeping them costs a kilobyte of heap, and a read of
 * many sparse series would push everything else out of the cache, at about 10 µs an insertion and
 * eviction.
 */
const MIN_CACHED_RUN_POINTS = 9

/** The series of a row key, as the cache names it: the hex of its 8-byte series id. */
function seriesOf(key: Buffer): string {
  return key.subarray(0, 8).toString('hex')
}

/**
 * One entry of the decoded-block cache: a decoded block or run, or a run's summary. One class, so
 * that every entry has one shape: building each from an object spread of its value cost about
 * 8 µs an insertion (scratch, 24,000 summaries), more than the read it saves.
 */
class CachedEntry {
  prevOfSeries: CachedEntry | undefined = undefined

  constructor(
    readonly key: string,
    readonly series: string,
    readonly run: PointRun | undefined,
    readonly summary: RunSummaryWithSpan | undefined,
    readonly cost: number,
    /** The value of `placed` when the entry last went to the end of the order. */
    public at: number,
    /** The series' other entries, a list whose first entry `bySeries` holds. */
    public nextOfSeries: CachedEntry | undefined,
  ) {}
}

/**
 * Decoded hot blocks and cold runs, keyed by family, series and block, and the summaries of cold
 * runs, so that repeated queries over the same data skip decoding, and aggregations over whole
 * hours skip reading. Bounded by points, an entry's own weight included (see RUN_ENTRY_COST);
 * least recently used go first. Blocks and runs of fewer than MIN_CACHED_RUN_POINTS are not kept:
 * a read of many sparse series would fill the cache with them. Every path that rewrites or deletes
 * stored blocks of a series calls invalidate(), which also bumps the series' generation, so a read
 * that decoded an older version cannot store it afterwards.
 *
 * Callers name a series by the hex of its id, which the series index keeps, so that a lookup
 * builds no string from a row key: an aggregation over hours may look up a thousand summaries.
 */
export class DecodedBlockCache {
  readonly counters: CacheCounters = { hits: 0, misses: 0 }
  /**
   * Decoded blocks and runs (`h`/`c` + series + block) and run summaries (`s` + series + block),
   * least recently used first, nearly: see lookup().
   */
  private readonly entries = new Map<string, CachedEntry>()
  /** The first of each series' entries; each links to the next. */
  private readonly bySeries = new Map<string, CachedEntry>()
  private readonly generations = new Map<string, number>()
  private points = 0
  /** Counts the entries put at the end of the order, ever. */
  private placed = 0
  private readonly oldest = new OldestKeys(this.entries)

  constructor(
    /** Points kept at most, each entry's own cost included; 0 disables the cache. */
    private readonly maxPoints: number,
  ) {}

  generation(seriesHex: string): number {
    return this.generations.get(seriesHex) ?? 0
  }

  /** The decoded hot block ('h') or cold run ('c') of a series at `block`. */
  get(family: 'c' | 'h', seriesHex: string, block: number): PointRun | undefined {
    return this.lookup(family + seriesHex + block)?.run
  }

  set(family: 'c' | 'h', seriesHex: string, block: number, run: PointRun, generation: number): void {
    const cost = run.ts.length + RUN_ENTRY_COST
    if (run.ts.length < MIN_CACHED_RUN_POINTS || cost > this.maxPoints / 8) return
    this.store(family + seriesHex + block, seriesHex, run, undefined, cost, generation)
  }

  /** The summary of the cold run of a series that starts at block `runStart`, without reading it. */
  getSummary(seriesHex: string, runStart: number): RunSummaryWithSpan | undefined {
    return this.lookup(`s${seriesHex}${runStart}`)?.summary
  }

  /** Keeps the summary of a run read by a query that began at `generation`. */
  setSummary(seriesHex: string, runStart: number, summary: RunSummaryWithSpan, generation: number): void {
    this.store(`s${seriesHex}${runStart}`, seriesHex, undefined, summary, SUMMARY_COST, generation)
  }

  /** Keeps the summary of the run just written at row key `key`, so nothing read before can be older. */
  putSummary(key: Buffer, summary: RunSummaryWithSpan): void {
    const series = seriesOf(key)
    this.setSummary(series, blockOfKey(key), summary, this.generation(series))
  }

  /**
   * An entry found goes back to the end of the order only when it has drifted into the older half
   * (more than half the cache was placed after it): moving every hit would cost a Map deletion and
   * insertion per lookup, and entries hit again and again stay far from eviction either way.
   */
  private lookup(k: string): CachedEntry | undefined {
    const e = this.entries.get(k)
    if (!e) {
      this.counters.misses++
      return undefined
    }
    if (this.placed - e.at > this.entries.size >> 1) {
      this.entries.delete(k)
      this.entries.set(k, e)
      e.at = ++this.placed
    }
    this.counters.hits++
    return e
  }

  /** Keeps a run or a summary unless the series' runs changed since `generation` was read. */
  private store(
    k: string,
    series: string,
    run: PointRun | undefined,
    summary: RunSummaryWithSpan | undefined,
    cost: number,
    generation: number,
  ): void {
    if (this.maxPoints === 0) return
    if (this.generation(series) !== generation) return
    this.drop(k)
    const nextOfSeries = this.bySeries.get(series)
    const entry = new CachedEntry(k, series, run, summary, cost, ++this.placed, nextOfSeries)
    if (nextOfSeries) nextOfSeries.prevOfSeries = entry
    this.bySeries.set(series, entry)
    this.entries.set(k, entry)
    this.points += cost
    while (this.points > this.maxPoints) {
      const oldest = this.oldest.next()
      if (oldest === undefined) break
      this.drop(oldest)
    }
  }

  /**
   * These cold runs were rewritten: forget them and their summaries, and bump their series'
   * generations so that a read that began before cannot store what it read. The series' other
   * runs stay cached, so a series written hour after hour keeps its older summaries.
   */
  invalidateRuns(keys: readonly Buffer[]): void {
    for (const key of keys) {
      const series = seriesOf(key)
      const block = blockOfKey(key)
      this.generations.set(series, this.generation(series) + 1)
      this.drop(`c${series}${block}`)
      this.drop(`s${series}${block}`)
    }
  }

  /** Stored blocks or runs of this series changed: forget all it has here. */
  invalidate(seriesHex: string): void {
    this.generations.set(seriesHex, this.generation(seriesHex) + 1)
    for (let e = this.bySeries.get(seriesHex); e; e = e.nextOfSeries) this.drop(e.key)
  }

  private drop(k: string): void {
    const e = this.entries.get(k)
    if (!e) return
    this.entries.delete(k)
    this.points -= e.cost
    const { prevOfSeries: prev, nextOfSeries: next } = e
    if (next) next.prevOfSeries = prev
    if (prev) prev.nextOfSeries = next
    else if (next) this.bySeries.set(e.series, next)
    else this.bySeries.delete(e.series)
  }
}
