import type { ChainedBatch } from '@nxtedition/rocksdb'
import {
  ENCODING_SERIES_DEF,
  INDEX_PREFIX_METRIC_RETIRED,
  INDEX_PREFIX_SERIES,
  INDEX_PREFIX_TAG_RETIRED,
} from '../codec/schema.js'
import { bug } from '../model/errors.js'
import { type CompiledSelector, compileSelector } from '../model/matcher.js'
import { RegexCache } from '../model/regex.js'
import {
  canonicalSeriesKey,
  decodeSeriesDef,
  encodeSeriesDef,
  seriesIdFromKey,
  seriesToken,
  tokenOfSeriesId,
} from '../model/series-key.js'
import type { Selector, Tag } from '../model/types.js'
import { type CacheCounters, OldestKeys, selectorKey } from './caches.js'
import type { RocksStore } from './rocks-store.js'
import { runToEnd, type Slicer } from './slicer.js'

/** A known series. `handle` is a small in-process number; `id` is the stable 8-byte id on disk. */
export interface SeriesEntry {
  readonly handle: number
  readonly id: Buffer
  readonly idHex: string
  readonly key: string
  readonly metric: string
  readonly tags: readonly Tag[]
}

/**
 * The series handles of one tag value: the handle itself while it is the only one, a Set from the
 * second on. Many tags have a value per series (a host, a container id), and a Set of one handle
 * costs 160 bytes of heap, about a third of what the index holds per series.
 */
type Handles = number | Set<number>

interface MetricPostings {
  readonly all: Set<number>
  /** tag key -> tag value -> series handles. */
  readonly byTag: Map<string, Map<string, Handles>>
}

function addHandle(values: Map<string, Handles>, value: string, handle: number): void {
  const handles = values.get(value)
  if (handles === undefined) values.set(value, handle)
  else if (typeof handles === 'number') values.set(value, new Set([handles, handle]))
  else handles.add(handle)
}

function removeHandle(values: Map<string, Handles> | undefined, value: string, handle: number): void {
  const handles = values?.get(value)
  if (values === undefined || handles === undefined) return
  if (typeof handles === 'number') {
    if (handles === handle) values.delete(value)
  } else if (handles.delete(handle) && handles.size === 0) values.delete(value)
}

/** The handles of a tag value as a set to intersect; empty when the value has none. */
function handleSet(handles: Handles | undefined): ReadonlySet<number> {
  if (handles === undefined) return new Set()
  return typeof handles === 'number' ? new Set([handles]) : handles
}

const COLLISION_ATTEMPTS = 16

/**
 * What the resolved-selector cache may hold, in bytes: a key costs its length (twice, as V8 may
 * keep it in two-byte form) and a resolved list 8 bytes per series. Bounded by bytes rather than
 * by entries, since a hostile client can send selectors of 100 KB each.
 */
const SELECT_CACHE_BYTES = 16 * 1024 * 1024
/** Selectors with a longer key are resolved every time: dashboards do not send such selectors. */
const MAX_CACHED_SELECTOR_CHARS = 8192
/** Candidates checked between two yields of a selector resolution. */
const CANDIDATES_PER_STEP = 4096
/** The metric of a selector of any metric; no series has it, since metric names are not empty. */
const ANY_METRIC = ''

interface CachedSelection {
  readonly metric: string
  readonly entries: SeriesEntry[]
  readonly bytes: number
}

/**
 * Series ids and the inverted index. Every series has a definition record ('S' + id) and posting
 * records ('M' metric, 'T' metric/key/value) in the index family; open() loads them into memory,
 * reading the index family only, never the data.
 */
export class SeriesIndex {
  private readonly entries: Array<SeriesEntry | undefined> = []
  private readonly byKey = new Map<string, SeriesEntry>()
  private readonly byIdHex = new Map<string, SeriesEntry>()
  private readonly byMetric = new Map<string, MetricPostings>()
  /** Ring tokens by handle (see tokenOf), NaN where not known yet. */
  private tokens = new Float64Array(0)
  private liveCount = 0
  /**
   * Resolved selectors, least recently used first, bounded by SELECT_CACHE_BYTES; those of a metric
   * are dropped whenever a series of that metric appears or goes (selectKeys finds them).
   */
  private readonly selectCache = new Map<string, CachedSelection>()
  private readonly oldestSelection = new OldestKeys(this.selectCache)
  private readonly selectKeys = new Map<string, Set<string>>()
  private selectBytes = 0
  /** Bumped whenever a series of the metric appears or goes; only metrics that have series. */
  private readonly versions = new Map<string, number>()
  readonly selectCounters: CacheCounters = { hits: 0, misses: 0 }
  /** Compiled regex matchers, shared by every selector this index resolves. */
  readonly regexes = new RegexCache()

  constructor(private readonly store: RocksStore) {}

  get size(): number {
    return this.liveCount
  }

  async load(): Promise<void> {
    const column = this.store.columns.index
    await this.dropPostingRecords()
    await this.store.scan(
      { gte: Buffer.from([INDEX_PREFIX_SERIES]), lt: Buffer.from([INDEX_PREFIX_SERIES + 1]), column },
      (page) => {
        for (const [key, value] of page) {
          if (value[0] !== ENCODING_SERIES_DEF) {
            throw new Error(`cannot load series ${key.subarray(1).toString('hex')}: unknown encoding ${value[0]}`)
          }
          const def = decodeSeriesDef(value.subarray(1))
          const id = Buffer.from(key.subarray(1))
          this.register(id, canonicalSeriesKey(def.metric, def.tags), def.metric, def.tags)
        }
      },
    )
  }

  get(key: string): SeriesEntry | undefined {
    return this.byKey.get(key)
  }

  byId(id: Buffer): SeriesEntry | undefined {
    return this.byIdHex.get(id.toString('hex'))
  }

  byHandle(handle: number): SeriesEntry | undefined {
    return this.entries[handle]
  }

  /** One past the largest handle given out: handles count up from 0 and are never reused. */
  get handleEnd(): number {
    return this.entries.length
  }

  all(): SeriesEntry[] {
    return this.entries.filter((e): e is SeriesEntry => e !== undefined)
  }

  /**
   * Returns the series for a canonical key, creating it (in memory, and its records in `batch`) when
   * new. A hash collision with a different series takes the next candidate id; the definition record
   * keeps the full key, so a collision is always detected.
   */
  ensure(
    key: string,
    metric: string,
    tags: readonly Tag[],
    batch: ChainedBatch,
  ): { entry: SeriesEntry; created: boolean } {
    const known = this.byKey.get(key)
    if (known) return { entry: known, created: false }
    // The usual id (attempt 0) begins with the series' ring token: kept, so it is never hashed again.
    let token: number | undefined
    for (let attempt = 0; attempt < COLLISION_ATTEMPTS; attempt++) {
      const id = seriesIdFromKey(key, attempt)
      token ??= tokenOfSeriesId(id)
      if (this.byIdHex.has(id.toString('hex'))) continue
      const entry = this.register(id, key, metric, tags)
      this.keepToken(entry.handle, token)
      this.writeRecords(entry, batch)
      return { entry, created: true }
    }
    throw bug(`${COLLISION_ATTEMPTS} series id collisions in a row for ${metric}`)
  }

  /**
   * The ring token of a series, seriesToken(entry.key): a cluster node narrows its reads, repairs
   * and moves to token ranges, and hashing every series' key for each of them cost seconds a read at
   * 150,000 series. Known from the id for a series created here, hashed once for a loaded one.
   */
  tokenOf(entry: SeriesEntry): number {
    let token = this.tokens[entry.handle] ?? Number.NaN
    if (Number.isNaN(token)) {
      token = seriesToken(entry.key)
      this.keepToken(entry.handle, token)
    }
    return token
  }

  private keepToken(handle: number, token: number): void {
    if (handle >= this.tokens.length) {
      const grown = new Float64Array(Math.max(1024, handle + 1, this.tokens.length * 2)).fill(Number.NaN)
      grown.set(this.tokens)
      this.tokens = grown
    }
    this.tokens[handle] = token
  }

  /** Undoes ensure() of series whose write failed, so memory matches disk. */
  forget(entry: SeriesEntry): void {
    if (this.entries[entry.handle] !== entry) return
    this.dropSelections(entry.metric)
    this.entries[entry.handle] = undefined
    this.byKey.delete(entry.key)
    this.byIdHex.delete(entry.idHex)
    this.liveCount--
    const postings = this.byMetric.get(entry.metric)
    if (!postings) return
    postings.all.delete(entry.handle)
    for (const tag of entry.tags) removeHandle(postings.byTag.get(tag.key), tag.value, entry.handle)
    if (postings.all.size === 0) this.byMetric.delete(entry.metric)
  }

  /** Deletes the series' records in `batch` and forgets it. */
  remove(entry: SeriesEntry, batch: ChainedBatch): void {
    const column = this.store.columns.index
    batch._del(seriesKey(entry.id), { column })
    this.forget(entry)
  }

  /**
   * Resolves a selector through the postings: the smallest posting list of the equality matchers
   * is intersected with the others; the remaining matchers are checked on the candidates only.
   */
  select(selector: Selector): SeriesEntry[] {
    return runToEnd(this.selectSteps(selector))
  }

  /**
   * select() for a call on the event loop: a metric with a huge posting list is checked in slices,
   * so other calls run in between and a cancelled call stops.
   */
  selectSliced(selector: Selector, slicer: Slicer): Promise<SeriesEntry[]> {
    return slicer.drive(this.selectSteps(selector))
  }

  private *selectSteps(selector: Selector): Generator<void, SeriesEntry[], void> {
    const key = selectorKey(selector)
    const cached = this.selectCache.get(key)
    if (cached) {
      // Map order is the LRU order: a hit moves the entry to the end.
      this.selectCache.delete(key)
      this.selectCache.set(key, cached)
      this.selectCounters.hits++
      return cached.entries
    }
    this.selectCounters.misses++
    const version = this.metricVersion(selector.metric)
    const out = yield* this.resolve(selector)
    // A series of the metric that appeared or went while the resolution yielded makes it stale. A
    // selector of any metric ('') is kept under ANY_METRIC, which every change of a series drops.
    const known = selector.metric === ANY_METRIC || this.byMetric.has(selector.metric)
    if (known && this.metricVersion(selector.metric) === version) {
      this.remember(key, selector.metric, out)
    }
    return out
  }

  private remember(key: string, metric: string, entries: SeriesEntry[]): void {
    if (key.length > MAX_CACHED_SELECTOR_CHARS) return
    const bytes = 2 * key.length + 8 * entries.length + 64
    if (bytes > SELECT_CACHE_BYTES / 4) return
    this.selectCache.set(key, { metric, entries, bytes })
    this.selectBytes += bytes
    let keys = this.selectKeys.get(metric)
    if (!keys) {
      keys = new Set()
      this.selectKeys.set(metric, keys)
    }
    keys.add(key)
    while (this.selectBytes > SELECT_CACHE_BYTES) {
      const oldest = this.oldestSelection.next()
      if (oldest === undefined) break
      this.dropSelection(oldest)
    }
  }

  private dropSelection(key: string): void {
    const cached = this.selectCache.get(key)
    if (!cached) return
    this.selectCache.delete(key)
    this.selectBytes -= cached.bytes
    const keys = this.selectKeys.get(cached.metric)
    keys?.delete(key)
    if (keys?.size === 0) this.selectKeys.delete(cached.metric)
  }

  /**
   * A series of this metric appears or goes: its resolved selectors may differ now, and so may those
   * of any metric (kept under ANY_METRIC).
   */
  private dropSelections(metric: string): void {
    for (const name of [metric, ANY_METRIC]) {
      this.versions.set(name, this.metricVersion(name) + 1)
      const keys = this.selectKeys.get(name)
      if (keys) for (const key of [...keys]) this.dropSelection(key)
    }
  }

  private metricVersion(metric: string): number {
    return this.versions.get(metric) ?? 0
  }

  /**
   * The entries a selector matches, sorted by key. A selector of one metric looks at that metric's
   * postings only; one of any metric ('' without an equality matcher on __name__) tests every
   * metric's name against the __name__ matchers and then resolves each metric that passes as a
   * selector of that metric would be.
   */
  private *resolve(selector: Selector): Generator<void, SeriesEntry[], void> {
    const compiled = compileSelector(selector, { regexes: this.regexes })
    // A copy of the names: metrics may appear or go while the resolution yields.
    const metrics = compiled.onlyMetric !== undefined ? [compiled.onlyMetric] : [...this.byMetric.keys()]
    const out: SeriesEntry[] = []
    const progress = { checked: 0 }
    for (const metric of metrics) {
      if (++progress.checked % CANDIDATES_PER_STEP === 0) yield
      if (!compiled.matchesMetric(metric)) continue
      const postings = this.byMetric.get(metric)
      if (postings) yield* this.resolveMetric(compiled, postings, out, progress)
    }
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    return out
  }

  /** Adds to `out` the series of one metric's postings that pass the selector's tag matchers. */
  private *resolveMetric(
    compiled: CompiledSelector,
    postings: MetricPostings,
    out: SeriesEntry[],
    progress: { checked: number },
  ): Generator<void, void, void> {
    const lists: ReadonlySet<number>[] = []
    for (const eq of compiled.positiveEquals) {
      const list = handleSet(postings.byTag.get(eq.key)?.get(eq.value))
      if (list.size === 0) return
      lists.push(list)
    }
    for (const set of compiled.positiveSets) {
      const byValue = postings.byTag.get(set.key)
      const union = new Set<number>()
      for (const value of set.values) {
        for (const handle of handleSet(byValue?.get(value))) {
          if (++progress.checked % CANDIDATES_PER_STEP === 0) yield
          union.add(handle)
        }
      }
      if (union.size === 0) return
      lists.push(union)
    }
    lists.sort((a, b) => a.size - b.size)
    const base = lists[0] ?? postings.all
    // A copy: the postings may change while the resolution yields.
    outer: for (const handle of [...base]) {
      if (++progress.checked % CANDIDATES_PER_STEP === 0) yield
      for (let i = 1; i < lists.length; i++) if (!lists[i]?.has(handle)) continue outer
      const entry = this.entries[handle]
      if (entry && compiled.matches(entry.tags)) out.push(entry)
    }
  }

  private register(id: Buffer, key: string, metric: string, tags: readonly Tag[]): SeriesEntry {
    this.dropSelections(metric)
    const entry: SeriesEntry = { handle: this.entries.length, id, idHex: id.toString('hex'), key, metric, tags }
    this.entries.push(entry)
    this.byKey.set(key, entry)
    this.byIdHex.set(entry.idHex, entry)
    this.liveCount++
    let postings = this.byMetric.get(metric)
    if (!postings) {
      postings = { all: new Set(), byTag: new Map() }
      this.byMetric.set(metric, postings)
    }
    postings.all.add(entry.handle)
    for (const tag of tags) {
      let values = postings.byTag.get(tag.key)
      if (!values) {
        values = new Map()
        postings.byTag.set(tag.key, values)
      }
      addHandle(values, tag.value, entry.handle)
    }
    return entry
  }

  private writeRecords(entry: SeriesEntry, batch: ChainedBatch): void {
    const column = this.store.columns.index
    const def = encodeSeriesDef(entry.metric, entry.tags)
    batch._put(seriesKey(entry.id), Buffer.concat([Buffer.from([ENCODING_SERIES_DEF]), def]), { column })
  }

  /**
   * Removes the metric and tag posting records that data folders written before they were retired
   * still hold: nothing reads them (the postings are rebuilt in memory from the definitions), and
   * they cost a record per tag of every series. One range delete each, only where some exist.
   */
  private async dropPostingRecords(): Promise<void> {
    const column = this.store.columns.index
    for (const prefix of [INDEX_PREFIX_METRIC_RETIRED, INDEX_PREFIX_TAG_RETIRED]) {
      const range = { gte: Buffer.from([prefix]), lt: Buffer.from([prefix + 1]), column }
      const it = this.store.db.iterator({ ...range, limit: 1, values: false })
      let found = false
      try {
        found = (await it.nextv(1)).length > 0
      } finally {
        await it.close()
      }
      if (found) await this.store.db.clear(range)
    }
  }
}

function seriesKey(id: Buffer): Buffer {
  return Buffer.concat([Buffer.from([INDEX_PREFIX_SERIES]), id])
}
