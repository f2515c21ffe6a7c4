import { type FieldViolation, LimitError, ValidationError } from './errors.js'
import { isVersion } from './hlc.js'
import { DEFAULT_WRITE_LIMITS, type WriteLimits } from './limits.js'
import { canonicalSeriesKey, nameViolation, sortTags, tagKeyViolation } from './series-key.js'
import { MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, normalizeTimestamp } from './timestamps.js'
import type { Precision, RawTimestamp, SeriesWrite, Tag, WriteBatch } from './types.js'

/** One series of a validated write: every entry of the request for it merged into one. */
export interface NormalizedSeries {
  readonly metric: string
  /** Sorted by key. */
  readonly tags: readonly Tag[]
  /** The canonical series key (see canonicalSeriesKey). */
  readonly key: string
  /** Milliseconds since the epoch, strictly ascending. */
  readonly timestamps: Float64Array
  readonly values: Float64Array
  /**
   * The write version of each point (model/hlc.ts), when any entry of the series carried one;
   * absent on writes without versions (a single node), which is what keeps their path unchanged.
   */
  readonly versions?: Float64Array
  /**
   * The write version of every point, when they all share one, as the points of one entry do (a
   * cluster write's series): instead of versions, which is then absent. No array per series then,
   * which on a cluster node was fresh memory for every point of every write.
   */
  readonly version?: number
}

export interface NormalizedBatch {
  /** In the order each series first appears in the request. */
  readonly series: NormalizedSeries[]
  /** Points left after merging repeated timestamps: what the engine stores. */
  readonly points: number
}

/**
 * Series identities already validated: for a frozen tags array (the wire decoder hands the same
 * frozen array for the same series bytes) and a metric, the sorted tags and canonical key. A frozen
 * array cannot change, so what passed once passes again; one cache per engine, whose limits it
 * was checked against.
 *
 * One record per series: arrays with the same tags in any order, and so the same key, get the same
 * record, so that two entries of a batch are the same series exactly when they have the same
 * record, which inNormalForm checks with a mark on the record instead of a set of keys (the set
 * took half of its time on remote write). The records stay until the cache is full (maxSeries,
 * about 100 bytes each beside the keys, which the series index holds anyway); then it starts
 * empty, and the series it forgot pass full validation once more.
 */
export class ValidatedSeriesCache {
  /**
   * A tags array almost always goes with one metric (a wire decoder's header names both), so its
   * record is kept directly, and a map of records only for an array seen with several metrics:
   * one lookup per entry instead of two on the write path.
   */
  private known = new WeakMap<readonly Tag[], KnownSeries | Map<string, KnownSeries>>()
  private readonly byKey = new Map<string, KnownSeries>()

  constructor(private readonly maxSeries = 1_000_000) {}

  get(metric: string, tags: readonly Tag[]): KnownSeries | undefined {
    const found = this.known.get(tags)
    if (found === undefined) return undefined
    if (found instanceof Map) return found.get(metric)
    return found.metric === metric ? found : undefined
  }

  set(metric: string, tags: readonly Tag[], sorted: readonly Tag[], key: string): void {
    if (!Object.isFrozen(tags)) return
    let record = this.byKey.get(key)
    if (record === undefined) {
      if (this.byKey.size >= this.maxSeries) {
        this.known = new WeakMap()
        this.byKey.clear()
      }
      record = { metric, tags: sorted, key, mark: 0 }
      this.byKey.set(key, record)
    }
    const found = this.known.get(tags)
    if (found === undefined || (!(found instanceof Map) && found.metric === metric)) {
      this.known.set(tags, record)
    } else if (found instanceof Map) {
      found.set(metric, record)
    } else {
      this.known.set(
        tags,
        new Map([
          [found.metric, found],
          [metric, record],
        ]),
      )
    }
  }
}

/** A series identity that passed validation: its metric, sorted tags and canonical key. */
interface KnownSeries {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly key: string
  /** The inNormalForm pass that met this series last (see normalFormPasses). */
  mark: number
}

/** inNormalForm's passes so far: each marks the series it meets with its number, to find one met twice. */
let normalFormPasses = 0

/**
 * One allocation for the normalized points of a whole request, handed out in ranges: a request of
 * a thousand series would otherwise allocate two thousand small ArrayBuffers, each a native
 * allocation that the garbage collector tracks and frees one by one. An entry keeps the offsets of
 * its range, not a view of it: only the series that come out of the merge get views, and their
 * views share the arena's memory, which lives as long as any of them is kept.
 */
class Arena {
  readonly memory: Float64Array
  private used = 0

  constructor(size: number) {
    this.memory = new Float64Array(size)
  }

  /** The offset of `n` values of the arena, taken for one array. */
  take(n: number): number {
    // Each arena is sized for all it hands out (validateWriteBatch's at twice the largest array of
    // each entry, which takes its timestamps and its values once): running past the end is a miscount.
    if (this.used + n > this.memory.length) {
      throw new Error(`BUG: arena of ${this.memory.length} values cannot take ${n} more after ${this.used}`)
    }
    const at = this.used
    this.used += n
    return at
  }
}

/**
 * A ValidationError lists at most this many violations. Validation stops collecting there, which
 * also bounds the work a request full of mistakes costs.
 */
export const MAX_VIOLATIONS = 100

/** How the timestamps of one entry are ordered, as the validating pass finds them. */
type Order = typeof ASCENDING | typeof NON_DECREASING | typeof UNORDERED
const ASCENDING = 0
/** Ascending with repeats next to each other: deduplicated in one pass, without sorting. */
const NON_DECREASING = 1
const UNORDERED = 2

/** Points of one series, columnar; versions, when present, pair with them. */
export interface Points {
  readonly timestamps: Float64Array
  readonly values: Float64Array
  readonly versions?: Float64Array
}

/**
 * An entry that passed validation. Its points stay in the arena, at `at` (timestamps) and `at + n`
 * (values), until the merge makes series of them.
 */
interface ValidEntry {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly key: string
  readonly at: number
  readonly n: number
  readonly order: Order
  /** The entry's write version; 0 for none. */
  readonly version: number
  /** The next entry of the same series in the request, linked by the merge. */
  next: ValidEntry | undefined
  /** On the first entry of a series: its last entry so far, linked by the merge. */
  last: ValidEntry | undefined
}

/**
 * Checks a write request against the rules and limits and returns it normalized: timestamps in
 * milliseconds, each series' points sorted with repeated timestamps reduced to the last one in
 * request order (last write wins), and repeated entries of one series merged. With write versions,
 * the highest version of a timestamp wins and request order breaks ties.
 *
 * Throws LimitError when the request carries more series or points than the limits allow (checked
 * first, before any per-point work), and otherwise one ValidationError listing every violation
 * found (up to MAX_VIOLATIONS), each with a field path such as `series[3].tags[0].key`. Either way
 * nothing of the request may be stored.
 */
export function validateWriteBatch(
  batch: WriteBatch,
  limits: WriteLimits = DEFAULT_WRITE_LIMITS,
  validated?: ValidatedSeriesCache,
): NormalizedBatch {
  const entries = batch.series
  if (entries.length === 0) throw ValidationError.field('series', 'must contain at least one series')
  if (entries.length > limits.maxSeriesPerRequest) {
    throw new LimitError(
      'max_series_per_request',
      limits.maxSeriesPerRequest,
      `cannot write ${entries.length} series in one request`,
    )
  }
  let points = 0
  for (const entry of entries) points += Math.max(entry.timestamps.length, entry.values.length)
  if (points > limits.maxPointsPerRequest) {
    throw new LimitError(
      'max_points_per_request',
      limits.maxPointsPerRequest,
      `cannot write ${points} points in one request`,
    )
  }

  const precision = batch.precision ?? 'ms'
  if (batch.normalized === true && batch.acceptNaN === true && precision === 'ms' && validated !== undefined) {
    const ready = inNormalForm(entries, validated)
    if (ready !== undefined) return ready
  }
  const nonFinite: NonFinite = batch.acceptNaN === true ? ANY_NON_FINITE : limits.allowNaN ? NAN_ONLY : NONE
  const violations: FieldViolation[] = []
  const valid: ValidEntry[] = []
  const arena = new Arena(2 * points)
  for (let i = 0; i < entries.length && violations.length < MAX_VIOLATIONS; i++) {
    const entry = validateEntry(entries[i]!, i, precision, limits, nonFinite, violations, validated, arena)
    if (entry !== undefined) valid.push(entry)
  }
  if (violations.length > 0) throw new ValidationError(violations.slice(0, MAX_VIOLATIONS))
  return mergeEntries(valid, arena.memory)
}

/**
 * The batch as it is, when it is already what validation would make of it: every series known to
 * the cache (so its identity passed before, against the same limits), timestamps in milliseconds,
 * strictly ascending and storable, as many values, and no series twice. That is the form of the
 * parts a coordinating node forwards (and of hints and repairs), which were validated there; an
 * owner then stores their arrays without copying or merging them. Undefined for anything else,
 * which the full validation handles and reports. Only for batches that say they are normalized
 * and whose values are not checked (acceptNaN).
 */
function inNormalForm(entries: readonly SeriesWrite[], validated: ValidatedSeriesCache): NormalizedBatch | undefined {
  const series: NormalizedSeries[] = []
  const pass = ++normalFormPasses
  let points = 0
  for (const entry of entries) {
    const known = validated.get(entry.metric, entry.tags)
    const { timestamps, values } = entry
    if (known === undefined || known.mark === pass) return undefined
    if (!(timestamps instanceof Float64Array) || !(values instanceof Float64Array)) return undefined
    const n = timestamps.length
    if (n === 0 || values.length !== n || !normalTimestamps(timestamps)) return undefined
    const version = entry.version ?? 0
    if (!isVersion(version)) return undefined
    known.mark = pass
    points += n
    series.push(
      version > 0
        ? {
            metric: entry.metric,
            tags: known.tags,
            key: known.key,
            timestamps,
            values,
            version,
          }
        : { metric: entry.metric, tags: known.tags, key: known.key, timestamps, values },
    )
  }
  return { series, points }
}

/**
 * Whether timestamps (those in [from, to) when given) are what a normalized series holds: integer
 * milliseconds the engine can store, strictly ascending. Refuses -0 too, which validation stores as 0.
 */
export function normalTimestamps(timestamps: Float64Array, from = 0, to = timestamps.length): boolean {
  let previous = MIN_TIMESTAMP_MS - 1
  for (let j = from; j < to; j++) {
    const t = timestamps[j] as number
    if (!(t > previous) || !Number.isInteger(t) || Object.is(t, -0)) return false
    previous = t
  }
  return previous <= MAX_TIMESTAMP_MS
}

/** Validates one entry, pushing its violations; returns it normalized when it had none. */
function validateEntry(
  entry: SeriesWrite,
  i: number,
  precision: Precision,
  limits: WriteLimits,
  nonFinite: NonFinite,
  violations: FieldViolation[],
  validated: ValidatedSeriesCache | undefined,
  arena: Arena,
): ValidEntry | undefined {
  const before = violations.length
  const known = validated?.get(entry.metric, entry.tags)
  if (known) return validatePoints(entry, i, precision, nonFinite, violations, before, known.tags, known.key, arena)
  const metricProblem = nameViolation(entry.metric, limits.maxNameBytes)
  if (metricProblem !== undefined) violations.push({ field: `series[${i}].metric`, description: metricProblem })

  const tags = entry.tags
  if (tags.length > limits.maxTagsPerSeries) {
    violations.push({
      field: `series[${i}].tags`,
      description: `has ${tags.length} tags, more than the limit of ${limits.maxTagsPerSeries}`,
    })
  }
  for (let j = 0; j < tags.length && violations.length < MAX_VIOLATIONS; j++) {
    const tag = tags[j]!
    const keyProblem = tagKeyViolation(tag.key, limits.maxNameBytes)
    if (keyProblem !== undefined) violations.push({ field: `series[${i}].tags[${j}].key`, description: keyProblem })
    const valueProblem = tagValueViolation(tag.value, limits.maxTagValueBytes)
    if (valueProblem !== undefined) {
      violations.push({ field: `series[${i}].tags[${j}].value`, description: valueProblem })
    }
  }
  const sortedTags = sortTags(tags)
  if (hasAdjacentKeys(sortedTags)) reportDuplicateKeys(tags, i, violations)
  const identityOk = violations.length === before
  const key = canonicalSeriesKey(entry.metric, sortedTags)
  if (identityOk) {
    // Frozen, so that a later validation of the normalized series (a cluster node handing its
    // own part to its local engine) finds it in that engine's cache too.
    Object.freeze(sortedTags)
    validated?.set(entry.metric, tags, sortedTags, key)
  }
  return validatePoints(entry, i, precision, nonFinite, violations, before, sortedTags, key, arena)
}

/** The points of an entry whose identity is valid (or already reported); the entry when all is well. */
function validatePoints(
  entry: SeriesWrite,
  i: number,
  precision: Precision,
  nonFinite: NonFinite,
  violations: FieldViolation[],
  before: number,
  sortedTags: readonly Tag[],
  key: string,
  arena: Arena,
): ValidEntry | undefined {
  const n = entry.timestamps.length
  const m = entry.values.length
  // Timestamps first, then values, so that an entry's points are one range of the arena.
  const at = arena.take(n)
  const order = validateTimestamps(entry.timestamps, i, precision, violations, arena.memory, at)
  validateValues(entry.values, i, nonFinite, violations, arena.memory, arena.take(m))
  const version = entry.version ?? 0
  if (!isVersion(version)) {
    violations.push({
      field: `series[${i}].version`,
      description: `must be a non-negative integer below 2^53, got ${version}`,
    })
  }
  if (n === 0 && m === 0) {
    violations.push({ field: `series[${i}].timestamps`, description: 'must contain at least one point' })
  } else if (n !== m) {
    violations.push({ field: `series[${i}].values`, description: `has ${m} values for ${n} timestamps` })
  }

  if (violations.length > before) return undefined
  return { metric: entry.metric, tags: sortedTags, key, at, n, order, version, next: undefined, last: undefined }
}

/** Returned by tagValueBytes for a string that has no UTF-8 form. */
const LONE_SURROGATE = -1
/** Returned by tagValueBytes for a string with a NUL, which separates the parts of a series key. */
const HAS_NUL = -2

/**
 * The UTF-8 size of a tag value, counted in one pass without encoding it, or LONE_SURROGATE or
 * HAS_NUL. A JavaScript string can hold an unpaired UTF-16 surrogate, which Buffer would silently
 * replace with U+FFFD, so two different values would become the same stored series.
 */
function tagValueBytes(s: string): number {
  let bytes = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) {
      if (c === 0) return HAS_NUL
      bytes += 1
    } else if (c < 0x800) {
      bytes += 2
    } else if (c < 0xd800 || c > 0xdfff) {
      bytes += 3
    } else {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0
      if (c > 0xdbff || next < 0xdc00 || next > 0xdfff) return LONE_SURROGATE
      bytes += 4
      i++
    }
  }
  return bytes
}

/**
 * The first rule a series' metric and tags break that holds whatever a server's limits are (names,
 * empty or unencodable values, `__name__`, a key twice), or undefined: for a client that batches
 * points of many series together, so that a series every server would refuse never joins a batch.
 */
export function identityViolation(metric: unknown, tags: readonly Tag[]): FieldViolation | undefined {
  const name = nameViolation(metric)
  if (name !== undefined) return { field: 'metric', description: name }
  const keys = new Set<string>()
  for (const [j, tag] of tags.entries()) {
    // A caller without TypeScript may pass anything: say what came rather than that it is empty.
    for (const part of ['key', 'value'] as const) {
      if (typeof tag?.[part] !== 'string') {
        return { field: `tags[${j}].${part}`, description: `must be a string, got ${typeof tag?.[part]}` }
      }
    }
    const key = tagKeyViolation(tag.key)
    if (key !== undefined) return { field: `tags[${j}].key`, description: key }
    const value = tagValueViolation(tag.value, Number.POSITIVE_INFINITY)
    if (value !== undefined) return { field: `tags[${j}].value`, description: value }
    if (keys.has(tag.key)) return { field: `tags[${j}].key`, description: `${JSON.stringify(tag.key)} appears twice` }
    keys.add(tag.key)
  }
  return undefined
}

function tagValueViolation(value: unknown, maxBytes: number): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return 'must not be empty'
  const bytes = tagValueBytes(value)
  if (bytes === LONE_SURROGATE) return 'is not valid UTF-8: it holds an unpaired UTF-16 surrogate'
  if (bytes === HAS_NUL) return 'must not contain the NUL character (U+0000)'
  if (bytes > maxBytes) return `is ${bytes} bytes long, more than the limit of ${maxBytes}`
  return undefined
}

function hasAdjacentKeys(sortedTags: readonly Tag[]): boolean {
  for (let j = 1; j < sortedTags.length; j++) if (sortedTags[j]!.key === sortedTags[j - 1]!.key) return true
  return false
}

/** Names every tag whose key an earlier tag of the same entry already has. Only runs on bad input. */
function reportDuplicateKeys(tags: readonly Tag[], i: number, violations: FieldViolation[]): void {
  const first = new Map<string, number>()
  for (let j = 0; j < tags.length && violations.length < MAX_VIOLATIONS; j++) {
    const key = tags[j]!.key
    const earlier = first.get(key)
    if (earlier === undefined) {
      first.set(key, j)
    } else {
      violations.push({
        field: `series[${i}].tags[${j}].key`,
        description: `repeats the key ${JSON.stringify(key)} of series[${i}].tags[${earlier}]`,
      })
    }
  }
}

/** Writes the entry's timestamps, in milliseconds, to `out` from `at` on; returns their order. */
function validateTimestamps(
  raw: ArrayLike<RawTimestamp>,
  i: number,
  precision: Precision,
  violations: FieldViolation[],
  out: Float64Array,
  at: number,
): Order {
  const n = raw.length
  let order: Order = ASCENDING
  let previous = Number.NEGATIVE_INFINITY
  for (let j = 0; j < n; j++) {
    const ms = normalizeTimestamp(raw[j]!, precision)
    if (Number.isNaN(ms)) {
      violations.push({ field: `series[${i}].timestamps[${j}]`, description: timestampProblem(raw[j]!, precision) })
      if (violations.length >= MAX_VIOLATIONS) break
      continue
    }
    out[at + j] = ms
    if (ms < previous) order = UNORDERED
    else if (ms === previous && order === ASCENDING) order = NON_DECREASING
    previous = ms
  }
  return order
}

function timestampProblem(raw: unknown, precision: Precision): string {
  if (typeof raw === 'bigint' || (typeof raw === 'number' && Number.isSafeInteger(raw))) {
    return `${raw} (${precision}) is outside the storable range of ${MIN_TIMESTAMP_MS} to ${MAX_TIMESTAMP_MS} ms since the epoch`
  }
  if (typeof raw === 'number' && Number.isInteger(raw)) {
    return `${raw} is beyond ±2^53 and not exact as a double; send it as a 64-bit integer`
  }
  return `must be an integer, got ${typeof raw === 'number' ? raw : typeof raw}`
}

/** Which values that are not finite numbers a write may store. */
type NonFinite = typeof NONE | typeof NAN_ONLY | typeof ANY_NON_FINITE
const NONE = 0
/** The allowNaN limit: NaN of any bit pattern, but not ±Infinity. */
const NAN_ONLY = 1
/** A batch with acceptNaN: NaN of any bit pattern and ±Infinity, as Prometheus stores them. */
const ANY_NON_FINITE = 2

/** Float64Array values of up to this many points are copied by a loop (see validateValues). */
const SMALL_COPY = 8

/** Writes the entry's values to `out` from `at` on. */
function validateValues(
  raw: ArrayLike<number>,
  i: number,
  nonFinite: NonFinite,
  violations: FieldViolation[],
  out: Float64Array,
  at: number,
): void {
  const m = raw.length
  // Values that come as a Float64Array keep every NaN's bit pattern (Prometheus tells its staleness
  // marker from other NaNs by it), copied whole by set() or element by element into the arena, a
  // Float64Array too; a plain array has already lost it (V8 quiets a signalling NaN stored into
  // one). A few values (remote write's one per entry) go by the loop: a call into set() costs more.
  const whole = raw instanceof Float64Array && m > SMALL_COPY
  if (whole) out.set(raw, at)
  for (let j = 0; j < m; j++) {
    const v = raw[j]!
    if (!whole) out[at + j] = v
    // One subtraction screens out NaN and both infinities; the slow path tells them apart.
    if (v - v !== 0) {
      if (typeof v === 'number' && (nonFinite === ANY_NON_FINITE || (nonFinite === NAN_ONLY && Number.isNaN(v))))
        continue
      const description =
        typeof v !== 'number'
          ? `must be a number, got ${typeof v}`
          : Number.isNaN(v)
            ? 'is NaN, and NaN values are not allowed'
            : `must be finite, got ${v}`
      violations.push({ field: `series[${i}].values[${j}]`, description })
      if (violations.length >= MAX_VIOLATIONS) break
    }
  }
}

/**
 * Merges entries of the same series in request order and sorts and deduplicates every series.
 * `memory` is the arena that holds the entries' points.
 */
function mergeEntries(entries: readonly ValidEntry[], memory: Float64Array): NormalizedBatch {
  // Entries of one series are linked from its first entry: no array per series.
  const firsts = new Map<string, ValidEntry>()
  /** Points of the series that have more than one entry, which the merge copies. */
  let repeated = 0
  for (const entry of entries) {
    const first = firsts.get(entry.key)
    if (first === undefined) {
      firsts.set(entry.key, entry)
      continue
    }
    if (first.last === undefined) {
      repeated += first.n
      first.next = entry
    } else first.last.next = entry
    first.last = entry
    repeated += entry.n
  }
  // The series of several entries in order, one after the other (remote write sends a series' samples
  // as entries of their own, one or two per series in a request), are copied into one more arena.
  const joined = repeated > 0 ? new Arena(2 * repeated) : undefined
  const series: NormalizedSeries[] = []
  let points = 0
  for (const first of firsts.values()) {
    let merged: Points
    if (first.next === undefined) {
      merged = pointsOf(first, memory)
      if (first.order === NON_DECREASING) merged = dedupSorted(merged)
      else if (first.order === UNORDERED) merged = sortDedup(merged)
    } else if (joined !== undefined && inOrder(first, memory)) {
      merged = joinInOrder(first, memory, joined)
    } else {
      merged = sortDedup(concatEntries(first, memory))
    }
    const n = merged.timestamps.length
    // One entry's points share its version; merged entries carry theirs per point already.
    const base = {
      metric: first.metric,
      tags: first.tags,
      key: first.key,
      timestamps: merged.timestamps,
      values: merged.values,
    }
    series.push(
      merged.versions !== undefined
        ? { ...base, versions: merged.versions }
        : first.version > 0
          ? { ...base, version: first.version }
          : base,
    )
    points += n
  }
  return { series, points }
}

/** An entry's points: views of the arena. */
function pointsOf(entry: ValidEntry, memory: Float64Array): Points {
  return {
    timestamps: memory.subarray(entry.at, entry.at + entry.n),
    values: memory.subarray(entry.at + entry.n, entry.at + 2 * entry.n),
  }
}

/**
 * Whether the entries of a series, taken in request order, are one strictly ascending run: each
 * entry ascending without repeats, and starting after the one before ends. Their concatenation is
 * then what sorting and deduplicating it would give, whatever their versions.
 */
function inOrder(first: ValidEntry, memory: Float64Array): boolean {
  let previous = Number.NEGATIVE_INFINITY
  for (let e: ValidEntry | undefined = first; e !== undefined; e = e.next) {
    if (e.order !== ASCENDING || memory[e.at]! <= previous) return false
    previous = memory[e.at + e.n - 1]!
  }
  return true
}

/** The points of entries that are in order (see inOrder) one after the other, in the `joined` arena. */
function joinInOrder(first: ValidEntry, memory: Float64Array, joined: Arena): Points {
  let n = 0
  let versioned = false
  for (let e: ValidEntry | undefined = first; e !== undefined; e = e.next) {
    n += e.n
    if (e.version > 0) versioned = true
  }
  const out = joined.memory
  const ts = joined.take(n)
  const vals = joined.take(n)
  const versions = versioned ? new Float64Array(n) : undefined
  let k = 0
  for (let e: ValidEntry | undefined = first; e !== undefined; e = e.next) {
    // Element by element from one Float64Array to another: no JavaScript number in between that
    // could quiet a signalling NaN, and no view allocated for an entry of one or two points.
    for (let j = 0; j < e.n; j++) {
      out[ts + k + j] = memory[e.at + j]!
      out[vals + k + j] = memory[e.at + e.n + j]!
    }
    versions?.fill(e.version, k, k + e.n)
    k += e.n
  }
  const timestamps = out.subarray(ts, ts + n)
  const values = out.subarray(vals, vals + n)
  return versions === undefined ? { timestamps, values } : { timestamps, values, versions }
}

function concatEntries(first: ValidEntry, memory: Float64Array): Points {
  let n = 0
  let versioned = false
  for (let e: ValidEntry | undefined = first; e !== undefined; e = e.next) {
    n += e.n
    if (e.version > 0) versioned = true
  }
  const timestamps = new Float64Array(n)
  const values = new Float64Array(n)
  const versions = versioned ? new Float64Array(n) : undefined
  let offset = 0
  for (let e: ValidEntry | undefined = first; e !== undefined; e = e.next) {
    timestamps.set(memory.subarray(e.at, e.at + e.n), offset)
    values.set(memory.subarray(e.at + e.n, e.at + 2 * e.n), offset)
    versions?.fill(e.version, offset, offset + e.n)
    offset += e.n
  }
  return versions === undefined ? { timestamps, values } : { timestamps, values, versions }
}

/** Keeps the last point of each run of equal timestamps in sorted points, compacting them in place. */
function dedupSorted({ timestamps, values }: Points): Points {
  const n = timestamps.length
  let k = 0
  for (let p = 0; p < n; p++) {
    if (p + 1 < n && timestamps[p + 1] === timestamps[p]) continue
    timestamps[k] = timestamps[p]!
    values[k] = values[p]!
    k++
  }
  return { timestamps: timestamps.slice(0, k), values: values.slice(0, k) }
}

/**
 * Sorts points by timestamp and keeps, of equal timestamps, the one that came last in the request,
 * or with versions the one with the highest version (the last of those). The permutation breaks
 * ties by position, so the order does not rest on the sort being stable.
 */
export function sortDedup({ timestamps, values, versions }: Points): Points {
  if (versions !== undefined) return sortDedupVersioned(timestamps, values, versions)
  const n = timestamps.length
  const order = new Uint32Array(n)
  for (let p = 0; p < n; p++) order[p] = p
  order.sort((a, b) => timestamps[a]! - timestamps[b]! || a - b)
  const sortedTimestamps = new Float64Array(n)
  const sortedValues = new Float64Array(n)
  let k = 0
  for (let p = 0; p < n; p++) {
    const at = order[p]!
    if (p + 1 < n && timestamps[order[p + 1]!] === timestamps[at]) continue
    sortedTimestamps[k] = timestamps[at]!
    sortedValues[k] = values[at]!
    k++
  }
  return k === n
    ? { timestamps: sortedTimestamps, values: sortedValues }
    : { timestamps: sortedTimestamps.slice(0, k), values: sortedValues.slice(0, k) }
}

function sortDedupVersioned(timestamps: Float64Array, values: Float64Array, versions: Float64Array): Points {
  const n = timestamps.length
  const order = new Uint32Array(n)
  for (let p = 0; p < n; p++) order[p] = p
  order.sort((a, b) => timestamps[a]! - timestamps[b]! || a - b)
  const outTs = new Float64Array(n)
  const outVals = new Float64Array(n)
  const outVers = new Float64Array(n)
  let k = 0
  for (let p = 0; p < n; p++) {
    const at = order[p]!
    const t = timestamps[at]!
    if (k > 0 && outTs[k - 1] === t) {
      // A later point of the same timestamp wins unless its version is lower.
      if (versions[at]! >= outVers[k - 1]!) {
        outVals[k - 1] = values[at]!
        outVers[k - 1] = versions[at]!
      }
      continue
    }
    outTs[k] = t
    outVals[k] = values[at]!
    outVers[k] = versions[at]!
    k++
  }
  return { timestamps: outTs.slice(0, k), values: outVals.slice(0, k), versions: outVers.slice(0, k) }
}
