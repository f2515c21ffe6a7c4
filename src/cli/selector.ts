/**
 * The selector syntax users know from PromQL: `cpu_usage{host="a",region=~"eu-.*"}`. Matchers are
 * `=`, `!=`, `=~`, `!~`; values are double-, single- or back-quoted strings with Go's escapes, as
 * in PromQL; `{__name__="cpu"}` names the metric as a matcher. A syntax error carries the 1-based
 * column of the offending character so that the CLI can point at it.
 */
import type { Matcher, MatchOp, Selector } from '../model/types.js'

export class SelectorSyntaxError extends Error {
  constructor(
    readonly reason: string,
    /** 1-based column of the offending character (one past the end for a premature end). */
    readonly column: number,
    readonly input: string,
  ) {
    super(`bad selector at column ${column}: ${reason}`)
    this.name = 'SelectorSyntaxError'
  }

  /** The message, the selector and a caret under the offending column, for a terminal. */
  pointed(): string {
    return `${this.message}\n  ${this.input}\n  ${' '.repeat(this.column - 1)}^`
  }
}

const NAME_START = /[a-zA-Z_:]/
const NAME_PART = /[a-zA-Z0-9_.:-]/
const OPS: ReadonlyArray<[string, MatchOp]> = [
  ['=~', 'regex'],
  ['!~', 'not_regex'],
  ['!=', 'neq'],
  ['=', 'eq'],
]
/**
 * The one-letter escapes: Go's, plus every quote in every kind of string (Go takes only the
 * enclosing quote, but V3 has always taken all three, and selectors written so must keep working).
 */
const ESCAPES: Readonly<Record<string, string>> = {
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
  '\\': '\\',
  '"': '"',
  "'": "'",
  '`': '`',
}
const OCTAL = /[0-7]/
const HEX = /[0-9a-fA-F]/
const HIGHEST_CODE_POINT = 0x10ffff

/**
 * Joins the bytes that `\xNN` and `\NNN` escapes spell into characters. Go strings are bytes, so
 * PromQL lets escapes spell a character byte by byte (`"\xc3\xa9"` is `é`) and lets them spell
 * invalid UTF-8 too; tag values are Unicode text, so here the escapes in a row must spell whole,
 * valid UTF-8 characters (no overlong forms, no surrogates, nothing above U+10FFFF), as Go's
 * utf8.ValidString would accept.
 */
class Utf8Escapes {
  /** Continuation bytes the character begun by `leadText` still needs; 0 when none is begun. */
  private need = 0
  private codePoint = 0
  /** The range the next continuation byte must be in: narrower after E0, ED, F0 and F4. */
  private low = 0x80
  private high = 0xbf
  private leadAt = 0
  private leadText = ''

  constructor(private readonly scanner: Scanner) {}

  /** Takes the byte of the escape `text` at `at`; returns the character it completes, or ''. */
  add(byte: number, text: string, at: number): string {
    if (this.need > 0) {
      if (byte < this.low || byte > this.high) {
        this.scanner.fail(
          `${text} cannot continue the UTF-8 character begun by ${this.leadText} at column ${this.leadAt + 1} ` +
            `(it needs a byte in ${hexByte(this.low)}–${hexByte(this.high)})`,
          at,
        )
      }
      this.codePoint = (this.codePoint << 6) | (byte & 0x3f)
      this.low = 0x80
      this.high = 0xbf
      this.need--
      return this.need === 0 ? String.fromCodePoint(this.codePoint) : ''
    }
    if (byte < 0x80) return String.fromCharCode(byte)
    if (byte < 0xc0) this.scanner.fail(`${text} is a UTF-8 continuation byte, but no character was begun`, at)
    if (byte < 0xc2 || byte > 0xf4) this.scanner.fail(`${text} is a byte that never appears in UTF-8`, at)
    this.leadAt = at
    this.leadText = text
    if (byte < 0xe0) {
      this.need = 1
      this.codePoint = byte & 0x1f
    } else if (byte < 0xf0) {
      this.need = 2
      this.codePoint = byte & 0x0f
      // E0 80–9F would be overlong forms, ED A0–BF the surrogates U+D800–DFFF.
      if (byte === 0xe0) this.low = 0xa0
      if (byte === 0xed) this.high = 0x9f
    } else {
      this.need = 3
      this.codePoint = byte & 0x07
      // F0 80–8F would be overlong forms, F4 90–BF above U+10FFFF.
      if (byte === 0xf0) this.low = 0x90
      if (byte === 0xf4) this.high = 0x8f
    }
    return ''
  }

  /** Fails when `found`, which is not a byte escape, comes while a character is incomplete. */
  end(found: string): void {
    if (this.need === 0) return
    this.scanner.fail(
      `the UTF-8 character begun by ${this.leadText} at column ${this.leadAt + 1} needs ${this.need} more ` +
        `byte escape${this.need === 1 ? '' : 's'} (\\x80–\\xbf), found ${found}`,
    )
  }
}

function hexByte(byte: number): string {
  return `\\x${byte.toString(16).padStart(2, '0')}`
}

class Scanner {
  pos = 0
  constructor(readonly input: string) {}

  fail(reason: string, at = this.pos): never {
    throw new SelectorSyntaxError(reason, at + 1, this.input)
  }

  skipSpace(): void {
    while (this.pos < this.input.length && /\s/.test(this.input[this.pos]!)) this.pos++
  }

  peek(): string | undefined {
    return this.input[this.pos]
  }

  describe(): string {
    const c = this.peek()
    return c === undefined ? 'the end of the selector' : JSON.stringify(c)
  }

  name(what: string): string {
    const start = this.pos
    if (!NAME_START.test(this.peek() ?? '')) this.fail(`expected ${what}, found ${this.describe()}`)
    this.pos++
    while (NAME_PART.test(this.peek() ?? '')) this.pos++
    return this.input.slice(start, this.pos)
  }

  op(): MatchOp {
    for (const [text, op] of OPS) {
      if (this.input.startsWith(text, this.pos)) {
        this.pos += text.length
        return op
      }
    }
    return this.fail(`expected one of =, !=, =~, !~, found ${this.describe()}`)
  }

  string(): string {
    const quote = this.peek()
    if (quote !== '"' && quote !== "'" && quote !== '`') this.fail(`expected a quoted value, found ${this.describe()}`)
    const start = this.pos
    this.pos++
    const bytes = new Utf8Escapes(this)
    let out = ''
    for (;;) {
      const c = this.peek()
      if (c === undefined) this.fail('unterminated string', start)
      // Back-quoted strings are raw, as in PromQL: handy for regexes full of backslashes.
      const escaped = c === '\\' && quote !== '`'
      const at = this.pos
      if (escaped) {
        const e = this.input[at + 1]
        if (e === 'x' || (e !== undefined && OCTAL.test(e))) {
          this.pos++
          out += bytes.add(this.byteEscape(at), this.input.slice(at, this.pos), at)
          continue
        }
      }
      bytes.end(escaped ? `the escape ${this.input.slice(at, at + 2)}` : this.describe())
      this.pos++
      if (c === quote) return out
      out += escaped ? this.escape(at) : c
    }
  }

  /** Reads a `\xNN` or `\NNN` escape whose backslash is at `at`; returns its byte. */
  private byteEscape(at: number): number {
    if (this.peek() === 'x') {
      this.pos++
      return this.digits(2, HEX, 16, '\\x needs 2 hexadecimal digits')
    }
    const byte = this.digits(3, OCTAL, 8, 'an octal escape needs 3 digits')
    if (byte > 0o377) this.fail(`${this.input.slice(at, this.pos)} is above \\377, the largest byte`, at)
    return byte
  }

  /** Reads the escape after the backslash at `at`, other than a byte escape; returns what it stands for. */
  private escape(at: number): string {
    const e = this.peek()
    if (e === 'u' || e === 'U') {
      this.pos++
      const codePoint =
        e === 'u'
          ? this.digits(4, HEX, 16, '\\u needs 4 hexadecimal digits')
          : this.digits(8, HEX, 16, '\\U needs 8 hexadecimal digits')
      if (codePoint > HIGHEST_CODE_POINT) {
        this.fail(`${this.input.slice(at, this.pos)} is above U+10FFFF, the largest code point`, at)
      }
      // Go refuses the surrogates U+D800–DFFF here; a JavaScript string can hold them alone, and
      // formatSelector writes them so, so they are taken to keep every string round-tripping.
      return String.fromCodePoint(codePoint)
    }
    const escaped = e === undefined ? undefined : ESCAPES[e]
    if (escaped === undefined) this.fail(`unknown escape \\${e ?? ''}`, at)
    this.pos++
    return escaped
  }

  /** Reads `count` digits of `radix`, failing at the first character that is not one. */
  private digits(count: number, digit: RegExp, radix: 8 | 16, need: string): number {
    let value = 0
    for (let i = 0; i < count; i++) {
      const c = this.peek()
      if (c === undefined || !digit.test(c)) this.fail(`${need}, found ${this.describe()}`)
      value = value * radix + Number.parseInt(c, radix)
      this.pos++
    }
    return value
  }
}

/** Parses a selector; throws SelectorSyntaxError naming the column of the first problem. */
export function parseSelector(input: string): Selector {
  const s = new Scanner(input)
  s.skipSpace()
  let metric = ''
  if (s.peek() !== '{') metric = s.name('a metric name or {')
  s.skipSpace()
  const matchers: Matcher[] = []
  if (s.peek() === '{') {
    s.pos++
    s.skipSpace()
    while (s.peek() !== '}') {
      const keyAt = s.pos
      const key = s.name('a tag name or }')
      s.skipSpace()
      const opAt = s.pos
      const op = s.op()
      s.skipSpace()
      const value = s.string()
      if (key === '__name__') {
        if (op !== 'eq') s.fail('__name__ takes only =', opAt)
        if (metric !== '' && metric !== value) s.fail(`the metric is already ${metric}`, keyAt)
        metric = value
      } else {
        matchers.push({ key, value, op })
      }
      s.skipSpace()
      if (s.peek() === ',') {
        s.pos++
        s.skipSpace()
      } else if (s.peek() !== '}') {
        s.fail(`expected , or }, found ${s.describe()}`)
      }
    }
    s.pos++
    s.skipSpace()
  }
  if (s.pos < input.length) s.fail(`unexpected ${s.describe()} after the selector`)
  if (metric === '') s.fail('the selector names no metric (write cpu{...} or {__name__="cpu",...})', 0)
  return { metric, matchers }
}

/** The selector that picks exactly one series among those of its metric whose tag keys are `allKeys`. */
export function exactSelector(
  metric: string,
  tags: readonly { key: string; value: string }[],
  allKeys: Iterable<string>,
): Selector {
  const own = new Set(tags.map((t) => t.key))
  const matchers: Matcher[] = tags.map((t) => ({ key: t.key, value: t.value, op: 'eq' }))
  // A series with an extra tag also matches the equalities, so every other known key must be absent.
  for (const key of allKeys) if (!own.has(key)) matchers.push({ key, value: '', op: 'eq' })
  return { metric, matchers }
}

/**
 * What a quoted value must escape: the quote, the backslash and what Go's strconv.IsPrint calls
 * unprintable (all but letters, marks, numbers, punctuation, symbols and the ASCII space), so a
 * line of `v3 series` shows no control character, invisible format character or line separator to
 * a terminal, and is what Prometheus itself prints.
 */
const UNPRINTABLE = /[^\p{L}\p{M}\p{N}\p{P}\p{S} ]|["\\]/gu
const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  '\x07': '\\a',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\v': '\\v',
  '"': '\\"',
  '\\': '\\\\',
}

/** The shortest escape Go's strconv.Quote would write; a lone surrogate, which Go cannot hold, as `\uXXXX`. */
function escapeChar(c: string): string {
  const short = SHORT_ESCAPES[c]
  if (short !== undefined) return short
  const codePoint = c.codePointAt(0) ?? 0
  if (codePoint < 0x80) return hexByte(codePoint)
  if (codePoint < 0x10000) return `\\u${codePoint.toString(16).padStart(4, '0')}`
  return `\\U${codePoint.toString(16).padStart(8, '0')}`
}

/** Quotes a value so that parseSelector, and PromQL, read it back unchanged. */
function quote(value: string): string {
  return `"${value.replace(UNPRINTABLE, escapeChar)}"`
}

/** Formats a selector back into the syntax parseSelector reads. */
export function formatSelector(selector: Selector): string {
  const ops: Readonly<Record<MatchOp, string>> = { eq: '=', neq: '!=', regex: '=~', not_regex: '!~' }
  if (selector.matchers.length === 0) return selector.metric
  const inner = selector.matchers.map((m) => `${m.key}${ops[m.op]}${quote(m.value)}`).join(',')
  return `${selector.metric}{${inner}}`
}
