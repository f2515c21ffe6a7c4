/**
 * InfluxDB line protocol, as Telegraf and the InfluxDB v1 and v2 clients send it, turned into one
 * write batch. Each field of a line becomes a point of the series `<measurement>_<field>` with the
 * line's tags (VictoriaMetrics maps it the same way). Integer, unsigned, float and boolean fields
 * are stored as floats (true is 1); a string field cannot be stored as a number, so it is refused.
 *
 * The whole body is parsed before anything is written, so a bad line refuses the whole request and
 * its error names the line. This is an ingest hot path: lines are scanned by index, without a regex
 * or a split per line, and the tags of a line are parsed only the first time its series prefix
 * (measurement and tag set, as written) is seen.
 */
import { isAscii } from 'node:buffer'
import { ValidationError } from '../model/errors.js'
import type { SeriesWrite, Tag } from '../model/types.js'
import { POW10, scaledDecimal } from './decimal.js'

/**
 * A body's text, read as UTF-8. Bodies are almost always ASCII, which reads the same as latin1, and
 * latin1 is a copy where UTF-8 decoding checks every byte: 0.4 against 7.3 ms for a 2.3 MB body
 * (50,000 points), while isAscii takes 0.03 ms.
 */
function bodyText(bytes: Buffer): string {
  return isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8')
}

/** The precisions InfluxDB's v1 `/write` accepts (v2 takes ns, us, ms and s). */
export type LinePrecision = 'ns' | 'us' | 'ms' | 's' | 'm' | 'h'

/** The precision parameter as v1 spells it (n, u, ms, s, m, h, and the v2 names), or undefined. */
export function parseLinePrecision(text: string | null): LinePrecision | undefined {
  switch (text ?? 'ns') {
    case 'n':
    case 'ns':
      return 'ns'
    case 'u':
    case 'us':
      return 'us'
    case 'ms':
      return 'ms'
    case 's':
      return 's'
    case 'm':
      return 'm'
    case 'h':
      return 'h'
    default:
      return undefined
  }
}

/** Milliseconds per unit for the precisions coarser than a millisecond. */
const MS_PER_UNIT: Readonly<Record<'ms' | 's' | 'm' | 'h', number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

export interface ParsedLines {
  /** One entry per series, timestamps in milliseconds. */
  readonly series: SeriesWrite[]
  /** The line (1-based) where each series first appears, to name it in a later engine error. */
  readonly firstLines: number[]
  readonly points: number
}

interface FieldSeries {
  readonly metric: string
  readonly tags: readonly Tag[]
  readonly timestamps: number[]
  readonly values: number[]
}

/** The series of one measurement and tag set, by raw field key. */
interface Prefix {
  readonly measurement: string
  readonly tags: readonly Tag[]
  readonly fields: Map<string, FieldSeries>
  /**
   * The field met at each position of the last line of this prefix, with its key as written: the
   * lines of a series usually list the same fields in the same order, so the next line's key is
   * checked in place against it instead of being cut out and looked up.
   */
  readonly order: Array<{ readonly rawKey: string; readonly series: FieldSeries }>
  /** The prefix as written. */
  readonly raw: string
  /**
   * The prefix of the line that followed this prefix's last line: a sender writes its series in the
   * same order at every interval, so the next line's prefix is checked in place against it instead
   * of being cut out, hashed and looked up.
   */
  next: Prefix | undefined
}

const BACKSLASH = 0x5c
const COMMA = 0x2c
const SPACE = 0x20
const TAB = 0x09
const EQUALS = 0x3d
const QUOTE = 0x22
const HASH = 0x23
const CR = 0x0d
const MINUS = 0x2d

function lineError(line: number, problem: string): ValidationError {
  return ValidationError.field(`line ${line}`, problem)
}

/** Removes the backslash of each escaped character in text[start, end). */
function unescaped(text: string, start: number, end: number): string {
  let out = ''
  let from = start
  for (let i = start; i < end; i++) {
    if (text.charCodeAt(i) === BACKSLASH && i + 1 < end) {
      const next = text.charCodeAt(i + 1)
      if (next === COMMA || next === SPACE || next === EQUALS || next === BACKSLASH) {
        out += text.slice(from, i)
        from = i + 1
        i++
      }
    }
  }
  return out + text.slice(from, end)
}

/** The index of the first unescaped stop character at or after start, or end. */
function scanTo(text: string, start: number, end: number, stopA: number, stopB: number, stopC: number): number {
  let i = start
  while (i < end) {
    const c = text.charCodeAt(i)
    if (c === BACKSLASH) i += 2
    else if (c === stopA || c === stopB || c === stopC) return i
    else i++
  }
  return end
}

/** Scans only [start, end): indexOf would search on to the end of the body when there is none. */
function hasBackslash(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (text.charCodeAt(i) === BACKSLASH) return true
  return false
}

function piece(text: string, start: number, end: number): string {
  return hasBackslash(text, start, end) ? unescaped(text, start, end) : text.slice(start, end)
}

/** Parses the measurement and tag set in text[start, end), which holds no unescaped space. */
function parsePrefix(text: string, start: number, end: number, line: number): SeriesPrefix {
  const measurementEnd = scanTo(text, start, end, COMMA, COMMA, COMMA)
  const measurement = piece(text, start, measurementEnd)
  if (measurement === '') throw lineError(line, 'the measurement is empty')
  const tags: Tag[] = []
  let i = measurementEnd
  while (i < end) {
    const keyStart = i + 1
    const keyEnd = scanTo(text, keyStart, end, EQUALS, COMMA, COMMA)
    if (keyEnd >= end || text.charCodeAt(keyEnd) !== EQUALS) {
      throw lineError(line, `tag ${JSON.stringify(text.slice(keyStart, keyEnd))} has no "=value"`)
    }
    const valueEnd = scanTo(text, keyEnd + 1, end, COMMA, COMMA, COMMA)
    const key = piece(text, keyStart, keyEnd)
    const value = piece(text, keyEnd + 1, valueEnd)
    if (key === '') throw lineError(line, 'a tag key is empty')
    if (value === '') throw lineError(line, `tag ${JSON.stringify(key)} has an empty value`)
    for (const t of tags) {
      if (t.key === key) throw lineError(line, `tag ${JSON.stringify(key)} appears twice`)
    }
    tags.push({ key, value })
    i = valueEnd
  }
  for (const tag of tags) Object.freeze(tag)
  return { measurement, tags: Object.freeze(tags) }
}

/** The measurement and tags of a series prefix, parsed once; the tags are frozen. */
export interface SeriesPrefix {
  readonly measurement: string
  readonly tags: readonly Tag[]
}

/**
 * Series prefixes (measurement and tag set, as written) of earlier requests with their parsed form.
 * Senders write the same series again and again; a hit skips parsing the tags, and hands the
 * engine the same frozen tags array, whose validation it remembers. Bounded: cleared when full.
 */
export class PrefixCache {
  private readonly entries = new Map<string, SeriesPrefix>()
  constructor(private readonly maxEntries = 100_000) {}

  get(raw: string): SeriesPrefix | undefined {
    return this.entries.get(raw)
  }

  set(raw: string, prefix: SeriesPrefix): void {
    if (this.entries.size >= this.maxEntries) this.entries.clear()
    this.entries.set(raw, prefix)
  }
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39
}

/** Whether text[start, end) is an optional minus and at least one digit. */
function isInteger(text: string, start: number, end: number, signed: boolean): boolean {
  let i = start
  if (signed && text.charCodeAt(i) === MINUS) i++
  if (i >= end) return false
  for (; i < end; i++) if (!isDigit(text.charCodeAt(i))) return false
  return true
}

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
const UINT64_MAX = 2n ** 64n - 1n

/**
 * Whether the integer in text[start, end) lies in [min, max], as InfluxDB checks its 64-bit
 * integer fields. Fewer than 19 digits always fit, and are not made a BigInt.
 */
function inRange(text: string, start: number, end: number, min: bigint, max: bigint): boolean {
  if (end - start < 19) return true
  const value = BigInt(text.slice(start, end))
  return value >= min && value <= max
}

/** The most significant digits scaledDecimal reads: 15 in one exact integer, up to 4 more beside it. */
const MAX_SCALED_DIGITS = 19
/** The digits one double holds exactly as an integer, whatever they are. */
const EXACT_DIGITS = 15

/** Where plainDecimal stopped, when it returned a number. */
let plainEnd = 0

/**
 * The common field value, a plain decimal (an optional minus, digits, an optional point and more
 * digits) followed by a comma or the end, read in one pass. With at most 15 digits no string is cut
 * out: its digits make an integer below 2^53 and its scale a power of ten below 10^22, both exact,
 * so one division rounds exactly as Number() does. The same pass keeps the digits after the 15th
 * apart, so that 16 to 19 digits (most measured values have 16 or 17) are read exactly by
 * scaledDecimal without reading them again. NaN for anything else, which the general path then
 * reads (and refuses or not).
 */
function plainDecimal(text: string, start: number, end: number): number {
  let i = start
  let c = text.charCodeAt(i)
  const negative = c === MINUS
  if (negative) c = text.charCodeAt(++i)
  // The first 15 digits, and those after them apart (exact while there are at most 4).
  let head = 0
  let tail = 0
  let count = 0
  while (c >= 0x30 && c <= 0x39) {
    if (count < EXACT_DIGITS) head = head * 10 + (c - 0x30)
    else tail = tail * 10 + (c - 0x30)
    count++
    c = text.charCodeAt(++i)
  }
  const digits = count
  if (digits === 0) return Number.NaN
  if (c === 0x2e) {
    c = text.charCodeAt(++i)
    while (c >= 0x30 && c <= 0x39) {
      if (count < EXACT_DIGITS) head = head * 10 + (c - 0x30)
      else tail = tail * 10 + (c - 0x30)
      count++
      c = text.charCodeAt(++i)
    }
    if (count === digits) return Number.NaN
  }
  if (i < end && c !== COMMA) return Number.NaN
  plainEnd = i
  const scale = count - digits
  if (count > EXACT_DIGITS) {
    // Up to 19 digits are read exactly by scaledDecimal; more, or a value too near halfway between
    // two doubles for it, by Number() from the text, which is known to be a plain decimal and to
    // end here.
    const exact = count <= MAX_SCALED_DIGITS ? scaledDecimal(head, count - EXACT_DIGITS, tail, scale) : Number.NaN
    const read = Number.isNaN(exact) ? Number(text.slice(start, i)) : negative ? -exact : exact
    return Number.isFinite(read) ? read : Number.NaN
  }
  const value = scale === 0 ? head : head / POW10[scale]!
  return negative ? -value : value
}

/** The value of the digits text[start, end), at most 15 of them, as Number() reads them. */
function digitsValue(text: string, start: number, end: number): number {
  let value = 0
  for (let i = start; i < end; i++) value = value * 10 + (text.charCodeAt(i) - 0x30)
  return value
}

/** A float as line protocol writes it: digits, sign, point and exponent only (no NaN, no Inf, no hex). */
function parseFloatValue(text: string, start: number, end: number): number {
  let digits = false
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (isDigit(c)) digits = true
    else if (c !== 0x2e && c !== 0x65 && c !== 0x45 && c !== 0x2b && c !== MINUS) return Number.NaN
  }
  return digits ? Number(text.slice(start, end)) : Number.NaN
}

function parseBoolean(text: string, start: number, end: number): number | undefined {
  switch (text.slice(start, end)) {
    case 't':
    case 'T':
    case 'true':
    case 'True':
    case 'TRUE':
      return 1
    case 'f':
    case 'F':
    case 'false':
    case 'False':
    case 'FALSE':
      return 0
    default:
      return undefined
  }
}

/** The value of the field in text[start, end), or a description of what is wrong with it. */
function fieldValue(text: string, start: number, end: number): number | string {
  if (start >= end) return 'has no value'
  const last = text.charCodeAt(end - 1)
  if (last === 0x69 /* i */) {
    if (!isInteger(text, start, end - 1, true)) return 'is not a valid integer'
    return inRange(text, start, end - 1, INT64_MIN, INT64_MAX)
      ? Number(text.slice(start, end - 1))
      : 'is out of range for a 64-bit integer'
  }
  if (last === 0x75 /* u */) {
    if (!isInteger(text, start, end - 1, false)) return 'is not a valid unsigned integer'
    return inRange(text, start, end - 1, 0n, UINT64_MAX)
      ? Number(text.slice(start, end - 1))
      : 'is out of range for a 64-bit unsigned integer'
  }
  const first = text.charCodeAt(start)
  if (isDigit(first) || first === MINUS || first === 0x2b || first === 0x2e) {
    const value = parseFloatValue(text, start, end)
    return Number.isFinite(value) ? value : 'is not a valid number'
  }
  return parseBoolean(text, start, end) ?? 'is not a number, an integer (1i), an unsigned integer (1u) or a boolean'
}

/**
 * The timestamp text[start, end) in the given precision as milliseconds, rounded down like the
 * engine does for finer precisions. Nanoseconds since the epoch have 19 digits, more than a double
 * holds exactly, so the digits below a millisecond are cut off as text rather than divided.
 */
function timestampMs(text: string, start: number, end: number, precision: LinePrecision): number | undefined {
  if (!isInteger(text, start, end, true)) return undefined
  if (precision === 'ns' || precision === 'us') {
    const cut = precision === 'ns' ? 6 : 3
    const negative = text.charCodeAt(start) === MINUS
    const digitsStart = negative ? start + 1 : start
    const headEnd = Math.max(digitsStart, end - cut)
    const headDigits = headEnd - digitsStart
    const head = headDigits <= 15 ? digitsValue(text, digitsStart, headEnd) : Number(text.slice(digitsStart, headEnd))
    if (!Number.isSafeInteger(head)) return undefined
    if (!negative) return head
    let dropped = false
    for (let i = headEnd; i < end; i++) if (text.charCodeAt(i) !== 0x30) dropped = true
    return -head - (dropped ? 1 : 0) + 0
  }
  const units = Number(text.slice(start, end))
  const ms = units * MS_PER_UNIT[precision]
  return Number.isSafeInteger(ms) ? ms + 0 : undefined
}

/** The server's clock in milliseconds, cut to the precision as a client writing now would send it. */
export function defaultTimestampMs(nowMs: number, precision: LinePrecision): number {
  if (precision === 'ns' || precision === 'us' || precision === 'ms') return nowMs
  const unit = MS_PER_UNIT[precision]
  return Math.floor(nowMs / unit) * unit
}

/**
 * Line-aligned pieces of a body are read into strings of at most this many bytes. V8 puts a longer
 * string in its large-object space, fresh memory for every body: reading a 2.3 MB body as one string
 * took 2.1 ms, and in pieces of 64 KiB 0.3 ms (Node 20, 2 cores).
 */
export const LINE_PIECE_BYTES = 64 * 1024

const NEWLINE = 0x0a

/**
 * Parses a line protocol body, as text or as the bytes received (UTF-8). Blank lines and `#`
 * comments are skipped, and CRLF line ends are accepted. Throws a ValidationError whose field is
 * `line <n>` at the first bad line. Bytes are read in line-aligned pieces of LINE_PIECE_BYTES (a
 * longer line is a piece of its own); a newline byte never occurs inside a UTF-8 character, so a
 * piece boundary never splits one.
 */
export function parseLineProtocol(
  body: string | Uint8Array,
  precision: LinePrecision,
  nowMs: number,
  cache?: PrefixCache,
): ParsedLines {
  const parser = new LineParser(precision, nowMs, cache)
  if (typeof body === 'string') parser.feed(body)
  else {
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
    for (let start = 0; start < bytes.length; ) {
      let end = bytes.length
      if (end - start > LINE_PIECE_BYTES) {
        const last = bytes.lastIndexOf(NEWLINE, start + LINE_PIECE_BYTES - 1)
        const next = last >= start ? last : bytes.indexOf(NEWLINE, start + LINE_PIECE_BYTES)
        if (next >= 0) end = next + 1
      }
      parser.feed(bodyText(bytes.subarray(start, end)))
      start = end
    }
  }
  return { series: parser.series, firstLines: parser.firstLines, points: parser.points }
}

/** The parse of one body, fed its text in line-aligned pieces. */
class LineParser {
  readonly series: SeriesWrite[] = []
  readonly firstLines: number[] = []
  points = 0
  private readonly prefixes = new Map<string, Prefix>()
  /** The prefix of the last line read. */
  private previous: Prefix | undefined
  private lineNo = 0
  private readonly defaultTs: number

  constructor(
    private readonly precision: LinePrecision,
    nowMs: number,
    private readonly cache: PrefixCache | undefined,
  ) {
    this.defaultTs = defaultTimestampMs(nowMs, precision)
  }

  /** Parses whole lines; the state the next piece continues from is kept in the fields. */
  feed(text: string): void {
    const { prefixes, series, firstLines, defaultTs, precision, cache } = this
    let previous = this.previous
    let points = this.points
    let lineNo = this.lineNo
    let pos = 0
    const length = text.length
    // The next backslash and quote at or after the line being read (length when there is none): a
    // line before both is found with indexOf, natively, rather than scanned for escapes character
    // by character. Each is searched again only once the lines have passed it, so a body without
    // any is searched once, not to its end for every line.
    let nextBackslash = -1
    let nextQuote = -1
    while (pos < length) {
      lineNo++
      let end = text.indexOf('\n', pos)
      const next = end < 0 ? length : end + 1
      if (end < 0) end = length
      let lineEnd = end
      while (lineEnd > pos) {
        const c = text.charCodeAt(lineEnd - 1)
        if (c === CR || c === SPACE || c === TAB) lineEnd--
        else break
      }
      let start = pos
      while (start < lineEnd) {
        const c = text.charCodeAt(start)
        if (c === SPACE || c === TAB) start++
        else break
      }
      pos = next
      if (start === lineEnd || text.charCodeAt(start) === HASH) continue

      if (nextBackslash < start) {
        nextBackslash = text.indexOf('\\', start)
        if (nextBackslash < 0) nextBackslash = length
      }
      const plain = nextBackslash >= lineEnd
      let prefixEnd = plain ? text.indexOf(' ', start) : scanTo(text, start, lineEnd, SPACE, SPACE, SPACE)
      if (prefixEnd < 0 || prefixEnd > lineEnd) prefixEnd = lineEnd
      if (prefixEnd >= lineEnd) throw lineError(lineNo, 'has no fields')
      const guess = previous?.next
      let prefix: Prefix | undefined
      if (guess !== undefined && guess.raw.length === prefixEnd - start && text.startsWith(guess.raw, start)) {
        prefix = guess
      } else {
        const rawPrefix = text.slice(start, prefixEnd)
        prefix = prefixes.get(rawPrefix)
        if (prefix === undefined) {
          let parsed = cache?.get(rawPrefix)
          if (parsed === undefined) {
            parsed = parsePrefix(text, start, prefixEnd, lineNo)
            cache?.set(rawPrefix, parsed)
          }
          const { measurement, tags } = parsed
          prefix = { measurement, tags, fields: new Map(), order: [], raw: rawPrefix, next: undefined }
          prefixes.set(rawPrefix, prefix)
        }
        if (previous !== undefined) previous.next = prefix
      }
      previous = prefix

      let fieldsStart = prefixEnd + 1
      while (fieldsStart < lineEnd && text.charCodeAt(fieldsStart) === SPACE) fieldsStart++
      // The fields end at the first space outside a quoted string; string fields are refused below,
      // so the first unescaped space that is not inside quotes ends them.
      let fieldsEnd: number
      if (plain) {
        if (nextQuote < fieldsStart) {
          nextQuote = text.indexOf('"', fieldsStart)
          if (nextQuote < 0) nextQuote = length
        }
        const space = text.indexOf(' ', fieldsStart)
        fieldsEnd = Math.min(space < 0 ? length : space, nextQuote, lineEnd)
      } else fieldsEnd = scanTo(text, fieldsStart, lineEnd, SPACE, QUOTE, QUOTE)
      if (fieldsEnd < lineEnd && text.charCodeAt(fieldsEnd) === QUOTE) {
        const keyStart =
          text.lastIndexOf(',', fieldsEnd) >= fieldsStart ? text.lastIndexOf(',', fieldsEnd) + 1 : fieldsStart
        const keyEnd = text.lastIndexOf('=', fieldsEnd)
        const key = keyEnd > keyStart ? piece(text, keyStart, keyEnd) : text.slice(keyStart, fieldsEnd)
        throw lineError(
          lineNo,
          `field ${JSON.stringify(key)} is a string; only float, integer, unsigned and boolean fields can be stored`,
        )
      }
      let ts = defaultTs
      if (fieldsEnd < lineEnd) {
        let tsStart = fieldsEnd + 1
        while (tsStart < lineEnd && text.charCodeAt(tsStart) === SPACE) tsStart++
        const parsed = timestampMs(text, tsStart, lineEnd, precision)
        if (parsed === undefined) {
          throw lineError(
            lineNo,
            `timestamp ${JSON.stringify(text.slice(tsStart, lineEnd))} is not an integer in range`,
          )
        }
        ts = parsed
      }

      let i = fieldsStart
      if (i >= fieldsEnd) throw lineError(lineNo, 'has no fields')
      const order = prefix.order
      for (let field = 0; i < fieldsEnd; field++) {
        let target: FieldSeries | undefined
        let keyEnd: number
        const expected = order[field]
        // The key as written, followed by "=", scans as it did on the line it was first read from.
        if (
          expected !== undefined &&
          text.startsWith(expected.rawKey, i) &&
          text.charCodeAt(i + expected.rawKey.length) === EQUALS
        ) {
          target = expected.series
          keyEnd = i + expected.rawKey.length
        } else {
          keyEnd = scanTo(text, i, fieldsEnd, EQUALS, COMMA, COMMA)
          if (keyEnd >= fieldsEnd || text.charCodeAt(keyEnd) !== EQUALS) {
            throw lineError(lineNo, `field ${JSON.stringify(text.slice(i, keyEnd))} has no "=value"`)
          }
          if (keyEnd === i) throw lineError(lineNo, 'a field key is empty')
        }
        let value = plainDecimal(text, keyEnd + 1, fieldsEnd)
        let valueEnd: number
        if (!Number.isNaN(value)) valueEnd = plainEnd
        else {
          valueEnd = scanTo(text, keyEnd + 1, fieldsEnd, COMMA, COMMA, COMMA)
          const general = fieldValue(text, keyEnd + 1, valueEnd)
          if (typeof general === 'string') {
            const key = piece(text, i, keyEnd)
            throw lineError(
              lineNo,
              `field ${JSON.stringify(key)} ${general}: ${JSON.stringify(text.slice(keyEnd + 1, valueEnd))}`,
            )
          }
          value = general
        }
        if (target === undefined) {
          const rawKey = text.slice(i, keyEnd)
          target = prefix.fields.get(rawKey)
          if (target === undefined) {
            target = {
              metric: `${prefix.measurement}_${piece(text, i, keyEnd)}`,
              tags: prefix.tags,
              timestamps: [],
              values: [],
            }
            prefix.fields.set(rawKey, target)
            series.push(target)
            firstLines.push(lineNo)
          }
          order[field] = { rawKey, series: target }
        }
        target.timestamps.push(ts)
        target.values.push(value)
        points++
        if (valueEnd + 1 === fieldsEnd) throw lineError(lineNo, 'ends its fields with a comma')
        i = valueEnd + 1
      }
    }
    this.previous = previous
    this.points = points
    this.lineNo = lineNo
  }
}
