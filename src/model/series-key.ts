import { createHash } from 'node:crypto'
import { bug } from './errors.js'
import type { SeriesRef, Tag } from './types.js'
import { readVarint, varintSize, writeVarint } from './varint.js'

/** The rule metric names and tag keys follow, as error messages quote it. */
const NAME_RULE = '[a-zA-Z_][a-zA-Z0-9_.:-]*'

const NAME_PATTERN = /^[a-zA-Z_][a-zA-Z0-9_.:-]*$/

/** Whether a metric name or tag key follows `[a-zA-Z_][a-zA-Z0-9_.:-]*`. */
export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name)
}

/**
 * What is wrong with a metric name or tag key, as the description of a field violation, or
 * undefined when nothing is. Takes unknown because decoded requests from other languages may
 * leave a name out entirely. Names that pass are ASCII, so their length is their size in bytes.
 */
export function nameViolation(name: unknown, maxBytes = Number.POSITIVE_INFINITY): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'is required'
  // A string's UTF-8 size is at least its length, so a long one is too big whatever it holds.
  if (name.length > maxBytes) {
    return `is ${Buffer.byteLength(name, 'utf8')} bytes long, more than the limit of ${maxBytes}`
  }
  if (!NAME_PATTERN.test(name)) return `must match ${NAME_RULE}, got ${JSON.stringify(name)}`
  return undefined
}

/**
 * The key that names the metric rather than a tag, as in Prometheus: a matcher on it compares the
 * metric, and the Prometheus API and remote write carry the metric under it, so no tag has it.
 */
export const METRIC_NAME_KEY = '__name__'

/** What is wrong with a tag key, as nameViolation says it, or that it is the reserved __name__. */
export function tagKeyViolation(key: unknown, maxBytes = Number.POSITIVE_INFINITY): string | undefined {
  const problem = nameViolation(key, maxBytes)
  if (problem !== undefined) return problem
  if (key === METRIC_NAME_KEY) return `"${METRIC_NAME_KEY}" is reserved for the metric name; set the metric instead`
  return undefined
}

function compareTags(a: Tag, b: Tag): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0
}

/**
 * A new array of the tags sorted by key in UTF-16 code-unit order (what `<` on strings compares),
 * which every node computes the same way whatever its locale. The input is left as it is.
 */
export function sortTags(tags: readonly Tag[]): Tag[] {
  return tags.slice().sort(compareTags)
}

/**
 * The identity of a series: metric, then each tag's key and value, separated by NUL. Validation
 * keeps NUL out of names and tag values, so splitting on NUL gives the parts back and two
 * different series never share a key. The ring hashes this string and series ids derive from it,
 * so it must not change: every node and every stored id depends on it.
 *
 * @param sortedTags The tags sorted by key (see sortTags).
 */
export function canonicalSeriesKey(metric: string, sortedTags: readonly Tag[]): string {
  let key = metric
  for (const tag of sortedTags) key += `\u0000${tag.key}\u0000${tag.value}`
  return key
}

/** The canonical key of a series whose tags come in any order. */
export function seriesKeyOf(metric: string, tags: readonly Tag[]): string {
  return canonicalSeriesKey(metric, sortTags(tags))
}

/**
 * Something worked out once per series and kept by the series' tags array and metric: the engine
 * and the decoders hand out the same tags array for a series every time, so the next lookup finds
 * it without going over the tags again. Entries go with their arrays (a WeakMap).
 */
export class SeriesMemo<T> {
  private readonly known = new WeakMap<readonly Tag[], Map<string, T>>()

  constructor(private readonly compute: (metric: string, tags: readonly Tag[]) => T) {}

  get(metric: string, tags: readonly Tag[]): T {
    let byMetric = this.known.get(tags)
    if (byMetric === undefined) {
      byMetric = new Map()
      this.known.set(tags, byMetric)
    }
    let value = byMetric.get(metric)
    if (value === undefined) {
      value = this.compute(metric, tags)
      byMetric.set(metric, value)
    }
    return value
  }
}

/**
 * The ring token of a series: the first 4 bytes, big-endian, of the SHA-256 of its canonical key,
 * which are the first 4 bytes of its usual series id too (seriesIdFromKey with attempt 0). The
 * cluster places series by it; the engine keeps it per series (SeriesIndex.tokenOf), so that a read
 * narrowed to token ranges does not hash every series it looks at.
 */
export function seriesToken(canonicalKey: string): number {
  return createHash('sha256').update(canonicalKey, 'utf8').digest().readUInt32BE(0)
}

/**
 * The token of a series from its usual id, seriesIdFromKey(key) with attempt 0: its first 4 bytes,
 * big-endian, which equals seriesToken(key). An id a node took after a
 * collision (attempt > 0) is a different hash and must not be used here: placement follows the
 * key, never a node's local id.
 */
export function tokenOfSeriesId(id: Uint8Array): number {
  if (id.length < 4) throw bug(`series id of ${id.length} bytes is too short for a token`)
  return ((id[0]! << 24) | (id[1]! << 16) | (id[2]! << 8) | id[3]!) >>> 0
}

/**
 * The 8-byte series id of a canonical series key: the first 8 bytes of its SHA-256. `attempt` 0
 * gives the usual id; when the engine finds that id taken by another series, it tries attempt 1,
 * 2, ... in order, so every node that sees the same collisions settles on the same id. A retry
 * hashes the key followed by NUL and the attempt number: a canonical key has an odd number of
 * NUL-separated parts and a retry input an even number, so no retry input equals another key.
 */
export function seriesIdFromKey(key: string, attempt = 0): Buffer {
  if (!Number.isSafeInteger(attempt) || attempt < 0) throw bug(`series id attempt ${attempt} is not a natural number`)
  const hash = createHash('sha256').update(key, 'utf8')
  if (attempt > 0) hash.update(`\u0000${attempt}`, 'utf8')
  return hash.digest().subarray(0, 8)
}

/**
 * Encodes a series definition for the index: varint metric length, metric UTF-8, varint tag
 * count, then per tag varint key length, key, varint value length, value. Lengths count bytes and
 * are unsigned LEB128 varints, so the common short names cost one byte each and the configurable
 * size limits need no fixed width. The encoding byte that starts every stored value is not part of
 * it; the engine writes that first.
 */
export function encodeSeriesDef(metric: string, tags: readonly Tag[]): Buffer {
  const metricBytes = Buffer.byteLength(metric, 'utf8')
  let size = varintSize(metricBytes) + metricBytes + varintSize(tags.length)
  const lengths = new Array<number>(tags.length * 2)
  for (let i = 0; i < tags.length; i++) {
    const tag = tags[i]!
    const k = Buffer.byteLength(tag.key, 'utf8')
    const v = Buffer.byteLength(tag.value, 'utf8')
    lengths[2 * i] = k
    lengths[2 * i + 1] = v
    size += varintSize(k) + k + varintSize(v) + v
  }
  const buf = Buffer.allocUnsafe(size)
  let offset = writeVarint(buf, 0, metricBytes)
  offset += buf.write(metric, offset, 'utf8')
  offset = writeVarint(buf, offset, tags.length)
  for (let i = 0; i < tags.length; i++) {
    const tag = tags[i]!
    offset = writeVarint(buf, offset, lengths[2 * i]!)
    offset += buf.write(tag.key, offset, 'utf8')
    offset = writeVarint(buf, offset, lengths[2 * i + 1]!)
    offset += buf.write(tag.value, offset, 'utf8')
  }
  if (offset !== size) throw bug(`series definition encoded to ${offset} bytes, expected ${size}`)
  return buf
}

/** Reads what encodeSeriesDef wrote; throws on a truncated or malformed buffer. */
export function decodeSeriesDef(buf: Uint8Array): SeriesRef {
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const cursor = { at: 0 }

  const fail = (what: string): Error =>
    new Error(`cannot decode series definition of ${bytes.length} bytes: ${what} at byte ${cursor.at}`)

  const readLength = (): number => readVarint(bytes, cursor, fail)

  const readString = (): string => {
    const length = readLength()
    if (cursor.at + length > bytes.length) throw fail(`string of ${length} bytes truncated`)
    const s = bytes.toString('utf8', cursor.at, cursor.at + length)
    cursor.at += length
    return s
  }

  const metric = readString()
  const count = readLength()
  // Each tag takes at least two bytes, which bounds the count before anything is allocated.
  if (count * 2 > bytes.length - cursor.at) throw fail(`tag count ${count} too large`)
  const tags: Tag[] = []
  for (let i = 0; i < count; i++) {
    const key = readString()
    const value = readString()
    tags.push({ key, value })
  }
  if (cursor.at !== bytes.length) throw fail('trailing bytes')
  return { metric, tags }
}
